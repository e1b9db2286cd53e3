"""FLOP counts of BERT's matmuls and this machine's float32 GEMM rate.

One home for the arithmetic every bench reports next to its rates:

  * forward_flops / train_flops: the exact multiply-add count (2 FLOPs per
    multiply-add) of every matmul of BERT with its pretraining heads, the
    masked-LM head at P positions only (as our model and the benches'
    PyTorch scripts run it). Softmax, LayerNorm, GELU, gathers and the
    optimizer are not matmuls and are not counted, so a model's "GFLOP/s"
    is a lower bound of the work it did.
  * gemm_rates: the float32 (or bfloat16) GEMM rate of large square
    matrices, best of a few, in the libraries at hand (TensorFlow's oneDNN,
    NumPy's BLAS (float32 only), PyTorch's MKL/oneDNN), with the process's
    thread count. The machine's rate is the best of them; GemmProbe
    measures both dtypes, and a bfloat16 model's rate is held against the
    best GEMM of either dtype (on CPUs with AMX or AVX512-BF16 that is the
    bfloat16 one, 2-3x float32's; a float32 GEMM there is no ceiling for a
    bfloat16 model).
  * percent_of_gemm: a model rate as a share of that rate; above 100% is a
    measurement bug (a miscounted FLOP or a mis-timed run), so it raises.
  * cpu_line: lscpu's model name and the bfloat16/AMX flags of this CPU,
    which every bench prints first (a rate means little without them).
  * Child: a whole command line run to completion, with its wall time, CPU
    time and peak RSS (as a user would measure it), and the load it met;
    load_average and spread (a list of rounds as "median (min-max)").
  * BERT_BASE: BERT-Base's bert_config.json, the shape the benches run.

Imports neither TensorFlow nor PyTorch at module level: each bench process
measures with what it has loaded.
"""

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bert_distill import hardware  # pylint: disable=g-import-not-at-top,wrong-import-position

BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072,
             "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1,
             "max_position_embeddings": 512, "type_vocab_size": 2,
             "initializer_range": 0.02}


