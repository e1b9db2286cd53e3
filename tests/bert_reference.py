"""An independent reference BERT for the tests: no import of modeling.py.

- `google_shapes`: DESIGN.md's checkpoint variable names, expanded for a
  config, with the shapes Google's modeling.py gives them.
- `random_google_weights` + `write_google_checkpoint`: a tiny BERT checkpoint
  under Google's names, written with the SaveV2 op (no model code);
  `write_model_dir` writes one with its bert_config.json;
  `checkpoint_values` / `assert_same_checkpoints` read one back, compare two.
- `bert_forward`: BERT's pretraining forward pass re-derived in NumPy
  (float64) from the paper and Google's published equations.
- `random_pretraining_examples` / `write_records` / `read_records`:
  pretraining records of varied real lengths, through records.py.
- `assert_top_k_matches`: stage IV's top-k labels against a reference
  distribution.

Shape legend: B = batch, S = sequence length, P = masked positions,
H = hidden size, N = attention heads, D = H / N, I = intermediate size,
V = vocab size.
"""

import json
import math
import os
import re

import numpy as np
import tensorflow as tf

from bert_distill import example_codec
from bert_distill import records

TINY_CONFIG = {
    "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 37, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}

# The checkpoint names exactly as DESIGN.md lists them (brace lists expanded
# by expand_design_names below, independently of modeling.variable_shapes).
DESIGN_NAMES = """
bert/embeddings/{word_embeddings, token_type_embeddings, position_embeddings}
bert/embeddings/LayerNorm/{gamma, beta}
bert/encoder/layer_<i>/attention/self/{query, key, value}/{kernel, bias}
bert/encoder/layer_<i>/attention/output/dense/{kernel, bias}
bert/encoder/layer_<i>/attention/output/LayerNorm/{gamma, beta}
bert/encoder/layer_<i>/intermediate/dense/{kernel, bias}
bert/encoder/layer_<i>/output/dense/{kernel, bias}
bert/encoder/layer_<i>/output/LayerNorm/{gamma, beta}
bert/pooler/dense/{kernel, bias}
cls/predictions/transform/dense/{kernel, bias}
cls/predictions/transform/LayerNorm/{gamma, beta}
cls/predictions/output_bias
cls/seq_relationship/{output_weights, output_bias}
"""


def expand_design_names(num_layers):
  """Returns the set of DESIGN_NAMES for a model of `num_layers` layers."""
  names = set()
  for line in DESIGN_NAMES.split("\n"):
    if not line.strip():
      continue
    pending = [line.strip()]
    while any("{" in p for p in pending):
      expanded = []
      for p in pending:
        match = re.search(r"\{([^}]*)\}", p)
        if not match:
          expanded.append(p)
          continue
        for choice in match.group(1).split(","):
          expanded.append(p[:match.start()] + choice.strip() + p[match.end():])
      pending = expanded
    for p in pending:
      if "<i>" in p:
        names.update(p.replace("<i>", str(i)) for i in range(num_layers))
      else:
        names.add(p)
  return names


def google_shapes(config):
  """Returns {Google name: shape tuple}, written out from Google's modeling.py.

  Args:
    config: a BERT config dict (vocab_size, hidden_size, intermediate_size,
      num_hidden_layers, max_position_embeddings, type_vocab_size).
  """
  h, i, v = (config["hidden_size"], config["intermediate_size"],
             config["vocab_size"])
  shapes = {}
  for name in sorted(expand_design_names(config["num_hidden_layers"])):
    leaf = name.split("/")[-1]
    if name.endswith("word_embeddings"):
      shapes[name] = (v, h)
    elif name.endswith("token_type_embeddings"):
      shapes[name] = (config["type_vocab_size"], h)
    elif name.endswith("position_embeddings"):
      shapes[name] = (config["max_position_embeddings"], h)
    elif name == "cls/predictions/output_bias":
      shapes[name] = (v,)
    elif name == "cls/seq_relationship/output_weights":
      shapes[name] = (2, h)
    elif name == "cls/seq_relationship/output_bias":
      shapes[name] = (2,)
    elif "intermediate/dense" in name:
      shapes[name] = (h, i) if leaf == "kernel" else (i,)
    elif "/output/dense" in name and "attention" not in name:
      shapes[name] = (i, h) if leaf == "kernel" else (h,)
    else:
      shapes[name] = (h, h) if leaf == "kernel" else (h,)
  return shapes


def random_google_weights(config, seed=0):
  """Returns {Google name: float32 array} of google_shapes(config).

  The values are far from BERT's initial ones (stddev 0.02), so every
  variable matters to the outputs, and the teacher's distribution is far
  from uniform, so its top-k order is well defined. Names are drawn in
  sorted order: the same seed gives the same weights in every process.
  """
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in google_shapes(config).items():
    if name.endswith("gamma"):
      value = 1.0 + 0.1 * rng.standard_normal(shape)
    elif "embeddings" in name:
      value = 0.5 * rng.standard_normal(shape)
    elif name.endswith(("bias", "beta")):
      value = 0.1 * rng.standard_normal(shape)
    else:
      value = 0.2 * rng.standard_normal(shape)
    weights[name] = value.astype(np.float32)
  return weights


def write_google_checkpoint(prefix, weights, global_step=None):
  """Writes `weights` as a TF1 name-based checkpoint at `prefix`; returns it.

  Uses the SaveV2 op directly, not modeling.py's code. With a global_step,
  also writes what Google's pretraining checkpoints carry besides the model,
  which a loader must ignore: global_step and Adam's m and v slots.
  """
  tensors = dict(weights)
  if global_step is not None:
    tensors["global_step"] = np.array(global_step, np.int64)
    for name, value in weights.items():
      tensors[name + "/adam_m"] = np.zeros_like(value)
      tensors[name + "/adam_v"] = np.zeros_like(value)
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(tensors[n]) for n in names])
  return prefix


