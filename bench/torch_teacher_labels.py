"""Stage IV's job done by HuggingFace transformers + PyTorch, as one process.

What a PyTorch user would run instead of extract_teacher_labels_truncated.py:
read the pretraining records, run BertForPreTraining (eval, no_grad, the MLM
head at the masked positions only, softmax over the vocabulary, top-k) in
batches at the records' full length with the attention mask, and write the
teacher-label records (the input features plus truncated_masked_lm_probs and
top_k_indices). No TensorFlow: records are read and written by
bench/tfrecord_io.py. The teacher's weights come from an .npz copy of its
Google-named checkpoint (PyTorch cannot read TF checkpoints).

  .venv-bench/bin/python bench/torch_teacher_labels.py --weights W.npz \
      --bert_config_file C.json --input_file IN --output_file OUT \
      [--batch_size 32 --truncation_factor 10 --threads 2]

Prints one JSON line at the end: phase times (import, load, loop) and the
loop's steady-state rate (batches after the first).
"""

import time

_START = time.perf_counter()

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import os  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfrecord_io  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_teacher_worker  # pylint: disable=g-import-not-at-top,wrong-import-position

PRETRAINING_FEATURES = ("input_ids", "input_mask", "segment_ids",
                        "masked_lm_positions", "masked_lm_ids",
                        "masked_lm_weights", "next_sentence_labels")
FLOAT_FEATURES = {"masked_lm_weights", "truncated_masked_lm_probs"}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--weights", required=True)
  parser.add_argument("--bert_config_file", required=True)
  parser.add_argument("--input_file", required=True)
  parser.add_argument("--output_file", required=True)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--truncation_factor", type=int, default=10)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--device", default="cpu", help="cpu or cuda.")
  parser.add_argument("--precision", default="float32",
                      choices=["float32", "bfloat16"],
                      help="bfloat16: torch.autocast (softmax in float32).")
  return parser.parse_args()


def main():
  args = parse_args()
  torch.set_num_threads(args.threads)
  imported = time.perf_counter()
  with open(args.bert_config_file) as f:
    config = json.load(f)
  model = torch_teacher_worker.build_model(dict(np.load(args.weights)),
                                           config).to(args.device)
  loaded = time.perf_counter()
  examples = [tfrecord_io.decode_example(r)
              for r in tfrecord_io.read_records(args.input_file)]
  batch_times = []
  with tfrecord_io.RecordWriter(args.output_file + ".tmp") as writer:
    for begin in range(0, len(examples), args.batch_size):
      started = time.perf_counter()
      batch = examples[begin:begin + args.batch_size]
      ids, mask, segments, positions = (
          torch.from_numpy(np.stack([e[name] for e in batch])).to(args.device)
          for name in PRETRAINING_FEATURES[:4])
      with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16,
                          enabled=args.precision == "bfloat16"):
        top = torch_teacher_worker.top_k_labels(model, ids, mask, segments,
                                                positions,
                                                args.truncation_factor)
      probs = top.values.reshape(len(batch), -1).float().cpu().numpy()
      top_ids = top.indices.reshape(len(batch), -1).cpu().numpy()
      for e, p, i in zip(batch, probs, top_ids):
        features = {name: e[name] for name in PRETRAINING_FEATURES}
        features["truncated_masked_lm_probs"] = p
        features["top_k_indices"] = i
        writer.write(tfrecord_io.encode_example(features, FLOAT_FEATURES))
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
      "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20
                      if args.device.startswith("cuda") else None)}),
        flush=True)


if __name__ == "__main__":
  main()
