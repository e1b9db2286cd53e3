"""Stage II, second half: WikiExtractor's JSON output to BERT's text format.

Reads every `wiki_*` file (plain or `.bz2`) under `--folder`, the folder of
folders that WikiExtractor writes with `--json` (AA/wiki_00, AA/wiki_01, ...,
AB/wiki_00, ...), in sorted path order, and writes one text file: one sentence
per line, one blank line after every article, which is what `split_text.py`
and `multifile_create_pretraining_data.py` read.

The folder must come from `wikiextractor_without_headings.py` (extract.sh runs
it): WikiExtractor itself, with section headings left out of the text by its
own Extractor (keepSections=False). Every line of an article's text is then a
paragraph of the article, and none is dropped: nothing here guesses from the
words whether a line is a heading. (WikiExtractor's plain command line writes
`== History ==` as a line `History.`, which would be taken for a sentence.)

Per article (one JSON object a line, {"id", "revid", "url", "title", "text"}):
  * the title is dropped only when the first line of the text IS the title
    (older WikiExtractor versions put it there; version 3 does not, and the
    first sentence of an article often starts with its title);
  * empty lines are dropped;
  * every other line (a paragraph) is split into sentences with pysbd, a
    rule-based offline splitter that keeps "Dr.", "U.S.", "e.g." and "3.5"
    inside their sentence;
  * an article left with no sentence (a redirect, an empty stub) is skipped.

A malformed JSON line is skipped with a warning naming its file and line.
Bytes that are not UTF-8 are replaced by U+FFFD, with a warning per file that
counts them and names the first line.
Files are processed by worker processes, and the results are written in file
order, so the output does not depend on --num_workers. Memory is bounded by
the few files in flight (WikiExtractor's `--bytes`, 1 MB by default), never by
the dump. The output appears under its name only when complete; a worker that
dies (kill -9) stops the run with an error naming its file, and the next run
removes the temporary file a killed run left.
"""

import os
import sys

from absl import flags
from absl import logging

# This script lives in a folder of its own and is run by its path (extract.sh,
# docs/stages.md); the modules it shares with the other stages are one
# folder up, at the project's root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bert_distill import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import wikipedia_text  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string(
    "folder", None,
    "WikiExtractor's output folder (the one given to its -o) as extract.sh "
    "writes it, section headings left out: a folder of folders holding "
    "wiki_NN or wiki_NN.bz2 files of JSON lines.")
flags.DEFINE_string(
    "write_file", None,
    "The text file to write: one sentence per line, a blank line after "
    "every article. Outside --folder. Written under a temporary name and "
    "renamed when complete.")
flags.DEFINE_integer(
    "num_workers", None,
    "Worker processes that split files into sentences (default: all "
    "cores). The output is the same for any value.")
flags.DEFINE_float(
    "log_interval", 30.0, "Seconds between two progress lines.")
flags.mark_flag_as_required("folder")
flags.mark_flag_as_required("write_file")
flags.register_validator("num_workers", lambda n: n is None or n >= 1,
                         message="--num_workers must be at least 1")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  files = wikipedia_text.find_wiki_files(FLAGS.folder)
  wikipedia_text.check_write_file(FLAGS.write_file, FLAGS.folder, files)
  num_workers = FLAGS.num_workers or os.cpu_count() or 1
  logging.info("%d wiki_* files under %s, %d workers -> %s", len(files),
               FLAGS.folder, num_workers, FLAGS.write_file)
  num_articles, num_skipped, num_replaced = wikipedia_text.write_text_file(
      files, FLAGS.write_file, num_workers, FLAGS.log_interval)
  if num_skipped:
    logging.warning("%d malformed JSON lines skipped", num_skipped)
  if num_replaced:
    logging.warning("%d characters not UTF-8 replaced by U+FFFD",
                    num_replaced)
  if num_articles == 0:
    logging.warning("no article with text in %s: %s is empty",
                    FLAGS.folder, FLAGS.write_file)
  logging.info("wrote %s", FLAGS.write_file)


if __name__ == "__main__":
  cli.run(main)