def write_model_dir(directory, config, seed, global_step=None, drop=None):
  """Writes a model as Google's release ships one: directory/bert_config.json
  and a checkpoint of random_google_weights(config, seed) at
  directory/bert_model.ckpt (without the variable named `drop`, if given).
  Returns (config path, checkpoint prefix, weights)."""
  os.makedirs(directory, exist_ok=True)
  config_path = os.path.join(directory, "bert_config.json")
  with open(config_path, "w") as f:
    json.dump(config, f)
  weights = random_google_weights(config, seed=seed)
  saved = {n: w for n, w in weights.items() if n != drop}
  prefix = write_google_checkpoint(os.path.join(directory, "bert_model.ckpt"),
                                   saved, global_step=global_step)
  return config_path, prefix, weights


def checkpoint_values(prefix):
  """{variable name: value} of the checkpoint at `prefix`."""
  reader = tf.train.load_checkpoint(str(prefix))
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()}


def assert_same_checkpoints(got_prefix, want_prefix, rtol=1e-5, atol=1e-7):
  """The two checkpoints hold the same names, and values equal within
  rtol and atol."""
  got, want = checkpoint_values(got_prefix), checkpoint_values(want_prefix)
  assert set(got) == set(want)
  for name, value in want.items():
    np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol,
                               err_msg=name)


# ----- NumPy BERT (float64) ---------------------------------------------------

def gelu(x):
  """BERT's GELU: the tanh approximation."""
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def gelu_exact(x):
  """The exact GELU x Phi(x), with the erf (HuggingFace's "gelu")."""
  erf = np.vectorize(math.erf)
  return 0.5 * x * (1.0 + erf(np.asarray(x) / np.sqrt(2.0)))


# A config's hidden_act in Google's layout (bert_config.json) -> function.
ACTIVATIONS = {"gelu": gelu, "gelu_exact": gelu_exact}


