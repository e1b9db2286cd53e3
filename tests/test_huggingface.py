"""HuggingFace's layout in and out: BertConfig reading HF config.json (GELU,
layer_norm_eps, refused keys), the safetensors name map of huggingface.py
(every tensor onto its Google variable), HF folders wherever a checkpoint is
read, and export_model.py --format=huggingface (round trip)."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import huggingface
from bert_distill import model_config
import modeling

TINY = dict(ref.TINY_CONFIG)


def tiny_batch(seed=1, batch=3, seq=12, vocab=99, predictions=4):
  """(ids, mask, segments) int [B, S] and positions int [B, P]; real
  lengths S, S - 5 and 4."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, seq))
  lengths = np.array([seq, seq - 5, 4][:batch])
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
  segments = ((np.arange(seq)[None] >= lengths[:, None] // 2) & (mask == 1))
  positions = np.stack([rng.choice(n, predictions, replace=False)
                        for n in lengths])
  return ids * mask, mask, segments.astype(np.int64), positions


def hf_config_dict(**overrides):
  """TINY as transformers' BertConfig.to_dict() writes it (HF's "gelu" is
  the exact GELU)."""
  d = {"model_type": "bert", "architectures": ["BertForPreTraining"],
       "transformers_version": "4.40.0", "layer_norm_eps": 1e-12,
       "pad_token_id": 0, "position_embedding_type": "absolute",
       "use_cache": True, "classifier_dropout": None,
       **{k: v for k, v in TINY.items()}}
  d.update(overrides)
  return d


# ----- BertConfig -------------------------------------------------------------

@pytest.mark.parametrize("hf_act, ours", [
    ("gelu", "gelu_exact"), ("gelu_new", "gelu"), ("gelu_pytorch_tanh", "gelu"),
    ("relu", "relu")])
def test_hf_config_hidden_act_maps_to_the_same_function(hf_act, ours):
  config = model_config.config_from_dict(hf_config_dict(hidden_act=hf_act))
  assert config.hidden_act == ours
  # And back: the HF name written reproduces the numerics.
  back = model_config.config_from_dict(huggingface.hf_config_dict(config))
  assert back.hidden_act == ours


def test_google_config_gelu_is_tanh_and_round_trips():
  config = model_config.config_from_dict(dict(TINY))
  assert config.hidden_act == "gelu" and config.layer_norm_eps == 1e-12
  assert config.to_dict() == TINY  # no new key in a Google-layout file
  exact = model_config.config_from_dict(dict(TINY, hidden_act="gelu_exact"))
  again = model_config.config_from_dict(exact.to_dict())
  assert again == exact and again.hidden_act == "gelu_exact"


def test_hf_config_is_never_read_as_googles(tmp_path):
  """An HF config.json given where a bert_config.json is expected is read as
  HF's: its "gelu" is exact, its layer_norm_eps honoured, and no HF key
  leaks into the bert_config.json written from it."""
  path = tmp_path / "config.json"
  path.write_text(json.dumps(hf_config_dict(layer_norm_eps=1e-5)))
  config = model_config.read_config(str(path), 16, "teacher")
  assert config.hidden_act == "gelu_exact"
  assert config.layer_norm_eps == 1e-5
  written = config.to_dict()
  assert not modeling.is_hf_config(written)
  assert written["layer_norm_epsilon"] == 1e-5
  assert written["hidden_act"] == "gelu_exact"
  assert model_config.config_from_dict(written) == config


def test_googles_reader_refuses_an_hf_config():
  """modeling.BertConfig (Google's layout) never reads HF's "gelu" as tanh:
  it refuses the dict; model_config reads either."""
  with pytest.raises(ValueError, match="HuggingFace's config.json layout"):
    modeling.BertConfig.from_dict(hf_config_dict())
  assert model_config.config_from_dict(
      hf_config_dict()).hidden_act == "gelu_exact"


def test_hf_config_defaults_type_vocab_size_like_transformers():
  d = hf_config_dict()
  del d["type_vocab_size"]
  assert model_config.config_from_dict(d).type_vocab_size == 2


@pytest.mark.parametrize("overrides, message", [
    (dict(position_embedding_type="relative_key"),
     "position_embedding_type 'relative_key' is not supported"),
    (dict(model_type="roberta"), "model_type 'roberta'"),
    (dict(hidden_act="swish"), "HF hidden_act 'swish' is not supported"),
    (dict(is_decoder=True), "decoder"),
    (dict(layer_norm_eps=0), "layer_norm_eps must be a number in (0, 1)"),
])
def test_unsupported_hf_configs_are_one_line_errors(tmp_path, overrides,
                                                    message):
  path = tmp_path / "config.json"
  path.write_text(json.dumps(hf_config_dict(**overrides)))
  with pytest.raises(ValueError) as e:
    model_config.read_config(str(path))
  assert str(e.value).startswith(str(path)) and message in str(e.value)
  assert "\n" not in str(e.value)


def test_google_config_with_relative_positions_is_refused():
  with pytest.raises(ValueError, match="position_embedding_type"):
    model_config.config_from_dict(dict(TINY,
                                       position_embedding_type="relative_key"))


# ----- GELU and layer_norm_eps numerics -----------------------------------------

GELU_EXACTS = pytest.mark.parametrize(
    "gelu_exact", [modeling.gelu_exact, modeling.gelu_exact_fused],
    ids=["plain", "xla_fused"])


@GELU_EXACTS
def test_gelu_exact_matches_erf_and_differs_from_tanh(gelu_exact):
  x = np.linspace(-6, 6, 241).astype(np.float32)
  exact = gelu_exact(tf.constant(x)).numpy()
  want = 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))
  np.testing.assert_allclose(exact, want, atol=1e-6)
  assert np.abs(modeling.gelu(tf.constant(x)).numpy() - want).max() > 1e-4


