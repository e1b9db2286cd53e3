"""Splits one large text file of articles into pieces of about equal size.

Stage III-a. The input is stage II's output: one sentence per line and a blank
line between articles. The output is `folder/<name_base>_<N>.txt` for
N = 0..split_number-1, ready for multifile_create_pretraining_data.py:

  * a piece holds whole articles only, never part of one;
  * the pieces, concatenated in order, hold every article of the input exactly
    once, in input order, byte for byte (a missing final newline is added);
  * inside a piece articles are separated by one blank line, and no piece
    starts or ends with a blank line;
  * pieces are balanced by bytes: piece N ends at the article boundary nearest
    to (N + 1) / split_number of the article bytes.

The file is streamed twice (count the articles, then copy them), a line at a
time, so memory stays constant whatever the file size. With fewer articles
than --split_number, each article gets its own piece and a warning says how
many files were written.

`folder/<name_base>.made_from.json` records what the pieces were made from
(the input's name, size and SHA-256, --split_number) and which pieces this
script wrote. A rerun removes the pieces of the former run before it writes
the new ones, so no piece of a former split into more files is left for
stage III-b to read, and it refuses to run beside `<name_base>_<N>.txt` files
that it did not write, or to read one of the files it would remove (a piece
of the former run as --read_file). A piece appears under its name only when complete; a
killed run's temporary files are removed by the next run.
"""

import os

from absl import flags

from bert_distill import article_split
from bert_distill import cli
from bert_distill import file_io

flags.DEFINE_string("read_file", None,
                    "The text file to split: one sentence per line, a blank "
                    "line between articles.")
flags.DEFINE_integer("split_number", 10,
                     "How many pieces to write (at least 1). A file with fewer "
                     "articles gets one piece per article and a warning.")
flags.DEFINE_string("folder", None,
                    "Where to write the pieces; created when missing.")
flags.DEFINE_string("name_base", "text",
                    "Pieces are named <folder>/<name_base>_<N>.txt.")

FLAGS = flags.FLAGS

flags.mark_flags_as_required(["read_file", "folder"])
flags.register_validator("split_number", lambda n: n >= 1, "must be at least 1")
# An empty name writes hidden files (_0.txt, .made_from.json); a path would
# put the pieces outside --folder, where no manifest check looks.
flags.register_validator(
    "name_base",
    lambda name: bool(name) and os.sep not in name and
    (os.altsep is None or os.altsep not in name),
    "must be a file name, not empty and without '/' (the folder goes in "
    "--folder)")


def main(argv):
  del argv
  if os.path.isdir(FLAGS.read_file):
    raise cli.StageError(f"--read_file={FLAGS.read_file} is a directory: give "
                         f"the text file to split")
  if not os.path.exists(FLAGS.read_file):
    raise cli.StageError(f"--read_file={FLAGS.read_file}: no such file")
  if os.path.exists(FLAGS.folder) and not os.path.isdir(FLAGS.folder):
    raise cli.StageError(f"--folder={FLAGS.folder} is a file, not a folder: "
                         f"give the folder to write the pieces into")
  try:
    article_split.split_file(FLAGS.read_file, FLAGS.split_number,
                             FLAGS.folder, FLAGS.name_base)
  except OSError as e:
    # An unreadable file, a folder that cannot be created.
    raise cli.StageError(file_io.describe_os_error(e)) from None


if __name__ == "__main__":
  cli.run(main)
