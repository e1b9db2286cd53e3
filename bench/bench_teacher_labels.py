"""Speed of extract_teacher_labels_truncated.py next to PyTorch, same run.

A BERT-Base teacher (12 layers, hidden 768, vocab 30522, random weights in
Google's names) labels the same pretraining records (L = 128, P = 20, k = 10)
two ways, in interleaved rounds on this machine:

  ours:    the stage's own pipeline (tf.data read + parse, XLA forward +
           softmax + top-k on length-trimmed batches, records written), from
           records on disk to the teacher-label file on disk;
  PyTorch: HuggingFace transformers BertForPreTraining in a .venv-bench
           subprocess (eval, no_grad, MLM head at the masked positions only,
           softmax + top-k, torch.set_num_threads(2)) over the same inputs
           already in memory, every batch at the full length L as they are
           stored.

Real lengths follow the original project's sample records
(tests/data/original/original_sample_records.tfrecord) unless --lengths full.
Reports sequences/s of both per round, their ratio, peak RSS, the top-k
agreement of the two implementations and bytes per example on disk.

  .venv/bin/python bench/bench_teacher_labels.py [--num_examples 96]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import logging
import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import checkpoints  # pylint: disable=g-import-not-at-top
import extract_teacher_labels_truncated as stage
import modeling
import records


def parse_args():
  """The bench's own options (argparse: the stage's absl flags stay unparsed)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_examples", type=int, default=96,
                      help="Records labelled per round.")
  parser.add_argument("--rounds", type=int, default=3,
                      help="Interleaved rounds of each side.")
  parser.add_argument("--batch_size", type=int, default=8,
                      help="Batch size of both sides.")
  parser.add_argument("--k", type=int, default=10, help="truncation_factor.")
  parser.add_argument("--torch_threads", type=int, default=2,
                      help="torch.set_num_threads.")
  parser.add_argument("--lengths", choices=["original", "full"],
                      default="original",
                      help="Real sequence lengths: drawn from the original's "
                      "sample records, or all max_seq_length.")
  parser.add_argument("--bench_venv", default=os.path.join(ROOT, ".venv-bench"),
                      help="Virtualenv with torch and transformers.")
  parser.add_argument("--no_xla", action="store_true",
                      help="Run ours without XLA (for comparison).")
  parser.add_argument("--sort_batches", type=int, default=8,
                      help="Ours: batches sorted by length together.")
  parser.add_argument("--work_dir", help="Scratch directory (default: temp).")
  return parser.parse_args()


MAX_SEQ_LENGTH, MAX_PREDICTIONS = 128, 20
ORIGINAL_RECORDS = os.path.join(ROOT, "tests", "data", "original",
                                "original_sample_records.tfrecord")
BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072,
             "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1,
             "max_position_embeddings": 512, "type_vocab_size": 2,
             "initializer_range": 0.02}


def original_lengths():
  """Real lengths (sum of input_mask) of the original's sample records."""
  return [int(np.sum(records.decode_example(r.numpy())[records.INPUT_MASK]))
          for r in tf.data.TFRecordDataset(ORIGINAL_RECORDS)]


def make_examples(count, lengths, vocab_size, seed=0):
  """Pretraining examples as Google's tool shapes them: [CLS] a [SEP] b [SEP],
  15% of tokens masked (at most P). Returns {name: [count, ...] array}."""
  rng = np.random.default_rng(seed)
  arrays = {name: [] for name in records.PRETRAINING_FEATURES}
  for _ in range(count):
    length = int(rng.choice(lengths))
    ids = np.zeros(MAX_SEQ_LENGTH, np.int64)
    ids[:length] = rng.integers(1000, vocab_size, length)
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


