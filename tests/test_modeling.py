"""modeling.py and checkpoints.py: numerics against a NumPy BERT, Google-named
checkpoint I/O, partial loads with a layer map, config validation."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from conftest import ORIGINAL_RECORDS
from bert_distill import checkpoints
from bert_distill import model_config
import modeling
from bert_distill import records

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)


def tiny_batch(seed=1, batch=3, seq=12, vocab=99, predictions=4):
  """Returns (ids, mask, segments) int [B, S] and positions int [B, P].

  Real lengths are S, S - 5 and 4, so the batch holds padding.
  """
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, seq))
  lengths = np.array([seq, seq - 5, 4][:batch])
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
  segments = ((np.arange(seq)[None] >= lengths[:, None] // 2) & (mask == 1))
  positions = np.stack([rng.choice(n, predictions, replace=False)
                        for n in lengths])
  return ids * mask, mask, segments.astype(np.int64), positions


@pytest.fixture(scope="module")
def google_ckpt(tmp_path_factory):
  """A Google-named tiny checkpoint (with optimizer slots and global_step)."""
  weights = ref.random_google_weights(TINY)
  prefix = str(tmp_path_factory.mktemp("google") / "bert_model.ckpt")
  return ref.write_google_checkpoint(prefix, weights, global_step=42), weights


def tiny_model(**overrides):
  cfg = dict(TINY, **overrides)
  return modeling.BertPretrainingModel(modeling.BertConfig(**cfg), seed=0)


# ----- numerics -------------------------------------------------------------

def test_forward_matches_numpy_bert_for_weights_from_a_google_checkpoint(
    google_ckpt):
  prefix, weights = google_ckpt
  model = tiny_model()
  report = checkpoints.load_checkpoint(model, prefix)
  assert report["initialized"] == []
  batch = tiny_batch()
  out = model(*batch)
  expected = ref.bert_forward(weights, TINY, *batch)
  for key in ("masked_lm_logits", "next_sentence_logits", "pooled_output",
              "sequence_output"):
    np.testing.assert_allclose(out[key].numpy(), expected[key], rtol=1e-5,
                               atol=1e-5, err_msg=key)
  for got, want in zip(out["attention_probs"], expected["attention_probs"]):
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
  for got, want in zip(out["all_encoder_layers"],
                       expected["all_encoder_layers"]):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
  assert out["masked_lm_logits"].dtype == tf.float32
  assert out["masked_lm_logits"].shape == (3, 4, 99)
  assert "hidden_states" not in out and "attention_scores" not in out


def test_intermediate_outputs_match_numpy_bert(google_ckpt):
  prefix, weights = google_ckpt
  model = tiny_model()
  checkpoints.load_checkpoint(model, prefix)
  batch = tiny_batch()
  out = model(*batch, intermediates=True)
  expected = ref.bert_forward(weights, TINY, *batch)
  assert len(out["hidden_states"]) == TINY["num_hidden_layers"] + 1
  for key in ("hidden_states", "attention_scores", "attention_queries",
              "attention_keys", "attention_values"):
    assert len(out[key]) == len(expected[key]), key
    for layer, (got, want) in enumerate(zip(out[key], expected[key])):
      assert got.shape == want.shape, (key, layer)
      np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{key}[{layer}]")
  # The same logits with and without the intermediate outputs.
  np.testing.assert_array_equal(out["masked_lm_logits"],
                                model(*batch)["masked_lm_logits"])


def test_one_encoder_layer_block_alone_matches_numpy_bert(google_ckpt):
  """EncoderLayer run by itself on the NumPy reference's layer input gives
  the reference's layer output."""
  prefix, weights = google_ckpt
  model = tiny_model()
  checkpoints.load_checkpoint(model, prefix)
  input_ids, input_mask, segment_ids, _ = tiny_batch()
  expected = ref.bert_forward(weights, TINY, input_ids, input_mask,
                              segment_ids, np.zeros([3, 0], np.int32))
  batch, seq, hidden = expected["hidden_states"][1].shape
  adder = (1.0 - input_mask[:, None, None, :].astype(np.float32)) * -10000.0
  layer = model.bert.encoder_layers[1]
  output, pieces = layer(
      expected["hidden_states"][1].reshape(-1, hidden).astype(np.float32),
      tf.constant(adder), batch, seq, training=False)
  np.testing.assert_allclose(output.numpy().reshape(batch, seq, hidden),
                             expected["hidden_states"][2], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(pieces["scores"].numpy(),
                             expected["attention_scores"][1], rtol=1e-5,
                             atol=1e-5)


def test_bert_model_is_the_pretraining_model_without_its_heads():
  config = modeling.BertConfig(**TINY)
  encoder = modeling.BertModel(config, seed=5)
  full = modeling.BertPretrainingModel(config, seed=5)
  encoder_vars = encoder.variables_by_name()
  full_vars = full.variables_by_name()
  # Checkpoint order, every name once, each variable reachable once.
  assert list(full_vars) == list(modeling.variable_shapes(config))
  assert list(encoder_vars) == [n for n in full_vars if n.startswith("bert/")]
  assert len(full.trainable_variables) == len(full_vars)
  assert len(encoder.trainable_variables) == len(encoder_vars)
  # A variable's initial value depends on its name and the seed only.
  for name, variable in encoder_vars.items():
    np.testing.assert_array_equal(variable.numpy(), full_vars[name].numpy(),
                                  err_msg=name)
  input_ids, input_mask, segment_ids, positions = tiny_batch()
  alone = encoder(input_ids, input_mask, segment_ids)
  with_heads = full(input_ids, input_mask, segment_ids, positions)
  for key in ("sequence_output", "pooled_output"):
    np.testing.assert_array_equal(alone[key], with_heads[key])
  assert "masked_lm_logits" not in alone


def test_frozen_model_variables_are_not_trainable():
  model = modeling.BertPretrainingModel(modeling.BertConfig(**TINY), seed=0,
                                        trainable=False)
  assert not model.trainable_variables
  assert all(not v.trainable for v in model.variables_by_name().values())


def test_xla_int32_and_eager_give_the_same_logits(google_ckpt):
  model = tiny_model()
  checkpoints.load_checkpoint(model, google_ckpt[0])
  batch = tiny_batch()
  eager = model(*batch)["masked_lm_logits"].numpy()
  xla = tf.function(model, jit_compile=True)(
      *[tf.constant(x, tf.int32) for x in batch])["masked_lm_logits"]
  np.testing.assert_allclose(xla.numpy(), eager, rtol=1e-5, atol=1e-5)


def test_one_trace_serves_every_sequence_length(google_ckpt):
  # Callers trim batches to their longest sequence: a [None, None] signature
  # must work (and give the eager result) for each length.
  model = tiny_model()
  checkpoints.load_checkpoint(model, google_ckpt[0])
  spec = [tf.TensorSpec([None, None], tf.int64)] * 4
  forward = tf.function(lambda *a: model(*a)["masked_lm_logits"],
                        input_signature=spec)
  ids, mask, segments, positions = tiny_batch(batch=2)  # lengths 12 and 7
  for length in (12, 9):
    batch = [x[:, :length] for x in (ids, mask, segments)] + [
        np.minimum(positions, length - 1)]
    np.testing.assert_allclose(forward(*batch).numpy(),
                               model(*batch)["masked_lm_logits"].numpy(),
                               rtol=1e-5, atol=1e-5)


def test_trimming_padding_does_not_change_outputs(google_ckpt):
  # Callers trim a batch to its longest real sequence: padded keys get
  # -10000, so the real positions must not see the padding at all.
  model = tiny_model()
  checkpoints.load_checkpoint(model, google_ckpt[0])
  ids, mask, segments, positions = tiny_batch(batch=2)  # lengths 12 and 7
  padded = [np.pad(x, [(0, 0), (0, 20)]) for x in (ids, mask, segments)]
  full = model(*padded, positions)
  trimmed = model(ids, mask, segments, positions)
  np.testing.assert_allclose(full["masked_lm_logits"].numpy(),
                             trimmed["masked_lm_logits"].numpy(), atol=1e-5)
  np.testing.assert_allclose(full["sequence_output"].numpy()[:, :12],
                             trimmed["sequence_output"].numpy(), atol=1e-5)


def test_dropout_only_in_training():
  model = tiny_model()
  batch = tiny_batch()
  a = model(*batch)["masked_lm_logits"].numpy()
  b = model(*batch)["masked_lm_logits"].numpy()
  c = model(*batch, training=True)["masked_lm_logits"].numpy()
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-3


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_dropout_keeps_one_minus_rate_scaled_and_masks_its_gradient(dtype):
  x = tf.fill([64, 1000], tf.constant(2.0, dtype))
  dy = tf.fill([64, 1000], tf.constant(3.0, dtype))

  def dropped_and_gradient():
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = modeling.dropout(x, 0.1, training=True)
    return y.numpy(), tape.gradient(y, x, output_gradients=dy).numpy()

  tf.random.set_seed(7)
  y, grad = dropped_and_gradient()
  again, _ = dropped_and_gradient()
  tf.random.set_seed(7)
  repeated, _ = dropped_and_gradient()
  kept = y != 0
  # 64000 Bernoulli(0.9) draws: the kept share within 5 standard errors.
  assert abs(kept.mean() - 0.9) < 5 * np.sqrt(0.09 / kept.size)
  scale = np.float32(1.0 / 0.9)
  np.testing.assert_array_equal(
      y, np.where(kept, tf.cast(2.0 * scale, dtype).numpy(), 0))
  np.testing.assert_array_equal(
      grad, np.where(kept, tf.cast(3.0 * scale, dtype).numpy(), 0))
  assert (again != 0).mean() > 0.85 and np.any((again != 0) != kept)
  np.testing.assert_array_equal(repeated, y)  # tf.random.set_seed applies
  assert modeling.dropout(x, 0.1, training=False) is x


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_exact"])
def test_training_graph_with_xla_fused_gelus_matches_the_forward_only_one(
    hidden_act):
  """training=True runs the XLA-fused GELUs: without dropout, its outputs
  and gradients are those of the forward-only graph's plain GELUs."""
  model = tiny_model(hidden_act=hidden_act, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
  for name, variable in model.variables_by_name().items():
    if name.endswith("intermediate/dense/kernel"):
      variable.assign(variable * 25.0)  # GELU inputs of std ~3, not ~0.1
  batch = tiny_batch()

  @tf.function
  def logits_and_gradients(training):
    with tf.GradientTape() as tape:
      out = model(*batch, training=training)
      logits = out["masked_lm_logits"]
      loss = (tf.reduce_sum(tf.square(logits)) +
              tf.reduce_sum(tf.square(out["next_sentence_logits"])))
    return logits, [tf.convert_to_tensor(g) for g in tape.gradient(
        loss, model.trainable_variables)]

  plain, plain_grads = logits_and_gradients(False)
  fused, fused_grads = logits_and_gradients(True)
  np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-5,
                             atol=1e-5)
  for got, want in zip(fused_grads, plain_grads):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_keeps_float32_variables_and_logits(dtype):
  cfg = modeling.BertConfig(**TINY)
  full = modeling.BertPretrainingModel(cfg, seed=3)
  half = modeling.BertPretrainingModel(cfg, compute_dtype=dtype, seed=3)
  batch = tiny_batch()
  out = half(*batch)
  assert out["masked_lm_logits"].dtype == tf.float32
  assert out["sequence_output"].dtype == dtype
  assert all(v.dtype == tf.float32 for v in half.variables_by_name().values())
  np.testing.assert_allclose(out["masked_lm_logits"].numpy(),
                             full(*batch)["masked_lm_logits"].numpy(),
                             atol=0.1)


def test_sample_records_run_through_a_tiny_model_with_the_real_vocab():
  path = ORIGINAL_RECORDS
  spec = records.pretraining_feature_spec(128, 20)
  dataset = tf.data.TFRecordDataset(path).map(
      lambda r: tf.io.parse_single_example(r, spec)).batch(8).take(2)
  model = tiny_model(vocab_size=30522, max_position_embeddings=512)
  seen = 0
  for features in dataset:
    out = model(features["input_ids"], features["input_mask"],
                  features["segment_ids"], features["masked_lm_positions"])
    assert out["masked_lm_logits"].shape[1:] == (20, 30522)
    assert np.isfinite(out["masked_lm_logits"].numpy()).all()
    seen += features["input_ids"].shape[0]
  assert seen > 0


# ----- names and checkpoints ---------------------------------------------------

def test_variable_names_and_shapes_are_exactly_googles():
  model = tiny_model()
  got = {n: tuple(v.shape) for n, v in model.variables_by_name().items()}
  assert got == ref.google_shapes(TINY)


def test_initial_values_follow_googles_initializers():
  model = tiny_model(hidden_size=64, intermediate_size=256, vocab_size=500)
  v = {n: x.numpy() for n, x in model.variables_by_name().items()}
  np.testing.assert_array_equal(v["bert/encoder/layer_0/output/LayerNorm/gamma"],
                                1.0)
  np.testing.assert_array_equal(v["cls/predictions/output_bias"], 0.0)
  kernel = v["bert/encoder/layer_1/intermediate/dense/kernel"]
  assert np.abs(kernel).max() <= 2 * 0.02 + 1e-7  # truncated at 2 stddev
  assert 0.012 < kernel.std() < 0.02
  same_seed = tiny_model(hidden_size=64, intermediate_size=256, vocab_size=500)
  np.testing.assert_array_equal(
      same_seed.variables_by_name()["bert/pooler/dense/kernel"].numpy(),
      v["bert/pooler/dense/kernel"])


def test_save_then_load_round_trip_is_exact(google_ckpt, tmp_path):
  model = tiny_model()
  checkpoints.load_checkpoint(model, google_ckpt[0])
  batch = tiny_batch()
  before = model(*batch)
  prefix = checkpoints.save_checkpoint(model.variables_by_name(), str(tmp_path), 7)
  assert prefix == str(tmp_path / "model.ckpt-7")
  # A second reader (TF's own) sees exactly Google's names plus global_step.
  reader = tf.train.load_checkpoint(prefix)
  shapes = {n: tuple(s) for n, s in reader.get_variable_to_shape_map().items()}
  assert shapes == dict(ref.google_shapes(TINY), global_step=())
  assert reader.get_tensor("global_step") == 7
  assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64
  other = tiny_model()
  other.variables_by_name()["bert/pooler/dense/bias"].assign(tf.ones([32]))
  restored = checkpoints.restore_variables(other.variables_by_name(),
                                           str(tmp_path))
  assert sorted(restored) == sorted(ref.google_shapes(TINY))
  after = other(*batch)
  for key in ("masked_lm_logits", "next_sentence_logits", "sequence_output"):
    np.testing.assert_array_equal(after[key].numpy(), before[key].numpy())
  assert checkpoints.checkpoint_step(prefix) == 7
  assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_tf1_init_from_checkpoint_reads_a_saved_student(tmp_path):
  # How Google's run_classifier.py loads a checkpoint: graph-mode variables by
  # name, then tf.compat.v1.train.init_from_checkpoint.
  model = tiny_model()
  prefix = checkpoints.save_checkpoint(model.variables_by_name(), str(tmp_path), 1)
  shapes = ref.google_shapes(TINY)
  with tf.Graph().as_default():
    tf1_vars = {n: tf.compat.v1.get_variable(n, shape=s, dtype=tf.float32)
                for n, s in shapes.items()}
    tf.compat.v1.train.init_from_checkpoint(prefix, {"bert/": "bert/",
                                                     "cls/": "cls/"})
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      values = session.run(tf1_vars)
  for name, variable in model.variables_by_name().items():
    np.testing.assert_array_equal(values[name], variable.numpy())


def test_restore_names_every_missing_and_misshaped_variable(tmp_path):
  weights = ref.random_google_weights(TINY)
  del weights["bert/pooler/dense/bias"]
  weights["cls/predictions/output_bias"] = np.zeros([7], np.float32)
  prefix = ref.write_google_checkpoint(str(tmp_path / "bad.ckpt"), weights)
  model = tiny_model()
  with pytest.raises(ValueError) as error:
    checkpoints.restore_variables(model.variables_by_name(), prefix)
  message = str(error.value)
  assert "\n" not in message and prefix in message
  assert "bert/pooler/dense/bias" in message
  assert "cls/predictions/output_bias" in message and "[7]" in message
  before = {n: v.numpy() for n, v in model.variables_by_name().items()}
  with pytest.raises(ValueError, match="variables missing or mis-shaped"):
    checkpoints.load_checkpoint(model, prefix)
  # Nothing was assigned: the entries that do fit stayed at their init.
  for name, variable in model.variables_by_name().items():
    np.testing.assert_array_equal(variable.numpy(), before[name])


def test_missing_checkpoint_path_is_a_one_line_error(tmp_path):
  model = tiny_model()
  for path in (str(tmp_path / "nothing.ckpt"), str(tmp_path)):
    with pytest.raises(ValueError) as error:
      checkpoints.load_checkpoint(model, path)
    assert path in str(error.value) and "\n" not in str(error.value)


def test_partial_load_with_a_layer_map(tmp_path):
  teacher_cfg = dict(TINY, num_hidden_layers=4)
  weights = ref.random_google_weights(teacher_cfg)
  prefix = ref.write_google_checkpoint(str(tmp_path / "teacher.ckpt"), weights,
                                       global_step=5)
  # A student with 2 layers from teacher layers 1 and 3 and a narrower
  # intermediate size: those kernels cannot load and keep their init.
  student = tiny_model(intermediate_size=20)
  init = {n: v.numpy() for n, v in student.variables_by_name().items()}
  report = checkpoints.load_checkpoint(student, prefix, layer_map=[1, 3],
                                       allow_partial=True)
  values = {n: v.numpy() for n, v in student.variables_by_name().items()}
  np.testing.assert_array_equal(
      values["bert/encoder/layer_0/attention/self/query/kernel"],
      weights["bert/encoder/layer_1/attention/self/query/kernel"])
  np.testing.assert_array_equal(
      values["bert/encoder/layer_1/output/LayerNorm/beta"],
      weights["bert/encoder/layer_3/output/LayerNorm/beta"])
  np.testing.assert_array_equal(values["cls/predictions/output_bias"],
                                weights["cls/predictions/output_bias"])
  intermediate = {f"bert/encoder/layer_{l}/{part}" for l in (0, 1)
                  for part in ("intermediate/dense/kernel",
                               "intermediate/dense/bias",
                               "output/dense/kernel")}
  assert set(report["initialized"]) == intermediate
  for name in intermediate:
    np.testing.assert_array_equal(values[name], init[name])
  assert len(report["loaded"]) + len(report["initialized"]) == len(values)
  assert "global_step" in report["unused"]
  assert "bert/encoder/layer_0/attention/self/query/kernel" in report["unused"]
  assert "bert/encoder/layer_1/attention/self/query/kernel" not in report[
      "unused"]
  with pytest.raises(ValueError, match="mis-shaped"):
    checkpoints.load_checkpoint(student, prefix, layer_map=[1, 3])
  with pytest.raises(ValueError, match=r"layer\(s\) 7 .*layers 0\.\.3"):
    checkpoints.load_checkpoint(student, prefix, layer_map=[1, 7],
                                allow_partial=True)
  with pytest.raises(ValueError, match="3 entries but the model has 2"):
    checkpoints.load_checkpoint(student, prefix, layer_map=[0, 1, 2],
                                allow_partial=True)


def test_save_keeps_the_newest_and_latest_checkpoint_finds_them(tmp_path):
  model = tiny_model(num_hidden_layers=1)
  variables = model.variables_by_name()
  directory = str(tmp_path)
  assert checkpoints.latest_checkpoint(directory) is None
  for step in (1, 5, 10, 20):
    checkpoints.save_checkpoint(variables, directory, step, max_to_keep=2)
  kept = sorted(f for f in os.listdir(directory) if f.endswith(".index"))
  assert kept == ["model.ckpt-10.index", "model.ckpt-20.index"]
  assert checkpoints.latest_checkpoint(directory) == str(tmp_path / "model.ckpt-20")
  # TF's own reader of the state file agrees.
  assert tf.train.latest_checkpoint(directory) == str(tmp_path / "model.ckpt-20")
  # An unfinished save (no index yet) and a stale state file are ignored.
  (tmp_path / "model.ckpt-30.tmp-99.data-00000-of-00001").write_bytes(b"x")
  os.remove(tmp_path / "model.ckpt-20.index")
  assert checkpoints.latest_checkpoint(directory) == str(tmp_path / "model.ckpt-10")
  assert checkpoints.checkpoint_step(directory) == 10
  # A state file written by TF1 elsewhere holds absolute paths.
  (tmp_path / "checkpoint").write_text(
      'model_checkpoint_path: "/elsewhere/run/model.ckpt-10"\n'
      'all_model_checkpoint_paths: "/elsewhere/run/model.ckpt-10"\n')
  checkpoints.save_checkpoint(variables, directory, 11)
  assert checkpoints.latest_checkpoint(directory) == str(tmp_path / "model.ckpt-11")
  (tmp_path / "checkpoint").write_text(
      'model_checkpoint_path: "/elsewhere/run/model.ckpt-10"\n')
  assert checkpoints.latest_checkpoint(directory) == str(tmp_path / "model.ckpt-10")


# ----- config -----------------------------------------------------------------

BERT_BASE_JSON = """{
  "attention_probs_dropout_prob": 0.1,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 768,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 512,
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "type_vocab_size": 2,
  "vocab_size": 30522
}
"""


def test_config_reads_and_writes_googles_json(tmp_path):
  path = tmp_path / "bert_config.json"
  path.write_text(BERT_BASE_JSON)
  config = modeling.BertConfig.from_json_file(str(path))
  assert config.type_vocab_size == 2 and config.size_per_head == 64
  assert json.loads(config.to_json_string()) == json.loads(BERT_BASE_JSON)
  extra = dict(json.loads(BERT_BASE_JSON), directionality="bidi")
  config = modeling.BertConfig.from_dict(extra)
  out = tmp_path / "out.json"
  model_config.write_config(str(out), config)
  assert json.loads(out.read_text()) == extra
  assert modeling.BertConfig.from_json_file(str(out)) == config


@pytest.mark.parametrize("change, message", [
    (dict(num_attention_heads=5), "not a multiple of num_attention_heads"),
    (dict(hidden_act="swish"), "hidden_act 'swish' is not supported"),
    (dict(num_hidden_layers=0), "num_hidden_layers must be positive"),
    (dict(hidden_size="768"), "hidden_size must be an integer"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob must be a number"),
    (dict(vocab_size=None), "vocab_size"),
    # A missing architecture field would take Google's default (768, 12
    # heads, ...) and build another model than the checkpoint's.
    (dict(hidden_size=None), "lacks 'hidden_size'"),
    (dict(num_attention_heads=None, intermediate_size=None),
     "lacks 'num_attention_heads', 'intermediate_size'"),
    # A misspelt field: kept as an extra key, the real one defaulted.
    (dict(num_hidden_layers=None, num_hiden_layers=2),
     "unknown field 'num_hiden_layers' (did you mean 'num_hidden_layers'?)"),
])
def test_config_validation_is_one_line(tmp_path, change, message):
  d = dict(json.loads(BERT_BASE_JSON), **change)
  d = {k: v for k, v in d.items() if v is not None}
  path = tmp_path / "bert_config.json"
  path.write_text(json.dumps(d))
  with pytest.raises(ValueError, match=re.escape(message)) as error:
    model_config.read_config(str(path))
  assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_config_file_errors_name_the_file(tmp_path):
  with pytest.raises(ValueError, match="not found"):
    model_config.read_config(str(tmp_path / "missing.json"))
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="bad.json: not valid JSON"):
    model_config.read_config(str(bad))


@pytest.mark.parametrize("gelu", [modeling.gelu, modeling.gelu_fused],
                         ids=["plain", "xla_fused"])
def test_gelu_gradient_equals_the_derivative_of_googles_formula(gelu):
  """modeling.gelu's hand-written gradient, and the XLA-fused one of a
  training step, vs autodiff of the tanh formula in float64 (the value
  itself is checked by the forward-pass tests)."""
  x64 = tf.constant(np.linspace(-6.0, 6.0, 241), tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(x64)
    y = 0.5 * x64 * (1.0 + tf.tanh(np.sqrt(2.0 / np.pi) *
                                   (x64 + 0.044715 * x64**3)))
  want = tape.gradient(y, x64).numpy()
  x32 = tf.cast(x64, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x32)
    out = gelu(x32)
  got = tape.gradient(out, x32).numpy()
  np.testing.assert_allclose(out.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)
  # float32 rounding of tanh near saturation: ~4e-6, as TF's own autodiff.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, dtype", [
    ((5, 32), tf.float32), ((2, 7, 32), tf.float32), ((5, 32), tf.bfloat16)])
