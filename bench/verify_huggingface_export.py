"""export_model.py --format=huggingface, read back by transformers: the same
outputs as this project's model of the checkpoint.

Runs in the bench environment (`make bench-env`: transformers and PyTorch
next to this project's requirements):

  .venv-bench/bin/python bench/verify_huggingface_export.py
  .venv-bench/bin/python bench/verify_huggingface_export.py \\
      --checkpoint=bench_output/real_teacher/teacher   # also a real model

Each case writes a Google-named checkpoint (or takes --checkpoint), exports
it with `export_model.py --format=huggingface` as a user runs it, loads the
folder with transformers' `from_pretrained` (float32, eval mode) and runs
both models on the same random batch (padding included). It prints the
largest absolute difference of every output and fails above --tolerance:

  tanh GELU     random BertPretrainingModel, bert_config.json "gelu"
                -> BertForPreTraining (config.json "gelu_new"): last hidden
                state, pooled output, masked-LM logits at P positions,
                next-sentence logits
  exact GELU    the same with "gelu_exact" -> "gelu"
  classifier    a random [CLS]-pooling 3-class BertClassifier (run_classifier's
                names) -> BertForSequenceClassification: logits
  --checkpoint  a real checkpoint (its bert_config.json beside it): every
                output its heads give

The random models have BERT's vocabulary size and a 4-layer, 256-wide
encoder, so the masked-LM decoder and the tied word embeddings are checked
at full width; their weights are drawn 5x wider than BERT's initializer
(0.1) so the GELU's inputs reach magnitudes where its two forms differ
(at 0.02 they would agree to 1e-6 and the GELU would go unchecked).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bert_distill import checkpoints  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import classifier  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import model_config  # pylint: disable=g-import-not-at-top,wrong-import-position
import modeling  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order

RANDOM_CONFIG = {"vocab_size": 30522, "hidden_size": 256,
                 "num_hidden_layers": 4, "num_attention_heads": 4,
                 "intermediate_size": 1024, "hidden_dropout_prob": 0.1,
                 "attention_probs_dropout_prob": 0.1,
                 "max_position_embeddings": 512, "type_vocab_size": 2,
                 "initializer_range": 0.1}


def random_batch(vocab_size, batch=4, seq=32, predictions=5, seed=0):
  """input_ids, input_mask (the last examples padded), segment_ids and
  masked_lm_positions as int32 NumPy arrays."""
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(1000, vocab_size, (batch, seq)).astype(np.int32)
  input_mask = np.ones((batch, seq), np.int32)
  for row in range(1, batch):
    input_mask[row, seq - 3 * row:] = 0
  input_ids[input_mask == 0] = 0
  segment_ids = np.zeros((batch, seq), np.int32)
  segment_ids[:, seq // 2:] = 1
  positions = np.sort(rng.choice(np.arange(1, seq - 3 * batch),
                                 (batch, predictions)), axis=1)
  return input_ids, input_mask, segment_ids, positions.astype(np.int32)


def write_random_checkpoint(directory, hidden_act, kind):
  """A Google-named checkpoint of random weights with its bert_config.json;
  kind: "pretraining" or "classifier"."""
  config_dict = dict(RANDOM_CONFIG, hidden_act=hidden_act)
  config = model_config.config_from_dict(config_dict)
  if kind == "pretraining":
    model = modeling.BertPretrainingModel(config, seed=1)
    values = model.variables_by_name()
    # Heads initialised to zeros would compare nothing: draw them too.
    rng = np.random.default_rng(2)
    for name, variable in values.items():
      if name.startswith("cls/"):
        variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))
  else:
    model = classifier.BertClassifier(config, 3, seed=1)
    values = model.variables_by_name()
    bias = values[classifier.OUTPUT_BIAS]
    bias.assign(np.array([0.1, -0.2, 0.05], np.float32))
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "bert_config.json"), "w") as f:
    json.dump(config_dict, f)
  checkpoints.save_checkpoint(values, directory, 0)
  return directory


def ours(checkpoint, config_file, batch):
  """{output name: NumPy array} of this project's model of the checkpoint."""
  config = model_config.read_config(config_file)
  input_ids, input_mask, segment_ids, positions = batch
  num_labels = checkpoints.checkpoint_shapes(checkpoint).get(
      classifier.OUTPUT_WEIGHTS, [None])[0]
  if num_labels:
    model = classifier.BertClassifier(config, num_labels,
                                      pooling=classifier.pooling_of(config))
    checkpoints.load_checkpoint(model.variables_by_name(), checkpoint)
    return {"logits": model(input_ids, input_mask, segment_ids)["logits"]
                      .numpy()}
  shapes = checkpoints.checkpoint_shapes(checkpoint)
  if any(name.startswith("cls/predictions") for name in shapes):
    model = modeling.BertPretrainingModel(config, initialize=False)
    checkpoints.load_checkpoint(
        model, checkpoint, optional=("cls/seq_relationship",))
    outputs = model(input_ids, input_mask, segment_ids, positions)
    names = ["sequence_output", "pooled_output", "masked_lm_logits"]
    if "cls/seq_relationship/output_weights" in shapes:
      names.append("next_sentence_logits")
  else:
    model = modeling.BertModel(config, initialize=False)
    checkpoints.load_checkpoint(model.variables_by_name(), checkpoint)
    outputs = model(input_ids, input_mask, segment_ids)
    names = ["sequence_output", "pooled_output"]
  return {name: outputs[name].numpy() for name in names}


