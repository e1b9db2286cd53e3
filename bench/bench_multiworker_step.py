"""What a training step costs beyond its compute with several workers.

Each step of `distill.py` under MultiWorkerMirroredStrategy ends with
collectives across the workers (the gradients, the step's loss terms, the
stop vote of interrupts.py). With a tiny student (2 layers, hidden 32, the
tests' config) a step's compute is a few milliseconds, so the rate of two
workers on loopback ports against one worker shows that fixed cost per
step. Whole `distill.py --do_train` processes as a user runs them
(launch_multiworker.sh for two workers), the steps in three tf.function
calls; the rate is the log's steps/s of the last call (steady state: the
first call's trace and warm-up, start-up and the save excluded).

With --baseline=REV the same runs of that git revision (checked out into a
temporary worktree) alternate with this tree's, round by round:

  .venv/bin/python bench/bench_multiworker_step.py --baseline=2a67bfe

The first line names the CPU.
"""

import argparse
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
import stage_runs  # pylint: disable=g-import-not-at-top,wrong-import-position


def steps_per_second(tree, data, workers, folder, steps):
  """One run's steps/s (its log line): distill.py from `tree`, one process
  or two workers through launch_multiworker.sh (tests/stage_runs.py)."""
  command = [sys.executable, os.path.join(tree, "distill.py"),
             f"--bert_config_file={data}/student.json",
             f"--input_file={data}/train-*.tfrecord",
             f"--output_dir={folder}/out", "--max_seq_length=16",
             "--max_predictions_per_seq=4", "--truncation_factor=3",
             "--train_batch_size=4", "--learning_rate=1e-3",
             "--num_warmup_steps=2", "--do_train", "--use_xla=false",
             f"--num_train_steps={steps}",
             f"--iterations_per_loop={steps // 3}",
             f"--save_checkpoints_steps={steps}"]
  if workers == 1:
    log = stage_runs.run(command, timeout=1800).stderr
  elif workers == 2:
    folder.mkdir()
    stage_runs.launch_two_workers(folder, command)
    stage_runs.wait_for_workers(folder / "logs", timeout=1800)
    log = (folder / "logs" / "worker-0.log").read_text()
  else:
    raise SystemExit("--workers: 1 or 2")
  rates = re.findall(r"\(([\d.]+) steps/s\)", log)
  if not rates:
    raise SystemExit(f"{folder}: no steps/s line:\n{log[-2000:]}")
  return float(rates[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--baseline", help="a git revision to compare with")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--workers", default="1,2")
  args = parser.parse_args()
  print(flops.cpu_line(), flush=True)

  import distill_cases  # pylint: disable=g-import-not-at-top
  scratch = tempfile.mkdtemp(prefix="bench_multiworker_step.")
  data = pathlib.Path(scratch, "data")
  data.mkdir()
  for i in range(2):
    distill_cases.write_records(data / f"train-{i}.tfrecord", 24, seed=10 + i)
  distill_cases.write_config(data / "student.json")
  # Train FLOPs of one step (batch 4) of the tiny student: its GFLOP/s is
  # tiny next to the GEMM, which is the point: the step is all overhead.
  step_flops = 4 * flops.train_flops(distill_cases.CONFIG, 16, 4)
  gemm = flops.gemm_rates(("tensorflow",), size=2048)["tensorflow"]

  trees = {"this tree": ROOT}
  try:
    if args.baseline:
      worktree = os.path.join(scratch, "baseline")
      subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach",
                      "--quiet", worktree, args.baseline], check=True)
      trees[f"baseline {args.baseline}"] = worktree
    rates = {(name, w): [] for name in trees
             for w in map(int, args.workers.split(","))}
    for r in range(args.rounds):
      order = list(trees.items())
      if r % 2:
        order.reverse()  # alternate which goes first
      for workers in map(int, args.workers.split(",")):
        for name, tree in order:
          folder = pathlib.Path(scratch, f"run-{r}-{workers}-"
                                f"{name.split()[0]}")
          rate = steps_per_second(tree, data, workers, folder, args.steps)
          rates[(name, workers)].append(rate)
          print(f"round {r + 1}: {name}, {workers} worker(s): "
                f"{rate:.1f} steps/s", flush=True)
    print(f"\nthe last {args.steps // 3} of {args.steps} steps of the tests' "
          f"tiny student (batch 4 x 16), in one call; TensorFlow float32 "
          f"GEMM {gemm / 1e9:.0f} GFLOP/s (2048^3)")
    for (name, workers), values in rates.items():
      median = statistics.median(values)
      share = flops.percent_of_gemm(median * step_flops, gemm, name)
      print(f"  {name:>22}, {workers} worker(s): "
            f"{flops.spread(values, '{:.1f}')} steps/s = {1e3 / median:.2f} ms "
            f"a step = {median * step_flops / 1e9:.2f} GFLOP/s = {share:.2f}% "
            f"of GEMM")
    for name in trees:
      one, two = (rates.get((name, w)) for w in (1, 2))
      if one and two:
        extra = 1e3 / statistics.median(two) - 1e3 / statistics.median(one)
        print(f"  {name}: a second worker adds {extra:.2f} ms a step")
  finally:
    if args.baseline:
      subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force",
                      os.path.join(scratch, "baseline")], check=False)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  main()
