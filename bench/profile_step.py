"""Where stage IV's time goes: the teacher's labelling step, op by op.

Runs the step extract_teacher_labels_truncated.py runs (TeacherLabeler:
BERT with its MLM head at the masked positions, float32 softmax over the
vocabulary, top-k) on random weights and one full-length batch, traces
--passes calls of it with TensorFlow's profiler and prints, per op type,
the milliseconds per batch its kernels took on TensorFlow's compute
threads, grouped into the matmuls (what bfloat16 units speed up) and the
rest (layer norms, casts, transposes, softmaxes, top-k, ...). Next to it:
the step's wall time, its rate as GFLOP/s (bench/flops.py's matmul FLOPs)
and as a share of the GEMM rate in the same dtype measured in this
process. Op times are summed over the compute threads, so with ops
running side by side their total can exceed the wall time.

  .venv/bin/python bench/profile_teacher_step.py --precision=mixed_bfloat16
  .venv/bin/python bench/profile_teacher_step.py --precision=float32

The first line names the CPU and its bf16/AMX flags.
"""

import collections
import glob
import os
import sys
import tempfile
import time

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
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum("precision", "mixed_bfloat16", list(modeling.COMPUTE_DTYPES),
                  "The teacher's compute dtype (stage IV's --precision).")
flags.DEFINE_integer("num_hidden_layers", 12, "BERT-Base has 12.")
flags.DEFINE_integer("batch_size", 32, "Sequences per step.")
flags.DEFINE_integer("seq_length", 128, "Tokens per sequence (all real).")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Masked positions where the MLM head runs.")
flags.DEFINE_integer("truncation_factor", 10, "k of the top-k labels.")
flags.DEFINE_integer("passes", 3, "Traced (and timed) steps, after 2 "
                     "warm-up steps.")
flags.DEFINE_integer("top", 25, "Op types listed.")
flags.register_validator("passes", lambda v: v > 0, "--passes must be > 0")

# Op types whose kernels are matrix multiplications (oneDNN's fused
# matmul + bias (+ GELU), plain and batched matmuls).
MATMUL_OPS = ("_MklNativeFusedMatMul", "_MklMatMul", "_MklBatchMatMulV2",
              "_MklNativeBatchMatMulV2", "MatMul", "BatchMatMulV2",
              "_FusedMatMul")


def op_times(trace_dir):
  """{op type: (picoseconds, kernel calls)} summed over TensorFlow's
  compute threads in the profiler trace under trace_dir."""
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
        if ":" not in name or "::" in name:
          continue
        op_type = name.rsplit(":", 1)[1]
        totals[op_type][0] += event.duration_ps
        totals[op_type][1] += 1
  return totals


def main(argv):
  del argv
  config = modeling.BertConfig(vocab_size=30522, type_vocab_size=2,
                               num_hidden_layers=FLAGS.num_hidden_layers)
  compute_dtype = modeling.COMPUTE_DTYPES[FLAGS.precision]
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
  batch_flops = flops.forward_flops(config, s, p) * b
  gemm_dtype = "float32" if compute_dtype == tf.float32 else compute_dtype.name
  print(flops.cpu_line())
  print(f"TF {tf.__version__}; stage IV step, {FLAGS.precision}: "
        f"{config.num_hidden_layers} layers x {config.hidden_size}, batch "
        f"{b} x {s}, MLM at {p} positions, top-{FLAGS.truncation_factor}: "
        f"{batch_flops / 1e9:.0f} GFLOP (matmuls) per batch")
  gemm = flops.gemm_rates(("tensorflow",), size=3072, repeats=3,
                          dtype=gemm_dtype)
  gemm_rate = max(gemm.values())

  def step():
    for t in labeler(batch):
      np.asarray(t)

  for _ in range(2):
    step()
  with tempfile.TemporaryDirectory() as trace_dir:
    tf.profiler.experimental.start(trace_dir)
    start = time.perf_counter()
    for _ in range(FLAGS.passes):
      step()
    wall = (time.perf_counter() - start) / FLAGS.passes
    tf.profiler.experimental.stop()
    totals = op_times(trace_dir)

  rate = batch_flops / wall
  print(f"step: {wall * 1e3:.0f} ms per batch (mean of {FLAGS.passes}, "
        f"traced), {b / wall:.2f} seq/s = {rate / 1e9:.0f} GFLOP/s = "
        f"{100 * rate / gemm_rate:.0f}% of the {gemm_dtype} GEMM "
        f"({gemm_rate / 1e9:.0f} GFLOP/s, 3072^3, this process)")
  per_batch = {op: (ps / 1e9 / FLAGS.passes, calls // FLAGS.passes)
               for op, (ps, calls) in totals.items()}
  matmul_ms = sum(ms for op, (ms, _) in per_batch.items()
                  if op in MATMUL_OPS)
  all_ms = sum(ms for ms, _ in per_batch.values())
  print(f"op time on the compute threads: {all_ms:.0f} ms per batch; "
        f"matmuls {matmul_ms:.0f} ms ({100 * matmul_ms / all_ms:.0f}%), "
        f"the rest {all_ms - matmul_ms:.0f} ms "
        f"({100 * (all_ms - matmul_ms) / all_ms:.0f}%)")
  print(f"\n{'op type':28s} {'ms/batch':>9s} {'share':>6s} {'calls':>6s}")
  ranked = sorted(per_batch.items(), key=lambda item: -item[1][0])
  for op, (ms, calls) in ranked[:FLAGS.top]:
    kind = " (matmul)" if op in MATMUL_OPS else ""
    print(f"{op:28s} {ms:9.1f} {100 * ms / all_ms:5.1f}% {calls:6d}{kind}")


if __name__ == "__main__":
  app.run(main)
