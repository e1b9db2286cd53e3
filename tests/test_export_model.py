"""export_model.py: the SavedModel, loaded in a process without this
project's code, gives the in-process model's outputs (and the NumPy
reference's); config.json and the vocabulary sit beside it."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bert_reference as ref
from bert_distill import checkpoints
from bert_distill import classifier
import modeling
import stage_runs
from conftest import ROOT

SCRIPT = os.path.join(ROOT, "export_model.py")
# The stages' environment without PYTHONPATH: the export must serve alone.
ENV = {k: v for k, v in stage_runs.ENV.items() if k != "PYTHONPATH"}

# Run from an empty folder with only TensorFlow: no module of this project
# can be imported there.
LOAD_AND_RUN = """
import json, sys
import numpy as np
import tensorflow as tf
for module in ("modeling", "classifier", "serving"):
  try:
    __import__(module)
    sys.exit("this project's code is importable: " + module)
  except ImportError:
    pass
inputs = {k: tf.constant(np.array(v, np.int32))
          for k, v in json.load(open("inputs.json")).items()}
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
outputs = serve(**inputs)
json.dump({k: v.numpy().tolist() for k, v in outputs.items()},
          open("outputs.json", "w"))
"""


def inputs(batch=3, length=9):
  rng = np.random.default_rng(5)
  mask = np.ones((batch, length), np.int32)
  mask[1, 5:] = 0
  return {"input_ids": rng.integers(0, 99, (batch, length)).astype(np.int32),
          "input_mask": mask,
          "segment_ids": (np.arange(length) >= 4).astype(np.int32)[None].repeat(
              batch, 0)}


def serve_elsewhere(export_dir, folder, features):
  folder.mkdir()
  (folder / "inputs.json").write_text(json.dumps(
      {k: v.tolist() for k, v in features.items()}))
  result = subprocess.run([sys.executable, "-c", LOAD_AND_RUN,
                           str(export_dir)], cwd=folder, env=ENV,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  return {k: np.array(v) for k, v in
          json.loads((folder / "outputs.json").read_text()).items()}


def export_command(tmp_path, checkpoint, export_dir, vocab=True):
  config = tmp_path / "bert_config.json"
  config.write_text(json.dumps(ref.TINY_CONFIG))
  argv = [sys.executable, SCRIPT, f"--checkpoint={checkpoint}",
          f"--bert_config_file={config}", f"--export_dir={export_dir}"]
  if vocab:
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("".join(f"t{i}\n" for i in range(99)))
    argv.append(f"--vocab_file={vocab_file}")
  return argv


def run_together(commands):
  """Runs the commands side by side; returns their CompletedProcess-like
  (returncode, stderr) results in order."""
  processes = [subprocess.Popen(argv, env=ENV, cwd=ROOT, text=True,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE) for argv in commands]
  return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), None,
                                      p.communicate()[1]) for p in processes]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A fine-tuned-style checkpoint (Google's names + a 3-way head) and a
  plain pretraining one, each exported."""
  root = tmp_path_factory.mktemp("export")
  weights = ref.random_google_weights(ref.TINY_CONFIG, seed=4)
  rng = np.random.default_rng(1)
  head = {"output_weights": rng.normal(size=(3, 32)).astype(np.float32),
          "output_bias": rng.normal(size=3).astype(np.float32)}
  with_head = ref.write_google_checkpoint(
      str(root / "model.ckpt-10"),
      {**{n: w for n, w in weights.items() if n.startswith("bert/")}, **head},
      global_step=10)
  plain = ref.write_google_checkpoint(str(root / "bert_model.ckpt"), weights)
  results = dict(zip(("classifier", "encoder"), run_together([
      export_command(root, with_head, root / "classifier"),
      export_command(root, plain, root / "encoder")])))
  return {"root": root, "weights": weights, "head": head,
          "checkpoints": {"classifier": with_head, "encoder": plain},
          "results": results}


