"""Ctrl-C and SIGTERM in a stage that runs TensorFlow, taken where it is safe.

Python raises KeyboardInterrupt at whichever bytecode the main thread runs
when SIGINT arrives. In a TensorFlow stage that is often Python code that
TensorFlow's C++ calls back (a tensor's finalizer, a conversion of an op's
results), which does not expect an exception there: measured on stage IV
(1000 records, SIGINT at its first progress line), one run in 25 died of a
segmentation fault inside `iterator_get_next`, and two in ~16 earlier runs
lost the interrupt and labelled every record, exit status 0.

So the TensorFlow stages take a first Ctrl-C, or a SIGTERM (a cluster's
scheduler ending or preempting a job), as a request (take_at_safe_points,
installed by cli.run): the handler only notes it, and the stage raises
KeyboardInterrupt from its own code at the next safe point (check): a
progress line, an evaluation batch, a training loop's return, the end of
main. The interrupt is then never lost.

A Python handler runs only when the main thread runs Python, not while it
waits in a training loop of hundreds of steps inside one tf.function. A
watcher thread, woken by the signal itself (signal.set_wakeup_fd), prints
the notice at once and runs the callbacks registered with on_request: the
training loop's (training.make_loop) sets a variable its graph reads at the
end of every step, so training stops after the current step, saves a checkpoint
there and exits. A second Ctrl-C stops at once: KeyboardInterrupt where the
main thread runs Python, else, after a few seconds, the process exits as a
kill would (what it leaves, the rerun removes).

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

# What a stage stopped by Ctrl-C says (after `error: `).
MESSAGE = "interrupted; rerun to resume"

# The number of the first SIGINT or SIGTERM taken as a request; None before.
_received = None
_sigints_in_main = 0  # seen by the handler in the main thread
_callbacks = []  # run by the watcher thread on the first request
_taken = []  # the signals take_at_safe_points handles
# How long a second Ctrl-C waits for the main thread to raise it before
# ending the process.
_SECOND_CTRL_C_GRACE_S = 3.0


def take_at_safe_points():
  """Makes a first SIGINT or SIGTERM a request that check() raises (and
  on_request's callbacks see at once), where Python's defaults are in force
  (an inherited SIG_IGN stays); call from the main thread."""
  global _received, _sigints_in_main
  _received, _sigints_in_main = None, 0
  taken = [signum for signum, default in (
      (signal.SIGINT, signal.default_int_handler),
      (signal.SIGTERM, signal.SIG_DFL)) if signal.getsignal(signum) is default]
  _taken[:] = taken
  if not taken:
    return
  read_end, write_end = os.pipe()
  os.set_blocking(write_end, False)
  signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
  for signum in taken:
    signal.signal(signum, _on_signal)
  threading.Thread(target=_watch, args=(read_end,), name="signal watcher",
                   daemon=True).start()


def take_back():
  """Installs take_at_safe_points' handlers again, after code that replaced
  them below Python: MultiWorkerMirroredStrategy's coordination service
  starts TensorFlow's preemption notifier, whose C++ handler takes SIGTERM
  (and then nothing stopped a worker)."""
  for signum in _taken:
    signal.signal(signum, _on_signal)


def _on_signal(signum, frame):
  """The handler in the main thread: notes the request for check()."""
  del frame  # unused
  global _received, _sigints_in_main
  if _received is None:
    _received = signum
  if signum == signal.SIGINT:
    _sigints_in_main += 1
    if _sigints_in_main > 1:
      raise KeyboardInterrupt


def _watch(read_end):
  """The watcher thread: the notice and the callbacks at the first request;
  at a second Ctrl-C, ends the process if the main thread has not."""
  global _received
  first, sigints = True, 0
  while True:
    for signum in os.read(read_end, 64):
      if signum not in (signal.SIGINT, signal.SIGTERM):
        continue
      if first:
        first = False
        if _received is None:
          _received = signum
        _say(_notice(signum))
        for callback in list(_callbacks):
          callback()
      if signum == signal.SIGINT:
        sigints += 1
        if sigints == 2:
          threading.Timer(_SECOND_CTRL_C_GRACE_S, _exit_at_once).start()


def _notice(signum):
  if signum == signal.SIGINT:
    return ("\nCtrl-C: stopping after the current batch or step (Ctrl-C "
            "again to stop at once)")
  return "SIGTERM: stopping after the current batch or step"


def _exit_at_once():
  _say(f"error: {message()} (stopped at once: the rerun removes what this "
       f"run left)")
  os._exit(exit_status())  # pylint: disable=protected-access


def _say(line):
  # Not logging or print: the main thread may be inside a write to stderr.
  # Nor an exception: stderr may be a pipe whose reader the same Ctrl-C has
  # ended (run_pipeline.sh's tee).
  try:
    os.write(2, (line + "\n").encode())
  except OSError:
    pass


def on_request(callback):
  """Runs callback() (on another thread) at the first request, or now if
  one came already. A training loop stops its graph with it."""
  _callbacks.append(callback)
  if _received is not None:
    callback()


def requested():
  """Whether a Ctrl-C or SIGTERM waits for the next safe point."""
  return _received is not None


def check():
  """Raises KeyboardInterrupt if a request waits (a safe point)."""
  if _received is not None:
    raise KeyboardInterrupt


def message():
  """What a stopped stage says after `error: `."""
  if _received == signal.SIGTERM:
    return "terminated (SIGTERM); rerun to resume"
  return MESSAGE


def exit_status():
  """128 + the signal, as a shell reports a process it ended: 130 for
  Ctrl-C (and for a worker that stopped with another), 143 for SIGTERM."""
  return 128 + (_received or signal.SIGINT)


@contextlib.contextmanager
def held():
  """Runs the block with a SIGINT held, and raises it at the block's end as
  KeyboardInterrupt: for code where it would be a traceback through many
  frames that say nothing to a user (TensorFlow's import).

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
      _say(f"error: {MESSAGE}")
    else:
      previous(kind, value, traceback)
  sys.excepthook = excepthook
