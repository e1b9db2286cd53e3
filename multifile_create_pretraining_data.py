"""Turns a folder of text files into masked-LM / next-sentence pretraining records.

Stage III-b. Every `*.txt` in --input_dir (one sentence per line, a blank line
between documents), in sorted name order, becomes one TFRecord file: input
file i (0-based) is written to `<output_dir>/<output_base_name>_<i>.tfrecord`.

The contract: file i written with --random_seed S holds exactly the examples,
in the same order, that Google's `create_pretraining_data.py` writes for that
file alone with --random_seed S+i (pretraining_data.py: the algorithm, and
why it is faster), whatever --num_workers and --num_shards. With
--num_shards N, the run with --shard_index j makes files j, j+N, j+2N, ...
(each still named and seeded by its index i in the whole sorted list), so N
machines together write what one run writes.

Outputs appear under their final name only when complete. Next to each,
`<output>.made_from.json` records what it was made from; a rerun skips an
output whose record matches, makes again one whose input or settings
changed, and removes outputs of former inputs beyond the last one. A worker
that dies (kill -9, out of memory) stops the stage with an error naming its
file; the rerun makes only what is missing.
"""

import os

from absl import flags

from bert_distill import cli
from bert_distill import file_io
from bert_distill import pretraining_data
from bert_distill import shard_flags

flags.DEFINE_string("input_dir", None,
                    "Folder of input text files (*.txt): one sentence per "
                    "line, a blank line between documents.")
flags.DEFINE_string("output_dir", None,
                    "Folder for the TFRecord files; created when missing.")
flags.DEFINE_string("output_base_name", "pretraining_data",
                    "Input file i is written to "
                    "<output_dir>/<output_base_name>_<i>.tfrecord.")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary file that the BERT model was trained on.")
flags.DEFINE_bool("do_lower_case", True,
                  "Lowercase and strip accents: True for uncased models, "
                  "False for cased ones.")
flags.DEFINE_integer("max_seq_length", 128,
                     "Maximum sequence length (at least 5). Must match "
                     "pretraining and teacher-label extraction.")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Maximum number of masked LM predictions per sequence "
                     "(at most max_seq_length).")
flags.DEFINE_integer("random_seed", 12345,
                     "Random seed; input file i uses random_seed + i.")
flags.DEFINE_integer("dupe_factor", 10,
                     "Number of passes over each file's documents, each with "
                     "different masks and pairs.")
flags.DEFINE_float("masked_lm_prob", 0.15,
                   "Fraction of tokens to predict, in (0, 1].")
flags.DEFINE_float("short_seq_prob", 0.1,
                   "Probability of a shorter target sequence length, in "
                   "[0, 1].")
flags.DEFINE_bool("do_whole_word_mask", False,
                  "Mask whole words (a token and its ## continuations) "
                  "together, as in Google's later version.")
flags.DEFINE_integer("num_workers", None,
                     "Worker processes, each working on one file at a time "
                     "(default: all cores this process may use).")

flags.adopt_module_key_flags(shard_flags)

FLAGS = flags.FLAGS

flags.mark_flags_as_required(["input_dir", "output_dir", "vocab_file"])


def _local_path(path):
  """Validator: a path this stage can read or write (os, not tf.io.gfile)."""
  if path is not None and "://" in path:
    raise flags.ValidationError("only local paths are supported; copy the "
                                "files to a local disk first")
  return True


for _name in ("input_dir", "output_dir", "vocab_file"):
  flags.register_validator(_name, _local_path)
flags.register_validator("max_seq_length", lambda n: n >= 5, (
    "must be at least 5 ([CLS] A [SEP] B [SEP], A and B of at least one "
    "token, a target length of at least 2)"))


def _predictions_fit(values):
  predictions, length = (values["max_predictions_per_seq"],
                         values["max_seq_length"])
  if not 1 <= predictions <= length:
    raise flags.ValidationError(
        f"--max_predictions_per_seq={predictions}: must be between 1 and "
        f"--max_seq_length={length}")
  return True


flags.register_multi_flags_validator(
    ["max_predictions_per_seq", "max_seq_length"], _predictions_fit)
flags.register_validator("masked_lm_prob", lambda p: 0.0 < p <= 1.0,
                         "must be in (0, 1]")
flags.register_validator("short_seq_prob", lambda p: 0.0 <= p <= 1.0,
                         "must be in [0, 1]")
flags.register_validator("dupe_factor", lambda n: n >= 1, "must be at least 1")
flags.register_validator("num_workers", lambda n: n is None or n >= 1,
                         "must be at least 1")


def main(argv):
  del argv
  if not os.path.isdir(FLAGS.input_dir):
    raise cli.StageError(f"--input_dir={FLAGS.input_dir}: no such folder")
  if not os.path.isfile(FLAGS.vocab_file):
    raise cli.StageError(f"--vocab_file={FLAGS.vocab_file}: no such file")
  settings = pretraining_data.Settings(
      vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case,
      max_seq_length=FLAGS.max_seq_length,
      max_predictions_per_seq=FLAGS.max_predictions_per_seq,
      dupe_factor=FLAGS.dupe_factor, masked_lm_prob=FLAGS.masked_lm_prob,
      short_seq_prob=FLAGS.short_seq_prob,
      do_whole_word_mask=FLAGS.do_whole_word_mask)
  input_files = pretraining_data.find_input_files(FLAGS.input_dir)
  pretraining_data.load_tokenizer(settings.vocab_file, settings.do_lower_case)
  try:
    pretraining_data.make_records(
        input_files, settings, FLAGS.output_dir, FLAGS.output_base_name,
        FLAGS.random_seed,
        FLAGS.num_workers or pretraining_data.available_cores(),
        FLAGS.num_shards, FLAGS.shard_index)
  except OSError as e:
    # An unreadable input, a folder that cannot be created.
    raise cli.StageError(file_io.describe_os_error(e)) from None


if __name__ == "__main__":
  cli.run(main)
