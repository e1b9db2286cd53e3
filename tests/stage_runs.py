"""How the tests run the stages as a user does, and check a one-line error.

One home for what several test files need: the environment of a stage run,
a run in the background with its log, many runs sharing one TensorFlow import
(preloaded_runner.py), a run killed with -9 after a chosen checkpoint, two
workers launched through launch_multiworker.sh, and the check of a one-line
error. No flags, no fixtures, no TensorFlow import: plain functions the test
files call. (Checkpoints are compared with bert_reference.)
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bert_distill import checkpoints
from conftest import ROOT

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
PRELOADED_RUNNER = os.path.join(ROOT, "tests", "preloaded_runner.py")
LAUNCHER = os.path.join(ROOT, "launch_multiworker.sh")


def replace_flag(argv, name, value):
  """argv with the value of --name=... replaced by `value`."""
  return [f"--{name}={value}" if a.startswith(f"--{name}=") else a
          for a in argv]


def run(argv, env=None, timeout=300):
  """Runs argv to its end in the repository root; its CompletedProcess."""
  return subprocess.run(argv, env={**ENV, **(env or {})}, cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def start(argv, log_path, env=None):
  """Starts argv in the background, its stderr into log_path; the Popen."""
  return subprocess.Popen(argv, env={**ENV, **(env or {})}, cwd=ROOT,
                          stdout=subprocess.DEVNULL,
                          stderr=open(log_path, "w"))


def assert_finished(process, log_path, timeout=300):
  """Waits for a process from start(); fails with its log unless it exits 0."""
  assert process.wait(timeout=timeout) == 0, (
      open(log_path).read()[-3000:])


def run_all(jobs, log_dir, timeout=600):
  """Runs {name: [script, args...]} all at once, each its own process forked
  after one shared TensorFlow import (preloaded_runner.py), stdout and stderr
  into log_dir/name.out and .err. Returns {name: CompletedProcess} with the
  exit status and stderr; a process killed by a signal has status -signal."""
  os.makedirs(log_dir, exist_ok=True)
  names = sorted(jobs)
  specs = [{"argv": [str(a) for a in jobs[n]],
            "stdout": os.path.join(log_dir, n + ".out"),
            "stderr": os.path.join(log_dir, n + ".err")} for n in names]
  runner = subprocess.run([sys.executable, PRELOADED_RUNNER],
                          input=json.dumps(specs), capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=timeout)
  assert runner.returncode == 0, runner.stderr[-3000:]
  codes = json.loads(runner.stdout)
  return {n: subprocess.CompletedProcess(spec["argv"], code, None,
                                        open(spec["stderr"]).read())
          for n, code, spec in zip(names, codes, specs)}


def error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(result, *texts):
  """A run (a CompletedProcess) ended as bad input must: a non-zero exit
  status, no traceback, one `error:` line, holding each of `texts`. Returns
  the line."""
  assert result.returncode != 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = error_lines(result.stderr)
  assert len(errors) == 1, result.stderr[-3000:]
  for text in texts:
    assert str(text) in errors[0], errors[0]
  return errors[0]


def kill_after_checkpoint(process, output_dir, step, sig=signal.SIGKILL):
  """Kills `process` with -9 (or sends it `sig`) once output_dir holds the
  checkpoint of `step` or a later one. Returns the step of the newest
  checkpoint it left, or None where the process ended before."""
  return signal_after_checkpoints([(process, output_dir, step, sig)])[0]


def signal_after_checkpoints(jobs):
  """kill_after_checkpoint for several runs at once: jobs are (process,
  output_dir, step, sig), watched together so that none runs on unwatched
  while another is waited for. Returns the steps, in the jobs' order."""
  results = [None] * len(jobs)
  waiting = set(range(len(jobs)))
  while waiting:
    for i in sorted(waiting):
      process, output_dir, step, sig = jobs[i]
      if process.poll() is not None:
        waiting.discard(i)
        continue
      latest = checkpoints.latest_checkpoint(str(output_dir))
      if latest and checkpoints.checkpoint_step(latest) >= step:
        process.send_signal(sig)
        process.wait()
        results[i] = checkpoints.checkpoint_step(
            checkpoints.latest_checkpoint(str(output_dir)))
        waiting.discard(i)
    time.sleep(0.01)
  return results


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch_two_workers(folder, argv):
  """Launches argv as two workers on loopback ports with
  launch_multiworker.sh (a hosts file with a comment line, an ssh stand-in
  that runs the remote command here), logs and pid files in folder/logs.
  Returns what the launcher printed; wait_for_workers waits for the end."""
  hosts = folder / "hosts"
  hosts.write_text(f"127.0.0.1:{free_port()}\n# a comment\n"
                   f"127.0.0.1:{free_port()}\n")
  fake_ssh = folder / "ssh"  # runs the remote command here
  fake_ssh.write_text('#!/bin/bash\nshift\nexec bash -c "$1"\n')
  fake_ssh.chmod(0o755)
  launched = subprocess.run(
      [LAUNCHER, str(hosts), *argv,
       "--distribution_strategy=multi_worker_mirrored"],
      env={**ENV, "SSH": str(fake_ssh), "LOG_DIR": str(folder / "logs")},
      cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert launched.returncode == 0, launched.stderr
  return launched.stdout


def wait_for_workers(log_dir, count=2, timeout=300):
  """Waits for the workers named in log_dir/worker-<i>.pid (written by the
  launcher) to end; kills them and fails after `timeout` seconds."""
  deadline = time.monotonic() + timeout
  pids = []
  for i in range(count):
    path = log_dir / f"worker-{i}.pid"
    while not path.exists() or not path.read_text().strip():
      assert time.monotonic() < deadline, f"no {path}"
      time.sleep(0.05)
    pids.append(int(path.read_text()))
  for pid in pids:
    while os.path.exists(f"/proc/{pid}") and (
        open(f"/proc/{pid}/stat").read().split()[2] != "Z"):
      if time.monotonic() > deadline:
        for p in pids:
          os.kill(p, signal.SIGKILL)
        pytest.fail("the workers did not finish")
      time.sleep(0.1)
