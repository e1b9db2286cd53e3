"""Stage IV (extract_teacher_labels_truncated.py) next to HuggingFace PyTorch.

A BERT-Base teacher (12 layers, hidden 768, vocab 30522, random weights in
Google's names) labels the same pretraining records (L = 128, P = 20, k = 10,
batch 32) two ways, each in two measurements:

  (a) whole processes, one after the other, alternating which goes first:
      ours    `python extract_teacher_labels_truncated.py ...` as a user runs
              it (start-up, XLA compiles where --use_xla, records in,
              records out), once per --precisions value (default float32
              and mixed_bfloat16: the bf16 speed-up in the same run);
      PyTorch `.venv-bench/bin/python bench/torch_teacher_labels.py ...`:
              transformers' BertForPreTraining (eval, no_grad, MLM head at
              the masked positions only, softmax + top-k), full-length
              batches with the attention mask, the same records in and
              teacher-label records out, torch.set_num_threads(--threads).
      Reported: wall seconds of each process, its CPU seconds (user + sys,
      from wait4) and peak RSS, the 1-minute load average before each run.
      Nothing else of the bench's holds a model or TensorFlow's GEMM
      buffers meanwhile (the teacher is written by a process of its own,
      the GEMM probe is stopped): idle, such a process added 0.8-2 s to a
      9 s stage IV run on the 2-core Zen 5 VM.
  (b) steady state: our stage's pipeline (write_teacher_labels: tf.data read,
      length-trimmed forward, writer thread) and the same PyTorch code
      (bench/torch_teacher_worker.py), in rounds of alternating order; each
      side's round is a process of its own that loads the teacher, runs one
      warm-up pass and one timed pass, and ends before the other side's
      starts.

Every rate is shown with its matmul GFLOP/s (bench/flops.py; ours counts the
trimmed lengths it actually ran, PyTorch the full length) and as a share of
this machine's GEMM rate in the side's precision (bfloat16: the better of
the bfloat16 and float32 GEMMs), measured in the same run: TensorFlow,
NumPy and PyTorch 3072^3 matmuls (bench/flops.py GemmProbe) sampled before
and after the whole processes and after every steady-state round, the best
sample of the run taken as the machine's rate
(a busy moment never inflates a share). A share above 100% raises. Two length mixes: every record
full length ("full"), and the original project's sample records' lengths
("original", tests/data/original/original_sample_records.tfrecord).

  .venv-bench/bin/python bench/bench_teacher_labels.py   # ~20 min on 2 free cores
  .venv/bin/python bench/bench_teacher_labels.py --torch=false  # ours only

The first line names the CPU and its bf16/AMX flags.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from bert_distill import checkpoints  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import distill_training  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import distribution  # pylint: disable=g-import-not-at-top,wrong-import-position
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
import modeling  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import records  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import example_codec  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import teacher_labels  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args():
  """The bench's own options (argparse: the stage's absl flags stay unparsed)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_examples", type=int, default=160,
                      help="Records labelled per run.")
  parser.add_argument("--rounds", type=int, default=2,
                      help="Whole-process runs of each side per length mix.")
  parser.add_argument("--steady_rounds", type=int, default=2,
                      help="Steady-state rounds of each side (0: skip).")
  parser.add_argument("--batch_size", type=int, default=32,
                      help="Batch size of both sides.")
  parser.add_argument("--k", type=int, default=10, help="truncation_factor.")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="Threads of both sides (TensorFlow intra-op, "
                      "torch.set_num_threads).")
  parser.add_argument("--lengths", default="full,original",
                      help="Length mixes: full and/or original.")
  parser.add_argument("--bench_venv", default=os.path.join(ROOT, ".venv-bench"),
                      help="Virtualenv with torch and transformers.")
  parser.add_argument("--use_xla", default="auto",
                      choices=["auto", "true", "false"],
                      help="Ours: the stage's --use_xla (auto: on with GPUs, "
                      "off on CPUs).")
  parser.add_argument("--precisions", default="float32,mixed_bfloat16",
                      help="Ours: the stage's --precision values to run, "
                      "comma-separated; speed-ups are over the first. "
                      "PyTorch runs each with --precision float32 or "
                      "bfloat16 (torch.autocast).")
  parser.add_argument("--torch", default="auto",
                      choices=["auto", "true", "false"],
                      help="Run the PyTorch peers (auto: when --bench_venv "
                      "exists).")
  parser.add_argument("--sort_batches", type=int, default=8,
                      help="Ours: batches sorted by length together.")
  parser.add_argument("--layers", type=int, default=12,
                      help="Teacher layers (fewer for a quick check).")
  parser.add_argument("--work_dir", help="Scratch directory (default: temp).")
  args = parser.parse_args()
  args.precisions = args.precisions.split(",")
  torch_python = os.path.join(args.bench_venv, "bin", "python")
  args.torch = (args.torch == "true" or
                (args.torch == "auto" and os.path.exists(torch_python)))
  return args