def layer_norm(x, gamma, beta, epsilon=1e-12):
  """Layer normalization over the last axis, with BERT's epsilon 1e-12."""
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def softmax(x):
  """Softmax over the last axis."""
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def bert_forward(weights, config, input_ids, input_mask, segment_ids,
                 masked_lm_positions):
  """BERT's pretraining forward pass (no dropout) in float64 NumPy.

  Args:
    weights: {Google name: array}, as random_google_weights returns.
    config: the config dict, in Google's layout (hidden_act "gelu" the tanh
      form, "gelu_exact" the erf one; layer_norm_epsilon, default 1e-12).
    input_ids, input_mask, segment_ids: int [B, S].
    masked_lm_positions: int [B, P].

  Returns:
    {"masked_lm_logits": [B, P, V], "next_sentence_logits": [B, 2],
     "pooled_output": [B, H], "sequence_output": [B, S, H],
     "all_encoder_layers": list of [B, S, H], one a layer,
     "attention_probs": list of [B, N, S, S], one a layer,
     "hidden_states": the embedding output, then all_encoder_layers,
     "attention_scores": list of [B, N, S, S], q.k / sqrt(D) before the mask,
     "attention_queries", "attention_keys", "attention_values": lists of
     [B, S, H], one a layer}.
  """
  w = {k: v.astype(np.float64) for k, v in weights.items()}
  ids, mask = np.asarray(input_ids), np.asarray(input_mask, np.float64)
  batch, seq = ids.shape
  h, heads = config["hidden_size"], config["num_attention_heads"]
  d = h // heads

  def dense(x, name):
    return x @ w[name + "/kernel"] + w[name + "/bias"]

  epsilon = config.get("layer_norm_epsilon", 1e-12)
  gelu = ACTIVATIONS[config.get("hidden_act", "gelu")]

  def ln(x, name):
    return layer_norm(x, w[name + "/gamma"], w[name + "/beta"], epsilon)

  x = (w["bert/embeddings/word_embeddings"][ids] +
       w["bert/embeddings/token_type_embeddings"][np.asarray(segment_ids)] +
       w["bert/embeddings/position_embeddings"][:seq][None])
  x = ln(x, "bert/embeddings/LayerNorm")  # [B, S, H]
  hidden_states = [x]
  layers, all_probs, all_scores = [], [], []
  projections = {"query": [], "key": [], "value": []}
  for l in range(config["num_hidden_layers"]):
    p = f"bert/encoder/layer_{l}/"
    for n in projections:
      projections[n].append(dense(x, p + f"attention/self/{n}"))  # [B, S, H]
    # [B, S, N, D]
    q, k, v = (projections[n][-1].reshape(batch, seq, heads, d)
               for n in ("query", "key", "value"))
    scores = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(d)  # [B, N, S, S]
    all_scores.append(scores)
    probs = softmax(scores + (1.0 - mask[:, None, None, :]) * -10000.0)
    context = np.einsum("bnqk,bknd->bqnd", probs, v).reshape(batch, seq, h)
    a = ln(dense(context, p + "attention/output/dense") + x,
           p + "attention/output/LayerNorm")
    inner = gelu(dense(a, p + "intermediate/dense"))  # [B, S, I]
    x = ln(dense(inner, p + "output/dense") + a, p + "output/LayerNorm")
    layers.append(x)
    hidden_states.append(x)
    all_probs.append(probs)
  pooled = np.tanh(dense(x[:, 0], "bert/pooler/dense"))  # [B, H]
  positions = np.asarray(masked_lm_positions)
  gathered = x[np.arange(batch)[:, None], positions]  # [B, P, H]
  t = ln(gelu(dense(gathered, "cls/predictions/transform/dense")),
         "cls/predictions/transform/LayerNorm")
  mlm = t @ w["bert/embeddings/word_embeddings"].T + w[
      "cls/predictions/output_bias"]  # [B, P, V]
  nsp = pooled @ w["cls/seq_relationship/output_weights"].T + w[
      "cls/seq_relationship/output_bias"]  # [B, 2]
  return {"masked_lm_logits": mlm, "next_sentence_logits": nsp,
          "pooled_output": pooled, "sequence_output": x,
          "all_encoder_layers": layers, "attention_probs": all_probs,
          "hidden_states": hidden_states, "attention_scores": all_scores,
          "attention_queries": projections["query"],
          "attention_keys": projections["key"],
          "attention_values": projections["value"]}


