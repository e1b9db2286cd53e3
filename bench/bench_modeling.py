"""Forward throughput of BERT-Base next to this machine's GEMM rate.

Measures in one run, interleaved (the machine is shared, so only ratios
measured side by side mean much):
  - GEMM GFLOP/s: tf.matmul of two square matrices under tf.function, in
    the model's --compute_dtype, run before and after every forward
    measurement (with --compute_dtype=bfloat16 a float32 GEMM too: the
    model's rate is held against the better of the two, never against
    float32's alone, which a bfloat16 model on AMX rightly beats);
  - BERT-Base forward (12 layers, hidden 768, seq 128, batch 32, masked-LM
    head at 20 positions) in sequences/s, with XLA (jit_compile=True) and
    without (plain tf.function graph, where oneDNN fuses matmul + bias + GELU);
  - the model's achieved FLOP/s (matmul FLOPs, bench/flops.py) as a share of
    the best GEMM rate of the run, in wall time and per process CPU-second
    (steadier when other jobs share the cores); a share above 100% raises;
  - peak RSS of the process.

  .venv/bin/python bench/bench_modeling.py          # ~3 min on 2 cores
  .venv/bin/python bench/bench_modeling.py --compute_dtype=bfloat16

The first line names the CPU and its bf16/AMX flags (bench/flops.py).
"""

import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import modeling
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 32, "Sequences per forward call.")
flags.DEFINE_integer("seq_length", 128, "Tokens per sequence.")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Masked positions where the MLM head runs.")
flags.DEFINE_integer("num_hidden_layers", 12, "BERT-Base has 12.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds of every measurement.")
flags.DEFINE_integer("calls_per_round", 1, "Forward calls timed per round.")
flags.DEFINE_integer("gemm_size", 4096, "Side of the square GEMM.")
flags.DEFINE_list("modes", ["xla", "graph"],
                  "Forward variants: xla (jit_compile=True), graph (tf.function).")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                  "Model compute dtype, and the GEMM reference's (bfloat16: "
                  "a float32 GEMM is measured too).")
flags.register_validator("modes", lambda v: set(v) <= {"xla", "graph"} and v,
                         "--modes takes xla and/or graph")


def time_calls(fn, calls):
  """(wall seconds, process CPU seconds) per call of fn(), result fetched.

  CPU seconds count the work of all threads of this process; on a machine
  shared with other jobs they vary much less than wall time."""
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(calls):
    result = fn()
    tf.nest.map_structure(lambda t: t.numpy(), result)
  return ((time.perf_counter() - wall) / calls,
          (time.process_time() - cpu) / calls)


def build_gemm(n, dtype):
  a = tf.cast(tf.random.normal([n, n]), dtype)
  b = tf.cast(tf.random.normal([n, n]), dtype)
  matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)[:1, :1]),
                       autograph=False)
  return lambda: matmul()


def build_forward(model, batch, jit_compile):
  forward = tf.function(
      lambda ids, mask, seg, pos: model(ids, mask, seg, pos)[
          "masked_lm_logits"], jit_compile=jit_compile, autograph=False)
  return lambda: forward(*batch)


