"""Where a stage's step goes, op by op: stage IV's labelling step, stage
V's training step or fine-tuning's (stage G's) training step.

--stage=IV runs the step extract_teacher_labels_truncated.py runs
(TeacherLabeler: BERT with its MLM head at the masked positions, float32
softmax over the vocabulary, top-k) on random weights and one full-length
batch; --stage=V runs distill.py's training loop (forward, top-k soft loss,
backward, AdamWeightDecay) on bench_distill.py's student and records (6 x
768, top-10 labels); --stage=G runs run_classifier.py's training loop on
bench_classifier.py's BERT-Base shape (or its demo student with
--num_hidden_layers=3). It traces --passes steps with TensorFlow's profiler and
prints, per op type, the milliseconds per batch its kernels took on
TensorFlow's compute threads, grouped into the matmuls (what bfloat16 units
speed up) and the rest (layer norms, GELUs, casts, transposes, softmaxes,
top-k, the optimizer, ...), then with --by_node the costliest nodes of the
rest. Next to it: the step's wall time, its rate as GFLOP/s (bench/flops.py's
matmul FLOPs) and as a share of the GEMM rate in the same dtype measured in
this process. Op times are summed over the compute threads, so with ops
running side by side their total can exceed the wall time
(--inter_op_threads=1 makes them add up to it).

  .venv/bin/python bench/profile_step.py --precision=mixed_bfloat16
  .venv/bin/python bench/profile_step.py --stage=V --precision=float32 \
      --inter_op_threads=1 --by_node=15
  .venv/bin/python bench/profile_step.py --stage=G --batch_size=8 \
      --inter_op_threads=1

The first line names the CPU and its bf16/AMX flags.
"""

import collections
import glob
import os
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import modeling
from bert_distill import distribution
from bert_distill import label_settings
from bert_distill import teacher_labels
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_classifier  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_distill  # pylint: disable=g-import-not-at-top,wrong-import-position
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum("stage", "IV", ["IV", "V", "G"],
                  "IV: the teacher's labelling step; V: the student's "
                  "training step; G: run_classifier.py's fine-tuning step "
                  "(bench_classifier.py's BERT-Base shape, or its demo "
                  "student with --num_hidden_layers=3).")
flags.DEFINE_enum("precision", "mixed_bfloat16", list(modeling.COMPUTE_DTYPES),
                  "The model's compute dtype (the stage's --precision).")
flags.DEFINE_integer("num_hidden_layers", None,
                     "Layers; default 12 for stage IV (BERT-Base), 6 for V.")
flags.DEFINE_integer("batch_size", 32, "Sequences per step.")
flags.DEFINE_integer("seq_length", 128, "Tokens per sequence (all real).")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Masked positions where the MLM head runs.")
flags.DEFINE_integer("truncation_factor", 10, "k of the top-k labels.")
flags.DEFINE_integer("passes", 3, "Traced (and timed) steps, after 2 "
                     "warm-up steps (4 for stage G).")
flags.DEFINE_integer("top", 25, "Op types listed.")
flags.DEFINE_integer("by_node", 0, "Also list this many of the costliest "
                     "nodes that are not matmuls.")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow's inter-op threads "
                     "(0: its default).")
flags.register_validator("passes", lambda v: v > 0, "--passes must be > 0")

# Op types whose kernels are matrix multiplications (oneDNN's fused
# matmul + bias (+ GELU), plain and batched matmuls).
MATMUL_OPS = ("_MklNativeFusedMatMul", "_MklMatMul", "_MklBatchMatMulV2",
              "_MklNativeBatchMatMulV2", "MatMul", "BatchMatMulV2",
              "_FusedMatMul")


# An XLA-compiled function's run on the compute thread (its kernels, fused
# elementwise loops, run inside it), listed as this op type.
XLA_KERNEL_EVENT = "CpuExecutable::ExecuteAsyncOnStream"
XLA_KERNEL = "XLA kernel"


