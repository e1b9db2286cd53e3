"""What every stage script shares around its main(): one-line errors for bad
input (StageError, run, error_line), input globs and their shards.

The other shared pieces have a module each: file_io.py (outputs under their
final name only when complete, stale temporaries, file identity),
worker_pool.py (a process pool that names the job a dead worker held),
progress_log.py (progress lines with rate and time left), shard_flags.py
(--num_shards, --shard_index), interrupts.py (Ctrl-C at safe points in the
TensorFlow stages). Nothing here imports TensorFlow at module
level, so light stages such as split_text.py and stage III-b's worker
processes run without it."""

import atexit
import gc
import re
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from bert_distill import file_io
from bert_distill import interrupts


class StageError(Exception):
  """A user's mistake or bad input: reported as one line, exit status 1."""


def run(main, stop_at_safe_points=False):
  """Runs `main(argv)` under absl.app with one-line errors for the user's mistakes.

  A bad flag (missing, malformed or failing a validator) and a StageError
  raised by main each print one line `error: <message>` on stderr and exit
  with status 1, instead of absl's usage banner or a traceback; so does an
  OSError that names a file (a path that is a directory, a file without
  read permission, ...) and TensorFlow's not-found and permission errors,
  wherever in a stage they surface: they are the user's files, not bugs. Ctrl-C
  (SIGINT) prints `error: interrupted; rerun to resume` and exits 130: the
  KeyboardInterrupt unwinds through every `atomic_output`, which removes
  its temporary, so the rerun finds what a killed run leaves, or less.

  stop_at_safe_points: for the stages that run TensorFlow, where a
  KeyboardInterrupt raised inside its calls can crash the process or be
  lost (interrupts.py): a first Ctrl-C, or a SIGTERM, is raised at the
  stage's next safe point, at the latest when main returns; a SIGTERM ends
  as `error: terminated (SIGTERM); rerun to resume`, exit status 143.
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
      if stop_at_safe_points:
        interrupts.take_at_safe_points()
      status = main(argv)
      interrupts.check()
      return status
    except StageError as e:
      logging.flush()
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    except OSError as e:
      if e.filename is None:
        raise
      logging.flush()
      print(f"error: {file_io.describe_os_error(e)}", file=sys.stderr)
      sys.exit(1)
    except Exception as e:  # pylint: disable=broad-except
      # Only TensorFlow raises its errors, so a stage that never imported
      # it has none to name.
      tf = sys.modules.get("tensorflow")
      if tf is None or not isinstance(e, (tf.errors.NotFoundError,
                                          tf.errors.PermissionDeniedError)):
        raise
      logging.flush()
      print(f"error: {error_line(e)}", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt:
      # A second Ctrl-C while cleaning up would print a traceback.
      signal.signal(signal.SIGINT, signal.SIG_IGN)
      logging.flush()
      print(f"error: {interrupts.message()}", file=sys.stderr)
      sys.exit(interrupts.exit_status())

  # Python's exit ends with garbage collections over every object still
  # alive, and TensorFlow's import alone leaves about 270,000: 0.4-0.5 s
  # of each stage's run (measured on stage IV), spent on objects that die
  # with the process. A stage has closed and renamed its outputs before
  # main returns, so nothing waits on their finalizers; frozen, the objects
  # are left out of those collections.
  atexit.register(gc.freeze)
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
