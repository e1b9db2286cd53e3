"""Checks multifile_create_pretraining_data.py against Google's own script.

Google's `create_pretraining_data.py` (PyPI `bert-tensorflow`, TF1 code) is
run in-process on each input file i with random_seed S+i, exactly as a user
would run it on that file alone, and every example it writes is compared,
feature by feature and in order, with ours (run as a subprocess with the
project's interpreter). Both files are read back with
records.pretraining_feature_spec.

Google's published version has no whole-word masking. With
--do_whole_word_mask its masking function is replaced by
`whole_word_masking_reference`, written here from the rules of Google's later
version (token strings, as Google's code works), so our id-based version is
checked against a plain re-derivation.

Needs the bench virtualenv (bert-tensorflow, TensorFlow):

  .venv-bench/bin/python bench/verify_against_google.py \
      --input_dir=/tmp/texts --vocab_file=data/bert_uncased_vocab.txt \
      --dupe_factor=2 --num_workers=2

`--golden_dir=DIR` instead writes Google's records for input i as
`DIR/google_<i>.tfrecord` and the settings as `DIR/settings.json` (the
fixtures of tests/test_create_pretraining_data.py).

Argument parsing is argparse, not absl flags: Google's module defines
absl flags of the same names.
"""

import argparse
import collections
import glob
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SETTINGS = ("max_seq_length", "max_predictions_per_seq", "dupe_factor",
            "masked_lm_prob", "short_seq_prob", "do_lower_case",
            "do_whole_word_mask")


def load_google():
  """Imports Google's create_pretraining_data with the shims TF 2 needs.

  Its `import tensorflow.compat.v1 as tf` works as it is on TF 2; its absl
  flags are marked parsed so its tokenizer can read their defaults.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1  # pylint: disable=g-import-not-at-top,unused-import
  from bert import create_pretraining_data  # pylint: disable=g-import-not-at-top
  from bert import tokenization  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return create_pretraining_data, tokenization


def whole_word_masking_reference(google):
  """Google's later create_masked_lm_predictions with whole-word masking,
  written from its rules over token strings (the published version lacks it)."""
  masked_lm = collections.namedtuple("MaskedLm", ["index", "label"])

  def create_masked_lm_predictions(tokens, masked_lm_prob,
                                   max_predictions_per_seq, vocab_words, rng):
    words = []
    for i, token in enumerate(tokens):
      if token in ("[CLS]", "[SEP]"):
        continue
      if words and token.startswith("##"):
        words[-1].append(i)
      else:
        words.append([i])
    rng.shuffle(words)
    output = list(tokens)
    num_to_predict = min(max_predictions_per_seq,
                         max(1, int(round(len(tokens) * masked_lm_prob))))
    masked, covered = [], set()
    for word in words:
      if len(masked) >= num_to_predict:
        break
      if len(masked) + len(word) > num_to_predict:
        continue
      if any(i in covered for i in word):
        continue
      for i in word:
        covered.add(i)
        if rng.random() < 0.8:
          replacement = "[MASK]"
        elif rng.random() < 0.5:
          replacement = tokens[i]
        else:
          replacement = vocab_words[rng.randint(0, len(vocab_words) - 1)]
        output[i] = replacement
        masked.append(masked_lm(i, tokens[i]))
    masked.sort(key=lambda m: m.index)
    return (output, [m.index for m in masked], [m.label for m in masked])

  del google
  return create_masked_lm_predictions


def run_google(google, tokenization, input_path, output_path, vocab_file,
               seed, settings):
  """Google's main() for one file: returns (instances, seconds)."""
  tokenizer = tokenization.FullTokenizer(
      vocab_file=vocab_file, do_lower_case=settings["do_lower_case"])
  start = time.perf_counter()
  rng = random.Random(seed)
  instances = google.create_training_instances(
      [input_path], tokenizer, settings["max_seq_length"],
      settings["dupe_factor"], settings["short_seq_prob"],
      settings["masked_lm_prob"], settings["max_predictions_per_seq"], rng)
  google.write_instance_to_example_files(
      instances, tokenizer, settings["max_seq_length"],
      settings["max_predictions_per_seq"], [output_path])
  return len(instances), time.perf_counter() - start


def patch_google(google, settings):
  """Installs the whole-word masking reference when the settings ask for it."""
  if not hasattr(google, "_published_masking"):
    google._published_masking = google.create_masked_lm_predictions  # pylint: disable=protected-access
  google.create_masked_lm_predictions = (
      whole_word_masking_reference(google) if settings["do_whole_word_mask"]
      else google._published_masking)  # pylint: disable=protected-access


