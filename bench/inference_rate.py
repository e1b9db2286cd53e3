"""A model's parameters and inference rate (sequences/s), as the demo's and
bench_real_teacher.py's tables report them.

The rate is the forward pass of the checkpoint's model (a fine-tuned
classifier: encoder, pooler and head, as export_model.py serves it; else the
encoder and pooler) on batches of --batch_size full-length sequences of
--max_seq_length tokens, float32, in one tf.function, after a warm-up call:
the median of --repeats timed runs of at least --seconds each. The
parameters are the model's variables' elements (embeddings included).

  .venv/bin/python bench/inference_rate.py --checkpoint=demo_output/glue/student \\
      --bert_config_file=demo_output/glue/student/bert_config.json

prints `parameters = N` and `sequences_per_second = R` (and writes them to
--output_file when given).
"""

import argparse
import os
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)


def parameter_count(variables_by_name):
  """Elements of every variable: {name: tf.Variable} -> int."""
  return sum(int(v.shape.num_elements()) for v in variables_by_name.values())


def sequences_per_second(model, batch_size, seq_length, seconds=5.0,
                         repeats=3, seed=0):
  """Median forward-pass rate of `model(input_ids, input_mask, segment_ids)`
  over full-length random sequences [batch_size, seq_length]."""
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

  forward().numpy()  # trace and warm up
  rates = []
  for _ in range(repeats):
    calls, started = 0, time.perf_counter()
    while True:
      forward().numpy()
      calls += 1
      elapsed = time.perf_counter() - started
      if elapsed >= seconds:
        break
    rates.append(calls * batch_size / elapsed)
  return statistics.median(rates)


def measure(config_file, checkpoint, batch_size, seq_length, seconds,
            repeats):
  """{"parameters", "sequences_per_second"} of a checkpoint's model."""
  from bert_distill import model_config  # pylint: disable=import-outside-toplevel
  from bert_distill import serving  # pylint: disable=import-outside-toplevel
  config = model_config.read_config(config_file, seq_length, "model")
  model, _ = serving.load_model(config, checkpoint)
  return {"parameters": parameter_count(model.variables_by_name()),
          "sequences_per_second": sequences_per_second(
              model, batch_size, seq_length, seconds, repeats)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", required=True,
                      help="a checkpoint prefix or folder")
  parser.add_argument("--bert_config_file", required=True)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--seconds", type=float, default=5.0,
                      help="least duration of one timed run")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--output_file", help="also write the results here")
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    results = measure(args.bert_config_file, args.checkpoint, args.batch_size,
                      args.max_seq_length, args.seconds, args.repeats)
  except ValueError as e:
    sys.exit(f"error: {e}")
  text = "".join(f"{key} = {value}\n" for key, value in results.items())
  sys.stdout.write(text)
  if args.output_file:
    with open(args.output_file + ".tmp", "w") as f:
      f.write(text)
    os.replace(args.output_file + ".tmp", args.output_file)


if __name__ == "__main__":
  main()
