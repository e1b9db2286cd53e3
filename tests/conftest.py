"""Shared test setup: the project root on sys.path, quiet TensorFlow, CPU only."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

VOCAB_FILE = os.path.join(ROOT, "data", "bert_uncased_vocab.txt")
# Records written by the original project's tools (tests/data/original/README.md).
ORIGINAL_RECORDS = os.path.join(ROOT, "tests", "data", "original",
                                "original_sample_records.tfrecord")


def import_stage_script(module_name):
  """Imports a stage script (e.g. "distill") to test its helper functions.

  Only for distill.py and extract_teacher_labels_truncated.py, whose helpers
  have not yet moved into modules that define no flags, as
  pretraining_data.py, article_split.py and wikipedia_text.py did for stages
  III-b, III-a and II.

  Each script defines its absl flags at import, as Google's scripts do, and
  several share flag names (--output_dir, --max_seq_length, ...). One pytest
  process imports several scripts, so a flag another script already defined
  under the same name is dropped before this script defines it again. Tests
  run the scripts' main() only in subprocesses, where each has its own flags.
  """
  import importlib  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  while True:
    try:
      return importlib.import_module(module_name)
    except flags.DuplicateFlagError as e:
      # A failed import is dropped from sys.modules; the flags it defined
      # before the clash are re-defined silently by the retried import.
      name = str(e).split("'")[1]
      delattr(flags.FLAGS, name)
