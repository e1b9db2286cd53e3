"""Test helpers for the teacher-label stage, independent of modeling.py.

- `random_google_weights` + `write_google_checkpoint`: a tiny BERT checkpoint
  under Google's variable names, written with the SaveV2 op (no model code).
- `numpy_masked_lm_probs`: BERT's forward pass re-derived in NumPy (float64)
  from Google's published equations, returning the MLM softmax at the masked
  positions.
- `random_pretraining_examples` / `write_records`: pretraining records of
  varied real lengths, serialized with records.serialize_example.

Shape legend: B = batch, S = sequence length, P = masked positions,
H = hidden size, N = attention heads, D = H / N, V = vocab size.
"""

import numpy as np
import tensorflow as tf

import records

TINY_CONFIG = {
    "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 37, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}


def random_google_weights(config, seed=0, scale=0.2):
  """Returns {Google variable name: float32 array} for a BERT config dict.

  The scale is larger than BERT's initializer so that the teacher's
  distribution is far from uniform and the top-k order is well defined.
  """
  rng = np.random.default_rng(seed)
  h, inter = config["hidden_size"], config["intermediate_size"]

  def w(*shape):
    return (rng.standard_normal(shape) * scale).astype(np.float32)

  def gamma():
    return (1.0 + rng.standard_normal(h) * 0.1).astype(np.float32)

  weights = {
      "bert/embeddings/word_embeddings": w(config["vocab_size"], h),
      "bert/embeddings/token_type_embeddings": w(config["type_vocab_size"], h),
      "bert/embeddings/position_embeddings":
          w(config["max_position_embeddings"], h),
      "bert/embeddings/LayerNorm/gamma": gamma(),
      "bert/embeddings/LayerNorm/beta": w(h),
  }
  for i in range(config["num_hidden_layers"]):
    p = f"bert/encoder/layer_{i}/"
    for name in ("query", "key", "value"):
      weights[p + f"attention/self/{name}/kernel"] = w(h, h)
      weights[p + f"attention/self/{name}/bias"] = w(h)
    weights[p + "attention/output/dense/kernel"] = w(h, h)
    weights[p + "attention/output/dense/bias"] = w(h)
    weights[p + "attention/output/LayerNorm/gamma"] = gamma()
    weights[p + "attention/output/LayerNorm/beta"] = w(h)
    weights[p + "intermediate/dense/kernel"] = w(h, inter)
    weights[p + "intermediate/dense/bias"] = w(inter)
    weights[p + "output/dense/kernel"] = w(inter, h)
    weights[p + "output/dense/bias"] = w(h)
    weights[p + "output/LayerNorm/gamma"] = gamma()
    weights[p + "output/LayerNorm/beta"] = w(h)
  weights.update({
      "bert/pooler/dense/kernel": w(h, h),
      "bert/pooler/dense/bias": w(h),
      "cls/predictions/transform/dense/kernel": w(h, h),
      "cls/predictions/transform/dense/bias": w(h),
      "cls/predictions/transform/LayerNorm/gamma": gamma(),
      "cls/predictions/transform/LayerNorm/beta": w(h),
      "cls/predictions/output_bias": w(config["vocab_size"]),
      "cls/seq_relationship/output_weights": w(2, h),
      "cls/seq_relationship/output_bias": w(2),
  })
  return weights


def write_google_checkpoint(weights, prefix, extras=True):
  """Writes `weights` as a TF1 name-based checkpoint at `prefix`.

  With extras, also writes what Google's checkpoints carry besides the model:
  global_step and Adam slots, which a teacher loader must ignore.
  """
  tensors = dict(weights)
  if extras:
    tensors["global_step"] = np.array(1000, np.int64)
    for name in list(weights)[:3]:
      tensors[name + "/adam_m"] = np.zeros_like(weights[name])
      tensors[name + "/adam_v"] = np.zeros_like(weights[name])
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(tensors[n]) for n in names])
  return prefix


def _layer_norm(x, gamma, beta):
  mean = x.mean(-1, keepdims=True)
  variance = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(variance + 1e-12) * gamma + beta


def _gelu(x):
  """BERT's GELU: the tanh approximation."""
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def numpy_masked_lm_probs(weights, config, input_ids, input_mask, segment_ids,
                          masked_lm_positions):
  """BERT's MLM softmax at the masked positions, in float64 NumPy.

  Args:
    weights: {Google name: array}.
    config: the config dict.
    input_ids, input_mask, segment_ids: int [B, S].
    masked_lm_positions: int [B, P].

  Returns:
    float64 [B, P, V] probabilities.
  """
  wt = {k: v.astype(np.float64) for k, v in weights.items()}
  ids = np.asarray(input_ids)
  b, s = ids.shape
  n = config["num_attention_heads"]
  d = config["hidden_size"] // n
  x = (wt["bert/embeddings/word_embeddings"][ids]
       + wt["bert/embeddings/token_type_embeddings"][np.asarray(segment_ids)]
       + wt["bert/embeddings/position_embeddings"][:s][None])
  x = _layer_norm(x, wt["bert/embeddings/LayerNorm/gamma"],
                  wt["bert/embeddings/LayerNorm/beta"])  # [B, S, H]
  adder = (1.0 - np.asarray(input_mask, np.float64))[:, None, None, :] * -10000.0

  def heads(t):  # [B, S, H] -> [B, N, S, D]
    return t.reshape(b, s, n, d).transpose(0, 2, 1, 3)

  for i in range(config["num_hidden_layers"]):
    p = f"bert/encoder/layer_{i}/"

    def dense(t, name):
      return t @ wt[p + name + "/kernel"] + wt[p + name + "/bias"]

    q = heads(dense(x, "attention/self/query"))
    k = heads(dense(x, "attention/self/key"))
    v = heads(dense(x, "attention/self/value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + adder  # [B, N, S, S]
    context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, s, n * d)
    x = _layer_norm(dense(context, "attention/output/dense") + x,
                    wt[p + "attention/output/LayerNorm/gamma"],
                    wt[p + "attention/output/LayerNorm/beta"])
    inner = _gelu(dense(x, "intermediate/dense"))  # [B, S, I]
    x = _layer_norm(dense(inner, "output/dense") + x,
                    wt[p + "output/LayerNorm/gamma"],
                    wt[p + "output/LayerNorm/beta"])
  positions = np.asarray(masked_lm_positions)
  gathered = np.take_along_axis(x, positions[:, :, None], axis=1)  # [B, P, H]
  t = _gelu(gathered @ wt["cls/predictions/transform/dense/kernel"]
            + wt["cls/predictions/transform/dense/bias"])
  t = _layer_norm(t, wt["cls/predictions/transform/LayerNorm/gamma"],
                  wt["cls/predictions/transform/LayerNorm/beta"])
  logits = (t @ wt["bert/embeddings/word_embeddings"].T
            + wt["cls/predictions/output_bias"])  # [B, P, V]
  return _softmax(logits)


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
  """Writes feature dicts to a TFRecord file with records.serialize_example."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for example in examples:
      writer.write(records.serialize_example(example))
  return str(path)


def read_records(path):
  """Reads every record of a TFRecord file as {name: np.ndarray} dicts."""
  return [records.decode_example(r.numpy())
          for r in tf.data.TFRecordDataset(str(path))]