def theirs(export_dir, batch, names):
  """The same outputs from transformers' model of the exported folder."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  with open(os.path.join(export_dir, "config.json")) as f:
    architecture = json.load(f)["architectures"][0]
  model = getattr(transformers, architecture).from_pretrained(export_dir)
  model.eval()
  input_ids, input_mask, segment_ids, positions = (
      torch.from_numpy(a.astype(np.int64)) for a in batch)
  with torch.no_grad():
    out = model(input_ids=input_ids, attention_mask=input_mask,
                token_type_ids=segment_ids, output_hidden_states=True)
  result = {}
  if "logits" in names:
    result["logits"] = out.logits.numpy()
    return result
  if architecture == "BertModel":
    result["sequence_output"] = out.last_hidden_state.numpy()
    result["pooled_output"] = out.pooler_output.numpy()
    return result
  bert = model.bert
  result["sequence_output"] = out.hidden_states[-1].numpy()
  with torch.no_grad():
    result["pooled_output"] = bert.pooler(out.hidden_states[-1]).numpy()
  scores = out.prediction_logits.numpy()  # [B, S, V]
  result["masked_lm_logits"] = np.take_along_axis(
      scores, positions.numpy()[:, :, None], axis=1)
  if "next_sentence_logits" in names:
    result["next_sentence_logits"] = out.seq_relationship_logits.numpy()
  return result


def export(checkpoint, config_file, export_dir):
  """Runs export_model.py --format=huggingface as a user does."""
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "export_model.py"),
       f"--checkpoint={checkpoint}", f"--bert_config_file={config_file}",
       "--format=huggingface", f"--export_dir={export_dir}"],
      capture_output=True, text=True, cwd=ROOT, check=False)
  if result.returncode:
    sys.exit(f"error: export_model.py failed on {checkpoint}:\n"
             f"{result.stderr[-2000:]}")


def compare(name, checkpoint, config_file, work, tolerance):
  """Exports, runs both, prints one line per output; returns (whether all
  are within tolerance, our outputs)."""
  config = model_config.read_config(config_file)
  batch = random_batch(config.vocab_size)
  export_dir = os.path.join(work, name.replace(" ", "_"))
  export(checkpoint, config_file, export_dir)
  with open(os.path.join(export_dir, "config.json")) as f:
    exported = json.load(f)
  want = ours(checkpoint, config_file, batch)
  got = theirs(export_dir, batch, list(want))
  ok = True
  print(f"{name}: {exported['architectures'][0]}, hidden_act "
        f"{exported['hidden_act']!r} (ours: {config.hidden_act!r})")
  for output, value in want.items():
    difference = float(np.max(np.abs(value - got[output])))
    scale = float(np.max(np.abs(value)))
    passed = difference <= tolerance * max(1.0, scale)
    ok &= passed
    print(f"  {output:22s} {str(list(value.shape)):16s} max |ours - "
          f"transformers| {difference:.2e} (max |value| {scale:.2f}) "
          f"{'ok' if passed else 'DIFFERENT'}")
  return ok, want


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", action="append", default=[],
                      help="also a real checkpoint (bert_config.json or "
                      "config.json beside it); repeatable")
  parser.add_argument("--tolerance", type=float, default=2e-5,
                      help="largest difference allowed, relative to the "
                      "output's largest magnitude (at least 1)")
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count() or 1)
  print(f"tensorflow {tf.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}")
  ok = True
  with tempfile.TemporaryDirectory() as work:
    outputs = {}
    for name, act, kind in (("tanh GELU", "gelu", "pretraining"),
                            ("exact GELU", "gelu_exact", "pretraining"),
                            ("classifier", "gelu", "classifier")):
      directory = write_random_checkpoint(os.path.join(work, f"ckpt_{kind}_{act}"),
                                          act, kind)
      passed, outputs[name] = compare(
          name, directory, os.path.join(directory, "bert_config.json"), work,
          args.tolerance)
      ok &= passed
    # The two pretraining cases hold the same weights: what a GELU mix-up
    # would have shown.
    gelu_gap = float(np.max(np.abs(outputs["tanh GELU"]["sequence_output"] -
                                   outputs["exact GELU"]["sequence_output"])))
    print(f"the same weights with the other GELU: last hidden state differs "
          f"by {gelu_gap:.2e} (a GELU mix-up would show at this size)")
    scale = float(np.max(np.abs(outputs["tanh GELU"]["sequence_output"])))
    ok &= gelu_gap > 10 * args.tolerance * max(1.0, scale)
    for index, checkpoint in enumerate(args.checkpoint):
      config_file = checkpoints.file_beside(checkpoint, "config")
      ok &= compare(f"checkpoint {index} ({checkpoint})", checkpoint,
                    config_file, work, args.tolerance)[0]
  print("all outputs agree" if ok else "DIFFERENT outputs")
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
