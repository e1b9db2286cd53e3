"""What every stage script shares around its main(): one-line errors for bad
input, outputs that appear under their final name only when complete, input
globs, and progress logging with rate and time left.

TensorFlow is imported only where tf.io.gfile is needed for paths such as
gs:// (input globs, non-local outputs), so light stages such as split_text.py
and stage III-b's worker processes run without it."""

import contextlib
import functools
import glob
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import time

from absl import app
from absl import flags
from absl import logging

# What an interrupted stage (Ctrl-C) says, and its exit status (128 + SIGINT,
# as a shell reports it).
INTERRUPTED = "interrupted; rerun to resume"
INTERRUPTED_STATUS = 130


class StageError(Exception):
  """A user's mistake or bad input: reported as one line, exit status 1."""


def run(main):
  """Runs `main(argv)` under absl.app with one-line errors for the user's mistakes.

  A bad flag (missing, malformed or failing a validator) and a StageError
  raised by main each print one line `error: <message>` on stderr and exit
  with status 1, instead of absl's usage banner or a traceback. Ctrl-C
  (SIGINT) prints `error: interrupted; rerun to resume` and exits 130: the
  KeyboardInterrupt unwinds through every `atomic_output`, which removes
  its temporary, so the rerun finds what a killed run leaves, or less.
  """
  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      # absl reports every flag that failed, one a line: keep them on one.
      print("error: " + "; ".join(str(e).splitlines()), file=sys.stderr)
      sys.exit(1)

  def guarded_main(argv):
    try:
      return main(argv)
    except StageError as e:
      logging.flush()
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt:
      # A second Ctrl-C while cleaning up would print a traceback.
      signal.signal(signal.SIGINT, signal.SIG_IGN)
      logging.flush()
      print(f"error: {INTERRUPTED}", file=sys.stderr)
      sys.exit(INTERRUPTED_STATUS)

  app.run(guarded_main, flags_parser=parse_flags)


def error_line(error):
  """An exception's message as one line, without TensorFlow's graph-node
  noise (`{{function_node ...}}`, `[Op:...]`, the user-defined-function
  preamble): for the `error: ...` lines of StageError."""
  text = getattr(error, "message", None) or str(error)
  text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
  text = re.sub(r"^Error in user-defined function.*?Iterator::\S+: ", "", text)
  text = re.sub(r"\s*\[Op:[^\]]*\].*", "", text, flags=re.S).strip()
  return text.splitlines()[0] if text else type(error).__name__


def expand_input_files(patterns, flag_name="--input_file"):
  """Expands a comma-separated list of globs into a sorted list of files.

  Raises:
    StageError: when the list is empty or a pattern matches nothing.
  """
  import tensorflow as tf
  files = []
  for pattern in [p.strip() for p in patterns.split(",") if p.strip()]:
    matched = sorted(tf.io.gfile.glob(pattern))
    if not matched:
      raise StageError(f"{flag_name}: '{pattern}' matches no file")
    files.extend(matched)
  if not files:
    raise StageError(f"{flag_name} is empty: give a file, glob or comma list")
  return files


def select_shard(items, num_shards, shard_index):
  """The shard_index-th of num_shards shards of a sorted list: every
  num_shards-th item from shard_index on. Stages III-b and IV split their
  input files among machines with it (--num_shards, --shard_index); an item
  keeps its place in the whole list (e.g. its file index) when it carries
  it."""
  return items[shard_index::num_shards]


def define_shard_flags():
  """Defines --num_shards and --shard_index and their rule, for the stages
  that split their input files among processes with select_shard. Called
  at the top of a script, beside its own flag definitions; the flags are the
  script's own (listed by its --helpshort)."""
  # The caller's name as absl names a defining module (the main one by its
  # path), so the flags are listed with the script's own.
  script = sys._getframe(1).f_globals["__name__"]  # pylint: disable=protected-access
  if script == "__main__":
    script = sys.argv[0]
  flags.DEFINE_integer("num_shards", 1,
                       "Split the input files among this many processes: "
                       "this one takes every num_shards-th file.",
                       module_name=script)
  flags.DEFINE_integer("shard_index", 0,
                       "Which of the --num_shards this process is (0-based).",
                       module_name=script)
  flags.register_multi_flags_validator(
      ["num_shards", "shard_index"],
      lambda f: f["num_shards"] >= 1 and 0 <= f["shard_index"] < f["num_shards"],
      "need --num_shards >= 1 and 0 <= --shard_index < --num_shards")


