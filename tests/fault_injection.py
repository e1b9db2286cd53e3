"""Runs a stage script as `python script.py args...` would, with one real
fault injected into its process, for the reliability tests:

  python tests/fault_injection.py --kill_at_rename=model.ckpt-8.index \
      distill.py --output_dir=... ...

--kill_at_rename=TEXT: the process sends itself SIGKILL (kill -9: no
  cleanup, no flush) just before it renames a file onto a name containing
  TEXT, through tf.io.gfile.rename or os.replace. `model.ckpt-8.index` kills
  a save between its data and index renames; an output's final name kills a
  stage after its last byte is written, before the rename.
--file_size_limit=BYTES: RLIMIT_FSIZE, as `ulimit -f` sets it: a write past
  BYTES fails with EFBIG ("File too large"), as on a full disk. (Python
  ignores SIGXFSZ, so the write fails instead of killing the process.)

Only for tests. Works under preloaded_runner.py too (give this file as the
script and the stage script after the options).
"""

import os
import resource
import runpy
import signal
import sys


def _kill_at_rename(text):
  """Wraps the two rename functions the stages use so that a rename onto a
  name containing `text` kills the process instead."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def guarded(rename):
    def wrapper(source, destination, *args, **kwargs):
      if text in os.fspath(destination):
        os.kill(os.getpid(), signal.SIGKILL)
      return rename(source, destination, *args, **kwargs)
    return wrapper
  tf.io.gfile.rename = guarded(tf.io.gfile.rename)
  os.replace = guarded(os.replace)


def main():
  args = sys.argv[1:]
  while args and args[0].startswith("--") and "=" in args[0]:
    option, value = args.pop(0)[2:].split("=", 1)
    if option == "kill_at_rename":
      _kill_at_rename(value)
    elif option == "file_size_limit":
      resource.setrlimit(resource.RLIMIT_FSIZE, (int(value), int(value)))
    else:
      sys.exit(f"fault_injection.py: unknown option --{option}")
  sys.argv = args
  sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
  runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
  main()
