"""Writes the demo's small vocabulary: the tokens of BERT's uncased vocabulary
that the example corpus uses.

  python data/example_wiki/make_demo_vocab.py --text_file=wiki.txt \
      --vocab_file=data/bert_uncased_vocab.txt \
      --output=data/example_wiki/vocab.txt

A subset of a WordPiece vocabulary that holds every piece the full one gives
for a text tokenizes that text exactly as the full one does (greedy longest
match: the longest piece in the full vocabulary is in the subset, and nothing
longer is), so the demo's records hold the same tokens as with Google's
vocabulary, with a masked-LM softmax several times smaller, which is what
lets the demo pretrain a teacher in minutes on a CPU. The special tokens come
first, then the used tokens in the order of the full vocabulary.
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
import tokenization  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  """The command line, defined when run as a script (not on import: tests
  import this module next to stage scripts that share flag names)."""
  flags.DEFINE_string("text_file", None, "The corpus (stage II's text file).")
  flags.DEFINE_string("vocab_file", None, "The full WordPiece vocabulary.")
  flags.DEFINE_string("output", None, "The subset vocabulary to write.")
  flags.DEFINE_bool("do_lower_case", True, "As the full vocabulary needs.")
  flags.mark_flags_as_required(["text_file", "vocab_file", "output"])


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def used_tokens(text_file, tokenizer):
  """The set of WordPiece tokens the tokenizer gives for the file's lines."""
  used = set()
  with open(text_file, encoding="utf-8") as f:
    for line in f:
      used.update(tokenizer.tokenize(line))
  return used


def main(argv):
  del argv
  tokenizer = tokenization.FullTokenizer(FLAGS.vocab_file, FLAGS.do_lower_case)
  used = used_tokens(FLAGS.text_file, tokenizer)
  full = list(tokenization.load_vocab(FLAGS.vocab_file))
  tokens = SPECIAL_TOKENS + [t for t in full
                             if t in used and t not in SPECIAL_TOKENS]
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    f.write("".join(t + "\n" for t in tokens))
  print(f"wrote {FLAGS.output}: {len(tokens)} of {len(full)} tokens")


if __name__ == "__main__":
  define_flags()
  app.run(main)
