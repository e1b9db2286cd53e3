"""Writes the example Wikipedia dump bundled for `make demo` and the tests
(example_dump.py holds the generator).

  python data/example_wiki/make_example_dump.py \
      --output data/example_wiki/enwiki-example-pages-articles.xml.bz2

The same flags give the same bytes.
"""

import bz2
import os

from absl import app
from absl import flags

import example_dump

flags.DEFINE_string(
    "output",
    os.path.join(os.path.dirname(os.path.abspath(__file__)),
                 "enwiki-example-pages-articles.xml.bz2"),
    "The dump to write (bz2-compressed MediaWiki XML).")
flags.DEFINE_integer("seed", example_dump.SEED,
                     "Seed of the generated articles.")
flags.DEFINE_integer("num_generated", example_dump.NUM_GENERATED,
                     "Number of articles generated from patterns.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  data = example_dump.dump_xml(FLAGS.seed, FLAGS.num_generated)
  tmp = FLAGS.output + ".tmp"
  with open(tmp, "wb") as f:
    f.write(bz2.compress(data, compresslevel=9))
  os.replace(tmp, FLAGS.output)
  print(f"wrote {FLAGS.output}: {data.count(b'<page>')} pages, "
        f"{len(data):,} bytes of XML, "
        f"{os.path.getsize(FLAGS.output):,} compressed")


if __name__ == "__main__":
  app.run(main)