@GELU_EXACTS
def test_gelu_exact_gradient_equals_the_derivative_of_erf_gelu(gelu_exact):
  x = tf.constant(np.linspace(-5, 5, 101), tf.float64)
  x32 = tf.cast(x, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x32)
    out = gelu_exact(x32)
  got = tape.gradient(out, x32).numpy()
  xs = x.numpy()
  cdf = 0.5 * (1 + np.vectorize(math.erf)(xs / np.sqrt(2)))
  pdf = np.exp(-0.5 * xs**2) / np.sqrt(2 * np.pi)
  np.testing.assert_allclose(got, cdf + xs * pdf, atol=1e-6)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_exact"])
def test_forward_matches_numpy_bert_with_each_gelu_and_eps(hidden_act):
  google = dict(TINY, hidden_act=hidden_act, layer_norm_epsilon=1e-3)
  weights = ref.random_google_weights(TINY, seed=3)
  model = modeling.BertPretrainingModel(model_config.config_from_dict(google),
                                        seed=0)
  for name, variable in model.variables_by_name().items():
    variable.assign(weights[name])
  batch = tiny_batch()
  out = model(*batch)
  want = ref.bert_forward(weights, google, *batch)
  for key in ("sequence_output", "masked_lm_logits", "pooled_output"):
    np.testing.assert_allclose(out[key].numpy(), want[key], rtol=1e-5,
                               atol=1e-5, err_msg=key)
  other = ref.bert_forward(weights, dict(
      google, hidden_act="gelu_exact" if hidden_act == "gelu" else "gelu"),
                           *batch)
  assert np.abs(other["sequence_output"] - want["sequence_output"]).max() > 1e-4


# ----- HF folders in ------------------------------------------------------------