def main(argv):
  del argv
  config = modeling.BertConfig(vocab_size=30522, type_vocab_size=2,
                               num_hidden_layers=FLAGS.num_hidden_layers)
  model = modeling.BertPretrainingModel(config, seed=0,
                                       compute_dtype=FLAGS.compute_dtype)
  rng = np.random.default_rng(0)
  b, s, p = FLAGS.batch_size, FLAGS.seq_length, FLAGS.max_predictions_per_seq
  batch = (tf.constant(rng.integers(1000, 30000, (b, s)), tf.int32),
           tf.ones([b, s], tf.int32), tf.zeros([b, s], tf.int32),
           tf.constant(np.sort(rng.choice(s, (b, p)), axis=1), tf.int32))
  batch_flops = flops.forward_flops(config, s, p) * b
  gemm_flops = 2 * FLAGS.gemm_size**3
  print(flops.cpu_line())
  print(f"TF {tf.__version__}, {os.cpu_count()} CPUs, intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
  print(f"model ({FLAGS.compute_dtype}): {config.num_hidden_layers} layers, hidden "
        f"{config.hidden_size}, batch {b} x seq {s}, MLM at {p} positions: "
        f"{batch_flops / b / 1e9:.2f} GFLOP per sequence (bench/flops.py)")

  gemm_dtypes = [FLAGS.compute_dtype] + (
      ["float32"] if FLAGS.compute_dtype != "float32" else [])
  runners = {f"gemm_{dtype}": build_gemm(FLAGS.gemm_size, dtype)
             for dtype in gemm_dtypes}
  for mode in FLAGS.modes:
    runners[mode] = build_forward(model, batch, jit_compile=(mode == "xla"))
  for name, fn in runners.items():  # compile/trace and warm up once
    start = time.perf_counter()
    time_calls(fn, 1)
    print(f"warmup {name}: {time.perf_counter() - start:.1f} s")

  # Every forward measurement sits between two GEMM measurements. Shares are
  # taken against the best GEMM rate of the whole run (wall, and per CPU
  # second): a GEMM sample in a busy moment must not inflate them.
  model_wall = {m: [] for m in FLAGS.modes}  # FLOP/s
  model_cpu = {m: [] for m in FLAGS.modes}  # FLOP per CPU-second
  seqs_per_s = {m: [] for m in FLAGS.modes}
  gemm_wall = {dtype: [] for dtype in gemm_dtypes}
  gemm_cpu = {dtype: [] for dtype in gemm_dtypes}

  def measure_gemm():
    for dtype in gemm_dtypes:
      wall, cpu = time_calls(runners[f"gemm_{dtype}"], 2)
      gemm_wall[dtype].append(gemm_flops / wall)
      gemm_cpu[dtype].append(gemm_flops / cpu)

  measure_gemm()
  for r in range(FLAGS.rounds):
    line = []
    for mode in FLAGS.modes:
      wall, cpu = time_calls(runners[mode], FLAGS.calls_per_round)
      measure_gemm()
      seqs_per_s[mode].append(b / wall)
      model_wall[mode].append(batch_flops / wall)
      model_cpu[mode].append(batch_flops / cpu)
      line.append(f"{mode} {b / wall:.2f} seq/s = "
                  f"{batch_flops / wall / 1e9:.1f} GFLOP/s ("
                  f"{FLAGS.compute_dtype} GEMM around it "
                  f"{gemm_wall[FLAGS.compute_dtype][-2] / 1e9:.0f}, "
                  f"{gemm_wall[FLAGS.compute_dtype][-1] / 1e9:.0f})")
    print(f"round {r}: " + "; ".join(line), flush=True)

  for dtype in gemm_dtypes:
    print(f"GEMM {FLAGS.gemm_size}^3 {dtype}: best "
          f"{max(gemm_wall[dtype]) / 1e9:.1f} GFLOP/s wall (median "
          f"{statistics.median(gemm_wall[dtype]) / 1e9:.1f}), best "
          f"{max(gemm_cpu[dtype]) / 1e9:.1f} GFLOP per CPU-second")
  # The ceiling of a bfloat16 model is the better of the two GEMMs.
  best_wall = max(max(rates) for rates in gemm_wall.values())
  best_cpu = max(max(rates) for rates in gemm_cpu.values())
  for mode in FLAGS.modes:
    wall_share = flops.percent_of_gemm(statistics.median(model_wall[mode]),
                                       best_wall, f"{mode} forward, wall")
    flops.percent_of_gemm(max(model_wall[mode]), best_wall,
                          f"{mode} forward, best round")
    cpu_share = flops.percent_of_gemm(statistics.median(model_cpu[mode]),
                                      best_cpu, f"{mode} forward, CPU time")
    print(f"BERT forward [{mode}]: median "
          f"{statistics.median(seqs_per_s[mode]):.2f} sequences/s "
          f"(best {max(seqs_per_s[mode]):.2f}) = "
          f"{statistics.median(model_wall[mode]) / 1e9:.0f} GFLOP/s = "
          f"{wall_share:.0f}% of the run's best GEMM rate; per CPU-second "
          f"{statistics.median(model_cpu[mode]) / 1e9:.0f} GFLOP = "
          f"{cpu_share:.0f}% of GEMM's")
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
  app.run(main)
