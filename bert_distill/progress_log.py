"""Progress lines: done/total, rate and time left, at most every interval.

Each update is also a safe point for a waiting Ctrl-C (interrupts.py)."""

import time

from absl import logging

from bert_distill import interrupts


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
    interrupts.check()
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