def hf_tensors_by_hand(weights, prefix="bert.", heads=True, old_names=False):
  """{HF name: array} of Google-named weights, with transformers' names
  written out here (not from huggingface.NAME_MAP): Linear weights [out, in]."""
  w = weights
  t = {}
  ln_w, ln_b = ("gamma", "beta") if old_names else ("weight", "bias")

  def linear(hf, google):
    t[hf + ".weight"] = w[google + "/kernel"].T.copy()
    t[hf + ".bias"] = w[google + "/bias"]

  def norm(hf, google):
    t[f"{hf}.{ln_w}"] = w[google + "/gamma"]
    t[f"{hf}.{ln_b}"] = w[google + "/beta"]

  p = prefix
  t[p + "embeddings.word_embeddings.weight"] = w[
      "bert/embeddings/word_embeddings"]
  t[p + "embeddings.position_embeddings.weight"] = w[
      "bert/embeddings/position_embeddings"]
  t[p + "embeddings.token_type_embeddings.weight"] = w[
      "bert/embeddings/token_type_embeddings"]
  t[p + "embeddings.position_ids"] = np.arange(64)[None]
  norm(p + "embeddings.LayerNorm", "bert/embeddings/LayerNorm")
  layers = {int(n.split("/")[2][len("layer_"):]) for n in w
            if n.startswith("bert/encoder/")}
  for i in sorted(layers):
    hf, g = f"{p}encoder.layer.{i}.", f"bert/encoder/layer_{i}/"
    for part in ("query", "key", "value"):
      linear(hf + "attention.self." + part, g + "attention/self/" + part)
    linear(hf + "attention.output.dense", g + "attention/output/dense")
    norm(hf + "attention.output.LayerNorm", g + "attention/output/LayerNorm")
    linear(hf + "intermediate.dense", g + "intermediate/dense")
    linear(hf + "output.dense", g + "output/dense")
    norm(hf + "output.LayerNorm", g + "output/LayerNorm")
  linear(p + "pooler.dense", "bert/pooler/dense")
  if heads:
    linear("cls.predictions.transform.dense",
           "cls/predictions/transform/dense")
    norm("cls.predictions.transform.LayerNorm",
         "cls/predictions/transform/LayerNorm")
    t["cls.predictions.bias"] = w["cls/predictions/output_bias"]
    t["cls.seq_relationship.weight"] = w["cls/seq_relationship/output_weights"]
    t["cls.seq_relationship.bias"] = w["cls/seq_relationship/output_bias"]
  return t


def write_hf_folder(directory, tensors, config=None, vocab=True):
  from safetensors.numpy import save_file
  directory.mkdir(parents=True, exist_ok=True)
  save_file(tensors, str(directory / "model.safetensors"))
  (directory / "config.json").write_text(json.dumps(config or hf_config_dict()))
  if vocab:
    (directory / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                  [f"w{i}" for i in range(TINY["vocab_size"] - 5)]) + "\n")
  return str(directory)


@pytest.mark.parametrize("layout", ["BertForPreTraining", "BertModel",
                                    "old_gamma_beta", "tied_decoder_stored"])
def test_every_hf_tensor_lands_on_its_google_variable(tmp_path, layout):
  from bert_distill import checkpoints
  weights = ref.random_google_weights(TINY, seed=5)
  heads = layout != "BertModel"
  tensors = hf_tensors_by_hand(
      weights, prefix="" if layout == "BertModel" else "bert.", heads=heads,
      old_names=layout == "old_gamma_beta")
  if layout == "tied_decoder_stored":
    tensors["cls.predictions.decoder.weight"] = weights[
        "bert/embeddings/word_embeddings"]
    tensors["cls.predictions.decoder.bias"] = weights[
        "cls/predictions/output_bias"]
  folder = write_hf_folder(tmp_path / layout, tensors)
  config = model_config.config_from_dict(hf_config_dict())
  model = modeling.BertPretrainingModel(config, seed=0)
  report = checkpoints.load_checkpoint(model, folder, allow_partial=True)
  expected_missing = [] if heads else [
      n for n in weights if n.startswith("cls/")]
  assert sorted(report["initialized"]) == sorted(expected_missing)
  assert report["unused"] == []
  for name, variable in model.variables_by_name().items():
    if name not in expected_missing:
      np.testing.assert_array_equal(variable.numpy(), weights[name],
                                    err_msg=name)


