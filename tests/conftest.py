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

