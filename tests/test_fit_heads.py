"""Stage T, distill.py --trainable=heads: fitting an MLM head onto an
encoder-only teacher (Google's names, or a HuggingFace BertModel folder as
sentence-transformers publish them). The heads learn, the encoder stays
bit-identical, the result is a complete teacher for stage IV;
--trainable=all trains both; the one-line errors."""
import json
import os
import sys

import numpy as np
import pytest

import bert_reference as ref
from bert_distill import distill_training
from bert_distill import records
import stage_runs
from bert_reference import checkpoint_values
from conftest import ROOT

L, P = 16, 4
CONFIG = dict(ref.TINY_CONFIG, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
STEPS = 6


def write_hf_encoder(directory, weights, config):
  """An HF BertModel folder (no heads, no `bert.` prefix, as
  sentence-transformers publish one) of Google-named `weights`, with
  transformers' names written out here: Linear weights are [out, in]."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  tensors = {}
  for name, value in weights.items():
    if name.startswith(distill_training.HEADS_PREFIX):
      continue
    hf = (name[len("bert/"):].replace("encoder/layer_", "encoder.layer.")
          .replace("/", "."))
    if hf.endswith(".kernel"):
      hf, value = hf[:-len("kernel")] + "weight", value.T.copy()
    elif hf.endswith("_embeddings"):
      hf += ".weight"
    hf = hf.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
        "LayerNorm.beta", "LayerNorm.bias")
    tensors[hf] = value
  directory.mkdir(parents=True)
  save_file(tensors, str(directory / "model.safetensors"))
  (directory / "config.json").write_text(json.dumps(
      {**config, "model_type": "bert", "architectures": ["BertModel"],
       "layer_norm_eps": 1e-12, "transformers_version": "4.8.2"}))
  return directory


def fit_command(init, output_dir, *extra, config_name="bert_config.json",
                records_dir=None):
  return [os.path.join(ROOT, "distill.py"), "--do_train", "--do_eval",
          f"--bert_config_file={init}/{config_name}",
          f"--init_checkpoint={init}",
          f"--input_file={records_dir or init}/train.tfrecord",
          f"--output_dir={output_dir}", f"--max_seq_length={L}",
          f"--max_predictions_per_seq={P}", "--soft_loss_weight=0",
          "--hard_mlm_loss_weight=1", "--next_sentence_loss_weight=0",
          "--train_batch_size=4", "--eval_batch_size=4", "--learning_rate=1e-2",
          f"--num_train_steps={STEPS}", "--num_warmup_steps=0",
          "--iterations_per_loop=3", "--use_xla=false", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An encoder-only teacher (a model without cls/, as sentence-transformers
  publish them) and plain pretraining records; its heads fitted with the
  encoder frozen, the whole model trained, and the bad invocations; then
  stage IV labelling with the fitted teacher."""
  base = tmp_path_factory.mktemp("fit_heads")
  teacher = base / "encoder_only"
  config_path, _, weights = ref.write_model_dir(str(teacher), CONFIG, seed=1)
  encoder = {n: w for n, w in weights.items()
             if not n.startswith(distill_training.HEADS_PREFIX)}
  for path in teacher.glob("bert_model.ckpt*"):
    path.unlink()
  ref.write_google_checkpoint(str(teacher / "bert_model.ckpt"), encoder)
  ref.write_records(teacher / "train.tfrecord", ref.random_pretraining_examples(
      24, L, P, CONFIG["vocab_size"], seed=2))
  broken = base / "broken"
  ref.write_model_dir(str(broken), CONFIG, seed=1)
  for path in broken.glob("bert_model.ckpt*"):
    path.unlink()
  ref.write_google_checkpoint(str(broken / "bert_model.ckpt"), {
      n: w for n, w in encoder.items()
      if n != "bert/encoder/layer_1/output/dense/kernel"})
  (broken / "train.tfrecord").write_bytes(
      (teacher / "train.tfrecord").read_bytes())

  hf_teacher = write_hf_encoder(base / "hf_encoder_only", weights, CONFIG)

  jobs = {
      "heads": fit_command(teacher, base / "heads", "--trainable=heads"),
      "heads_hf": fit_command(hf_teacher, base / "heads_hf",
                              "--trainable=heads", config_name="config.json",
                              records_dir=teacher),
      "all": fit_command(teacher, base / "all", "--trainable=all"),
      "no_init": [a for a in fit_command(teacher, base / "no_init",
                                         "--trainable=heads")
                  if not a.startswith("--init_checkpoint")],
      "missing_encoder": fit_command(broken, base / "missing_encoder",
                                     "--trainable=heads"),
  }
  results = stage_runs.run_all(jobs, str(base / "logs"))
  labels = stage_runs.run([
      sys.executable, os.path.join(ROOT, "extract_teacher_labels_truncated.py"),
      f"--bert_config_file={base}/heads/bert_config.json",
      f"--init_checkpoint={base}/heads", f"--input_file={teacher}/train.tfrecord",
      f"--output_file={base}/labels.tfrecord", f"--max_seq_length={L}",
      f"--max_predictions_per_seq={P}", "--batch_size=4",
      "--truncation_factor=3", "--progress_interval=0"])
  return {"base": base, "results": results, "labels": labels,
          "weights": weights, "encoder": encoder, "config": config_path}


def test_heads_learn_and_the_encoder_stays_bit_identical(runs):
  assert runs["results"]["heads"].returncode == 0, (
      runs["results"]["heads"].stderr[-3000:])
  values = checkpoint_values(runs["base"] / "heads" / f"model.ckpt-{STEPS}")
  for name, value in runs["encoder"].items():
    np.testing.assert_array_equal(values[name], value, err_msg=name)
    assert not np.any(values[name + "/adam_m"]), name
  # The fresh heads start at BERT's initial values (biases 0) and moved.
  assert np.abs(values["cls/predictions/output_bias"]).max() > 1e-3
  assert np.abs(values["cls/predictions/transform/dense/kernel/adam_m"]).max() > 0
  assert "left at initial values" in runs["results"]["heads"].stderr


def test_heads_of_a_huggingface_encoder(runs):
  result = runs["results"]["heads_hf"]
  assert result.returncode == 0, result.stderr[-3000:]
  values = checkpoint_values(runs["base"] / "heads_hf" / f"model.ckpt-{STEPS}")
  for name, value in runs["encoder"].items():
    np.testing.assert_array_equal(values[name], value, err_msg=name)
  assert np.abs(values["cls/predictions/output_bias"]).max() > 1e-3
  # HF's "gelu" is the exact one: the fitted teacher keeps computing it.
  written = json.loads((runs["base"] / "heads_hf" / "bert_config.json")
                       .read_text())
  assert written["hidden_act"] == "gelu_exact"


def test_trainable_all_trains_the_encoder_too(runs):
  assert runs["results"]["all"].returncode == 0, (
      runs["results"]["all"].stderr[-3000:])
  values = checkpoint_values(runs["base"] / "all" / f"model.ckpt-{STEPS}")
  name = "bert/encoder/layer_0/attention/self/query/kernel"
  assert not np.array_equal(values[name], runs["encoder"][name])
  assert np.abs(values["cls/predictions/output_bias"]).max() > 1e-3


def test_fitted_teacher_labels_in_stage_iv(runs):
  """Stage IV labels with the fitted teacher: every record's top 3 at each
  masked position are the NumPy BERT's of the fitted checkpoint (the
  encoder as given, the heads as fitted), in input order."""
  labels = runs["labels"]
  assert labels.returncode == 0, labels.stderr[-3000:]
  inputs = ref.read_records(runs["base"] / "encoder_only" / "train.tfrecord")
  out = ref.read_records(runs["base"] / "labels.tfrecord")
  assert len(out) == len(inputs) == 24
  fitted = checkpoint_values(runs["base"] / "heads" / f"model.ckpt-{STEPS}")
  config = json.loads((runs["base"] / "heads" / "bert_config.json")
                      .read_text())
  def stack(name):
    return np.stack([e[name] for e in inputs])
  logits = ref.bert_forward(
      fitted, config, stack(records.INPUT_IDS), stack(records.INPUT_MASK),
      stack(records.SEGMENT_IDS), stack(records.MASKED_LM_POSITIONS))[
          "masked_lm_logits"]  # [24, P, V]
  ref.assert_top_k_matches(out, ref.softmax(logits), k=3)


@pytest.mark.parametrize("case, texts", [
    ("no_init", ["--trainable heads", "--init_checkpoint"]),
    ("missing_encoder", ["--init_checkpoint",
                         "bert/encoder/layer_1/output/dense/kernel"]),
])
def test_bad_input_is_one_line_error(runs, case, texts):
  stage_runs.assert_one_line_error(runs["results"][case], *texts)