def kernel_times(trace_dir):
  """{(node name, op type): [picoseconds, kernel calls]} summed over
  TensorFlow's compute threads in the profiler trace under trace_dir."""
  # The profiler's XSpace proto ships inside TensorFlow; no plugin needed.
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                    recursive=True)
  if not paths:
    raise SystemExit(f"error: the profiler wrote no trace under {trace_dir}")
  space = xplane_pb2.XSpace()
  with open(paths[0], "rb") as f:
    space.ParseFromString(f.read())
  totals = collections.defaultdict(lambda: [0, 0])
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_Compute"):
        continue
      for event in line.events:
        # Kernel events are named "<node name>:<op type>"; the executor's
        # own (C++ scopes such as "ExecutorState::Process") are not kernels.
        name = plane.event_metadata[event.metadata_id].name
        if name == XLA_KERNEL_EVENT:
          key = ("(XLA-compiled functions)", XLA_KERNEL)
        elif ":" not in name or "::" in name:
          continue
        else:
          key = tuple(name.rsplit(":", 1))
        totals[key][0] += event.duration_ps
        totals[key][1] += 1
  return totals


def labelling_step(compute_dtype):
  """Stage IV: (step(), matmul FLOPs per batch, a description)."""
  config = modeling.BertConfig(vocab_size=30522, type_vocab_size=2,
                               num_hidden_layers=FLAGS.num_hidden_layers or 12)
  # Frozen, as stage IV's teacher (checkpoints.load_teacher).
  model = modeling.BertPretrainingModel(config, compute_dtype, seed=0,
                                        trainable=False)
  labeler = teacher_labels.TeacherLabeler(
      model, FLAGS.truncation_factor, distribution.local_strategy(),
      use_xla=False, label_mode=label_settings.TOP_K)
  b, s, p = FLAGS.batch_size, FLAGS.seq_length, FLAGS.max_predictions_per_seq
  rng = np.random.default_rng(0)
  batch = (rng.integers(1000, 30000, (b, s)).astype(np.int32),
           np.ones((b, s), np.int32), np.zeros((b, s), np.int32),
           np.sort(rng.choice(s, (b, p)), axis=1).astype(np.int32))

  def step():
    for t in labeler(batch):
      np.asarray(t)

  return step, flops.forward_flops(config, s, p) * b, (
      f"stage IV step, {FLAGS.precision}: {config.num_hidden_layers} layers "
      f"x {config.hidden_size}, batch {b} x {s}, MLM at {p} positions, "
      f"top-{FLAGS.truncation_factor}")


def training_step(tmp_dir):
  """Stage V: (step(), matmul FLOPs per batch, a description): distill.py's
  training loop on bench_distill.py's student and records."""
  args = types.SimpleNamespace(
      threads=os.cpu_count(), tmp_dir=tmp_dir, batch_size=FLAGS.batch_size,
      seq_length=FLAGS.seq_length, predictions=FLAGS.max_predictions_per_seq,
      k=FLAGS.truncation_factor, layers=FLAGS.num_hidden_layers or 6)
  bench_distill.setup(args)
  job = bench_distill.TensorFlowJob(args, jit=False, precision=FLAGS.precision)
  student = dict(bench_distill.STUDENT, num_hidden_layers=args.layers)
  batch_flops = flops.train_flops(student, args.seq_length,
                                  args.predictions) * args.batch_size
  return lambda: job.run(1), batch_flops, (
      f"stage V training step, {FLAGS.precision}: {args.layers} layers x "
      f"{student['hidden_size']}, batch {args.batch_size} x "
      f"{args.seq_length}, {args.predictions} masked positions, "
      f"top-{args.k} labels, AdamWeightDecay")


def fine_tuning_step(tmp_dir):
  """Stage G: (step(), matmul FLOPs per batch, a description):
  run_classifier.py's training loop as bench_classifier.py runs it."""
  model = ("demo_student" if FLAGS.num_hidden_layers == 3 else "bert_base")
  config = bench_classifier.MODELS[model]
  args = types.SimpleNamespace(
      tmp_dir=tmp_dir, model=model, batch_size=FLAGS.batch_size,
      seq_length=FLAGS.seq_length, precision=FLAGS.precision)
  job = bench_classifier.TensorFlowJob(args, config)
  batch_flops = bench_classifier.train_flops_per_example(
      config, FLAGS.seq_length) * FLAGS.batch_size
  return lambda: job.run(1), batch_flops, (
      f"fine-tuning step ({model}), {FLAGS.precision}: "
      f"{config['num_hidden_layers']} layers x {config['hidden_size']}, "
      f"batch {FLAGS.batch_size} x {FLAGS.seq_length} (lengths uniform in "
      f"[seq/2, seq], trimmed to the longest), AdamWeightDecay")