def cpu_line():
  """'CPU: <lscpu model name> (<n> cores); bf16/AMX flags: ...' of this
  machine, for the first line of every bench's output."""
  model, flags = hardware.cpu_info()
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True,
                           check=False).stdout
    for line in lscpu.splitlines():
      if line.startswith("Model name:"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  present = [f for f in hardware.REPORTED_CPU_FLAGS if f in flags]
  bf16 = ("bfloat16 units" if hardware.cpu_bf16_flags() else
          "no bfloat16 units")
  return (f"CPU: {model} ({platform.machine()}, {os.cpu_count()} cores); "
          f"bf16/AMX flags: {' '.join(present) or 'none'} of "
          f"{'/'.join(hardware.REPORTED_CPU_FLAGS)} ({bf16})")


def forward_flops(config, seq_length, predictions):
  """Matmul FLOPs of one sequence's forward pass.

  Args:
    config: a dict or object with hidden_size, intermediate_size,
      num_hidden_layers, vocab_size (bert_config.json's names).
    seq_length: S, the length the model actually runs at (after trimming).
    predictions: P, masked positions where the MLM head runs.

  Returns:
    int FLOPs (2 per multiply-add).
  """
  get = config.get if isinstance(config, dict) else (
      lambda name: getattr(config, name))
  s, h = seq_length, get("hidden_size")
  i, v, layers = (get("intermediate_size"), get("vocab_size"),
                  get("num_hidden_layers"))
  per_layer = (2 * s * h * 3 * h      # query, key, value: [S, H] @ [H, 3H]
               + 2 * s * s * h        # scores: [N, S, D] @ [N, D, S]
               + 2 * s * s * h        # context: [N, S, S] @ [N, S, D]
               + 2 * s * h * h        # attention output dense
               + 2 * s * h * i        # intermediate dense
               + 2 * s * i * h)       # output dense
  heads = (2 * h * h                  # pooler, first token
           + 2 * h * 2                # next-sentence logits
           + 2 * predictions * h * h  # MLM transform
           + 2 * predictions * h * v)  # MLM decoder (word embeddings^T)
  return layers * per_layer + heads


def train_flops(config, seq_length, predictions):
  """Matmul FLOPs of one sequence's training step: forward and backward.

  The backward pass of y = x @ w is two matmuls of the same size (dx and
  dw), and every matmul here needs both (the embeddings are trained, so even
  the first layer's input gradient is computed): 3x the forward.
  """
  return 3 * forward_flops(config, seq_length, predictions)


def _best_rate(run, flops, repeats):
  """Best FLOP/s of `repeats` timed calls of run() (one warm-up call first)."""
  run()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return flops / best


def gemm_rates(libraries=("tensorflow", "numpy"), size=4096, repeats=5,
               dtype="float32"):
  """GEMM FLOP/s of [size, size] @ [size, size] in `dtype` (float32 or
  bfloat16), best of `repeats`.

  Each library runs with its own threads as this process configured them
  (the benches pin TensorFlow and PyTorch to the same count). NumPy has no
  bfloat16 and is left out of a bfloat16 measurement.

  Returns:
    {library: FLOP/s} for float32, {library + "_bfloat16": FLOP/s} for
    bfloat16.
  """
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"unknown GEMM dtype {dtype}")
  flops = 2 * size**3
  suffix = "" if dtype == "float32" else "_" + dtype
  rates = {}
  for library in libraries:
    if library == "tensorflow":
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      a = tf.cast(tf.random.normal([size, size]), dtype)
      b = tf.cast(tf.random.normal([size, size]), dtype)
      matmul = tf.function(lambda: tf.linalg.matmul(a, b)[0, 0],
                           autograph=False)
      rates[library + suffix] = _best_rate(lambda: matmul().numpy(), flops,
                                           repeats)
    elif library == "numpy":
      if dtype != "float32":
        continue
      import numpy as np  # pylint: disable=g-import-not-at-top
      rng = np.random.default_rng(0)
      a = rng.standard_normal((size, size), np.float32)
      b = rng.standard_normal((size, size), np.float32)
      rates[library] = _best_rate(lambda: a @ b, flops, repeats)
    elif library == "torch":
      import torch  # pylint: disable=g-import-not-at-top
      a = torch.randn(size, size, dtype=getattr(torch, dtype))
      b = torch.randn(size, size, dtype=getattr(torch, dtype))
      rates[library + suffix] = _best_rate(lambda: torch.mm(a, b), flops,
                                           repeats)
    else:
      raise ValueError(f"unknown GEMM library {library}")
  return rates


def is_bfloat16(precision):
  """Whether a precision name (mixed_bfloat16, bfloat16) computes in bf16."""
  return "bfloat16" in precision


class GemmProbe:
  """A long-lived process that measures the GEMM rates (float32 and
  bfloat16) whenever asked.

  On a machine shared with other jobs one GEMM measurement may fall in a
  busy moment; a bench samples the rate before and after each of its
  measurements and takes the best sample of the run as the machine's rate
  (so shares are never inflated by a busy GEMM sample). The process runs
  `python bench/flops.py THREADS` (TensorFlow, NumPy and, when importable,
  PyTorch, all with THREADS threads) and sits idle between samples.

  While whole processes are timed the probe is stopped (`suspended()`): on
  the 2-core Zen 5 VM an idle process holding TensorFlow and its GEMM
  buffers made a stage IV process beside it 9% slower (8.7 -> 9.5 s,
  without using any CPU itself: the child's page faults cost more), which
  a user's run does not pay.
  """

  def __init__(self, python, threads):
    self._command = [python, __file__, str(threads)]
    self.best = {}
    self.samples = 0
    self._start()

  def _start(self):
    self._process = subprocess.Popen(
        self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)

  @contextlib.contextmanager
  def suspended(self):
    """Samples, stops the probe process for the block (keeping the best
    rates), then starts it again and samples once more."""
    self.sample()
    self.close()
    try:
      yield
    finally:
      self._start()
      self.sample()

  def sample(self):
    """Measures once; returns {library: FLOP/s} and keeps the best."""
    import json  # pylint: disable=g-import-not-at-top
    self._process.stdin.write("gemm\n")
    self._process.stdin.flush()
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError("the GEMM probe died; see its stderr above")
    rates = json.loads(line)
    for library, rate in rates.items():
      self.best[library] = max(rate, self.best.get(library, 0.0))
    self.samples += 1
    return rates

  @property
  def rate(self):
    """The best float32 GEMM FLOP/s of any library and sample so far."""
    return max(rate for library, rate in self.best.items()
               if not library.endswith("_bfloat16"))

  def rate_of(self, precision):
    """The GEMM FLOP/s a model computing in `precision` is held against:
    float32's for float32; for bfloat16 (mixed_bfloat16) the best of the
    bfloat16 and float32 GEMMs (a bfloat16 model may not beat either)."""
    if is_bfloat16(precision):
      return max(self.best.values())
    return self.rate

  def describe(self):
    return (", ".join(f"{lib} {rate / 1e9:.0f}" for lib, rate in
                      sorted(self.best.items())) +
            f" GFLOP/s (best of {self.samples} samples of 3 calls each)")

  def close(self):
    self._process.stdin.close()
    self._process.wait()


