"""Checks tokenization.py token-for-token against Google's published tokenizer.

Needs Google's `bert-tensorflow` in the bench virtualenv (see
google_reference.py). Compares, for do_lower_case true and false: a few MB of
real English (bench/english_corpus.py), the hand-written adversarial cases and
thousands of seeded random strings (tests/tokenization_cases.py), and every
Unicode code point in context. With --write_golden, also writes the small
golden file the tests compare against (Google's output on a sample of those
texts, and Google's class of every code point).

  .venv-bench/bin/python bench/verify_tokenization.py
  .venv-bench/bin/python bench/verify_tokenization.py \
      --write_golden=tests/data/tokenization_golden.json
"""

import json
import os
import sys
import time
import unicodedata

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import english_corpus  # pylint: disable=g-import-not-at-top,wrong-import-position
import google_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
import tokenization_cases  # pylint: disable=g-import-not-at-top,wrong-import-position
import tokenization  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("vocab_file",
                    os.path.join(ROOT, "data", "bert_uncased_vocab.txt"),
                    "Vocabulary both tokenizers use.")
flags.DEFINE_string("corpus_file", "",
                    "English text to compare on; empty: build one with "
                    "english_corpus.build_corpus.")
flags.DEFINE_integer("corpus_bytes", 4_000_000,
                     "Size of the English corpus built when --corpus_file is "
                     "empty.")
flags.DEFINE_integer("random_texts", 20_000,
                     "Number of seeded random adversarial strings.")
flags.DEFINE_string("write_golden", "",
                    "If set, write the golden fixture for tests here.")

FLAGS = flags.FLAGS

GOLDEN_SEED = 20181031
GOLDEN_RANDOM = 50
GOLDEN_ENGLISH = 50


def google_char_class(google, char):
  """Google's class of one character: d(ropped), s(pace), c(jk), p(unct), o."""
  cp = ord(char)
  if cp == 0 or cp == 0xFFFD or google._is_control(char):  # pylint: disable=protected-access
    return "d"
  if google._is_whitespace(char):  # pylint: disable=protected-access
    return "s"
  if google.BasicTokenizer()._is_chinese_char(cp):  # pylint: disable=protected-access
    return "c"
  if google._is_punctuation(char):  # pylint: disable=protected-access
    return "p"
  return "o"


def char_class_runs(classify):
  """Run-length encodes classify(chr(cp)) over all code points: [[start, c]]."""
  runs = []
  for cp in range(0x110000):
    value = classify(chr(cp))
    if not runs or runs[-1][1] != value:
      runs.append([cp, value])
  return runs


def code_point_texts():
  """Every code point in context, 256 to a text: lower, upper, alone, glued."""
  texts = []
  for block in range(0, 0x110000, 256):
    texts.append(" ".join(f"a{chr(cp)}B{chr(cp)}{chr(cp)} {chr(cp)}"
                          for cp in range(block, block + 256)))
  return texts


def compare(name, texts, google_tokenizer, ours):
  """Tokenizes texts with both; returns the number of texts that differ."""
  start = time.perf_counter()
  mismatches = 0
  tokens = 0
  for text in texts:
    expected = google_tokenizer.tokenize(text)
    got = ours.tokenize(text)
    tokens += len(expected)
    if got != expected:
      mismatches += 1
      if mismatches <= 3:
        print(f"  MISMATCH {name}: {text!r}\n    google {expected}\n"
              f"    ours   {got}")
  print(f"{name}: {len(texts)} texts, {tokens} tokens, {mismatches} differ "
        f"({time.perf_counter() - start:.1f} s)")
  return mismatches


def golden_fixture(google, english_lines):
  """Google's tokens on a small sample, plus its class of every code point."""
  texts = list(tokenization_cases.HAND_CASES)
  texts += tokenization_cases.random_texts(GOLDEN_SEED, GOLDEN_RANDOM)
  step = max(1, len(english_lines) // GOLDEN_ENGLISH)
  texts += english_lines[::step][:GOLDEN_ENGLISH]
  cases = []
  for do_lower_case in (True, False):
    google_tokenizer = google.FullTokenizer(FLAGS.vocab_file, do_lower_case)
    for text in texts:
      cases.append({"text": text, "do_lower_case": do_lower_case,
                    "tokens": google_tokenizer.tokenize(text)})
  return {
      "about": "Google's bert-tensorflow 1.0.4 tokenizer output, written by "
               "bench/verify_tokenization.py; char_classes: [first code "
               "point, class] runs, d=dropped s=space c=cjk p=punct o=other",
      "unidata_version": unicodedata.unidata_version,
      "vocab": os.path.basename(FLAGS.vocab_file),
      "char_classes": char_class_runs(lambda c: google_char_class(google, c)),
      "cases": cases,
  }


def main(argv):
  del argv
  google = google_reference.load_google_tokenization()
  if google is None:
    sys.exit("error: Google's bert-tensorflow is not installed; see "
             "bench/google_reference.py")
  _, english = english_corpus.corpus_lines(FLAGS.corpus_file,
                                           FLAGS.corpus_bytes)
  adversarial = (list(tokenization_cases.HAND_CASES) +
                 tokenization_cases.random_texts(1, FLAGS.random_texts))
  code_points = code_point_texts()

  mismatches = 0
  for do_lower_case in (True, False):
    print(f"do_lower_case={do_lower_case}")
    google_tokenizer = google.FullTokenizer(FLAGS.vocab_file, do_lower_case)
    ours = tokenization.FullTokenizer(FLAGS.vocab_file, do_lower_case)
    mismatches += compare("english", english, google_tokenizer, ours)
    mismatches += compare("adversarial", adversarial, google_tokenizer, ours)
    mismatches += compare("code points", code_points, google_tokenizer, ours)

  if FLAGS.write_golden:
    with open(FLAGS.write_golden, "w", encoding="utf-8") as f:
      json.dump(golden_fixture(google, english), f, ensure_ascii=True,
                separators=(",", ":"))
    print(f"wrote {FLAGS.write_golden} "
          f"({os.path.getsize(FLAGS.write_golden)} bytes)")
  print("IDENTICAL" if not mismatches else f"{mismatches} texts DIFFER")
  return 1 if mismatches else 0


if __name__ == "__main__":
  app.run(main)