def test_hf_model_computes_the_exact_gelu_bert(tmp_path):
  """An HF folder (config.json "gelu") runs as the NumPy BERT with the erf
  GELU, not the tanh one."""
  from bert_distill import checkpoints
  weights = ref.random_google_weights(TINY, seed=6)
  folder = write_hf_folder(tmp_path / "hf", hf_tensors_by_hand(weights))
  config = model_config.read_config(folder + "/config.json")
  model = modeling.BertPretrainingModel(config, seed=0)
  checkpoints.load_checkpoint(model, folder)
  batch = tiny_batch()
  out = model(*batch)
  want = ref.bert_forward(weights, dict(TINY, hidden_act="gelu_exact"), *batch)
  for key in ("sequence_output", "masked_lm_logits", "next_sentence_logits"):
    np.testing.assert_allclose(out[key].numpy(), want[key], rtol=1e-5,
                               atol=1e-5, err_msg=key)


def test_classifier_names_map_to_run_classifiers_head(tmp_path):
  from bert_distill import checkpoints
  weights = ref.random_google_weights(TINY, seed=7)
  tensors = hf_tensors_by_hand(weights, heads=False)
  tensors["classifier.weight"] = np.ones([3, 32], np.float32)
  tensors["classifier.bias"] = np.arange(3, dtype=np.float32)
  folder = write_hf_folder(tmp_path / "cls", tensors)
  shapes = checkpoints.checkpoint_shapes(folder)
  assert shapes["output_weights"] == [3, 32]
  assert shapes["output_bias"] == [3]
  assert shapes["bert/encoder/layer_1/intermediate/dense/kernel"] == [32, 37]


def test_untied_decoder_is_refused_in_one_line(tmp_path):
  from bert_distill import checkpoints
  weights = ref.random_google_weights(TINY, seed=8)
  tensors = hf_tensors_by_hand(weights)
  tensors["cls.predictions.decoder.weight"] = np.zeros([99, 32], np.float32)
  folder = write_hf_folder(tmp_path / "untied", tensors)
  with pytest.raises(ValueError, match="untied decoder") as e:
    checkpoints.checkpoint_shapes(folder)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("layout", ["hf_without_weights", "missing"])
def test_a_missing_checkpoint_is_named_not_the_config_beside_it(tmp_path,
                                                                layout):
  """An HF folder whose config.json is there but model.safetensors is not,
  or a path with nothing: the error names the checkpoint, not a config the
  user would then look for in vain."""
  from bert_distill import checkpoints
  from bert_distill import cli
  folder = tmp_path / "teacher"
  if layout == "hf_without_weights":
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config_dict()))
  with pytest.raises(cli.StageError) as e:
    checkpoints.companion_file(None, str(folder), "config",
                               "--teacher_config", "--teacher_checkpoint")
  message = str(e.value)
  assert message.startswith(f"--teacher_checkpoint: {folder}")
  assert ("holds no complete checkpoint" in message or
          "no checkpoint there" in message), message
  assert "config.json" not in message.split("(")[0] and "\n" not in message
  # With the checkpoint there, a missing config is what is named.
  write_hf_folder(tmp_path / "complete", hf_tensors_by_hand(
      ref.random_google_weights(TINY, seed=8)))
  os.remove(tmp_path / "complete" / "config.json")
  with pytest.raises(cli.StageError, match="give --teacher_config: "
                     "--teacher_checkpoint .* has no config.json"):
    checkpoints.companion_file(None, str(tmp_path / "complete"), "config",
                               "--teacher_config", "--teacher_checkpoint")


def test_bfloat16_tensors_are_read_exactly(tmp_path):
  """NumPy has no bfloat16: the reader widens the file's bytes itself."""
  from bert_distill import huggingface
  from safetensors.numpy import save_file
  value = np.array([[1.5, -2.25, 3.0e-3]], np.float32)
  path = str(tmp_path / "w.safetensors")
  save_file({"embeddings.token_type_embeddings.weight": value}, path)
  # Rewrite the F32 entry as BF16: the top 16 bits of each float32.
  raw = open(path, "rb").read()
  size = int.from_bytes(raw[:8], "little")
  header = json.loads(raw[8:8 + size])
  key = "embeddings.token_type_embeddings.weight"
  bf16 = (value.view(np.uint32) >> 16).astype(np.uint16).tobytes()
  header[key].update(dtype="BF16", data_offsets=[0, len(bf16)])
  text = json.dumps(header).encode()
  open(path, "wb").write(len(text).to_bytes(8, "little") + text + bf16)
  reader = huggingface.SafetensorsReader(path)
  got = reader.get_tensor("bert/embeddings/token_type_embeddings")
  np.testing.assert_array_equal(got, ((value.view(np.uint32) >> 16) << 16)
                                .view(np.float32))


