"""Models' parameters and inference rates (sequences/s, GFLOP/s, share of
this machine's GEMM rate), as the demo's and bench_real_teacher.py's tables
report them.

The rate is the forward pass of the checkpoint's model (a fine-tuned
classifier: encoder, pooler and head, as export_model.py serves it; else the
encoder and pooler) on batches of --batch_size full-length sequences of
--max_seq_length tokens, float32, in one tf.function, after a warm-up call.
Several models given together are timed in one process, round-robin: each
round times every model for at least --seconds, and a model's rate is the
median of its --repeats rounds. Models of one architecture then show one
rate (within a few percent) even on a machine whose load changes, which
separate processes one after the other do not.

GFLOP/s counts the forward pass's matmuls (bench/flops.py forward_flops:
no masked-LM head); the share is of the best float32 GEMM (TensorFlow and
NumPy, 2048^3) measured in the same process before and after the rounds
(and again, up to 3 times, while a model's rate exceeds it).
The parameters are the model's variables' elements (embeddings included).

  .venv/bin/python bench/inference_rate.py \\
      --checkpoint=demo_output/glue/teacher \\
      --bert_config_file=demo_output/glue/teacher/bert_config.json \\
      --output_file=demo_output/glue/teacher/inference_rate.txt \\
      --checkpoint=demo_output/glue/student \\
      --bert_config_file=demo_output/glue/student/bert_config.json \\
      --output_file=demo_output/glue/student/inference_rate.txt

prints and writes (to each model's --output_file, when given) `parameters`,
`sequences_per_second`, `gflops_per_second`, `percent_of_gemm` and
`gemm_gflops_per_second` as `key = value` lines.
"""

import argparse
import os
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)


def parameter_count(variables_by_name):
  """Elements of every variable: {name: tf.Variable} -> int."""
  return sum(int(v.shape.num_elements()) for v in variables_by_name.values())


def forward_function(model, batch_size, seq_length, seed=0):
  """A tf.function running `model(input_ids, input_mask, segment_ids)` on
  fixed random full-length sequences [batch_size, seq_length], traced and
  warmed up."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  vocab_size = model.config.vocab_size
  input_ids = tf.constant(rng.integers(1000, vocab_size,
                                       (batch_size, seq_length)), tf.int32)
  input_mask = tf.ones([batch_size, seq_length], tf.int32)
  segment_ids = tf.zeros([batch_size, seq_length], tf.int32)

  @tf.function
  def forward():
    outputs = model(input_ids, input_mask, segment_ids)
    # The first output a caller would read: logits, else the pooled output.
    return outputs.get("logits", outputs["pooled_output"])

  forward().numpy()
  return forward


def timed_rate(forward, batch_size, seconds):
  """Sequences/s of calling forward() for at least `seconds`."""
  calls, started = 0, time.perf_counter()
  while True:
    forward().numpy()
    calls += 1
    elapsed = time.perf_counter() - started
    if elapsed >= seconds:
      return calls * batch_size / elapsed


def interleaved_rates(forwards, batch_size, seconds, repeats):
  """Median rate of each forward function over `repeats` round-robin
  rounds: a list of sequences/s in the order given."""
  rounds = [[] for _ in forwards]
  for _ in range(repeats):
    for rates, forward in zip(rounds, forwards):
      rates.append(timed_rate(forward, batch_size, seconds))
  return [statistics.median(rates) for rates in rounds]


def gemm_rate():
  """The best float32 GEMM rate (FLOP/s) of TensorFlow and NumPy."""
  import flops  # pylint: disable=import-outside-toplevel
  return max(flops.gemm_rates(("tensorflow", "numpy"), size=2048,
                              repeats=3).values())


def measure(models, batch_size, seq_length, seconds, repeats):
  """Measures [(config_file, checkpoint)]: a list of result dicts."""
  import flops  # pylint: disable=import-outside-toplevel
  from bert_distill import model_config  # pylint: disable=import-outside-toplevel
  from bert_distill import serving  # pylint: disable=import-outside-toplevel
  configs, loaded = [], []
  for config_file, checkpoint in models:
    config = model_config.read_config(config_file, seq_length, "model")
    model, _ = serving.load_model(config, checkpoint)
    configs.append(config)
    loaded.append(model)
  gemm_before = gemm_rate()
  forwards = [forward_function(m, batch_size, seq_length) for m in loaded]
  rates = interleaved_rates(forwards, batch_size, seconds, repeats)
  gemm = max(gemm_before, gemm_rate())
  flop_rates = [rate * flops.forward_flops(config, seq_length, 0)
                for config, rate in zip(configs, rates)]
  for _ in range(3):
    # A GEMM sample in a busier moment than the rounds: sample again before
    # calling a share above 100% a measurement bug.
    if max(flop_rates) <= gemm:
      break
    gemm = max(gemm, gemm_rate())
  results = []
  for (_, checkpoint), model, rate, flop_rate in zip(models, loaded, rates,
                                                     flop_rates):
    results.append({
        "parameters": parameter_count(model.variables_by_name()),
        "sequences_per_second": rate,
        "gflops_per_second": flop_rate / 1e9,
        "percent_of_gemm": flops.percent_of_gemm(flop_rate, gemm, checkpoint),
        "gemm_gflops_per_second": gemm / 1e9})
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", action="append", required=True,
                      help="a checkpoint prefix or folder (repeat the flag "
                      "for several models)")
  parser.add_argument("--bert_config_file", action="append", required=True,
                      help="one per --checkpoint, in the same order")
  parser.add_argument("--output_file", action="append",
                      help="one per --checkpoint: also write its results "
                      "there")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--seconds", type=float, default=3.0,
                      help="least duration of one model's timed run")
  parser.add_argument("--repeats", type=int, default=5,
                      help="rounds; a model's rate is their median")
  args = parser.parse_args()
  if len(args.bert_config_file) != len(args.checkpoint):
    parser.error(f"{len(args.checkpoint)} --checkpoint but "
                 f"{len(args.bert_config_file)} --bert_config_file")
  if args.output_file and len(args.output_file) != len(args.checkpoint):
    parser.error(f"{len(args.checkpoint)} --checkpoint but "
                 f"{len(args.output_file)} --output_file")
  import flops  # pylint: disable=import-outside-toplevel
  print(flops.cpu_line(), flush=True)
  try:
    results = measure(list(zip(args.bert_config_file, args.checkpoint)),
                      args.batch_size, args.max_seq_length, args.seconds,
                      args.repeats)
  except ValueError as e:
    sys.exit(f"error: {e}")
  for index, (checkpoint, result) in enumerate(zip(args.checkpoint, results)):
    text = "".join(f"{key} = {value}\n" for key, value in result.items())
    sys.stdout.write(f"{checkpoint}:\n{text}")
    if args.output_file:
      path = args.output_file[index]
      with open(path + ".tmp", "w") as f:
        f.write(text)
      os.replace(path + ".tmp", path)


if __name__ == "__main__":
  main()