def write_inputs(work_dir, examples):
  """The same examples as a TFRecord file (ours) and an .npz (PyTorch)."""
  records_path = os.path.join(work_dir, "pretraining.tfrecord")
  count = len(examples[records.INPUT_IDS])
  with tf.io.TFRecordWriter(records_path) as writer:
    for i in range(count):
      writer.write(records.serialize_example(
          {name: v[i] for name, v in examples.items()}))
  npz_path = os.path.join(work_dir, "inputs.npz")
  np.savez(npz_path, **{name: examples[name] for name in (
      records.INPUT_IDS, records.INPUT_MASK, records.SEGMENT_IDS,
      records.MASKED_LM_POSITIONS)})
  return records_path, npz_path


def write_teacher(work_dir):
  """Random BERT-Base weights: a Google-named checkpoint and an .npz copy."""
  config_path = os.path.join(work_dir, "bert_config.json")
  with open(config_path, "w") as f:
    json.dump(BERT_BASE, f)
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(BERT_BASE),
                                        seed=0)
  variables = model.variables_by_name()
  prefix = checkpoints.save_checkpoint(variables, os.path.join(work_dir, "teacher"),
                                       step=0)
  npz_path = os.path.join(work_dir, "weights.npz")
  np.savez(npz_path, **{n: v.numpy() for n, v in variables.items()})
  return config_path, prefix, npz_path


