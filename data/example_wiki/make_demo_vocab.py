"""Writes the demo's small vocabulary: the tokens of BERT's uncased vocabulary
that the example corpus uses.

  python data/example_wiki/make_demo_vocab.py --text_file=wiki.txt \
      --vocab_file=data/bert_uncased_vocab.txt \
      --output=data/example_wiki/vocab.txt

The subset (tokenization.subset_vocabulary) tokenizes the corpus exactly as
the full vocabulary does, so the demo's records hold the same tokens as with
Google's vocabulary, with a masked-LM softmax several times smaller, which is
what lets the demo pretrain a teacher in minutes on a CPU. The special tokens
come first, then the used tokens in the order of the full vocabulary.
"""

import os
import sys

from absl import app
from absl import flags

# Run by its path from data/example_wiki; tokenization.py is at the root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
import tokenization  # pylint: disable=wrong-import-position

flags.DEFINE_string("text_file", None, "The corpus (stage II's text file).")
flags.DEFINE_string("vocab_file", None, "The full WordPiece vocabulary.")
flags.DEFINE_string("output", None, "The subset vocabulary to write.")
flags.DEFINE_bool("do_lower_case", True, "As the full vocabulary needs.")
flags.mark_flags_as_required(["text_file", "vocab_file", "output"])

FLAGS = flags.FLAGS


def main(argv):
  del argv
  with open(FLAGS.text_file, encoding="utf-8") as f:
    tokens = tokenization.subset_vocabulary(f, FLAGS.vocab_file,
                                            FLAGS.do_lower_case)
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    f.write("".join(t + "\n" for t in tokens))
  full = len(tokenization.load_vocab(FLAGS.vocab_file))
  print(f"wrote {FLAGS.output}: {len(tokens)} of {full} tokens")


if __name__ == "__main__":
  app.run(main)