MAX_SEQ_LENGTH, MAX_PREDICTIONS, LENGTH_MULTIPLE = 128, 20, 16
ORIGINAL_RECORDS = os.path.join(ROOT, "tests", "data", "original",
                                "original_sample_records.tfrecord")


def original_lengths():
  """Real lengths (sum of input_mask) of the original's sample records."""
  return [int(np.sum(example_codec.decode_example(r.numpy())[records.INPUT_MASK]))
          for r in tf.data.TFRecordDataset(ORIGINAL_RECORDS)]


def make_examples(count, lengths, vocab_size, seed=0):
  """Pretraining examples as Google's tool shapes them: [CLS] a [SEP] b [SEP],
  15% of tokens masked (at most P). Returns {name: [count, ...] array}."""
  rng = np.random.default_rng(seed)
  arrays = {name: [] for name in records.PRETRAINING_FEATURES}
  for _ in range(count):
    length = int(rng.choice(lengths))
    ids = np.zeros(MAX_SEQ_LENGTH, np.int64)
    ids[:length] = rng.integers(min(1000, vocab_size // 2), vocab_size, length)
    ids[0], ids[length - 1] = 101, 102
    mask = (np.arange(MAX_SEQ_LENGTH) < length).astype(np.int64)
    segments = ((np.arange(MAX_SEQ_LENGTH) >= length // 2) & (mask == 1))
    n_pred = min(MAX_PREDICTIONS, max(1, round(0.15 * length)))
    positions = np.zeros(MAX_PREDICTIONS, np.int64)
    positions[:n_pred] = np.sort(rng.choice(np.arange(1, length - 1), n_pred,
                                            replace=False))
    masked_ids = np.zeros(MAX_PREDICTIONS, np.int64)
    masked_ids[:n_pred] = ids[positions[:n_pred]]
    ids[positions[:n_pred]] = 103
    values = (ids, mask, segments.astype(np.int64), positions, masked_ids,
              (np.arange(MAX_PREDICTIONS) < n_pred).astype(np.float32),
              np.array([rng.integers(0, 2)], np.int64))
    for name, value in zip(records.PRETRAINING_FEATURES, values):
      arrays[name].append(value)
  return {name: np.stack(v) for name, v in arrays.items()}


def write_inputs(work_dir, name, examples):
  """The examples as a TFRecord file (both sides) and an .npz (the worker)."""
  records_path = os.path.join(work_dir, f"{name}.tfrecord")
  count = len(examples[records.INPUT_IDS])
  with tf.io.TFRecordWriter(records_path) as writer:
    for i in range(count):
      writer.write(example_codec.serialize_example(
          {feature: v[i] for feature, v in examples.items()}))
  npz_path = os.path.join(work_dir, f"{name}.npz")
  np.savez(npz_path, **{feature: examples[feature] for feature in (
      records.INPUT_IDS, records.INPUT_MASK, records.SEGMENT_IDS,
      records.MASKED_LM_POSITIONS)})
  return records_path, npz_path


def write_teacher(work_dir, config_dict):
  """Random teacher weights: a Google-named checkpoint and an .npz copy."""
  config_path = os.path.join(work_dir, "bert_config.json")
  with open(config_path, "w") as f:
    json.dump(config_dict, f)
  model = modeling.BertPretrainingModel(
      modeling.BertConfig.from_dict(config_dict), seed=0)
  variables = model.variables_by_name()
  prefix = checkpoints.save_checkpoint(variables, os.path.join(work_dir, "teacher"),
                                    step=0)
  npz_path = os.path.join(work_dir, "weights.npz")
  np.savez(npz_path, **{n: v.numpy() for n, v in variables.items()})
  return config_path, prefix, npz_path


def executed_flops(examples, config, batch_size, sort_batches, trimmed):
  """Matmul FLOPs one labelling pass runs.

  trimmed (ours): windows of sort_batches batches sorted by real extent,
  each batch cut to its extent rounded up to LENGTH_MULTIPLE and padded to
  batch_size rows, as teacher_labels.label_window does.
  Otherwise (PyTorch): every batch at full length, the last one partial.
  """
  count = len(examples[records.INPUT_IDS])
  if not trimmed:
    return count * flops.forward_flops(config, MAX_SEQ_LENGTH,
                                       MAX_PREDICTIONS)
  extents = teacher_labels.real_extents(examples[records.INPUT_MASK],
                                        examples[records.MASKED_LM_POSITIONS])
  total, window = 0, batch_size * sort_batches
  for begin in range(0, count, window):
    ordered = np.sort(extents[begin:begin + window], kind="stable")
    for start in range(0, len(ordered), batch_size):
      longest = int(ordered[start:start + batch_size].max())
      length = min(MAX_SEQ_LENGTH, -(-longest // LENGTH_MULTIPLE) *
                   LENGTH_MULTIPLE)
      total += batch_size * flops.forward_flops(config, length,
                                                MAX_PREDICTIONS)
  return total


class TorchWorker:
  """bench/torch_teacher_worker.py, one JSON answer per command."""

  def __init__(self, venv, weights, inputs, config, batch_size, k, threads,
               precision="float32"):
    script = os.path.join(BENCH, "torch_teacher_worker.py")
    self._process = subprocess.Popen(
        [os.path.join(venv, "bin", "python"), script, weights,
         inputs, config, str(batch_size), str(k), str(threads), precision],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self._answer()  # {"ready": true} once the model is loaded

  def _answer(self):
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError("the PyTorch worker died; see its stderr above")
    return json.loads(line)

  def ask(self, command):
    self._process.stdin.write(command + "\n")
    self._process.stdin.flush()
    return self._answer()

  def close(self):
    answer = self.ask("quit")
    self._process.wait()
    return answer


def run_ours(labeler, records_path, output_path, config, args):
  """One pass of the stage's pipeline in this process: (sequences, seconds)."""
  if os.path.exists(output_path):
    os.remove(output_path)
  spec = records.pretraining_feature_spec(MAX_SEQ_LENGTH, MAX_PREDICTIONS)
  start = time.perf_counter()
  count = teacher_labels.write_teacher_labels(
      labeler, [records_path], output_path, spec, args.k, args.batch_size,
      LENGTH_MULTIPLE, args.sort_batches,
      records.value_bounds(config.vocab_size, config.type_vocab_size,
                           MAX_SEQ_LENGTH),
      progress_interval=1e9)
  return count, time.perf_counter() - start


def compare_outputs(ours_path, theirs_path):
  """(max relative prob difference, share of equal top-k ids) of two files."""
  def load(path):
    examples = [example_codec.decode_example(r.numpy())
                for r in tf.data.TFRecordDataset(path)]
    return (np.stack([e[records.TRUNCATED_PROBS] for e in examples]),
            np.stack([e[records.TOP_K_INDICES] for e in examples]),
            examples)
  our_probs, our_ids, ours = load(ours_path)
  their_probs, their_ids, theirs = load(theirs_path)
  for a, b in zip(ours, theirs):  # the input features pass through unchanged
    for name in records.PRETRAINING_FEATURES:
      assert np.array_equal(a[name], b[name]), name
  relative = np.abs(our_probs - their_probs) / their_probs
  return float(relative.max()), float(np.mean(our_ids == their_ids))


def sides_of(args):
  """The runs compared: ours in each precision, then PyTorch's (autocast for
  bfloat16) where .venv-bench exists. [(name, precision)]"""
  sides = [(f"ours {precision}", precision) for precision in args.precisions]
  if args.torch:
    sides += [(f"pytorch {precision}", precision)
              for precision in args.precisions]
  return sides


def torch_precision(precision):
  """torch_peer.py's --precision for one of ours."""
  return "bfloat16" if flops.is_bfloat16(precision) else "float32"


def whole_processes(args, mix, paths, teacher, config_dict, probe, examples):
  """Part (a) for one length mix: alternating whole-process runs."""
  records_path, _ = paths
  config_path, checkpoint, weights_npz = teacher
  torch_python = os.path.join(args.bench_venv, "bin", "python")
  outputs, commands = {}, {}
  for side, precision in sides_of(args):
    outputs[side] = os.path.join(args.work_dir,
                                 f"{mix}_{side.replace(' ', '_')}.tfrecord")
    if side.startswith("ours"):
      commands[side] = [
          sys.executable,
          os.path.join(ROOT, "extract_teacher_labels_truncated.py"),
          f"--bert_config_file={config_path}",
          f"--init_checkpoint={checkpoint}",
          f"--input_file={records_path}", f"--output_file={outputs[side]}",
          f"--truncation_factor={args.k}", f"--batch_size={args.batch_size}",
          f"--sort_batches={args.sort_batches}",
          f"--use_xla={args.use_xla}", f"--precision={precision}"]
    else:
      commands[side] = [
          torch_python, os.path.join(BENCH, "torch_teacher_labels.py"),
          f"--weights={weights_npz}", f"--bert_config_file={config_path}",
          f"--input_file={records_path}", f"--output_file={outputs[side]}",
          f"--batch_size={args.batch_size}",
          f"--truncation_factor={args.k}", f"--threads={args.threads}",
          f"--precision={torch_precision(precision)}"]
  print(f"\n[{mix}] whole processes; commands:" + "".join(
      f"\n  {side:22s} " + " ".join(command[1:])
      for side, command in commands.items()), flush=True)
  runs = {side: [] for side in commands}
  for r in range(args.rounds):
    order = list(commands) if r % 2 == 0 else list(reversed(commands))
    for side in order:
      if os.path.exists(outputs[side]):
        os.remove(outputs[side])  # each run writes a fresh output
      child = flops.Child(commands[side])
      runs[side].append(child)
      print(f"  round {r + 1} {side:22s}: {child.wall:6.1f} s wall, "
            f"{child.cpu:6.1f} CPU s, {child.peak_rss_mb:5.0f} MB peak RSS "
            f"(load before {child.load:.1f})", flush=True)
  walls = {side: [c.wall for c in runs[side]] for side in runs}
  n = args.num_examples
  print(f"  [{mix}] {n} records, wall seconds: " + "; ".join(
      f"{side} {flops.spread(walls[side], '{:.1f}')}" for side in walls))
  result = {"walls": walls}

  def ratio(slow, fast, what):
    """Wall and CPU-time ratios slow/fast, round by round."""
    ratios = [s.wall / f.wall for s, f in zip(runs[slow], runs[fast])]
    cpu = [s.cpu / f.cpu for s, f in zip(runs[slow], runs[fast])]
    print(f"  [{mix}] {what}: wall {flops.spread(ratios)}x, CPU time "
          f"{flops.spread(cpu)}x")
    result[what] = statistics.median(ratios)

  full_flops = flops.forward_flops(config_dict, MAX_SEQ_LENGTH, MAX_PREDICTIONS)
  for precision in args.precisions:
    if args.torch:
      ours, theirs = f"ours {precision}", f"pytorch {precision}"
      ratio(theirs, ours, f"pytorch/ours {precision}")
      torch_rate = statistics.median(json.loads(
          c.stdout.strip().splitlines()[-1])["steady_sequences_per_second"]
                                     for c in runs[theirs])
      print(f"  [{mix}] PyTorch {precision}'s own loop inside its process: "
            + flops.describe_rate(torch_rate, "seq/s", full_flops,
                                  probe.rate_of(precision),
                                  f"pytorch loop {precision}"))
      max_diff, ids_equal = compare_outputs(outputs[ours], outputs[theirs])
      print(f"  [{mix}] {ours} and {theirs} agree: max relative prob "
            f"difference {max_diff:.1e}, top-k ids equal {ids_equal:.2%}",
            flush=True)
  reference = f"ours {args.precisions[0]}"
  for precision in args.precisions[1:]:
    ratio(reference, f"ours {precision}",
          f"ours {precision} speed-up over {args.precisions[0]}")
    max_diff, ids_equal = compare_outputs(outputs[reference],
                                          outputs[f"ours {precision}"])
    print(f"  [{mix}] ours {precision} against {reference} (random "
          f"weights: flat distributions, so top-k ranks swap easily; "
          f"bench_label_fidelity.py measures a trained teacher): max "
          f"relative prob difference {max_diff:.1e}, top-k ids equal "
          f"{ids_equal:.2%}", flush=True)
  del examples
  return result


def ours_steady_pass(args, records_path, output_path, config_dict,
                     checkpoint, precision):
  """In a fresh process: load the teacher, one warm-up pass, one timed pass
  of the stage's pipeline; returns (sequences, seconds)."""
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  config = modeling.BertConfig.from_dict(config_dict)
  strategy = distribution.local_strategy()
  labeler = teacher_labels.TeacherLabeler(
      checkpoints.load_teacher(strategy, config, checkpoint, precision),
      args.k, strategy, use_xla=distill_training.use_xla(args.use_xla))
  run_ours(labeler, records_path, output_path, config, args)  # compiles, warms up
  return run_ours(labeler, records_path, output_path, config, args)


def torch_steady_pass(args, inputs_npz, weights_npz, config_path, precision):
  """A fresh PyTorch worker: one warm-up pass, one timed pass; returns
  (sequences, seconds)."""
  worker = TorchWorker(args.bench_venv, weights_npz, inputs_npz, config_path,
                       args.batch_size, args.k, args.threads,
                       torch_precision(precision))
  worker.ask("run")
  answer = worker.ask("run")
  worker.close()
  return answer["sequences"], answer["seconds"]


def steady_state(args, mix, paths, teacher, config_dict, probe, examples):
  """Part (b) for one length mix: rounds in alternating order, each side's
  round a fresh process (the teacher loaded, a warm-up pass, a timed pass)
  with nothing else of the bench's alive: an idle process holding a model
  beside a timed one slowed PyTorch's loop by 12% (17.8 against 20.6
  seq/s, three runs each, the Zen 5 VM), so the sides no longer wait side
  by side."""
  records_path, inputs_npz = paths
  config_path, checkpoint, weights_npz = teacher
  output_path = os.path.join(args.work_dir, f"{mix}_steady.tfrecord")
  ours_flops = executed_flops(examples, config_dict, args.batch_size,
                              args.sort_batches, trimmed=True)
  torch_flops = executed_flops(examples, config_dict, args.batch_size,
                               args.sort_batches, trimmed=False)
  sides = dict(sides_of(args))
  rates = {side: [] for side in sides}
  flop_rates = {side: [] for side in sides}
  print(f"\n[{mix}] steady state (a fresh process per side and round, timed "
        f"after a warm-up pass; executed GFLOP per pass: ours "
        f"{ours_flops / 1e9:.0f} (trimmed), pytorch {torch_flops / 1e9:.0f} "
        f"(full length))", flush=True)
  for r in range(args.steady_rounds):
    order = list(sides) if r % 2 == 0 else list(reversed(sides))
    line = []
    for side in order:
      if side.startswith("ours"):
        with multiprocessing.get_context("spawn").Pool(1) as pool:
          count, seconds = pool.apply(ours_steady_pass, (
              args, records_path, output_path, config_dict, checkpoint,
              sides[side]))
        work = ours_flops
      else:
        count, seconds = torch_steady_pass(args, inputs_npz, weights_npz,
                                           config_path, sides[side])
        work = torch_flops
      rates[side].append(count / seconds)
      flop_rates[side].append(work / seconds)
      line.append(f"{side} {count / seconds:.2f} seq/s = "
                  f"{work / seconds / 1e9:.0f} GFLOP/s")
      probe.sample()
    print(f"  round {r + 1} (load {flops.load_average():.1f}): "
          + "; ".join(line), flush=True)
  for side in rates:
    gemm = probe.rate_of(sides[side])
    best = flops.percent_of_gemm(max(flop_rates[side]), gemm,
                                 f"{side} {mix} best round")
    median = flops.percent_of_gemm(statistics.median(flop_rates[side]),
                                   gemm, f"{side} {mix}")
    print(f"  [{mix}] {side:22s} {flops.spread(rates[side])} seq/s, median "
          f"{statistics.median(flop_rates[side]) / 1e9:.0f} GFLOP/s = "
          f"{median:.0f}% of the {sides[side]} GEMM ceiling "
          f"{gemm / 1e9:.0f} GFLOP/s (best round {best:.0f}%)")
  result = {}
  pairs = [(f"pytorch {p}", f"ours {p}", f"ours/pytorch {p}")
           for p in args.precisions if args.torch]
  pairs += [(f"ours {args.precisions[0]}", f"ours {p}",
             f"ours {p} speed-up over {args.precisions[0]}")
            for p in args.precisions[1:]]
  for slow, fast, what in pairs:
    ratios = [f / s for s, f in zip(rates[slow], rates[fast])]
    result[what] = statistics.median(ratios)
    print(f"  [{mix}] steady-state {what}: {flops.spread(ratios)}x",
          flush=True)
  return result


def main():
  args = parse_args()
  logging.set_verbosity(logging.WARNING)
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_teacher_")
  os.makedirs(args.work_dir, exist_ok=True)
  config_dict = dict(flops.BERT_BASE, num_hidden_layers=args.layers)
  print(flops.cpu_line())
  print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, threads {args.threads}, load "
        f"{flops.load_average():.1f}; teacher {args.layers} layers x 768, "
        f"L={MAX_SEQ_LENGTH} P={MAX_PREDICTIONS} k={args.k} batch "
        f"{args.batch_size}, {args.num_examples} records, "
        f"{flops.forward_flops(config_dict, 128, 20) / 1e9:.1f} GFLOP per "
        f"full-length sequence", flush=True)
  # In a process of its own: a bench process holding a built BERT-Base made
  # the whole stage IV processes beside it 1.2-1.6 s slower (their page
  # faults cost twice the system time), as a user's runs are not.
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    teacher = pool.apply(write_teacher, (args.work_dir, config_dict))
  mixes = {}
  for mix in args.lengths.split(","):
    lengths = original_lengths() if mix == "original" else [MAX_SEQ_LENGTH]
    examples = make_examples(args.num_examples, lengths,
                             config_dict["vocab_size"])
    real = examples[records.INPUT_MASK].sum(axis=1)
    print(f"[{mix}] real lengths: mean {real.mean():.1f}, "
          f"{np.mean(real == MAX_SEQ_LENGTH):.0%} full", flush=True)
    mixes[mix] = (examples, write_inputs(args.work_dir, mix, examples))

  probe = flops.GemmProbe(
      os.path.join(args.bench_venv, "bin", "python") if args.torch
      else sys.executable, args.threads)
  if not args.torch:
    print(f"PyTorch peers skipped: no {args.bench_venv}", flush=True)
  probe.sample()

  summary = {}
  for mix, (examples, paths) in mixes.items():
    with probe.suspended():
      summary[mix] = {"whole": whole_processes(args, mix, paths, teacher,
                                               config_dict, probe, examples)}
    if args.steady_rounds:
      summary[mix]["steady"] = steady_state(args, mix, paths, teacher,
                                            config_dict, probe, examples)
  print(f"\nGEMM 3072^3, float32 and bfloat16, the best sample of the run "
        f"(the machine's rates used above): {probe.describe()}")
  probe.close()
  print("summary (medians; > 1 means the second named is faster):")
  for mix, parts in summary.items():
    for part, ratios in parts.items():
      for what, value in ratios.items():
        if what != "walls":
          print(f"  {mix:8s} {part:6s} {what}: {value:.2f}x")


if __name__ == "__main__":
  main()