class TorchWorker:
  """The PyTorch subprocess, one JSON answer per command."""

  def __init__(self, venv, weights, inputs, config, batch_size, k, threads):
    script = os.path.join(ROOT, "bench", "torch_teacher_worker.py")
    self._process = subprocess.Popen(
        [os.path.join(venv, "bin", "python"), script, weights,
         inputs, config, str(batch_size), str(k), str(threads)],
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


def run_ours(labeler, records_path, output_path, config, batch_size, k,
             sort_batches=8):
  """One pass of the stage's pipeline. Returns (sequences, seconds, CPU
  seconds of this process: all TensorFlow and tf.data threads)."""
  if os.path.exists(output_path):
    os.remove(output_path)
  spec = records.pretraining_feature_spec(MAX_SEQ_LENGTH, MAX_PREDICTIONS)
  start, cpu = time.perf_counter(), time.process_time()
  count = stage.write_teacher_labels(labeler, [records_path], output_path, spec,
                                     k, batch_size, 16, sort_batches,
                                     records.value_bounds(
                                         config.vocab_size,
                                         config.type_vocab_size, MAX_SEQ_LENGTH),
                                     progress_interval=1e9)
  return count, time.perf_counter() - start, time.process_time() - cpu


def run_command_line(config_path, checkpoint, records_path, work_dir, args):
  """Runs the stage as users do; returns (peak RSS MB, wall seconds).

  Called while the PyTorch worker still runs, so RUSAGE_CHILDREN's peak is
  this command's alone.
  """
  start = time.perf_counter()
  subprocess.run(
      [sys.executable, os.path.join(ROOT, "extract_teacher_labels_truncated.py"),
       f"--bert_config_file={config_path}", f"--init_checkpoint={checkpoint}",
       f"--input_file={records_path}",
       f"--output_file={os.path.join(work_dir, 'cli_labels.tfrecord')}",
       f"--truncation_factor={args.k}", f"--batch_size={args.batch_size}",
       f"--sort_batches={args.sort_batches}",
       f"--use_xla={not args.no_xla}"],
      check=True, capture_output=True)
  seconds = time.perf_counter() - start
  return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, seconds


def main():
  args = parse_args()
  logging.set_verbosity(logging.WARNING)
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_teacher_")
  os.makedirs(work_dir, exist_ok=True)
  lengths = (original_lengths() if args.lengths == "original"
             else [MAX_SEQ_LENGTH])
  examples = make_examples(args.num_examples, lengths, BERT_BASE["vocab_size"])
  records_path, inputs_npz = write_inputs(work_dir, examples)
  config_path, checkpoint, weights_npz = write_teacher(work_dir)
  real = examples[records.INPUT_MASK].sum(axis=1)
  print(f"{args.num_examples} examples, L={MAX_SEQ_LENGTH} P={MAX_PREDICTIONS} "
        f"k={args.k} batch {args.batch_size}; real lengths "
        f"{args.lengths}: mean {real.mean():.1f}, "
        f"{np.mean(real == MAX_SEQ_LENGTH):.0%} full", flush=True)

  worker = TorchWorker(args.bench_venv, weights_npz, inputs_npz, config_path,
                       args.batch_size, args.k, args.torch_threads)
  config = modeling.BertConfig.from_json_file(config_path)
  strategy = stage.choose_strategy()
  labeler = stage.TeacherLabeler(stage.load_teacher(config, checkpoint, strategy),
                                 args.k, strategy, use_xla=not args.no_xla)
  output_path = os.path.join(work_dir, "teacher_labels.tfrecord")
  count, seconds, _ = run_ours(labeler, records_path, output_path, config,
                            args.batch_size, args.k, args.sort_batches)
  print(f"ours, first pass (includes XLA compiles): {count / seconds:.2f} seq/s",
        flush=True)
  answer = worker.ask("run")
  print(f"pytorch, warm-up pass: {answer['sequences'] / answer['seconds']:.2f} "
        f"seq/s", flush=True)

  ratios, cpu_ratios = [], []
  for r in range(args.rounds):
    sides = [("pytorch", lambda: worker.ask("run")),
             ("ours", lambda: dict(zip(("sequences", "seconds", "cpu_seconds"), run_ours(
                 labeler, records_path, output_path, config,
                 args.batch_size, args.k, args.sort_batches))))]
    if r % 2:
      sides.reverse()
    rates, cpu = {}, {}
    for name, run in sides:
      answer = run()
      rates[name] = answer["sequences"] / answer["seconds"]
      cpu[name] = answer["cpu_seconds"] / answer["sequences"]
    ratios.append(rates["ours"] / rates["pytorch"])
    cpu_ratios.append(cpu["pytorch"] / cpu["ours"])
    print(f"round {r + 1}: ours {rates['ours']:.2f} seq/s "
          f"({cpu['ours']:.2f} CPU s/seq), pytorch {rates['pytorch']:.2f} "
          f"seq/s ({cpu['pytorch']:.2f} CPU s/seq), ratio {ratios[-1]:.2f}x",
          flush=True)

  theirs = worker.ask("labels")
  cli_rss, cli_seconds = run_command_line(config_path, checkpoint, records_path,
                                          work_dir, args)
  torch_rss = worker.close()["peak_rss_mb"]
  ours = [records.decode_example(r.numpy()) for r in
          tf.data.TFRecordDataset(output_path).take(args.batch_size)]
  our_probs = np.stack([e[records.TRUNCATED_PROBS] for e in ours])
  our_ids = np.stack([e[records.TOP_K_INDICES] for e in ours])
  their_probs = np.asarray(theirs["probs"], np.float32).reshape(our_probs.shape)
  their_ids = np.asarray(theirs["ids"]).reshape(our_ids.shape)
  print(f"median ratio ours/pytorch: {np.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}); "
        f"CPU time per sequence, pytorch/ours: {np.median(cpu_ratios):.2f}x")
  relative = np.abs(our_probs - their_probs) / their_probs
  print(f"agreement on the first batch: max relative prob diff "
        f"{relative.max():.2e}, top-k ids equal "
        f"{np.mean(our_ids == their_ids):.2%}")
  print(f"peak RSS: ours {cli_rss:.0f} MB (the command line, whole run: "
        f"{args.num_examples} records in {cli_seconds:.0f} s incl. start-up and "
        f"XLA compiles), pytorch {torch_rss:.0f} MB (worker)")
  size = os.path.getsize(output_path)
  print(f"output: {size / count:.0f} bytes/example on disk at k={args.k} "
        f"(input {os.path.getsize(records_path) / count:.0f} bytes/example)")


if __name__ == "__main__":
  main()