def read_records(path, settings):
  """Every record of a file, parsed with the project's spec: {name: [N, ...]}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bert_distill import records  # pylint: disable=g-import-not-at-top
  spec = records.pretraining_feature_spec(settings["max_seq_length"],
                                          settings["max_predictions_per_seq"])
  batches = [{k: v.numpy() for k, v in batch.items()} for batch in
             tf.data.TFRecordDataset(path).batch(4096).map(
                 lambda s: tf.io.parse_example(s, spec))]
  return {name: np.concatenate([b[name] for b in batches]) if batches
          else np.zeros([0]) for name in spec}


def compare(ours_path, google_path, settings):
  """Returns (number of examples, first difference or None)."""
  ours = read_records(ours_path, settings)
  theirs = read_records(google_path, settings)
  count = len(theirs["input_ids"])
  if len(ours["input_ids"]) != count:
    return count, f"{len(ours['input_ids'])} examples, Google wrote {count}"
  for name in sorted(theirs):
    differs = (ours[name] != theirs[name]).reshape(count, -1).any(axis=1)
    if differs.any():
      return count, f"example {differs.argmax()}: {name} differs"
  return count, None


def our_command(python, input_dir, output_dir, vocab_file, seed, settings,
                num_workers, base_name="ours"):
  """The command line of our script for these settings."""
  return [python, os.path.join(ROOT, "multifile_create_pretraining_data.py"),
          f"--input_dir={input_dir}", f"--output_dir={output_dir}",
          f"--output_base_name={base_name}", f"--vocab_file={vocab_file}",
          f"--random_seed={seed}", f"--num_workers={num_workers}"] + [
              f"--{name}={settings[name]}" for name in SETTINGS]


def default_python():
  """The project's interpreter (.venv), else this one."""
  venv = os.path.join(ROOT, ".venv", "bin", "python")
  return venv if os.path.exists(venv) else sys.executable


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--input_dir", required=True)
  parser.add_argument("--vocab_file",
                      default=os.path.join(ROOT, "data",
                                           "bert_uncased_vocab.txt"))
  parser.add_argument("--output_dir", default="/tmp/verify_against_google")
  parser.add_argument("--random_seed", type=int, default=12345)
  parser.add_argument("--max_seq_length", type=int, default=128)
  parser.add_argument("--max_predictions_per_seq", type=int, default=20)
  parser.add_argument("--dupe_factor", type=int, default=5)
  parser.add_argument("--masked_lm_prob", type=float, default=0.15)
  parser.add_argument("--short_seq_prob", type=float, default=0.1)
  parser.add_argument("--do_lower_case", type=lambda s: s == "true",
                      default=True, help="true or false")
  parser.add_argument("--do_whole_word_mask", type=lambda s: s == "true",
                      default=False, help="true or false")
  parser.add_argument("--num_workers", type=int, default=2)
  parser.add_argument("--python", default=default_python(),
                      help="interpreter for our script")
  parser.add_argument("--golden_dir", default=None,
                      help="write Google's records as google_<i>.tfrecord "
                      "and settings.json into this folder, and stop")
  return parser.parse_args(argv)


def main():
  args = parse_args()
  settings = {name: getattr(args, name) for name in SETTINGS}
  google, tokenization = load_google()
  patch_google(google, settings)
  inputs = sorted(glob.glob(os.path.join(args.input_dir, "*.txt")))
  if args.golden_dir:
    for i, path in enumerate(inputs):
      os.makedirs(args.golden_dir, exist_ok=True)
      out = os.path.join(args.golden_dir, f"google_{i}.tfrecord")
      count, _ = run_google(google, tokenization, path, out, args.vocab_file,
                            args.random_seed + i, settings)
      print(f"{out}: {count} examples")
    with open(os.path.join(args.golden_dir, "settings.json"), "w") as f:
      json.dump(dict(settings, random_seed=args.random_seed), f, indent=2,
                sort_keys=True)
    return 0

  os.makedirs(args.output_dir, exist_ok=True)
  for stale in glob.glob(os.path.join(args.output_dir, "*.tfrecord")):
    os.remove(stale)
  subprocess.run(our_command(args.python, args.input_dir, args.output_dir,
                             args.vocab_file, args.random_seed, settings,
                             args.num_workers),
                 check=True, stderr=subprocess.DEVNULL)
  failures = 0
  for i, path in enumerate(inputs):
    google_path = os.path.join(args.output_dir, f"google_{i}.tfrecord")
    run_google(google, tokenization, path, google_path, args.vocab_file,
               args.random_seed + i, settings)
    count, difference = compare(
        os.path.join(args.output_dir, f"ours_{i}.tfrecord"), google_path,
        settings)
    print(f"{os.path.basename(path)} (seed {args.random_seed + i}): "
          f"{count} examples, " + (difference or "identical"))
    failures += difference is not None
  print("IDENTICAL" if not failures else f"{failures} FILES DIFFER")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