def main(argv):
  del argv
  if FLAGS.inter_op_threads:
    tf.config.threading.set_inter_op_parallelism_threads(
        FLAGS.inter_op_threads)
  compute_dtype = modeling.COMPUTE_DTYPES[FLAGS.precision]
  gemm_dtype = "float32" if compute_dtype == tf.float32 else compute_dtype.name
  print(flops.cpu_line())
  with tempfile.TemporaryDirectory() as tmp_dir:
    step, batch_flops, description = {
        "IV": lambda: labelling_step(compute_dtype),
        "V": lambda: training_step(tmp_dir),
        "G": lambda: fine_tuning_step(tmp_dir)}[FLAGS.stage]()
    print(f"TF {tf.__version__}; {description}: {batch_flops / 1e9:.0f} "
          "GFLOP (matmuls) per batch")
    gemm = flops.gemm_rates(("tensorflow",), size=3072, repeats=3,
                            dtype=gemm_dtype)
    gemm_rate = max(gemm.values())
    # Stage G's records hold 4 batches, each trimmed to its own longest
    # sequence: a warm-up step for each, so that no shape's XLA kernels
    # compile inside a traced step.
    for _ in range(4 if FLAGS.stage == "G" else 2):
      step()
    with tempfile.TemporaryDirectory() as trace_dir:
      tf.profiler.experimental.start(trace_dir)
      start = time.perf_counter()
      for _ in range(FLAGS.passes):
        step()
      wall = (time.perf_counter() - start) / FLAGS.passes
      tf.profiler.experimental.stop()
      kernels = kernel_times(trace_dir)

  rate = batch_flops / wall
  print(f"step: {wall * 1e3:.0f} ms per batch (mean of {FLAGS.passes}, "
        f"traced), {FLAGS.batch_size / wall:.2f} seq/s = "
        f"{rate / 1e9:.0f} GFLOP/s = {100 * rate / gemm_rate:.0f}% of the "
        f"{gemm_dtype} GEMM ({gemm_rate / 1e9:.0f} GFLOP/s, 3072^3, this "
        "process)")
  per_op = collections.defaultdict(lambda: [0.0, 0])
  for (_, op), (ps, calls) in kernels.items():
    per_op[op][0] += ps / 1e9 / FLAGS.passes
    per_op[op][1] += calls
  matmul_ms = sum(ms for op, (ms, _) in per_op.items() if op in MATMUL_OPS)
  all_ms = sum(ms for ms, _ in per_op.values())
  print(f"op time on the compute threads: {all_ms:.0f} ms per batch; "
        f"matmuls {matmul_ms:.0f} ms ({100 * matmul_ms / all_ms:.0f}%), "
        f"the rest {all_ms - matmul_ms:.0f} ms "
        f"({100 * (all_ms - matmul_ms) / all_ms:.0f}%)")
  print(f"\n{'op type':28s} {'ms/batch':>9s} {'share':>6s} {'calls':>6s}")
  ranked = sorted(per_op.items(), key=lambda item: -item[1][0])
  for op, (ms, calls) in ranked[:FLAGS.top]:
    kind = " (matmul)" if op in MATMUL_OPS else ""
    print(f"{op:28s} {ms:9.1f} {100 * ms / all_ms:5.1f}% "
          f"{calls // FLAGS.passes:6d}{kind}")
  if FLAGS.by_node:
    print(f"\n{'ms/batch':>9s}  node (op type), not matmuls")
    nodes = sorted(((ps / 1e9 / FLAGS.passes, node, op)
                    for (node, op), (ps, _) in kernels.items()
                    if op not in MATMUL_OPS), reverse=True)
    for ms, node, op in nodes[:FLAGS.by_node]:
      print(f"{ms:9.1f}  {node} ({op})")


if __name__ == "__main__":
  app.run(main)