# ----- pretraining records ----------------------------------------------------

def random_pretraining_examples(count, max_seq_length, max_predictions_per_seq,
                                vocab_size, seed=0):
  """Returns a list of `count` pretraining feature dicts with varied lengths.

  Real lengths range from 5 to max_seq_length; some examples use fewer than
  P masked positions (the rest padded with 0 and weight 0), as Google's tool.
  """
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(count):
    length = int(rng.integers(5, max_seq_length + 1))
    ids = np.zeros(max_seq_length, np.int64)
    ids[:length] = rng.integers(5, vocab_size, length)
    ids[0], ids[length - 1] = 1, 2
    mask = np.zeros(max_seq_length, np.int64)
    mask[:length] = 1
    segments = np.zeros(max_seq_length, np.int64)
    segments[length // 2:length] = 1
    n_pred = int(min(max_predictions_per_seq, length - 2,
                     rng.integers(1, max_predictions_per_seq + 1)))
    positions = np.zeros(max_predictions_per_seq, np.int64)
    positions[:n_pred] = np.sort(rng.choice(np.arange(1, length - 1), n_pred,
                                            replace=False))
    masked_ids = np.zeros(max_predictions_per_seq, np.int64)
    masked_ids[:n_pred] = ids[positions[:n_pred]]
    ids[positions[:n_pred]] = 3  # [MASK]
    weights = np.zeros(max_predictions_per_seq, np.float32)
    weights[:n_pred] = 1.0
    examples.append({
        records.INPUT_IDS: ids, records.INPUT_MASK: mask,
        records.SEGMENT_IDS: segments,
        records.MASKED_LM_POSITIONS: positions,
        records.MASKED_LM_IDS: masked_ids,
        records.MASKED_LM_WEIGHTS: weights,
        records.NEXT_SENTENCE_LABELS: np.array([rng.integers(0, 2)], np.int64),
    })
  return examples


def write_records(path, examples):
  """Writes feature dicts to a TFRecord file with example_codec.serialize_example."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for example in examples:
      writer.write(example_codec.serialize_example(example))
  return str(path)


def read_records(path):
  """Reads every record of a TFRecord file as {name: np.ndarray} dicts."""
  return [example_codec.decode_example(r.numpy())
          for r in tf.data.TFRecordDataset(str(path))]


# ----- stage IV's labels ------------------------------------------------------

def assert_top_k_matches(out, expected_probs, k):
  """Stage IV's top-k labels `out` (decoded records, as read_records returns)
  hold the reference distribution's k most probable tokens of each masked
  position: their probabilities, and their ids wherever neighbouring ranks
  are apart (ties may swap). expected_probs: [N, P, V]. Returns the written
  (probs, ids), each [N, P, k]."""
  n, p, _ = expected_probs.shape
  probs = np.stack([o[records.TRUNCATED_PROBS] for o in out]).reshape(n, p, k)
  ids = np.stack([o[records.TOP_K_INDICES] for o in out]).reshape(n, p, k)
  ref_ids = np.argsort(-expected_probs, axis=-1, kind="stable")[..., :k]
  ref_top = np.take_along_axis(expected_probs, ref_ids, axis=-1)
  np.testing.assert_allclose(probs, ref_top, rtol=1e-5, atol=1e-7)
  # The ids written carry the reference's probabilities of those ranks (ties
  # may swap), and equal the reference ids wherever neighbours are apart.
  np.testing.assert_allclose(np.take_along_axis(expected_probs, ids, axis=-1),
                             ref_top, rtol=1e-5, atol=1e-7)
  gaps = np.abs(np.diff(ref_top, axis=-1))
  apart = np.ones_like(ref_top, bool)
  apart[..., 1:] &= gaps > 1e-6
  apart[..., :-1] &= gaps > 1e-6
  np.testing.assert_array_equal(ids[apart], ref_ids[apart])
  return probs, ids
