"""Runs a script many times, each run its own process, sharing one import of
TensorFlow: this process imports it once, then forks one child per run, and
each child runs the script as `python script.py args...` would (runpy as
__main__, its own stdout/stderr files, its own exit status).

Only for tests, where a dozen command-line runs would otherwise each pay the
seconds TensorFlow takes to import. No TensorFlow op runs before the forks.

  python tests/preloaded_runner.py < jobs.json > exit_codes.json
  jobs: [{"argv": [script, args...], "stdout": path, "stderr": path}, ...]
"""

import json
import os
import runpy
import sys
import traceback


def _run_child(job):
  """In the forked child: runs the script with the job's argv; never returns."""
  for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
  sys.argv = list(job["argv"])
  sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
  code = 0
  try:
    runpy.run_path(sys.argv[0], run_name="__main__")
  except SystemExit as e:
    if isinstance(e.code, int):
      code = e.code
    elif e.code is not None:
      print(e.code, file=sys.stderr)
      code = 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()  # what `python script.py` would show
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def main():
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  jobs = json.load(sys.stdin)
  running = {}
  for index, job in enumerate(jobs):
    pid = os.fork()
    if pid == 0:
      _run_child(job)
    running[pid] = index
  codes = [None] * len(jobs)
  while running:
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
  json.dump(codes, sys.stdout)


if __name__ == "__main__":
  main()
