"""TensorFlow's import without its CUDA start-up lines on machines with no
GPU driver.

The `tensorflow` wheel (not `tensorflow-cpu`) looks for CUDA when it is
imported and when its devices are first listed. On a machine without an
NVIDIA driver that prints, before a stage's own log and whatever
TF_CPP_MIN_LOG_LEVEL says (absl writes everything to stderr until it is
initialised):

  WARNING: All log messages before absl::InitializeLog() is called are ...
  I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine ...
  E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: ...

The last one reads as an error and is not one. Lines written before absl
is initialised also ignore TF_CPP_MIN_LOG_LEVEL: on CPUs where oneDNN's
graph rewrites are on by default (AVX512-BF16, AMX) the import prints

  I0000 ... port.cc:153] oneDNN custom operations are on. You may see ...

at every level. `install()` makes the process's first `import tensorflow`
run with file descriptor 2 captured, list the physical devices (where
cuInit is called), and write back every captured line except those: the
CUDA lines (NOISE) and TensorFlow's info and warning lines (BELOW_LEVEL_2),
which the level in force, 2 or more, asks to hide. It does nothing where
TF_CPP_MIN_LOG_LEVEL is 0 or 1 (a user asking for TensorFlow's info or
warning lines gets these too), where an NVIDIA driver is loaded (the lines
then say something), or where TensorFlow is already imported. A module that never imports TensorFlow (the torch
benches' helpers, split_text.py) pays nothing.

Wherever TensorFlow is not yet imported, its first import also runs with a
SIGINT held (interrupts.held): a Ctrl-C in a stage's first seconds is one
line, not a traceback through TensorFlow's imports.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

from bert_distill import interrupts

# The lines the wheel prints when it finds no CUDA driver, and nothing else.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cuda_executor\.cc:\d+\] .*(kernel driver does not appear|CUDA_ERROR_NO_DEVICE)")
# TensorFlow's info (I) and warning (W) lines, in absl's prefix
# ("I0000 00:00:1796410782.945166   22935 port.cc:153] ...").
BELOW_LEVEL_2 = re.compile(r"^[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] ")
QUIET = re.compile(f"{NOISE.pattern}|{BELOW_LEVEL_2.pattern}")


@contextlib.contextmanager
def filtered_stderr(noise=NOISE):
  """Captures file descriptor 2 (C++ and Python writes alike) and writes
  back, on exit, every captured line that `noise` does not match."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().splitlines(keepends=True)
              if not noise.search(line.decode("utf-8", "replace"))]
      if kept:
        os.write(2, b"".join(kept))


class _TensorFlowImportFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` once, with a loader that imports it with a SIGINT
  held and, where `quiet`, its start-up lines filtered."""

  def __init__(self, quiet):
    self.quiet = quiet

  def find_spec(self, fullname, path=None, target=None):  # pylint: disable=unused-argument
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None:
      return spec
    exec_module = spec.loader.exec_module

    def guarded_exec_module(module):
      with interrupts.held():
        if not self.quiet:
          exec_module(module)
          return
        with filtered_stderr(QUIET):
          exec_module(module)
          module.config.list_physical_devices()  # where cuInit is called

    spec.loader.exec_module = guarded_exec_module
    return spec


def install(environ=os.environ):
  """Makes the first `import tensorflow` keep a Ctrl-C, and quiet where that
  is safe (see the module docstring). Call before TensorFlow is imported."""
  if ("tensorflow" in sys.modules or
      any(isinstance(f, _TensorFlowImportFinder) for f in sys.meta_path)):
    return
  quiet = not (environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1") or
               os.path.exists("/proc/driver/nvidia"))
  sys.meta_path.insert(0, _TensorFlowImportFinder(quiet))
