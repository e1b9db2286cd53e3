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

Before main, every stage spends about 2 s in `import tensorflow`, where a
Ctrl-C printed a traceback of 20 to 40 lines through the imports. `held()`
keeps a SIGINT for the end of a block, and one that no one catches ends the
process with the one line of cli.run; the first `import tensorflow` runs in
it (tensorflow_startup).

Both leave an inherited SIG_IGN alone, as Python does: a stage started in
the background by a script (`&` without job control) ignores Ctrl-C.
"""

import contextlib
import os
import signal
import sys
import threading

# What an interrupted stage says (after `error: `), and its exit status
# (128 + SIGINT, as a shell reports it).
MESSAGE = "interrupted; rerun to resume"
EXIT_STATUS = 130

_requested = False

_NOTICE = (b"\nCtrl-C: stopping at the next batch or step (Ctrl-C again to "
           b"stop at once)\n")


def take_at_safe_points():
  """Makes a first SIGINT a request that check() raises, where Python's own
  handler is in force; call from the main thread (the one that may install
  signal handlers)."""
  global _requested
  _requested = False
  if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
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


@contextlib.contextmanager
def held():
  """Runs the block with a SIGINT held, and raises it at the block's end as
  KeyboardInterrupt: for code that would lose it (TensorFlow's import).

  Only where Python's own handler is in force, in the main thread; a
  KeyboardInterrupt so raised that no one catches ends the process with
  one line `error: interrupted; rerun to resume` instead of a traceback
  through the imports, and the shell's status 130 as ever.
  """
  if (threading.current_thread() is not threading.main_thread() or
      signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield
    return
  arrived = []
  signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  if arrived:
    _report_an_uncaught_interrupt_in_one_line()
    raise KeyboardInterrupt


def _report_an_uncaught_interrupt_in_one_line():
  previous = sys.excepthook

  def excepthook(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
      try:
        os.write(2, f"error: {MESSAGE}\n".encode())
      except OSError:
        pass
    else:
      previous(kind, value, traceback)
  sys.excepthook = excepthook
