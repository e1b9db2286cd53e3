"""What the benches' PyTorch peer scripts share (torch_teacher_labels.py,
torch_distill.py): their common flags and start, the records they read,
bfloat16 autocast and the GPU memory figure, all without TensorFlow.

Records are read and written by records.py's TensorFlow-free framing and
codec (read_tfrecords / decode_example, TFRecordWriter /
ExampleBatchEncoder), so a peer's whole-process time includes our decoder:
on 160 teacher-label records it takes 4 ms more than the dedicated reader
it replaced (bench/tfrecord_io.py), and the batch encoder 33 ms less.
TensorFlow must not load in a peer (its import and thread pools would count
against PyTorch): read_examples checks.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bert_distill import records  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import example_codec  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import tfrecord  # pylint: disable=g-import-not-at-top,wrong-import-position


def argument_parser(doc):
  """An argparse parser described by doc's first line, with the flags every
  peer has: --bert_config_file, --input_file, --threads, --device,
  --precision."""
  parser = argparse.ArgumentParser(description=doc.split("\n")[0])
  parser.add_argument("--bert_config_file", required=True)
  parser.add_argument("--input_file", required=True)
  parser.add_argument("--threads", type=int, default=2,
                      help="torch.set_num_threads.")
  parser.add_argument("--device", default="cpu", help="cpu or cuda.")
  parser.add_argument("--precision", default="float32",
                      choices=["float32", "bfloat16"],
                      help="bfloat16: torch.autocast, float32 weights "
                      "(softmax and losses in float32).")
  return parser


def start(parser):
  """A peer's first steps: parses its flags, sets torch's threads, notes the
  time (the end of its import phase) and reads --bert_config_file.

  Returns:
    (the flags, that perf_counter time, the BERT config as a dict).
  """
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  imported = time.perf_counter()
  with open(args.bert_config_file) as f:
    return args, imported, json.load(f)


def autocast(device, precision):
  """torch.autocast to bfloat16 on `device` ("cpu", "cuda:0") when
  `precision` (--precision) is "bfloat16"; otherwise does nothing."""
  return torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                        enabled=precision == "bfloat16")


def peak_gpu_mb(device):
  """The peak GPU memory allocated so far in MB; None on the CPU."""
  if not device.startswith("cuda"):
    return None
  return torch.cuda.max_memory_allocated() / 2**20


def read_examples(path):
  """The records of a TFRecord file, each as {name: np.ndarray}."""
  examples = [example_codec.decode_example(r) for r in tfrecord.read_tfrecords(path)]
  if "tensorflow" in sys.modules:
    raise RuntimeError("records.py read the records with TensorFlow "
                       "(google_crc32c's C code is missing): the PyTorch "
                       "peer's time would include TensorFlow's")
  return examples