def temporary_path(final_path):
  """The name an output is written under until it is complete."""
  return f"{final_path}.tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_output(final_path):
  """Yields a temporary path; renames it to final_path only on success.

  On any exception the temporary file is removed, so a crash never leaves a
  half-written file under the final name and a rerun starts that file anew.
  Local paths go through os, others (gs://...) through tf.io.gfile.
  """
  if "://" in final_path:
    import tensorflow as tf
    exists, remove = tf.io.gfile.exists, tf.io.gfile.remove
    rename = functools.partial(tf.io.gfile.rename, overwrite=True)
  else:
    exists, remove, rename = os.path.exists, os.remove, os.replace
  tmp_path = temporary_path(final_path)
  try:
    yield tmp_path
    rename(tmp_path, final_path)
  except BaseException:
    if exists(tmp_path):
      remove(tmp_path)
    raise


def describe_os_error(error, path=None):
  """An OSError in words that name its file: `path`, else the error's own."""
  path = path or error.filename
  what = error.strerror or str(error)
  return f"{path}: {what}" if path else what


def remove_stale_temporaries(final_pattern):
  """Removes the temporaries that interrupted runs left for final_pattern.

  final_pattern is a final path or a glob of final paths (escape a literal
  path with glob.escape); their temporaries are named by temporary_path. A
  run killed (kill -9, a power cut) cannot remove its own, so every stage
  removes them when it starts again. Only one run at a time may write an
  output. Returns the paths removed.
  """
  removed = []
  for stale in sorted(glob.glob(final_pattern + ".tmp-*")):
    logging.info("Removing %s, left by an interrupted run", stale)
    os.remove(stale)
    removed.append(stale)
  return removed


def file_identity(path, digest=None):
  """What identifies a file's content: {name, size, mtime_ns, sha256}.

  name is the base name. With `digest`, a hashlib object that was fed every
  byte of the file while it was read, its hex digest is taken instead of
  reading the file again.
  """
  status = os.stat(path)
  if digest is None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(functools.partial(f.read, 1 << 20), b""):
        digest.update(block)
  return {"name": os.path.basename(path), "size": status.st_size,
          "mtime_ns": status.st_mtime_ns, "sha256": digest.hexdigest()}


def same_content(identity, other):
  """Whether two file_identity records are of the same bytes (name, size and
  hash; the modification time alone changes with a copy or a touch)."""
  return all(identity.get(key) == other.get(key)
             for key in ("name", "size", "sha256"))


def write_json(path, value):
  """Writes a JSON file under its final name only when complete."""
  with atomic_output(path) as tmp_path:
    with open(tmp_path, "w", encoding="utf-8") as f:
      json.dump(value, f, indent=1, sort_keys=True)
      f.write("\n")


