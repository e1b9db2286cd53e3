"""HuggingFace's layout in and out: BertConfig reading HF config.json (GELU,
layer_norm_eps, refused keys), the safetensors name map of huggingface.py
(every tensor onto its Google variable), HF folders wherever a checkpoint is
read, and export_model.py --format=huggingface (round trip)."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
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
  config = modeling.BertConfig.from_dict(hf_config_dict(hidden_act=hf_act))
  assert config.hidden_act == ours
  # And back: the HF name written reproduces the numerics.
  assert modeling.BertConfig.from_dict(config.to_hf_dict()).hidden_act == ours


def test_google_config_gelu_is_tanh_and_round_trips():
  config = modeling.BertConfig.from_dict(dict(TINY))
  assert config.hidden_act == "gelu" and config.layer_norm_eps == 1e-12
  assert config.to_dict() == TINY  # no new key in a Google-layout file
  exact = modeling.BertConfig.from_dict(dict(TINY, hidden_act="gelu_exact"))
  again = modeling.BertConfig.from_dict(exact.to_dict())
  assert again == exact and again.hidden_act == "gelu_exact"


def test_hf_config_is_never_read_as_googles(tmp_path):
  """An HF config.json given where a bert_config.json is expected is read as
  HF's: its "gelu" is exact, its layer_norm_eps honoured, and no HF key
  leaks into the bert_config.json written from it."""
  path = tmp_path / "config.json"
  path.write_text(json.dumps(hf_config_dict(layer_norm_eps=1e-5)))
  config = modeling.read_config(str(path), 16, "teacher")
  assert config.hidden_act == "gelu_exact"
  assert config.layer_norm_eps == 1e-5
  written = config.to_dict()
  assert not modeling.is_hf_config(written)
  assert written["layer_norm_epsilon"] == 1e-5
  assert written["hidden_act"] == "gelu_exact"
  assert modeling.BertConfig.from_dict(written) == config


def test_hf_config_defaults_type_vocab_size_like_transformers():
  d = hf_config_dict()
  del d["type_vocab_size"]
  assert modeling.BertConfig.from_dict(d).type_vocab_size == 2


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
    modeling.BertConfig.from_json_file(str(path))
  assert str(e.value).startswith(str(path)) and message in str(e.value)
  assert "\n" not in str(e.value)


def test_google_config_with_relative_positions_is_refused():
  with pytest.raises(ValueError, match="position_embedding_type"):
    modeling.BertConfig.from_dict(dict(TINY,
                                       position_embedding_type="relative_key"))


# ----- GELU and layer_norm_eps numerics -----------------------------------------

def test_gelu_exact_matches_erf_and_differs_from_tanh():
  x = np.linspace(-6, 6, 241).astype(np.float32)
  exact = modeling.gelu_exact(tf.constant(x)).numpy()
  want = 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))
  np.testing.assert_allclose(exact, want, atol=1e-6)
  assert np.abs(modeling.gelu(tf.constant(x)).numpy() - want).max() > 1e-4


def test_gelu_exact_gradient_equals_the_derivative_of_erf_gelu():
  x = tf.constant(np.linspace(-5, 5, 101), tf.float64)
  x32 = tf.cast(x, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x32)
    out = modeling.gelu_exact(x32)
  got = tape.gradient(out, x32).numpy()
  xs = x.numpy()
  cdf = 0.5 * (1 + np.vectorize(math.erf)(xs / np.sqrt(2)))
  pdf = np.exp(-0.5 * xs**2) / np.sqrt(2 * np.pi)
  np.testing.assert_allclose(got, cdf + xs * pdf, atol=1e-6)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_exact"])
def test_forward_matches_numpy_bert_with_each_gelu_and_eps(hidden_act):
  google = dict(TINY, hidden_act=hidden_act, layer_norm_epsilon=1e-3)
  weights = ref.random_google_weights(TINY, seed=3)
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(google),
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
  config = modeling.BertConfig.from_dict(hf_config_dict())
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
  config = modeling.BertConfig.from_json_file(folder + "/config.json")
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
  from bert_distill import losses
  from bert_distill import records
  weights = ref.random_google_weights(TINY, seed=9)
  folder = write_hf_folder(tmp_path / "enc",
                           hf_tensors_by_hand(weights, prefix="", heads=False))
  config = modeling.BertConfig.from_json_file(folder + "/config.json")
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  teacher = distill_training.build_teacher(strategy, config, folder, "float32",
                                           needs_mlm_head=False)
  assert isinstance(teacher, modeling.BertModel)
  options = {"embedding_loss_weight": 0.0, "hidden_loss_weight": 0.0,
             "hidden_loss": "mse", "hidden_layer_map": [1, 2],
             "attention_loss_weight": 1.0, "attention_loss": "kl",
             "relation_heads": 4}
  online = distill_training.OnlineTeacher(teacher, options, {},
                                          soft_labels=False)
  ids, mask, segments, positions = tiny_batch()
  features = {records.INPUT_IDS: ids, records.INPUT_MASK: mask,
              records.SEGMENT_IDS: segments,
              records.MASKED_LM_POSITIONS: positions}
  labelled, outputs = online.label(features)
  assert losses.TEACHER_PROBS not in labelled
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
  from bert_distill import distill_training
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
    distill_training.restore_or_initialize(
        wide, _Optimizer(), str(tmp_path / "out"), folder, [0, 1])
  assert str(e.value).count(folder) == 1, str(e.value)


class _Optimizer:
  """What restore_or_initialize asks of an optimizer with no checkpoint to
  resume."""
  global_step = tf.Variable(0, dtype=tf.int64)

  def checkpoint_variables(self):
    return {}
