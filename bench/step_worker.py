"""Training-step workers: the steady-state half of the stage benches.

bench_classifier.py and bench_distill.py time each framework's training step
in a process of its own, started and warmed up (start-up is not timed), then
asked for its timed steps over a pipe, one line each way; each round is a
fresh worker (run_alone):

  worker -> parent   {"ready": true}                       once, warmed up
  parent -> worker   run N
  worker -> parent   {"examples_per_second": r, "loss": l}  after N steps

  serve(job, warmup_steps, batch_size)  the worker's side; job.run(steps)
                                        runs that many steps, returns the loss
  Worker(command, env)                  the parent's side
  run_alone(command, steps, env)        one round: a fresh worker's steps
  CyclingBatches                        a job that steps through a fixed list
                                        of batches (the PyTorch jobs)
"""

import json
import subprocess
import sys
import time


class CyclingBatches:
  """A job stepping through its batches in turn.

  A subclass sets self.batches (a list) and defines step(batch) -> loss.
  """

  count = 0  # steps run so far

  def run(self, steps):
    """Runs `steps` steps; returns the last step's loss."""
    loss = None
    for _ in range(steps):
      loss = self.step(self.batches[self.count % len(self.batches)])
      self.count += 1
    return loss


def serve(job, warmup_steps, batch_size):
  """Warms job up, then serves `run N` lines on stdin until stdin closes."""
  job.run(warmup_steps)  # tracing, compilation, allocation
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    steps = int(line.split()[1])
    started = time.perf_counter()
    loss = job.run(steps)
    seconds = time.perf_counter() - started
    print(json.dumps({"examples_per_second": steps * batch_size / seconds,
                      "loss": loss}), flush=True)


class Worker:
  """A serve() process, started and waited for until it is ready."""

  def __init__(self, command, env=None):
    self._process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env=env)
    assert json.loads(self._process.stdout.readline())["ready"]

  def run(self, steps):
    """Runs `steps` steps in the worker: {"examples_per_second", "loss"}."""
    self._process.stdin.write(f"run {steps}\n")
    self._process.stdin.flush()
    return json.loads(self._process.stdout.readline())

  def close(self):
    self._process.stdin.close()
    self._process.wait()


def run_alone(command, steps, env=None):
  """A fresh worker's `steps` timed steps ({"examples_per_second", "loss"};
  its start-up and warm-up steps untimed), the worker closed before this
  returns. A bench's rounds each take one, so that no idle worker holding
  a model sits beside another's timed steps: on the 2-core Zen 5 VM such a
  process made PyTorch's loops 12% slower (docs/performance.md, "Idle
  processes beside a timed one")."""
  worker = Worker(command, env=env)
  result = worker.run(steps)
  worker.close()
  return result