def test_name_map_round_trips_every_google_name():
  from bert_distill import huggingface
  names = list(modeling.variable_shapes(modeling.BertConfig(**TINY)))
  names += ["output_weights", "output_bias"]
  for name in names:
    for prefix in (True, False):
      hf, transposed = huggingface.hf_name(name, prefix)
      assert huggingface.google_name(hf) == (name, transposed), hf
      assert transposed == name.endswith("/kernel")


# ----- encoder-only teachers, in process ------------------------------------------

def test_online_teacher_without_head_runs_the_encoder_alone(tmp_path):
  """With the soft loss off, a teacher without cls/ loads as the encoder
  alone and labels nothing (no [B, P, V] softmax); with it on, it is refused
  in one line naming the head and the remedy."""
  from bert_distill import cli
  from bert_distill import distill_training
  from bert_distill import label_settings
  from bert_distill import losses
  from bert_distill import records
  weights = ref.random_google_weights(TINY, seed=9)
  folder = write_hf_folder(tmp_path / "enc",
                           hf_tensors_by_hand(weights, prefix="", heads=False))
  config = model_config.read_config(folder + "/config.json")
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  teacher = distill_training.build_teacher(strategy, config, folder, "float32",
                                           needs_mlm_head=False)
  assert isinstance(teacher, modeling.BertModel)
  options = losses.LossConfig(soft_loss_weight=0.0, hidden_layer_map=(1, 2),
                              attention_loss_weight=1.0, relation_heads=4)
  online = distill_training.OnlineTeacher(teacher, options, {},
                                          soft_labels=False)
  ids, mask, segments, positions = tiny_batch()
  features = {records.INPUT_IDS: ids, records.INPUT_MASK: mask,
              records.SEGMENT_IDS: segments,
              records.MASKED_LM_POSITIONS: positions}
  labelled, outputs = online.label(features)
  assert label_settings.TEACHER_LABELS not in labelled
  assert "masked_lm_logits" not in outputs and "attention_values" in outputs
  want = ref.bert_forward(weights, dict(TINY, hidden_act="gelu_exact"), ids,
                          mask, segments, positions)
  np.testing.assert_allclose(outputs["sequence_output"].numpy(),
                             want["sequence_output"], rtol=1e-5, atol=1e-5)
  with pytest.raises(cli.StageError) as e:
    distill_training.build_teacher(strategy, config, folder, "float32")
  message = str(e.value)
  assert "has no masked-LM head (cls/predictions/*)" in message
  assert "stage T" in message and "\n" not in message


def test_student_init_from_encoder_only_checkpoint_with_layer_map(tmp_path):
  """--init_checkpoint with --init_layer_map leaves the heads the checkpoint
  lacks at their initial values, and says so; the error names the path once."""
  from bert_distill import checkpoints
  from bert_distill import cli
  from bert_distill import training
  config4 = dict(TINY, num_hidden_layers=4)
  weights = ref.random_google_weights(config4, seed=10)
  folder = write_hf_folder(tmp_path / "enc4", hf_tensors_by_hand(
      weights, prefix="", heads=False), hf_config_dict(num_hidden_layers=4))
  student = modeling.BertPretrainingModel(modeling.BertConfig(**TINY), seed=1)
  report = checkpoints.load_checkpoint(student, folder, layer_map=[1, 3],
                                       optional=("cls/", "bert/pooler/"))
  assert sorted(report["initialized"]) == sorted(
      n for n in weights if n.startswith("cls/"))
  np.testing.assert_array_equal(
      student.variables_by_name()["bert/encoder/layer_1/output/dense/kernel"]
      .numpy(), weights["bert/encoder/layer_3/output/dense/kernel"])
  wide = modeling.BertPretrainingModel(modeling.BertConfig(
      **dict(TINY, intermediate_size=40)), seed=1)
  with pytest.raises(cli.StageError) as e:
    training.restore_or_initialize(
        wide, _Optimizer(), str(tmp_path / "out"), folder,
        lambda path: checkpoints.load_checkpoint(
            wide, path, layer_map=[0, 1], optional=("cls/", "bert/pooler/")))
  assert str(e.value).count(folder) == 1, str(e.value)