def _serve(threads):
  """The GemmProbe process: one JSON line of rates per `gemm` line."""
  import json  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ["CUDA_VISIBLE_DEVICES"] = ""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  libraries = ["tensorflow", "numpy"]
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
    libraries.append("torch")
  except ImportError:
    pass
  # Without bfloat16 units a bfloat16 GEMM is emulated, slower than
  # float32's (which then bounds a bfloat16 model), and at 3072^3 it took
  # minutes per sample: measured only where the hardware has the units.
  bfloat16 = bool(hardware.cpu_bf16_flags())
  for line in sys.stdin:
    if line.strip() == "gemm":
      rates = gemm_rates(libraries, size=3072, repeats=3)
      if bfloat16:
        rates.update(gemm_rates(libraries, size=3072, repeats=3,
                                dtype="bfloat16"))
      print(json.dumps(rates), flush=True)


def percent_of_gemm(flop_rate, gemm_rate, what):
  """flop_rate as a percentage of gemm_rate; raises above 100%.

  A model cannot do its matmuls faster than the machine multiplies large
  square matrices: a figure above 100% means the FLOPs or the time are
  wrong (e.g. counted work that did not run, or a clock that missed some).
  """
  percent = 100.0 * flop_rate / gemm_rate
  if percent > 100.0:
    raise AssertionError(
        f"{what}: {flop_rate / 1e9:.1f} GFLOP/s is {percent:.0f}% of the "
        f"GEMM rate {gemm_rate / 1e9:.1f} GFLOP/s measured in the same run; "
        f"a rate above the GEMM rate is a measurement bug")
  return percent


def describe_rate(rate, unit, flops_per_item, gemm_rate, what):
  """'R unit = G GFLOP/s = X% of GEMM' for `rate` items/s (checked <= 100%)."""
  flop_rate = rate * flops_per_item
  percent = percent_of_gemm(flop_rate, gemm_rate, what)
  return (f"{rate:.2f} {unit} = {flop_rate / 1e9:.0f} GFLOP/s = "
          f"{percent:.0f}% of GEMM")


def load_average():
  """The 1-minute load average (other jobs on a shared machine)."""
  with open("/proc/loadavg") as f:
    return float(f.read().split()[0])


def spread(values, fmt="{:.2f}"):
  """'median (min-max)' of a list."""
  return (fmt.format(statistics.median(values)) + " (" +
          fmt.format(min(values)) + "-" + fmt.format(max(values)) + ")")


class Child:
  """A subprocess run to completion, with its own CPU time and peak RSS."""

  def __init__(self, command, env=None):
    self.load = load_average()
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
      process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
      _, status, usage = os.wait4(process.pid, 0)
      self.wall = time.perf_counter() - start
      out.seek(0)
      err.seek(0)
      self.stdout, self.stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(status):
      raise RuntimeError(f"{' '.join(command[:2])} failed:\n"
                         f"{self.stderr[-3000:]}")
    self.cpu = usage.ru_utime + usage.ru_stime
    self.peak_rss_mb = usage.ru_maxrss / 1024


if __name__ == "__main__":
  _serve(int(sys.argv[1]))
