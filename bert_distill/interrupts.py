"""Ctrl-C in a stage that runs TensorFlow, taken where it is safe.

Python raises KeyboardInterrupt at whichever bytecode the main thread runs
when SIGINT arrives. In a TensorFlow stage that is often Python code that
TensorFlow's C++ calls back (a tensor's finalizer, a conversion of an op's
results), which does not expect an exception there: measured on stage IV
(1000 records, SIGINT at its first progress line), one run in 25 died of a
segmentation fault inside `iterator_get_next`, and two in ~16 earlier runs
lost the interrupt and labelled every record, exit status 0.

So the TensorFlow stages take a first Ctrl-C as a request (take_at_safe_points,
installed by cli.run): the handler only notes it, and the stage raises
KeyboardInterrupt from its own code at the next safe point (check): a
progress line, a training loop's return, the commit of an output
(file_io.atomic_output), the end of main. The interrupt is then never lost,
and no output appears under its final name after it. A second Ctrl-C
raises at once, as Python would, for a stage that is slow to reach one.
"""

import os
import signal

_requested = False

_NOTICE = (b"\nCtrl-C: stopping at the next batch or step (Ctrl-C again to "
           b"stop at once)\n")


def take_at_safe_points():
  """Makes a first SIGINT a request that check() raises; call from the main
  thread (the one that may install signal handlers)."""
  global _requested
  _requested = False
  signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum, frame):
  del signum, frame  # unused
  global _requested
  if _requested:
    raise KeyboardInterrupt
  _requested = True
  # Not logging or print: the handler may run inside a write to stderr.
  # Nor an exception: stderr may be a pipe whose reader Ctrl-C has ended
  # (run_pipeline.sh's tee).
  try:
    os.write(2, _NOTICE)
  except OSError:
    pass


def requested():
  """Whether a Ctrl-C waits for the next safe point."""
  return _requested


def check():
  """Raises KeyboardInterrupt if a Ctrl-C waits (a safe point)."""
  if _requested:
    raise KeyboardInterrupt