class _Optimizer:
  """What restore_or_initialize asks of an optimizer with no checkpoint to
  resume."""
  global_step = tf.Variable(0, dtype=tf.int64)

  def checkpoint_variables(self):
    return {}


# ----- the scripts with HF folders ------------------------------------------------

SEQ, P = 16, 4


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory):
  """One batch of script runs (one TensorFlow import): an encoder-only
  4-layer HF teacher (exact GELU) as init and teacher, and a Google model
  exported to HF's layout."""
  import stage_runs
  from conftest import ROOT
  root = tmp_path_factory.mktemp("hf_runs")
  config4 = dict(TINY, num_hidden_layers=4)
  weights = ref.random_google_weights(config4, seed=11)
  teacher = write_hf_folder(root / "teacher", hf_tensors_by_hand(
      weights, prefix="", heads=False), hf_config_dict(num_hidden_layers=4))
  relative = write_hf_folder(
      root / "relative", hf_tensors_by_hand(weights, prefix="", heads=False),
      hf_config_dict(num_hidden_layers=4,
                     position_embedding_type="relative_key"))
  google_config, google_prefix, google_weights = ref.write_model_dir(
      str(root / "google"), dict(TINY, hidden_act="gelu"), seed=12,
      global_step=7)
  records_file = ref.write_records(
      root / "train.tfrecord",
      ref.random_pretraining_examples(8, SEQ, P, TINY["vocab_size"], seed=1))
  rows = [["sentence", "label"]] + [
      [" ".join(f"w{(i * 7 + j) % 90}" for j in range(3 + i % 5)), str(i % 2)]
      for i in range(16)]
  (root / "task").mkdir()
  for split in ("train", "dev"):
    (root / "task" / f"{split}.tsv").write_text(
        "".join("\t".join(r) + "\n" for r in rows))
  py = lambda script: os.path.join(ROOT, script)
  sizes = [f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={P}"]
  train = ["--do_train", "--num_train_steps=2", "--num_warmup_steps=0",
           "--train_batch_size=4", "--use_xla=false", "--iterations_per_loop=1",
           "--save_checkpoints_steps=2", *sizes]
  classify = ["--task_name=sst-2", f"--data_dir={root}/task", "--do_train",
              "--do_eval", f"--max_seq_length={SEQ}", "--train_batch_size=4",
              "--eval_batch_size=4", "--num_train_epochs=1"]
  jobs = {
      "student": [py("distill.py"), "--num_train_steps=0",
                  f"--init_checkpoint={teacher}", "--init_layer_map=0,2",
                  f"--output_dir={root}/student"],
      "minilm": [py("distill.py"), f"--teacher_checkpoint={teacher}",
                 "--preset=minilm", f"--input_file={records_file}",
                 f"--init_checkpoint={teacher}", "--init_layer_map=1,3",
                 f"--output_dir={root}/minilm", *train],
      "soft_needs_head": [py("distill.py"), f"--teacher_checkpoint={teacher}",
                          f"--input_file={records_file}",
                          f"--init_checkpoint={teacher}",
                          "--init_layer_map=1,3",
                          f"--output_dir={root}/soft", *train],
      "stage_iv_needs_head": [
          py("extract_teacher_labels_truncated.py"),
          f"--init_checkpoint={teacher}", f"--input_file={records_file}",
          f"--output_file={root}/labels.tfrecord", "--truncation_factor=3",
          *sizes],
      "classifier": [py("run_classifier.py"), f"--init_checkpoint={teacher}",
                     "--init_layer_map=0,3", "--pooling=mean",
                     f"--output_dir={root}/classifier", *classify],
      "relative": [py("run_classifier.py"), f"--init_checkpoint={relative}",
                   f"--output_dir={root}/relative", *classify],
      "export": [py("export_model.py"), f"--checkpoint={root}/google",
                 "--format=huggingface", f"--export_dir={root}/exported"],
  }
  results = stage_runs.run_all(jobs, str(root / "logs"))
  return {"root": root, "results": results, "weights": weights,
          "google_weights": google_weights}


def assert_ok(result):
  assert result.returncode == 0, result.stderr[-3000:]


def test_distill_writes_the_layer_mapped_student_untrained(script_runs):
  from bert_distill import checkpoints
  root, weights = script_runs["root"], script_runs["weights"]
  assert_ok(script_runs["results"]["student"])
  written = json.loads((root / "student" / "bert_config.json").read_text())
  assert written["num_hidden_layers"] == 2
  assert written["hidden_act"] == "gelu_exact"  # HF's "gelu"
  assert not modeling.is_hf_config(written)
  values = ref.checkpoint_values(root / "student" / "model.ckpt-0")
  assert not [n for n in values if n.startswith("cls/")]
  for layer, source in ((0, 0), (1, 2)):
    for name in ("attention/self/query/kernel", "output/LayerNorm/gamma"):
      np.testing.assert_array_equal(
          values[f"bert/encoder/layer_{layer}/{name}"],
          weights[f"bert/encoder/layer_{source}/{name}"])
  assert (root / "student" / "vocab.txt").exists()
  assert checkpoints.file_beside(str(root / "student"), "vocab")


def test_minilm_runs_with_an_encoder_only_teacher(script_runs):
  root = script_runs["root"]
  assert_ok(script_runs["results"]["minilm"])
  values = ref.checkpoint_values(root / "minilm" / "model.ckpt-2")
  assert values["bert/encoder/layer_0/intermediate/dense/kernel"].shape == (
      32, 37)
  assert json.loads((root / "minilm" / "bert_config.json").read_text())[
      "num_hidden_layers"] == 2


@pytest.mark.parametrize("case, flag", [("soft_needs_head",
                                         "--teacher_checkpoint"),
                                        ("stage_iv_needs_head",
                                         "--init_checkpoint")])
def test_losses_needing_the_mlm_head_refuse_an_encoder_only_teacher(
    script_runs, case, flag):
  import stage_runs
  line = stage_runs.assert_one_line_error(
      script_runs["results"][case], flag,
      "has no masked-LM head (cls/predictions/*)", "stage T")
  assert line.count(str(script_runs["root"] / "teacher")) == 1


def test_run_classifier_with_layer_map_and_mean_pooling(script_runs):
  root = script_runs["root"]
  assert_ok(script_runs["results"]["classifier"])
  written = json.loads((root / "classifier" / "bert_config.json").read_text())
  assert written["classifier_pooling"] == "mean"
  assert written["num_hidden_layers"] == 2
  assert (root / "classifier" / "eval_results.txt").exists()
  values = ref.checkpoint_values(root / "classifier" / "model.ckpt-4")
  assert values["output_weights"].shape == (2, 32)


def test_relative_positions_are_one_error_line(script_runs):
  import stage_runs
  stage_runs.assert_one_line_error(
      script_runs["results"]["relative"], "--bert_config_file",
      "position_embedding_type 'relative_key' is not supported")


def test_export_huggingface_round_trips_a_google_checkpoint(script_runs):
  """Google -> HF (export_model.py) -> Google (the reader): every variable
  equal; config.json says gelu_new for Google's tanh GELU."""
  from bert_distill import checkpoints
  from bert_distill import huggingface
  root = script_runs["root"]
  assert_ok(script_runs["results"]["export"])
  exported = root / "exported"
  config = json.loads((exported / "config.json").read_text())
  assert config["hidden_act"] == "gelu_new"
  assert config["architectures"] == ["BertForPreTraining"]
  assert config["layer_norm_eps"] == 1e-12
  assert sorted(p.name for p in exported.iterdir()) == [
      "config.json", "model.safetensors"]
  assert not list(root.glob("exported.tmp-*"))
  from safetensors.numpy import load_file
  stored = load_file(str(exported / "model.safetensors"))
  assert "bert.encoder.layer_0" not in stored
  np.testing.assert_array_equal(
      stored["bert.encoder.layer.1.intermediate.dense.weight"],
      script_runs["google_weights"][
          "bert/encoder/layer_1/intermediate/dense/kernel"].T)
  reader = huggingface.SafetensorsReader(str(exported))
  want = script_runs["google_weights"]
  assert set(reader.get_variable_to_shape_map()) == set(want)
  for name, value in want.items():
    np.testing.assert_array_equal(reader.get_tensor(name), value,
                                  err_msg=name)
  back = model_config.read_config(str(exported / "config.json"))
  assert back.hidden_act == "gelu"
  assert checkpoints.resolve_checkpoint(str(exported)) == str(exported)


def test_teacher_with_head_computes_no_softmax_when_the_soft_loss_is_off():
  """In training (soft loss off) the head is skipped; evaluation still gets
  the teacher's distribution for agreement and teacher_kl."""
  from bert_distill import distill_training
  from bert_distill import label_settings
  from bert_distill import losses
  from bert_distill import records
  model = modeling.BertPretrainingModel(modeling.BertConfig(**TINY), seed=0)
  options = losses.LossConfig(soft_loss_weight=0.0, hidden_layer_map=(1, 2),
                              hidden_loss_weight=1.0, relation_heads=4)
  online = distill_training.OnlineTeacher(model, options, {},
                                          soft_labels=False)
  ids, mask, segments, positions = tiny_batch()
  features = {records.INPUT_IDS: ids, records.INPUT_MASK: mask,
              records.SEGMENT_IDS: segments,
              records.MASKED_LM_POSITIONS: positions}
  labelled, outputs = online.label(features)
  assert label_settings.TEACHER_LABELS not in labelled
  assert "masked_lm_logits" not in outputs and "hidden_states" in outputs
  labelled, _ = online.label(features, online.has_mlm_head)
  assert labelled[label_settings.TEACHER_LABELS].probs.shape == (3, 4, 99)


def test_export_serves_the_pooling_the_config_records():
  from bert_distill import classifier
  config = model_config.config_from_dict(dict(
      TINY, classifier_pooling="mean"))
  model = classifier.BertClassifier(config, 2, seed=0,
                                    pooling=classifier.pooling_of(config))
  ids, mask, segments, _ = tiny_batch()
  out = model(ids, mask, segments)
  sequence = out["sequence_output"].numpy()
  for row in range(3):
    n = mask[row].sum()
    np.testing.assert_allclose(out["pooled_output"].numpy()[row],
                               sequence[row, :n].mean(0), rtol=1e-5,
                               atol=1e-6)
  assert classifier.pooling_of(modeling.BertConfig(**TINY)) == "cls"


def test_sharded_safetensors_folder_reads_as_one(tmp_path):
  from bert_distill import checkpoints
  from safetensors.numpy import save_file
  weights = ref.random_google_weights(TINY, seed=13)
  tensors = hf_tensors_by_hand(weights)
  names = sorted(tensors)
  folder = tmp_path / "sharded"
  folder.mkdir()
  weight_map = {}
  for i, part in enumerate((names[:len(names) // 2], names[len(names) // 2:])):
    file = f"model-0000{i + 1}-of-00002.safetensors"
    save_file({n: tensors[n] for n in part}, str(folder / file))
    weight_map.update({n: file for n in part})
  (folder / "model.safetensors.index.json").write_text(
      json.dumps({"metadata": {}, "weight_map": weight_map}))
  (folder / "config.json").write_text(json.dumps(hf_config_dict()))
  model = modeling.BertPretrainingModel(model_config.read_config(
      str(folder / "config.json")), seed=0)
  checkpoints.load_checkpoint(model, str(folder))
  for name, variable in model.variables_by_name().items():
    np.testing.assert_array_equal(variable.numpy(), weights[name])
