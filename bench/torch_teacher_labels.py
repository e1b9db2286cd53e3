"""Stage IV's job done by HuggingFace transformers + PyTorch, as one process.

What a PyTorch user would run instead of extract_teacher_labels_truncated.py:
read the pretraining records, run BertForPreTraining (eval, no_grad, the MLM
head at the masked positions only, softmax over the vocabulary, top-k) in
batches at the records' full length with the attention mask, and write the
teacher-label records (the input features plus truncated_masked_lm_probs and
top_k_indices). No TensorFlow: records are read and written by
records.py's own codec (bench/torch_peer.py). The teacher's weights come
from an .npz copy of its Google-named checkpoint (PyTorch cannot read TF
checkpoints).

  .venv-bench/bin/python bench/torch_teacher_labels.py --weights W.npz \
      --bert_config_file C.json --input_file IN --output_file OUT \
      [--batch_size 32 --truncation_factor 10 --threads 2]

Prints one JSON line at the end: phase times (import, load, loop) and the
loop's steady-state rate (batches after the first).
"""

import time

_START = time.perf_counter()

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import os  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [BENCH, os.path.dirname(BENCH)]
from bert_distill import records  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import example_codec  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import tfrecord  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_peer  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_teacher_worker  # pylint: disable=g-import-not-at-top,wrong-import-position

# The teacher-label records: the input features, then the teacher's top k.
LABEL_RECORD = example_codec.ExampleBatchEncoder(
    records.PRETRAINING_FEATURES + (records.TRUNCATED_PROBS,
                                    records.TOP_K_INDICES))


def flag_parser():
  parser = torch_peer.argument_parser(__doc__)
  parser.add_argument("--weights", required=True)
  parser.add_argument("--output_file", required=True)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--truncation_factor", type=int, default=10)
  return parser


def main():
  args, imported, config = torch_peer.start(flag_parser())
  model = torch_teacher_worker.build_model(dict(np.load(args.weights)),
                                           config).to(args.device)
  loaded = time.perf_counter()
  examples = torch_peer.read_examples(args.input_file)
  batch_times = []
  with tfrecord.TFRecordWriter(args.output_file + ".tmp") as writer:
    for begin in range(0, len(examples), args.batch_size):
      started = time.perf_counter()
      batch = examples[begin:begin + args.batch_size]
      ids, mask, segments, positions = (
          torch.from_numpy(np.stack([e[name] for e in batch])).to(args.device)
          for name in records.PRETRAINING_FEATURES[:4])
      with torch_peer.autocast(args.device, args.precision):
        top = torch_teacher_worker.top_k_labels(model, ids, mask, segments,
                                                positions,
                                                args.truncation_factor)
      probs = top.values.reshape(len(batch), -1).float().cpu().numpy()
      top_ids = top.indices.reshape(len(batch), -1).cpu().numpy()
      features = {name: np.stack([e[name] for e in batch])
                  for name in records.PRETRAINING_FEATURES}
      features[records.TRUNCATED_PROBS] = probs
      features[records.TOP_K_INDICES] = top_ids
      for serialized in LABEL_RECORD.encode(features):
        writer.write(serialized)
      batch_times.append(time.perf_counter() - started)
  os.replace(args.output_file + ".tmp", args.output_file)
  done = time.perf_counter()
  steady = batch_times[1:] or batch_times
  steady_sequences = len(examples) - (args.batch_size if len(batch_times) > 1
                                      else 0)
  print(json.dumps({
      "sequences": len(examples),
      "import_seconds": imported - _START,
      "load_seconds": loaded - imported,
      "loop_seconds": done - loaded,
      "steady_sequences_per_second": steady_sequences / sum(steady),
      "total_seconds": done - _START,
      "peak_gpu_mb": torch_peer.peak_gpu_mb(args.device)}),
        flush=True)


if __name__ == "__main__":
  main()
