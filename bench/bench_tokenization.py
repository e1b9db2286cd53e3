"""Tokens per second: our FullTokenizer vs the reference rules vs Google's.

All three tokenize the same few MB of English (bench/english_corpus.py) in the
same run, slice by slice and interleaved, so the shared machine's load hits
them alike; the ratios are the result. Each slice is tokenized and converted
to ids, as pretraining data creation does, and the three outputs must be
identical. Our tokenizer starts with an empty cache, as a fresh worker does.
Google's tokenizer takes part when `bert-tensorflow` is installed (see
google_reference.py).

  .venv-bench/bin/python bench/bench_tokenization.py
  .venv/bin/python bench/bench_tokenization.py --corpus_bytes=1000000
"""

import os
import resource
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import english_corpus  # pylint: disable=g-import-not-at-top,wrong-import-position
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
import google_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
import tokenization  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("vocab_file",
                    os.path.join(ROOT, "data", "bert_uncased_vocab.txt"),
                    "Vocabulary file.")
flags.DEFINE_string("corpus_file", "",
                    "English text, one sentence per line; empty: build "
                    "--corpus_bytes of it with english_corpus.build_corpus.")
flags.DEFINE_integer("corpus_bytes", 4_000_000,
                     "Size of the corpus built when --corpus_file is empty.")
flags.DEFINE_integer("slices", 20,
                     "The corpus is timed in this many interleaved slices.")
flags.DEFINE_integer("rounds", 3,
                     "Whole runs over the corpus, each with a fresh (cold) "
                     "tokenizer of ours; the median round is reported.")
flags.DEFINE_multi_string("do_lower_case", ["true", "false"],
                          "Casing modes to bench (repeatable).")

FLAGS = flags.FLAGS


def tokenize_to_ids(tokenize, convert, lines):
  """Tokens and ids of every line, as create_pretraining_data computes them."""
  tokens = [tokenize(line) for line in lines]
  return tokens, [convert(t) for t in tokens]


def bench_case(lines, tokenizers, num_slices):
  """Times each (name, tokenize, convert) on the same slices, interleaved.

  Times are CPU seconds of this process, which other processes on the shared
  machine disturb less than wall time. Returns {name: seconds} and the number
  of tokens; raises if the outputs of any slice differ.
  """
  seconds = {name: 0.0 for name, _, _ in tokenizers}
  num_tokens = 0
  step = -(-len(lines) // num_slices)
  for first in range(0, len(lines), step):
    piece = lines[first:first + step]
    outputs = {}
    for name, tokenize, convert in tokenizers:
      start = time.process_time()
      outputs[name] = tokenize_to_ids(tokenize, convert, piece)
      seconds[name] += time.process_time() - start
    expected = outputs[tokenizers[0][0]]
    for name, output in outputs.items():
      if output != expected:
        raise SystemExit(f"error: {name} differs from {tokenizers[0][0]} in "
                         f"lines {first}..{first + len(piece)}")
    num_tokens += sum(len(t) for t in expected[0])
  return seconds, num_tokens


def cache_megabytes(cache):
  """Memory held by a {chunk: tuple of tokens} cache (tokens are shared with
  the vocabulary, so not counted)."""
  size = sys.getsizeof(cache)
  size += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in cache.items())
  return size / 2**20


def main(argv):
  del argv
  print(flops.cpu_line(), flush=True)
  google = google_reference.load_google_tokenization()
  corpus_file, lines = english_corpus.corpus_lines(FLAGS.corpus_file,
                                                  FLAGS.corpus_bytes)
  print(f"corpus: {corpus_file}, {os.path.getsize(corpus_file)} bytes, "
        f"{len(lines)} lines; Google's tokenizer: "
        f"{'yes' if google else 'not installed'}")

  for value in FLAGS.do_lower_case:
    do_lower_case = value.lower() in ("1", "true", "yes")
    rounds = []
    for _ in range(FLAGS.rounds):
      ours = tokenization.FullTokenizer(FLAGS.vocab_file, do_lower_case)
      tokenizers = [("ours", ours.tokenize, ours.convert_tokens_to_ids),
                    ("reference", ours.reference_tokenize,
                     ours.convert_tokens_to_ids)]
      if google:
        theirs = google.FullTokenizer(FLAGS.vocab_file, do_lower_case)
        tokenizers.append(("google", theirs.tokenize,
                           theirs.convert_tokens_to_ids))
      seconds, num_tokens = bench_case(lines, tokenizers, FLAGS.slices)
      rounds.append(seconds)
    slowest = tokenizers[-1][0]
    rounds.sort(key=lambda r: r[slowest] / r["ours"])
    print(f"\ndo_lower_case={do_lower_case}: {num_tokens} tokens, outputs "
          f"identical; {slowest}/ours by round: "
          + ", ".join(f"{r[slowest] / r['ours']:.2f}" for r in rounds))
    seconds = rounds[len(rounds) // 2]
    print(f"  median round, CPU seconds:\n"
          f"  {'tokenizer':<10} {'seconds':>8} {'tokens/s':>11} "
          f"{'ours is x faster':>17}")
    for name, _, _ in tokenizers:
      print(f"  {name:<10} {seconds[name]:8.2f} "
            f"{num_tokens / seconds[name]:11.0f} "
            f"{seconds[name] / seconds['ours']:17.2f}")
    print(f"  our cache at the end: {len(ours._chunk_tokens)} chunks, "  # pylint: disable=protected-access
          f"{cache_megabytes(ours._chunk_tokens):.1f} MB")  # pylint: disable=protected-access
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"\npeak RSS of the whole bench process: {peak_mb:.0f} MB")


if __name__ == "__main__":
  app.run(main)