def read_json(path):
  """The JSON value in path, or None when the file is missing or unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None



def _worker_loop(connection, function, initializer, initargs):
  """A worker process: runs function(job) for each job received, in turn.

  Replies (True, result) or (False, exception). The initializer runs before
  the first job, and an exception it raises is the reply to that job. Ends
  on None or when the parent is gone.
  """
  # Ctrl-C reaches the whole process group: the parent alone handles it (it
  # stops the workers), a worker's KeyboardInterrupt would print a traceback.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  initialized = False
  while True:
    try:
      job = connection.recv()
    except (EOFError, OSError):
      return
    if job is None:
      return
    try:
      if not initialized:
        if initializer is not None:
          initializer(*initargs)
        initialized = True
      reply = (True, function(job))
    except Exception as e:  # pylint: disable=broad-except
      reply = (False, e)
    try:
      connection.send(reply)
    except (EOFError, OSError):
      return
    except Exception as e:  # pylint: disable=broad-except
      # A result or exception that does not pickle.
      connection.send((False, StageError(f"{type(e).__name__}: {e}")))


def _death(exitcode):
  """How a process ended, in words, from its exit code."""
  if exitcode is not None and exitcode < 0:
    try:
      name = signal.Signals(-exitcode).name
    except ValueError:
      name = f"signal {-exitcode}"
    return f"was killed by {name}"
  return f"exited with status {exitcode}"


def map_in_workers(function, jobs, num_workers, name_of_job, context="spawn",
                   initializer=None, initargs=(), ordered=False):
  """Yields (job, function(job)) for every job, computed in worker processes.

  Unlike multiprocessing.Pool, a worker that dies (kill -9, the out-of-memory
  killer) does not leave the caller waiting forever: every worker holds one
  job at a time, so the one it held is known, and StageError names it. An
  exception raised by function is raised here, in the caller. Either way the
  other workers are stopped and nothing more is yielded.

  Args:
    function: a module-level function of one job (picklable under spawn).
    jobs: a list of picklable jobs.
    num_workers: the most worker processes (at least 1).
    name_of_job: job -> the words that name it in an error (e.g. its file).
    context: the multiprocessing start method, "spawn" or "fork".
    initializer, initargs: run once in each worker before its first job.
    ordered: yield in the order of `jobs` (at most 2 * num_workers results
      wait for an earlier one) instead of as they finish.
  """
  jobs = list(jobs)
  if not jobs:
    return
  mp = multiprocessing.get_context(context)
  workers = []  # [(process, connection)]
  for _ in range(max(1, min(num_workers, len(jobs)))):
    parent_end, child_end = mp.Pipe()
    process = mp.Process(target=_worker_loop, daemon=True,
                         args=(child_end, function, initializer, initargs))
    process.start()
    child_end.close()
    workers.append((process, parent_end))
  holding = {}  # worker index -> job index
  finished = {}  # job index -> result, waiting for an earlier one
  next_job = next_to_yield = 0
  ok = False
  try:
    while next_to_yield < len(jobs):
      for w in range(len(workers)):
        if (w not in holding and next_job < len(jobs) and
            (not ordered or next_job < next_to_yield + 2 * len(workers))):
          try:
            workers[w][1].send(jobs[next_job])
          except OSError:
            workers[w][0].join()
            raise StageError(
                f"a worker process {_death(workers[w][0].exitcode)} before "
                f"working on {name_of_job(jobs[next_job])}: rerun") from None
          holding[w] = next_job
          next_job += 1
      waiting = {}
      for w in holding:
        process, connection = workers[w]
        waiting[connection] = w
        waiting[process.sentinel] = w
      for ready in multiprocessing.connection.wait(list(waiting)):
        w = waiting[ready]
        if w not in holding:
          continue  # Its connection and its sentinel were both ready.
        process, connection = workers[w]
        reply = None
        try:
          if connection.poll():
            reply = connection.recv()
        except (EOFError, OSError):  # Its end of the pipe closed: it died.
          pass
        if reply is None:
          process.join()
          raise StageError(
              f"a worker process {_death(process.exitcode)} while working on "
              f"{name_of_job(jobs[holding[w]])}; nothing of it is under its "
              f"final name. Rerun to redo it (too little memory? try fewer "
              f"workers)")
        succeeded, value = reply
        index = holding.pop(w)
        if not succeeded:
          raise value
        finished[index] = value
      while True:
        if ordered:
          index = next_to_yield
        else:
          index = next(iter(finished), None)
        if index not in finished:
          break
        result = finished.pop(index)
        next_to_yield += 1
        yield jobs[index], result
    ok = True
  finally:
    for process, connection in workers:
      if ok:
        try:
          connection.send(None)
        except OSError:
          pass
      else:
        process.terminate()
    for process, connection in workers:
      process.join()
      connection.close()

class Progress:
  """Logs `done/total`, rate and time left at most every `interval` seconds.

  Counts may be fractional (e.g. MB of input). `update(..., note=...)` sets a
  text appended to the log lines, for counts besides the one timed (files,
  articles).
  """

  def __init__(self, what, total=None, unit="items", interval=30.0):
    self.what = what
    self.total = total
    self.unit = unit
    self.interval = interval
    self.done = 0
    self.note = ""
    self.start = time.monotonic()
    self._last_log = self.start

  def update(self, count=1, note=None):
    """Adds `count` finished items and logs when the interval has passed."""
    self.done += count
    if note is not None:
      self.note = note
    now = time.monotonic()
    if now - self._last_log >= self.interval:
      self._last_log = now
      self.log()

  def rate(self):
    return self.done / max(time.monotonic() - self.start, 1e-9)

  def log(self, final=False):
    rate = self.rate()
    elapsed = time.monotonic() - self.start
    note = f"; {self.note}" if self.note else ""
    if self.total:
      left = (self.total - self.done) / rate if rate > 0 else float("inf")
      logging.info("%s: %s/%s %s (%.1f%%), %.1f %s/s, elapsed %s, %s%s",
                   self.what, _count(self.done), _count(self.total),
                   self.unit, 100.0 * self.done / self.total, rate, self.unit,
                   format_seconds(elapsed),
                   "done" if final else f"time left {format_seconds(left)}",
                   note)
    else:
      logging.info("%s: %s %s, %.1f %s/s, elapsed %s%s", self.what,
                   _count(self.done), self.unit, rate, self.unit,
                   format_seconds(elapsed), note)


def _count(value):
  """A count as an integer, or with two decimals when it is fractional."""
  return f"{value:d}" if isinstance(value, int) else f"{value:.2f}"


def format_seconds(seconds):
  """Formats seconds as H:MM:SS."""
  if seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
