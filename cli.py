"""What every stage script shares around its main(): one-line errors for bad
input, outputs that appear under their final name only when complete, input
globs, and progress logging with rate and time left.

TensorFlow is imported only where tf.io.gfile is needed for paths such as
gs:// (input globs, non-local outputs), so light stages such as split_text.py
and stage III-b's worker processes run without it."""

import contextlib
import functools
import os
import re
import sys
import time

from absl import app
from absl import flags
from absl import logging


class StageError(Exception):
  """A user's mistake or bad input: reported as one line, exit status 1."""


def run(main):
  """Runs `main(argv)` under absl.app with one-line errors for the user's mistakes.

  A bad flag (missing, malformed or failing a validator) and a StageError
  raised by main each print one line `error: <message>` on stderr and exit
  with status 1, instead of absl's usage banner or a traceback.
  """
  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)

  def guarded_main(argv):
    try:
      return main(argv)
    except StageError as e:
      logging.flush()
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)

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
  except BaseException:
    if exists(tmp_path):
      remove(tmp_path)
    raise
  rename(tmp_path, final_path)


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