def test_saved_model_outputs_equal_the_in_process_model(exported):
  root = exported["root"]
  assert exported["results"]["classifier"].returncode == 0, (
      exported["results"]["classifier"].stderr[-3000:])
  features = inputs()
  served = serve_elsewhere(root / "classifier", root / "elsewhere", features)
  assert set(served) == {"pooled_output", "sequence_output", "logits",
                         "probabilities"}
  config = modeling.BertConfig.from_dict(ref.TINY_CONFIG)
  model = classifier.BertClassifier(config, 3)
  checkpoints.load_checkpoint(model.variables_by_name(),
                              exported["checkpoints"]["classifier"])
  want = model(features["input_ids"], features["input_mask"],
               features["segment_ids"])
  for name in ("pooled_output", "sequence_output", "logits"):
    np.testing.assert_allclose(served[name], want[name].numpy(), rtol=1e-5,
                               atol=1e-5, err_msg=name)
  np.testing.assert_allclose(served["probabilities"].sum(-1), 1.0, atol=1e-6)
  # And both are the NumPy reference BERT with the head on its pooled output.
  reference = ref.bert_forward(exported["weights"], ref.TINY_CONFIG,
                               features["input_ids"], features["input_mask"],
                               features["segment_ids"],
                               np.zeros((3, 1), np.int64))
  logits = (reference["pooled_output"] @ exported["head"]["output_weights"].T +
            exported["head"]["output_bias"])
  np.testing.assert_allclose(served["logits"], logits, atol=1e-4)
  np.testing.assert_allclose(served["probabilities"], ref.softmax(logits),
                             atol=1e-5)


def test_a_checkpoint_without_head_serves_the_encoder(exported):
  root = exported["root"]
  assert exported["results"]["encoder"].returncode == 0, (
      exported["results"]["encoder"].stderr[-3000:])
  features = inputs(batch=2, length=7)
  served = serve_elsewhere(root / "encoder", root / "elsewhere2", features)
  assert set(served) == {"pooled_output", "sequence_output"}
  reference = ref.bert_forward(exported["weights"], ref.TINY_CONFIG,
                               features["input_ids"], features["input_mask"],
                               features["segment_ids"],
                               np.zeros((2, 1), np.int64))
  np.testing.assert_allclose(served["sequence_output"],
                             reference["sequence_output"], atol=1e-4)
  np.testing.assert_allclose(served["pooled_output"],
                             reference["pooled_output"], atol=1e-4)


def test_config_json_and_vocab_sit_beside_the_model(exported):
  for name, architecture in (("classifier", "BertForSequenceClassification"),
                             ("encoder", "BertModel")):
    folder = exported["root"] / name
    assert {"saved_model.pb", "variables", "vocab.txt", "config.json",
            "bert_config.json"} <= set(os.listdir(folder))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert config["architectures"] == [architecture]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size"):
      assert config[key] == ref.TINY_CONFIG[key], key
    assert config["hidden_act"] == "gelu_new"  # BERT's tanh GELU
    assert config["layer_norm_eps"] == 1e-12
    assert config.get("num_labels") == (3 if name == "classifier" else None)
    assert len((folder / "vocab.txt").read_text().splitlines()) == 99
  assert not [p for p in os.listdir(exported["root"]) if ".tmp-" in p]


def _contents(folder):
  return {str(p.relative_to(folder)): p.read_bytes()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_exports_are_one_line_errors_that_write_nothing(exported):
  root = exported["root"]
  existing = _contents(root / "classifier")
  results = run_together([
      export_command(root, exported["checkpoints"]["encoder"],
                     root / "classifier"),
      export_command(root, root / "missing.ckpt", root / "missing")])
  for result, message in zip(results, ["already exists",
                                       "no checkpoint there"]):
    stage_runs.assert_one_line_error(result, message)
  assert not (root / "missing").exists()
  assert not [p for p in os.listdir(root) if ".tmp-" in p]
  assert _contents(root / "classifier") == existing  # left as it was


def test_an_export_removes_the_folder_a_killed_export_left(exported):
  """A killed export cannot remove its temporary folder; the next export to
  that name does (the kill itself: tests/test_reliability_stages45.py)."""
  root = exported["root"]
  stale = root / "after_kill.tmp-999999"
  (stale / "variables").mkdir(parents=True)
  (stale / "saved_model.pb").write_bytes(b"half written")
  result, = run_together([export_command(
      root, exported["checkpoints"]["encoder"], root / "after_kill")])
  assert result.returncode == 0, result.stderr[-2000:]
  assert not stale.exists()
  # The new export, not the stale folder renamed into place: byte for byte
  # the encoder export the fixture made from the same checkpoint.
  # (fingerprint.pb holds a random id of each save.)
  made = _contents(root / "after_kill")
  assert made.pop("fingerprint.pb") and made["saved_model.pb"] != (
      b"half written")
  want = _contents(root / "encoder")
  del want["fingerprint.pb"]
  assert made == want