def test_xla_fused_layer_norm_matches_autodiff_of_the_plain_one(shape, dtype):
  """layer_norm_fused (a training step's: one XLA kernel each way, the
  gradient written out) against layer_norm and TensorFlow's autodiff of it,
  for x, gamma and beta, with statistics in float32 for 16-bit x."""
  rng = np.random.default_rng(5)
  x = tf.cast(3 * rng.standard_normal(shape) + 1, dtype)
  gamma = tf.constant(rng.standard_normal(shape[-1:]), tf.float32)
  beta = tf.constant(rng.standard_normal(shape[-1:]), tf.float32)
  dy = tf.cast(rng.standard_normal(shape), dtype)

  def value_and_gradients(normalize):
    with tf.GradientTape() as tape:
      tape.watch([x, gamma, beta])
      y = normalize(x, gamma, beta, 1e-3)
    return [y] + tape.gradient(y, [x, gamma, beta], output_gradients=dy)

  got = value_and_gradients(modeling.layer_norm_fused)
  want = value_and_gradients(modeling.layer_norm)
  assert got[0].dtype == got[1].dtype == dtype
  # bfloat16 y and dx: within one rounding of the 8-bit mantissa.
  tolerance = 1e-5 if dtype == tf.float32 else 2 ** -7
  for name, g, w in zip(["y", "dx", "dgamma", "dbeta"], got, want):
    g, w = tf.cast(g, tf.float32).numpy(), tf.cast(w, tf.float32).numpy()
    np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance,
                               err_msg=name)


def test_a_checkpoint_with_more_layers_is_refused_for_a_teacher(tmp_path,
                                                                caplog):
  """A 4-layer checkpoint read with a 2-layer config: a teacher or an
  export would silently be its first two layers, another function under
  the checkpoint's name; a student's initial values may be, with a
  warning."""
  deep = dict(TINY, num_hidden_layers=4)
  prefix = str(tmp_path / "deep" / "model.ckpt")
  ref.write_google_checkpoint(prefix, ref.random_google_weights(deep))
  with pytest.raises(ValueError, match=r"the checkpoint has 4 encoder layers, "
                     r"the config 2: layers 2, 3 would be left out; give the "
                     r"checkpoint's own config") as error:
    checkpoints.load_teacher(tf.distribute.get_strategy(),
                             modeling.BertConfig(**TINY), prefix)
  assert "\n" not in str(error.value)
  model = tiny_model()
  report = checkpoints.load_checkpoint(model, prefix)
  assert "layers 2, 3 would be left out" in caplog.text
  assert not report["initialized"]
  assert any(n.startswith("bert/encoder/layer_3/") for n in report["unused"])
