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
