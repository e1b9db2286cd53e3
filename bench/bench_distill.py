"""Stage V (distill.py) next to HuggingFace transformers + PyTorch.

The job: a 6-layer, hidden-768 BERT student (BERT-Base's vocabulary), batch
32, seq 128, 20 masked positions, teacher top k = 10, on the same 160
teacher-label records; one step is the forward pass, the soft distillation
loss on the gathered top-k plus the next-sentence loss, the backward pass
and an AdamW update with gradients clipped to norm 1.0 (dropout 0.1 on both
sides, float32). Two measurements:

  (a) whole processes, one after the other, alternating which goes first,
      each for --short_steps and --long_steps steps from nothing to a saved
      checkpoint:
        ours    `python distill.py --do_train ...` as a user runs it;
        PyTorch `.venv-bench/bin/python bench/torch_distill.py ...`
                (transformers' BertForPreTraining, the MLM head at the
                masked positions only, torch.optim.AdamW,
                torch.set_num_threads(--threads)).
      Reported: wall and CPU seconds (wait4) and peak RSS of each process,
      the load average before it, and the steady-state rate of each side,
      (long - short) steps x batch / (wall(long) - wall(short)) in the same
      round, which cancels start-up and the final checkpoint.
  (b) steady state in worker processes (distill.py's own make_dataset +
      make_train_loop + AdamWeightDecay; PyTorch's step from
      bench/torch_distill.py), in rounds of alternating order; each job's
      round is a fresh worker, warmed up, that ends before the next starts
      (no idle model-holding process beside a timed one).

Every rate is shown with its matmul GFLOP/s (bench/flops.py: 3x the
forward's matmul FLOPs per example) and as a share of the machine's float32
GEMM rate measured in the same run (bf16 runs: the better of the bf16 and
float32 GEMMs): TensorFlow, NumPy and PyTorch 3072^3 matmuls (bench/flops.py
GemmProbe) sampled before and after the whole processes (the probe is
stopped while they run) and after every steady-state round, the best sample
of the run taken as the machine's rate, so a busy moment never inflates a
share; a share above 100% raises.

  .venv-bench/bin/python bench/bench_distill.py       # ~15 min on 2 free cores
  .venv/bin/python bench/bench_distill.py --jobs=tf_graph,tf_graph_bf16
      # stage V's bf16 speed-up in steady state, without PyTorch

The first line names the CPU and its bf16/AMX flags.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
import step_worker  # pylint: disable=g-import-not-at-top,wrong-import-position

STUDENT = dict(flops.BERT_BASE, num_hidden_layers=6)
NUM_RECORDS = 160


def synthetic_batch(rng, batch, seq, preds, k, vocab):
  """Random but well-formed teacher-label features, as numpy arrays."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  features = {
      "input_ids": rng.integers(min(1000, vocab // 2), vocab, (batch, seq)),
      "input_mask": np.ones((batch, seq), np.int64),
      "segment_ids": (np.arange(seq) >= seq // 2).astype(np.int64)[None].repeat(
          batch, 0),
      "masked_lm_positions": np.sort(np.stack(
          [rng.choice(np.arange(1, seq), preds, replace=False)
           for _ in range(batch)]), axis=1),
      "masked_lm_ids": rng.integers(min(1000, vocab // 2), vocab, (batch, preds)),
      "masked_lm_weights": np.ones((batch, preds), np.float32),
      "next_sentence_labels": rng.integers(0, 2, (batch, 1)),
  }
  probs = rng.dirichlet(np.ones(k + 5), (batch, preds))[..., :k]
  features["truncated_masked_lm_probs"] = -np.sort(-probs, -1).astype(
      np.float32).reshape(batch, -1)
  features["top_k_indices"] = rng.integers(0, vocab, (batch, preds * k))
  return features


def setup(args):
  """In a TensorFlow subprocess: the records and the student's config."""
  sys.path.insert(0, ROOT)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bert_distill import example_codec  # pylint: disable=g-import-not-at-top
  from bert_distill import tfrecord  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  rng = np.random.default_rng(0)
  path = os.path.join(args.tmp_dir, "teacher_labels.tfrecord")
  with tfrecord.TFRecordWriter(path) as writer:
    for _ in range(NUM_RECORDS // args.batch_size):
      batch = synthetic_batch(rng, args.batch_size, args.seq_length,
                              args.predictions, args.k, STUDENT["vocab_size"])
      for i in range(args.batch_size):
        writer.write(example_codec.serialize_example(
            {name: value[i] for name, value in batch.items()}))
  with open(os.path.join(args.tmp_dir, "student_config.json"), "w") as f:
    json.dump(dict(STUDENT, num_hidden_layers=args.layers), f)


class TensorFlowJob:
  """distill.py's loop on the bench's records, in this process."""

  def __init__(self, args, jit, precision="float32"):
    sys.path.insert(0, ROOT)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from bert_distill import distill_input  # pylint: disable=g-import-not-at-top
    from bert_distill import distill_training  # pylint: disable=g-import-not-at-top
    from bert_distill import label_settings  # pylint: disable=g-import-not-at-top
    from bert_distill import losses  # pylint: disable=g-import-not-at-top
    from bert_distill import model_config  # pylint: disable=g-import-not-at-top
    import optimization  # pylint: disable=g-import-not-at-top
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    self.tf = tf
    config = model_config.read_config(
        os.path.join(args.tmp_dir, "student_config.json"))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    # distill.py's own builder: the model in `precision`, its optimizer and
    # loss scale (float16 only).
    model, optimizer, loss_scale = distill_training.build_student(
        strategy, config, precision, 1,
        optimization.LinearWarmupLinearDecay(1e-4, 10000, 100))
    settings = label_settings.LabelSettings(label_settings.TOP_K, args.k)
    dataset = distill_input.distributed_records_dataset(
        strategy, [os.path.join(args.tmp_dir, "teacher_labels.tfrecord")],
        settings, args.batch_size, args.seq_length, args.predictions,
        is_training=True, seed=1)
    self.iterator = iter(dataset)
    self.loop = distill_training.make_train_loop(
        strategy, model, optimizer, args.batch_size, losses.LossConfig(),
        use_xla=jit, loss_scale=loss_scale)

  def run(self, steps):
    steps_run, terms, _ = self.loop(self.iterator, self.tf.constant(steps))
    assert int(steps_run) == steps, terms
    return float(terms["loss"])


class TorchJob(step_worker.CyclingBatches):
  """bench/torch_distill.py's step on the same records, in this process."""

  def __init__(self, args, precision="float32"):
    import torch  # pylint: disable=g-import-not-at-top
    import torch_distill  # pylint: disable=g-import-not-at-top
    import torch_peer  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.tmp_dir, "student_config.json")) as f:
      self.step = torch_distill.DistillStep(json.load(f),
                                            precision=precision)
    examples = torch_peer.read_examples(
        os.path.join(args.tmp_dir, "teacher_labels.tfrecord"))
    self.batches = [torch_distill.to_batch(examples[i:i + args.batch_size],
                                           args.predictions)
                    for i in range(0, len(examples), args.batch_size)]


def job_is_bf16(job):
  """Whether a --jobs name (torch_bf16, tf_graph_bf16, ...) runs in bf16."""
  return job.endswith("_bf16")


def worker(args):
  """Writes the bench's inputs, or serves `run N` lines on stdin
  (step_worker.serve)."""
  if args.worker == "setup":
    return setup(args)
  if args.worker.startswith("torch"):
    job = TorchJob(args, precision=("bfloat16" if job_is_bf16(args.worker)
                                    else "float32"))
  else:
    job = TensorFlowJob(args, jit=args.worker.startswith("tf_xla"),
                        precision=("mixed_bfloat16" if job_is_bf16(args.worker)
                                   else "float32"))
  step_worker.serve(job, args.warmup_steps, args.batch_size)


def whole_processes(args, env, probe, example_flops):
  """Part (a): returns {side: {steps: [Child]}} and prints each run."""
  config = os.path.join(args.tmp_dir, "student_config.json")
  labels = os.path.join(args.tmp_dir, "teacher_labels.tfrecord")

  def command(side, steps, output_dir):
    if side == "ours":
      return [sys.executable, os.path.join(ROOT, "distill.py"),
              f"--bert_config_file={config}", f"--input_file={labels}",
              f"--output_dir={output_dir}", "--do_train",
              f"--num_train_steps={steps}", "--num_warmup_steps=1",
              f"--train_batch_size={args.batch_size}",
              f"--max_seq_length={args.seq_length}",
              f"--max_predictions_per_seq={args.predictions}",
              f"--truncation_factor={args.k}",
              f"--precision={args.precision}"]
    return [os.path.join(args.bench_venv, "bin", "python"),
            os.path.join(BENCH, "torch_distill.py"),
            f"--bert_config_file={config}", f"--input_file={labels}",
            f"--output_dir={output_dir}", f"--num_train_steps={steps}",
            f"--train_batch_size={args.batch_size}",
            f"--max_predictions_per_seq={args.predictions}",
            f"--threads={args.threads}",
            "--precision=" + ("bfloat16" if flops.is_bfloat16(args.precision)
                              else "float32")]

  print("\n(a) whole processes; commands (N steps):\n  ours:    "
        + " ".join(command("ours", "N", "OUT")[1:]) + "\n  pytorch: "
        + " ".join(command("pytorch", "N", "OUT")[1:]), flush=True)
  runs = {side: {n: [] for n in (args.short_steps, args.long_steps)}
          for side in ("ours", "pytorch")}
  for r in range(args.rounds):
    order = ["ours", "pytorch"] if r % 2 == 0 else ["pytorch", "ours"]
    for steps in (args.short_steps, args.long_steps):
      for side in order:
        output_dir = tempfile.mkdtemp(dir=args.tmp_dir)
        child = flops.Child(command(side, steps, output_dir), env=env)
        runs[side][steps].append(child)
        print(f"  round {r + 1} {side:8s} {steps:2d} steps: {child.wall:6.1f} "
              f"s wall, {child.cpu:6.1f} CPU s, {child.peak_rss_mb:5.0f} MB "
              f"peak RSS (load before {child.load:.1f})", flush=True)

  short, long_ = args.short_steps, args.long_steps
  gemm = probe.rate_of(args.precision)
  steady = {}
  for side in runs:
    steady[side] = [
        (long_ - short) * args.batch_size / (b.wall - a.wall)
        for a, b in zip(runs[side][short], runs[side][long_])]
  print(f"  {short}-step runs: ours {flops.spread([c.wall for c in runs['ours'][short]], '{:.1f}')}"
        f" s, pytorch {flops.spread([c.wall for c in runs['pytorch'][short]], '{:.1f}')} s; "
        f"ours / pytorch time {flops.spread([o.wall / t.wall for o, t in zip(runs['ours'][short], runs['pytorch'][short])])}x")
  print(f"  {long_}-step runs: ours {flops.spread([c.wall for c in runs['ours'][long_]], '{:.1f}')}"
        f" s, pytorch {flops.spread([c.wall for c in runs['pytorch'][long_]], '{:.1f}')} s")
  for side in runs:
    rates = steady[side]
    if min(rates) <= 0:
      print(f"  {side}: the long run was not slower than the short one "
            f"(load changed); no steady-state figure")
      continue
    print(f"  {side:8s} steady state from ({long_} - {short})-step runs: "
          + flops.describe_rate(statistics.median(rates), "examples/s",
                                example_flops, gemm, f"{side} whole")
          + f" (rounds: {', '.join(f'{x:.2f}' for x in rates)})")
  torch_steps = [json.loads(c.stdout.strip().splitlines()[-1])["step_seconds"]
                 for c in runs["pytorch"][long_]]
  torch_inside = [(len(s) - 1) * args.batch_size / sum(s[1:])
                  for s in torch_steps]
  print("  pytorch  its own step times (steps after the first): "
        + flops.describe_rate(statistics.median(torch_inside), "examples/s",
                              example_flops, gemm, "pytorch inside"))
  if min(steady["ours"] + steady["pytorch"]) > 0:
    ratios = [o / t for o, t in zip(steady["ours"], steady["pytorch"])]
    print(f"  steady-state ratio ours/pytorch: {flops.spread(ratios)}x", flush=True)
  return runs


def steady_workers(args, env, probe, example_flops):
  """Part (b): rounds in alternating order, each job's round a worker of
  its own (step_worker.run_alone)."""
  jobs = args.jobs.split(",")

  def worker_command(job):
    python = (os.path.join(args.bench_venv, "bin", "python")
              if job.startswith("torch") else sys.executable)
    return [python, os.path.abspath(__file__), f"--worker={job}",
            f"--tmp_dir={args.tmp_dir}"] + [
                f"--{n}={getattr(args, n)}" for n in
                ("batch_size", "seq_length", "predictions", "k",
                 "warmup_steps", "threads", "layers")]

  print(f"\n(b) steady state, {args.steady_rounds} rounds x "
        f"{args.steps_per_round} steps, each in a fresh worker after "
        f"{args.warmup_steps} warm-up steps:", flush=True)
  results = {job: [] for job in jobs}
  for round_ in range(args.steady_rounds):
    order = jobs if round_ % 2 == 0 else jobs[::-1]
    line = []
    for job in order:
      result = step_worker.run_alone(worker_command(job),
                                     args.steps_per_round, env)
      results[job].append(result["examples_per_second"])
      line.append(f"{job} {result['examples_per_second']:.2f} ex/s = "
                  f"{result['examples_per_second'] * example_flops / 1e9:.0f}"
                  f" GFLOP/s")
      probe.sample()
    print(f"  round {round_ + 1} (load {flops.load_average():.1f}): "
          + "; ".join(line), flush=True)
  print(f"  GEMM: {probe.describe()}")
  for job in jobs:
    # A bf16 job is held against the better of the bf16 and float32 GEMMs.
    gemm = probe.rate_of("bfloat16" if job_is_bf16(job) else "float32")
    print(f"  {job:13s} median " + flops.describe_rate(
        statistics.median(results[job]), "examples/s", example_flops, gemm,
        f"{job} worker") + f", rounds {flops.spread(results[job])}")
    flops.percent_of_gemm(max(results[job]) * example_flops, gemm,
                          f"{job} worker, best round")
  for job in jobs:
    peer = "torch_bf16" if job_is_bf16(job) else "torch"
    if not job.startswith("torch") and peer in jobs:
      ratios = [a / b for a, b in zip(results[job], results[peer])]
      print(f"  {job} / {peer}: {flops.spread(ratios)}x", flush=True)
    if job_is_bf16(job) and job[:-len("_bf16")] in jobs:
      ratios = [a / b for a, b in zip(results[job],
                                      results[job[:-len("_bf16")]])]
      print(f"  {job} / {job[:-len('_bf16')]} (bf16 speed-up): "
            f"{flops.spread(ratios)}x", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seq_length", type=int, default=128)
  parser.add_argument("--predictions", type=int, default=20)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--layers", type=int, default=6,
                      help="Student layers (fewer for a quick check).")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--rounds", type=int, default=2,
                      help="Whole-process rounds (each: short and long runs "
                      "of both sides).")
  parser.add_argument("--short_steps", type=int, default=3)
  parser.add_argument("--long_steps", type=int, default=9)
  parser.add_argument("--steady_rounds", type=int, default=3,
                      help="Worker rounds (0: skip part (b)).")
  parser.add_argument("--steps_per_round", type=int, default=2)
  parser.add_argument("--warmup_steps", type=int, default=2)
  parser.add_argument("--jobs", default="torch,tf_graph",
                      help="Workers of part (b): torch, tf_graph, tf_xla, "
                      "each also in bf16 (torch_bf16: autocast; tf_graph_bf16, "
                      "tf_xla_bf16: --precision=mixed_bfloat16).")
  parser.add_argument("--precision", default="float32",
                      choices=["float32", "mixed_bfloat16"],
                      help="Part (a): distill.py's --precision (PyTorch: "
                      "autocast to bfloat16 for mixed_bfloat16).")
  parser.add_argument("--bench_venv", default=os.path.join(ROOT, ".venv-bench"))
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--tmp_dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)

  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
  with tempfile.TemporaryDirectory() as tmp_dir:
    args.tmp_dir = tmp_dir
    student = dict(STUDENT, num_hidden_layers=args.layers)
    example_flops = flops.train_flops(student, args.seq_length,
                                      args.predictions)
    print(flops.cpu_line())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, threads {args.threads}, load "
          f"{flops.load_average():.1f}; student {args.layers} x 768, batch "
          f"{args.batch_size}, seq {args.seq_length}, P {args.predictions}, "
          f"k {args.k}, {NUM_RECORDS} records; {example_flops / 1e9:.1f} "
          f"GFLOP (matmuls) per training example", flush=True)
    setup_child = flops.Child([sys.executable, os.path.abspath(__file__),
                         "--worker=setup", f"--tmp_dir={tmp_dir}",
                         f"--threads={args.threads}",
                         f"--batch_size={args.batch_size}",
                         f"--seq_length={args.seq_length}",
                         f"--predictions={args.predictions}",
                         f"--k={args.k}", f"--layers={args.layers}"], env=env)
    del setup_child
    torch_python = os.path.join(args.bench_venv, "bin", "python")
    has_torch = os.path.exists(torch_python)
    if not has_torch:
      print(f"no {args.bench_venv}: part (a) and the torch workers skipped",
            flush=True)
      args.rounds = 0
      args.jobs = ",".join(j for j in args.jobs.split(",")
                           if not j.startswith("torch"))
    probe = flops.GemmProbe(torch_python if has_torch else sys.executable,
                            args.threads)
    probe.sample()
    if args.rounds:
      with probe.suspended():
        whole_processes(args, env, probe, example_flops)
    if args.steady_rounds:
      steady_workers(args, env, probe, example_flops)
    print(f"\nGEMM 3072^3, float32 and bfloat16, the best sample of the run "
          f"(the machine's rates used above): {probe.describe()}")
    probe.close()


if __name__ == "__main__":
  main()
