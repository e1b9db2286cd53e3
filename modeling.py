"""BERT in TF2 with Google's variable names (checkpoint I/O: checkpoints.py).

BertModel (encoder and pooler) and BertPretrainingModel (plus the masked-LM
and next-sentence heads) are tf.Modules built from small blocks, each
holding its tf.Variables as attributes. variable_shapes() is the one table of
Google's checkpoint names (`bert/...`, `cls/...`) and shapes; every block
creates its variables from it by name, and `variables_by_name()` reports them
in its order. The numerics follow Google's modeling.py: GELU with the tanh
approximation ("gelu"; "gelu_exact" is the erf form), LayerNorm epsilon
config.layer_norm_eps (Google's 1e-12), -10000 added to masked attention
logits, the pooler tanh(dense(first token)), the masked-LM decoder reusing
the word-embedding table. Dense kernels are [in, out], as stored. Every
layer's hidden states, attention probabilities and pre-softmax scores are
available to callers (`intermediates=True`).

Shape legend:
  B = batch size          S = sequence length (<= max_position_embeddings)
  H = hidden size         N = number of attention heads
  D = size per head (H/N) I = intermediate size
  P = masked positions    V = vocabulary size
"""

import dataclasses
import difflib
import json
import math

import numpy as np
import tensorflow as tf

# hidden_act: Google's "gelu" is the tanh approximation its modeling.py
# computes; "gelu_exact" (this project's name) is the erf form, which
# HuggingFace's config.json calls "gelu" (bert_distill/huggingface.py).
ACTIVATIONS = ("gelu", "gelu_exact", "relu", "tanh", "linear")
# Keys only HuggingFace's config.json has: from_dict refuses such a dict
# (bert_distill/model_config.py reads either layout).
HF_CONFIG_KEYS = ("model_type", "architectures", "transformers_version",
                  "layer_norm_eps")
DEFAULT_LAYER_NORM_EPS = 1e-12
# --precision (stage V, fine-tuning): the dtype BertPretrainingModel computes
# in; a trained model's variables stay float32 (a frozen one's: _VariableMaker).
COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16,
                  "mixed_bfloat16": tf.bfloat16}


# The fields a bert_config.json must hold: they fix the model's size, and a
# default standing in for a missing one builds another model, silently where
# no checkpoint's shapes are checked against it (a new student; the number
# of heads, which no shape shows). Google's reader keeps its defaults; this
# one refuses. The other fields keep Google's defaults (hidden_act "gelu",
# max_position_embeddings 512 and type_vocab_size 16, which a checkpoint's
# shapes check; dropouts, initializer_range, the layer norm's epsilon).
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers",
                       "num_attention_heads", "intermediate_size")


@dataclasses.dataclass
class BertConfig:
  """The fields of Google's `bert_config.json`, validated on construction.

  Keys of a json file that are not BERT fields (some releases add pooler_*
  or directionality) are kept in `extra` and written back unchanged.
  layer_norm_eps is not in Google's files (its modeling.py fixes 1e-12):
  read from an HF config.json, it is written into bert_config.json as
  `layer_norm_epsilon` when it differs from 1e-12 (`layer_norm_eps` would
  make the file read as HF's).
  """
  vocab_size: int
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 16
  initializer_range: float = 0.02
  layer_norm_eps: float = DEFAULT_LAYER_NORM_EPS
  extra: dict = dataclasses.field(default_factory=dict, repr=False,
                                  compare=False)

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_hidden_layers",
                 "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"BertConfig.{name} must be an integer, got {value!r}")
      if value <= 0:
        raise ValueError(f"BertConfig.{name} must be positive, got {value}")
      setattr(self, name, int(value))
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
          0.0 <= value < 1.0):
        raise ValueError(f"BertConfig.{name} must be a number in [0, 1), "
                         f"got {value!r}")
      setattr(self, name, float(value))
    if isinstance(self.initializer_range, bool) or not isinstance(
        self.initializer_range, (int, float)) or self.initializer_range <= 0:
      raise ValueError(f"BertConfig.initializer_range must be a positive "
                       f"number, got {self.initializer_range!r}")
    self.initializer_range = float(self.initializer_range)
    if isinstance(self.layer_norm_eps, bool) or not isinstance(
        self.layer_norm_eps, (int, float)) or not 0 < self.layer_norm_eps < 1:
      raise ValueError(f"BertConfig.layer_norm_eps must be a number in (0, 1),"
                       f" got {self.layer_norm_eps!r}")
    self.layer_norm_eps = float(self.layer_norm_eps)
    position_type = self.extra.get("position_embedding_type", "absolute")
    if position_type != "absolute":
      raise ValueError(f"position_embedding_type {position_type!r} is not "
                       f"supported (only 'absolute' position embeddings)")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"BertConfig.hidden_act {self.hidden_act!r} is not "
                       f"supported; use one of {', '.join(ACTIVATIONS)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"BertConfig.hidden_size ({self.hidden_size}) is not a multiple of "
          f"num_attention_heads ({self.num_attention_heads})")

  @classmethod
  def from_dict(cls, d):
    """Builds a config from a dict in the layout of `bert_config.json`.

    Raises:
      ValueError: one line, when a field is missing or invalid, or `d` is
        HuggingFace's config.json (it holds one of HF_CONFIG_KEYS).
    """
    if not isinstance(d, dict):
      raise ValueError(f"a BERT config must be a JSON object, got "
                       f"{type(d).__name__}")
    if "vocab_size" not in d:
      raise ValueError("BERT config has no 'vocab_size' field")
    if is_hf_config(d):
      raise ValueError("HuggingFace's config.json layout, not Google's "
                       "bert_config.json (read it with "
                       "bert_distill.model_config.read_config)")
    d = dict(d)
    if "layer_norm_epsilon" in d:
      d["layer_norm_eps"] = d.pop("layer_norm_epsilon")
    names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
    extra = {k: v for k, v in d.items() if k not in names}
    for key in extra:
      # A misspelt field would otherwise be kept as an extra key while the
      # field it meant took its default: a model of another shape.
      near = difflib.get_close_matches(key, names, n=1, cutoff=0.85)
      if near:
        raise ValueError(f"unknown field {key!r} (did you mean {near[0]!r}?)")
    missing = [k for k in ARCHITECTURE_FIELDS if k not in d]
    if missing:
      raise ValueError(f"BERT config lacks {', '.join(map(repr, missing))} "
                       f"(every bert_config.json Google released has them)")
    known = {k: v for k, v in d.items() if k in names}
    return cls(**known, extra=extra)

  @classmethod
  def from_json_file(cls, path):
    """Reads a `bert_config.json` (model_config.read_config names the file
    in its errors and reads HF's layout too)."""
    with tf.io.gfile.GFile(path, "r") as f:
      return cls.from_dict(json.loads(f.read()))

  def to_dict(self):
    """The config as a dict with Google's keys (and any extra keys read);
    layer_norm_eps as `layer_norm_epsilon`, only when not Google's 1e-12."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
         if f.name not in ("extra", "layer_norm_eps")}
    if self.layer_norm_eps != DEFAULT_LAYER_NORM_EPS:
      d["layer_norm_epsilon"] = self.layer_norm_eps
    d.update(self.extra)
    return d

  def to_json_string(self):
    """The config as `bert_config.json` text (model_config.write_config
    writes it atomically)."""
    return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

  @property
  def size_per_head(self):
    return self.hidden_size // self.num_attention_heads


def is_hf_config(d):
  """Whether a config dict is HuggingFace's config.json (HF_CONFIG_KEYS)."""
  return any(key in d for key in HF_CONFIG_KEYS)


def variable_shapes(config):
  """Returns {Google name: shape} of every BERT variable, in checkpoint order.

  This is the one place that lists the names; the blocks create exactly
  these.
  """
  h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
  shapes = {}

  def dense(name, rows, columns):
    shapes[name + "/kernel"] = [rows, columns]
    shapes[name + "/bias"] = [columns]

  def layer_norm_of(name):
    shapes[name + "/gamma"] = [h]
    shapes[name + "/beta"] = [h]

  shapes["bert/embeddings/word_embeddings"] = [v, h]
  shapes["bert/embeddings/token_type_embeddings"] = [config.type_vocab_size, h]
  shapes["bert/embeddings/position_embeddings"] = [
      config.max_position_embeddings, h]
  layer_norm_of("bert/embeddings/LayerNorm")
  for layer in range(config.num_hidden_layers):
    prefix = f"bert/encoder/layer_{layer}/"
    for part in ("query", "key", "value"):
      dense(f"{prefix}attention/self/{part}", h, h)
    dense(f"{prefix}attention/output/dense", h, h)
    layer_norm_of(f"{prefix}attention/output/LayerNorm")
    dense(f"{prefix}intermediate/dense", h, i)
    dense(f"{prefix}output/dense", i, h)
    layer_norm_of(f"{prefix}output/LayerNorm")
  dense("bert/pooler/dense", h, h)
  dense("cls/predictions/transform/dense", h, h)
  layer_norm_of("cls/predictions/transform/LayerNorm")
  shapes["cls/predictions/output_bias"] = [v]
  shapes["cls/seq_relationship/output_weights"] = [2, h]
  shapes["cls/seq_relationship/output_bias"] = [2]
  return shapes


def _is_read_in_compute_dtype(name):
  """Whether the blocks read variable `name` only cast to the compute dtype:
  the dense layers' kernels and biases, the embedding tables and the
  next-sentence weights. LayerNorm's gamma and beta and the output biases
  added to float32 logits are read in float32."""
  return (name.endswith(("/kernel", "/bias", "_embeddings")) or
          name == "cls/seq_relationship/output_weights")


def _initial_value(name, shape, initializer_range, seed):
  """Google's initial values: LayerNorm gamma 1, biases and beta 0, the rest
  truncated normal (2 stddev) with stddev initializer_range."""
  if name.endswith("/gamma"):
    return tf.ones(shape)
  if name.endswith("/beta") or name.endswith("bias"):
    return tf.zeros(shape)
  return tf.random.stateless_truncated_normal(shape, seed=seed,
                                              stddev=initializer_range)


class _VariableMaker:
  """Creates the variables of variable_shapes' table by their Google names.

  Every block asks for its variables by name; the shape comes from the table,
  and so does the initial value's seed (drawn in table order from `seed`),
  so a variable's value does not depend on which block creates it first.
  `created` is the {Google name: tf.Variable} a model's variables_by_name()
  reports.
  """

  def __init__(self, config, seed, trainable, initialize,
               compute_dtype=tf.float32):
    self.config = config
    self._shapes = variable_shapes(config)
    rng = np.random.default_rng(seed)
    self._seeds = {name: rng.integers(0, 2**31 - 1, size=2)
                   for name in self._shapes}
    self._initializer_range = config.initializer_range
    self._trainable = trainable
    self._initialize = initialize
    # The dtype of the weights read only in the compute dtype: float32
    # while training (the optimizer updates float32 values), the compute
    # dtype when frozen, so that a 16-bit teacher casts them once, at load,
    # instead of on every step, and holds them in half the memory.
    self._weight_dtype = tf.float32 if trainable else compute_dtype
    self.created = {}

  def __call__(self, name):
    shape = self._shapes[name]  # a KeyError here is a block asking for a
    # name that is not Google's.
    dtype = (self._weight_dtype if _is_read_in_compute_dtype(name)
             else tf.float32)
    value = (_initial_value(name, shape, self._initializer_range,
                            self._seeds[name])
             if self._initialize else tf.zeros(shape, dtype))
    variable = tf.Variable(tf.cast(value, dtype), name=name,
                           trainable=self._trainable)
    self.created[name] = variable
    return variable

  def in_table_order(self, prefix=""):
    """The created variables whose names start with `prefix`, in the
    table's order; raises if the blocks missed a name of the table."""
    names = [n for n in self._shapes if n.startswith(prefix)]
    missing = [n for n in names if n not in self.created]
    if missing:
      raise AssertionError(f"no block created {missing}")
    return {n: self.created[n] for n in names}


def _gelu_tanh(x):
  """GELU with the tanh approximation, as Google's BERT computes it:
  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), by tf.nn.gelu."""
  return tf.nn.gelu(x, approximate=True)


def _gelu_tanh_gradient(x, dy):
  """dy * d/dx of _gelu_tanh, recomputing the tanh from x."""
  c = math.sqrt(2.0 / math.pi)
  x_squared = tf.square(x)
  t = tf.tanh(c * (x + 0.044715 * x * x_squared))
  # d/dx: 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2)
  return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - tf.square(t)) * c *
               (1.0 + 3.0 * 0.044715 * x_squared))


def _gelu_erf(x):
  """The exact GELU, x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), by
  tf.nn.gelu: what HuggingFace's "gelu" (torch's default GELU) computes."""
  return tf.nn.gelu(x, approximate=False)


def _gelu_erf_gradient(x, dy):
  """dy * d/dx of _gelu_erf: Phi(x) + x phi(x)."""
  cdf = 0.5 * (1.0 + tf.math.erf(x * (1.0 / math.sqrt(2.0))))
  pdf = tf.exp(-0.5 * tf.square(x)) * (1.0 / math.sqrt(2.0 * math.pi))
  return dy * (cdf + x * pdf)


def _fused(elementwise):
  """`elementwise` compiled by XLA into one kernel: one pass over its
  inputs where TensorFlow runs each of its ops as a pass of its own."""
  return tf.function(elementwise, jit_compile=True, reduce_retracing=True)


def _in_float32(elementwise):
  """elementwise(x, ...) computed in float32, the result in x's dtype.

  Inside an XLA kernel the casts cost nothing, while XLA's CPU code for
  16-bit math is scalar: a bfloat16 GELU and its gradient take 3x the
  float32 ones' time.
  """
  def computed_in_float32(x, *rest):
    result = elementwise(tf.cast(x, tf.float32),
                         *[tf.cast(t, tf.float32) for t in rest])
    return tf.cast(result, x.dtype)
  return computed_in_float32


def _with_gradient(forward, gradient):
  """An activation computing `forward`, whose gradient is
  gradient(x, dy): written out, it keeps x alone for the backward pass
  where autodiff through tf.nn.gelu's chain of ops keeps about five
  tensors of x's shape ([B*S, I] in every layer: 0.9 GB at batch 32, seq
  128 with 6 layers of intermediate size 3072)."""
  @tf.custom_gradient
  def activation(x):
    return forward(x), lambda dy: gradient(x, dy)
  return activation


gelu = _with_gradient(_gelu_tanh, _gelu_tanh_gradient)
gelu_exact = _with_gradient(_gelu_erf, _gelu_erf_gradient)
# A training step's GELUs: forward and gradient each one XLA kernel (the
# GELU of a [B*S, I] tensor and its gradient 2-3x faster on CPUs). A
# forward-only graph keeps the plain ones, which grappler fuses into the
# matmul before them (an XLA kernel would stand in the way of that).
gelu_fused = _with_gradient(_fused(_in_float32(_gelu_tanh)),
                            _fused(_in_float32(_gelu_tanh_gradient)))
gelu_exact_fused = _with_gradient(_fused(_in_float32(_gelu_erf)),
                                  _fused(_in_float32(_gelu_erf_gradient)))


def get_activation(name, training=False):
  """Maps a config's hidden_act to a function; with training, the one a
  training step uses (the GELUs fused by XLA, forward and gradient)."""
  if training:
    return {"gelu": gelu_fused, "gelu_exact": gelu_exact_fused}.get(
        name, get_activation(name))
  return {"gelu": gelu, "gelu_exact": gelu_exact, "relu": tf.nn.relu,
          "tanh": tf.tanh, "linear": tf.identity}[name]


def layer_norm(x, gamma, beta, epsilon=DEFAULT_LAYER_NORM_EPS):
  """LayerNorm over the last axis (epsilon: config.layer_norm_eps).

  Statistics are taken in float32 even when x is float16/bfloat16.
  """
  dtype = x.dtype
  x = tf.cast(x, tf.float32)
  mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
  y = (x - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta
  return tf.cast(y, dtype)


def _layer_norm_gradient(x, gamma, dy, epsilon):
  """The gradients of layer_norm(x, gamma, beta, epsilon) given dy:
  (dx in x's dtype, dgamma, dbeta), recomputing the statistics from x.

  With x_hat = (x - mean) * r, r = rsqrt(variance + epsilon) and g = dy *
  gamma: dx = r * (g - mean(g) - x_hat * mean(g * x_hat)), dgamma = sum
  of dy * x_hat and dbeta = sum of dy over every axis but the last.
  """
  dtype = x.dtype
  x = tf.cast(x, tf.float32)
  dy = tf.cast(dy, tf.float32)
  mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
  r = tf.math.rsqrt(variance + epsilon)
  x_hat = (x - mean) * r
  g = dy * gamma
  dx = r * (g - tf.reduce_mean(g, axis=-1, keepdims=True) -
            x_hat * tf.reduce_mean(g * x_hat, axis=-1, keepdims=True))
  hidden_size = tf.shape(x)[-1]
  column_sums = lambda t: tf.reduce_sum(tf.reshape(t, [-1, hidden_size]), 0)
  return tf.cast(dx, dtype), column_sums(dy * x_hat), column_sums(dy)


_layer_norm_xla = _fused(layer_norm)
_layer_norm_gradient_xla = _fused(_layer_norm_gradient)


def layer_norm_fused(x, gamma, beta, epsilon=DEFAULT_LAYER_NORM_EPS):
  """layer_norm as a training step runs it: the forward pass and the
  gradient each one XLA kernel (TensorFlow runs about 7 and 15 passes over
  x), the gradient recomputing the statistics from x, which it keeps alone.

  Args:
    x: [..., H] in the compute dtype.
    gamma, beta: [H] float32 (tensors or variables).
    epsilon: Python float.
  """
  @tf.custom_gradient
  def normalize(x, gamma, beta):
    def gradient(dy):
      return _layer_norm_gradient_xla(x, gamma, dy, epsilon)
    return _layer_norm_xla(x, gamma, beta, epsilon), gradient
  return normalize(x, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))


def _dropout(x, seed, rate):
  """(x with each element zeroed with probability `rate` and the others
  scaled by 1 / (1 - rate), the keep mask), drawn from the [2] `seed`."""
  # Threefry: XLA's CPU code for Philox is ~100x slower than for it.
  keep = tf.random.stateless_uniform(tf.shape(x), seed,
                                     alg="threefry") >= rate
  return _scaled_where(keep, x, rate), keep


def _scaled_where(keep, x, rate):
  """x / (1 - rate) where keep, else 0 (the scaling in float32)."""
  scaled = tf.cast(tf.cast(x, tf.float32) * (1.0 / (1.0 - rate)), x.dtype)
  return tf.where(keep, scaled, tf.zeros_like(x))


_dropout_xla = _fused(_dropout)
_scaled_where_xla = _fused(_scaled_where)


def dropout(x, rate, training):
  """Dropout when training with a positive rate, else x.

  The mask is drawn and applied in one XLA kernel (and the gradient masked
  in another) from a seed TensorFlow's stateful generator draws per call,
  so tf.random.set_seed makes runs repeatable as with tf.nn.dropout, whose
  random numbers and select took 2x the time on CPUs.
  """
  if not (training and rate > 0.0):
    return x
  seed = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)

  @tf.custom_gradient
  def drop(x):
    dropped, keep = _dropout_xla(x, seed, rate)
    return dropped, lambda dy: _scaled_where_xla(keep, dy, rate)
  return drop(x)


# ----------------------------------------------------------------------------
# Blocks. Each is a tf.Module built from a _VariableMaker and the Google name
# of its scope (`prefix`); its variables are attributes, read in the compute
# dtype.

class Dense(tf.Module):
  """x @ kernel + bias, with `prefix/kernel` [in, out] and `prefix/bias`."""

  def __init__(self, make, prefix, compute_dtype):
    super().__init__(name="dense")
    self.kernel = make(prefix + "/kernel")
    self.bias = make(prefix + "/bias")
    self.compute_dtype = compute_dtype

  def __call__(self, x):
    """[..., in] -> [..., out]; bias_add (not +) so that grappler fuses it
    into the matmul."""
    return tf.nn.bias_add(
        tf.matmul(x, tf.cast(self.kernel, self.compute_dtype)),
        tf.cast(self.bias, self.compute_dtype))


class LayerNorm(tf.Module):
  """layer_norm with `prefix/gamma` and `prefix/beta` (kept float32) and the
  config's layer_norm_eps."""

  def __init__(self, make, prefix):
    super().__init__(name="layer_norm")
    self.gamma = make(prefix + "/gamma")
    self.beta = make(prefix + "/beta")
    self.epsilon = make.config.layer_norm_eps

  def __call__(self, x, training=False):
    """x: [..., H]; training: as a training step (layer_norm_fused)."""
    normalize = layer_norm_fused if training else layer_norm
    return normalize(x, self.gamma, self.beta, self.epsilon)


class Embeddings(tf.Module):
  """`bert/embeddings`: word + token-type + position embeddings, LayerNorm,
  dropout."""

  def __init__(self, make, config, compute_dtype):
    super().__init__(name="embeddings")
    prefix = "bert/embeddings"
    self.word_embeddings = make(prefix + "/word_embeddings")  # [V, H]
    self.token_type_embeddings = make(prefix + "/token_type_embeddings")
    self.position_embeddings = make(prefix + "/position_embeddings")
    self.layer_norm = LayerNorm(make, prefix + "/LayerNorm")
    self.dropout_rate = config.hidden_dropout_prob
    self.compute_dtype = compute_dtype

  def __call__(self, input_ids, segment_ids, seq_length, training):
    """int [B, S] ids and segment ids -> [B, S, H]."""
    cast = lambda v: tf.cast(v, self.compute_dtype)
    words = tf.gather(cast(self.word_embeddings), input_ids)
    types = tf.gather(cast(self.token_type_embeddings), segment_ids)
    positions = cast(self.position_embeddings)[:seq_length]  # [S, H]
    output = self.layer_norm(words + types + positions[tf.newaxis],
                             training)
    return dropout(output, self.dropout_rate, training)


class SelfAttention(tf.Module):
  """`.../attention/self`: multi-head self-attention's query, key and value
  projections, softmax and context (before the output dense layer)."""

  def __init__(self, make, prefix, config, compute_dtype):
    super().__init__(name="self_attention")
    self.query = Dense(make, prefix + "/query", compute_dtype)
    self.key = Dense(make, prefix + "/key", compute_dtype)
    self.value = Dense(make, prefix + "/value", compute_dtype)
    self.num_heads = config.num_attention_heads
    self.head_size = config.size_per_head
    self.dropout_rate = config.attention_probs_dropout_prob
    self.compute_dtype = compute_dtype

  def __call__(self, hidden, attention_adder, batch_size, seq_length,
               training):
    """Self-attention on [B*S, H].

    Args:
      hidden: [B*S, H] layer input.
      attention_adder: float32 [B, 1, 1, S], -10000 on padded keys, else 0.
      batch_size, seq_length: B and S (ints or scalar tensors).
      training: apply attention dropout when True.

    Returns:
      ([B*S, H] context;
       {"probs", "scores" (q.k / sqrt(D), before the mask): float32
        [B, N, S, S], "queries", "keys", "values": [B, S, H]}).
    """
    hidden_size = self.num_heads * self.head_size

    def split_heads(x):  # [B*S, H] -> [B, N, S, D]
      x = tf.reshape(x, [batch_size, seq_length, self.num_heads,
                         self.head_size])
      return tf.transpose(x, [0, 2, 1, 3])

    # One [H, 3H] matmul instead of three [H, H] ones: a wider GEMM is faster.
    parts = (self.query, self.key, self.value)
    kernel = tf.concat([tf.cast(p.kernel, self.compute_dtype) for p in parts],
                       axis=1)
    bias = tf.concat([tf.cast(p.bias, self.compute_dtype) for p in parts],
                     axis=0)
    qkv = tf.nn.bias_add(tf.matmul(hidden, kernel), bias)  # [B*S, 3H]
    projections = tf.split(qkv, 3, axis=1)  # 3 x [B*S, H]
    query, key, value = [split_heads(x) for x in projections]

    scores = tf.matmul(query, key, transpose_b=True)  # [B, N, S, S]
    scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(self.head_size))
    probs = tf.nn.softmax(scores + attention_adder, axis=-1)  # [B, N, S, S]
    dropped = dropout(tf.cast(probs, self.compute_dtype), self.dropout_rate,
                      training)
    context = tf.matmul(dropped, value)  # [B, N, S, D]
    context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]),
                         [-1, hidden_size])  # [B*S, H]
    queries, keys, values = [
        tf.reshape(x, [batch_size, seq_length, hidden_size])
        for x in projections]  # [B, S, H] each
    return context, {"probs": probs, "scores": scores, "queries": queries,
                     "keys": keys, "values": values}


class EncoderLayer(tf.Module):
  """`bert/encoder/layer_{i}`: self-attention, then the feed-forward block,
  each with dropout and a residual LayerNorm."""

  def __init__(self, make, index, config, compute_dtype):
    super().__init__(name=f"layer_{index}")
    prefix = f"bert/encoder/layer_{index}"
    self.attention = SelfAttention(make, prefix + "/attention/self", config,
                                   compute_dtype)
    self.attention_output = Dense(make, prefix + "/attention/output/dense",
                                  compute_dtype)
    self.attention_layer_norm = LayerNorm(
        make, prefix + "/attention/output/LayerNorm")
    self.intermediate = Dense(make, prefix + "/intermediate/dense",
                              compute_dtype)
    self.output = Dense(make, prefix + "/output/dense", compute_dtype)
    self.output_layer_norm = LayerNorm(make, prefix + "/output/LayerNorm")
    self.activation = get_activation(config.hidden_act)
    self.training_activation = get_activation(config.hidden_act,
                                              training=True)
    self.dropout_rate = config.hidden_dropout_prob

  def __call__(self, hidden, attention_adder, batch_size, seq_length,
               training):
    """[B*S, H] -> ([B*S, H] output, the attention's pieces as SelfAttention
    returns them)."""
    context, pieces = self.attention(hidden, attention_adder, batch_size,
                                     seq_length, training)  # [B*S, H]
    attention = dropout(self.attention_output(context), self.dropout_rate,
                        training)
    attention = self.attention_layer_norm(attention + hidden, training)
    activation = self.training_activation if training else self.activation
    intermediate = activation(self.intermediate(attention))  # [B*S, I]
    output = dropout(self.output(intermediate), self.dropout_rate,
                     training)  # [B*S, H]
    return self.output_layer_norm(output + attention, training), pieces


class Pooler(tf.Module):
  """`bert/pooler`: tanh(dense(first token))."""

  def __init__(self, make, compute_dtype):
    super().__init__(name="pooler")
    self.dense = Dense(make, "bert/pooler/dense", compute_dtype)

  def __call__(self, sequence_output):
    """[B, S, H] -> [B, H]"""
    return tf.tanh(self.dense(sequence_output[:, 0, :]))


class MaskedLMHead(tf.Module):
  """`cls/predictions`: transform (dense, activation, LayerNorm), then the
  word-embedding table as the decoder, plus an output bias."""

  def __init__(self, make, config, compute_dtype):
    super().__init__(name="masked_lm")
    self.transform = Dense(make, "cls/predictions/transform/dense",
                           compute_dtype)
    self.layer_norm = LayerNorm(make, "cls/predictions/transform/LayerNorm")
    self.output_bias = make("cls/predictions/output_bias")  # [V]
    self.activation = get_activation(config.hidden_act)
    self.compute_dtype = compute_dtype

  def __call__(self, sequence_output, positions, word_embeddings):
    """Logits at the gathered positions only.

    Args:
      sequence_output: [B, S, H].
      positions: int [B, P], positions < S.
      word_embeddings: the [V, H] embedding table (the decoder).

    Returns:
      float32 [B, P, V].
    """
    hidden_size = sequence_output.shape[-1]
    gathered = tf.gather(sequence_output, positions, batch_dims=1)  # [B, P, H]
    # The head runs on [B*P, H]: a [B, P, H] @ [H, V] matmul broadcasts the
    # weight, and its gradient is then a [B, H, V] tensor summed over B (3 GB
    # at batch 32 with BERT's vocabulary) instead of one [H, V] matmul.
    x = tf.reshape(gathered, [-1, hidden_size])  # [B*P, H]
    x = self.layer_norm(self.activation(self.transform(x)))
    logits = tf.matmul(x, tf.cast(word_embeddings, self.compute_dtype),
                       transpose_b=True)  # [B*P, V]
    logits = tf.cast(logits, tf.float32) + self.output_bias
    return tf.reshape(logits, [tf.shape(positions)[0], tf.shape(positions)[1],
                               word_embeddings.shape[0]])  # [B, P, V]


class NextSentenceHead(tf.Module):
  """`cls/seq_relationship`: two logits from the pooled output."""

  def __init__(self, make, compute_dtype):
    super().__init__(name="next_sentence")
    self.output_weights = make("cls/seq_relationship/output_weights")  # [2, H]
    self.output_bias = make("cls/seq_relationship/output_bias")  # [2]
    self.compute_dtype = compute_dtype

  def __call__(self, pooled_output):
    """[B, H] -> float32 [B, 2]"""
    logits = tf.matmul(pooled_output,
                       tf.cast(self.output_weights, self.compute_dtype),
                       transpose_b=True)
    return tf.cast(logits, tf.float32) + self.output_bias


# ----------------------------------------------------------------------------
# Models.

def _check_compute_dtype(compute_dtype):
  compute_dtype = tf.as_dtype(compute_dtype)
  if compute_dtype not in (tf.float32, tf.float16, tf.bfloat16):
    raise ValueError(f"compute_dtype must be float32, float16 or bfloat16, "
                     f"got {compute_dtype.name}")
  return compute_dtype


class BertModel(tf.Module):
  """BERT's encoder and pooler (`bert/...`), as Google's modeling.BertModel.

  Variables are created eagerly in __init__ (so the model can be built under
  a tf.distribute strategy scope) with Google's names and initial values.
  With compute_dtype float16/bfloat16 the math runs in that dtype (LayerNorm
  and softmax statistics in float32) while the variables of a trainable
  model stay float32.
  """

  def __init__(self, config, compute_dtype=tf.float32, name="bert", seed=None,
               trainable=True, initialize=True, make=None):
    """Creates the variables.

    Args:
      config: a BertConfig.
      compute_dtype: tf.float32, tf.float16 or tf.bfloat16.
      name: the tf.Module name (the checkpoint names never depend on it).
      seed: an int making the initial values reproducible; None draws one.
      trainable: False for a frozen model (a teacher): a GradientTape
        then never watches its variables, and the weights read only in the
        compute dtype are stored in it (_VariableMaker; LayerNorm's and the
        output biases stay float32).
      initialize: False creates every variable as zeros, for a model whose
        every variable is loaded from a checkpoint next (a teacher): drawing
        BERT-Base's 110M truncated-normal values costs seconds of start-up.
      make: the _VariableMaker of an enclosing model (then seed, trainable
        and initialize are its).
    """
    super().__init__(name=name)
    self.config = config
    self.compute_dtype = _check_compute_dtype(compute_dtype)
    self._make = make or _VariableMaker(config, seed, trainable, initialize,
                                        self.compute_dtype)
    self.embeddings = Embeddings(self._make, config, self.compute_dtype)
    self.encoder_layers = [
        EncoderLayer(self._make, i, config, self.compute_dtype)
        for i in range(config.num_hidden_layers)]
    self.pooler = Pooler(self._make, self.compute_dtype)

  def variables_by_name(self):
    """Returns {Google name: tf.Variable} of every `bert/` variable."""
    return self._make.in_table_order("bert/")

  def __call__(self, input_ids, input_mask, segment_ids, training=False,
               intermediates=False):
    """Runs the encoder and the pooler.

    Args:
      input_ids, input_mask, segment_ids: int32/int64 [B, S].
      training: apply dropout when True.
      intermediates: also return what intermediate-layer distillation
        matches (the entries below marked so). They are tensors the forward
        pass computes anyway; off by default so that a caller's graph keeps
        none of them alive without asking.

    Returns:
      A dict:
        sequence_output       [B, S, H] (compute dtype)
        pooled_output         [B, H]
        embedding_output      [B, S, H], the input of the first layer
        all_encoder_layers    list of [B, S, H], one per layer
        attention_probs       list of float32 [B, N, S, S], one per layer
      and with intermediates=True:
        hidden_states         list of [B, S, H], num_hidden_layers + 1:
                              [0] the embedding output, [i] the output of
                              encoder layer i - 1 (variables layer_{i-1})
        attention_scores      list of float32 [B, N, S, S], one per layer:
                              q.k / sqrt(D) before the -10000 mask is added
        attention_queries, attention_keys, attention_values
                              lists of [B, S, H], one per layer: the
                              projections before the split into N heads
    """
    hidden_size = self.config.hidden_size
    input_ids = tf.convert_to_tensor(input_ids)
    batch_size = tf.shape(input_ids)[0]
    seq_length = input_ids.shape[1] or tf.shape(input_ids)[1]

    embedding_output = self.embeddings(input_ids, segment_ids, seq_length,
                                       training)  # [B, S, H]
    # -10000 on padded keys: [B, 1, 1, S], broadcast over heads and queries.
    mask = tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]
    attention_adder = (1.0 - mask) * -10000.0

    hidden = tf.reshape(embedding_output, [-1, hidden_size])  # [B*S, H]
    all_encoder_layers, layer_pieces = [], []
    for layer in self.encoder_layers:
      hidden, pieces = layer(hidden, attention_adder, batch_size, seq_length,
                             training)
      all_encoder_layers.append(
          tf.reshape(hidden, [batch_size, seq_length, hidden_size]))
      layer_pieces.append(pieces)
    sequence_output = all_encoder_layers[-1]

    outputs = {
        "sequence_output": sequence_output,
        "pooled_output": self.pooler(sequence_output),
        "embedding_output": embedding_output,
        "all_encoder_layers": all_encoder_layers,
        "attention_probs": [pieces["probs"] for pieces in layer_pieces],
    }
    if intermediates:
      outputs["hidden_states"] = [embedding_output] + all_encoder_layers
      for name in ("scores", "queries", "keys", "values"):
        outputs[f"attention_{name}"] = [pieces[name] for pieces in layer_pieces]
    return outputs


class BertPretrainingModel(tf.Module):
  """BERT (BertModel) with its masked-LM and next-sentence heads: every
  variable of Google's pretraining checkpoints."""

  def __init__(self, config, compute_dtype=tf.float32, name="bert", seed=None,
               trainable=True, initialize=True):
    """Creates the variables; the arguments are BertModel's."""
    super().__init__(name=name)
    self.config = config
    self.compute_dtype = _check_compute_dtype(compute_dtype)
    self._make = _VariableMaker(config, seed, trainable, initialize,
                                self.compute_dtype)
    self.bert = BertModel(config, self.compute_dtype, make=self._make)
    self.masked_lm = MaskedLMHead(self._make, config, self.compute_dtype)
    self.next_sentence = NextSentenceHead(self._make, self.compute_dtype)

  def variables_by_name(self):
    """Returns {Google name: tf.Variable} of every model variable."""
    return self._make.in_table_order()

  def __call__(self, input_ids, input_mask, segment_ids, masked_lm_positions,
               training=False, intermediates=False):
    """Runs BERT and both pretraining heads.

    Args:
      input_ids, input_mask, segment_ids, training, intermediates: as
        BertModel's.
      masked_lm_positions: int32/int64 [B, P], positions (< S) where the
        masked-LM logits are computed.

    Returns:
      BertModel's dict, plus
        masked_lm_logits      float32 [B, P, V]
        next_sentence_logits  float32 [B, 2]
    """
    outputs = self.bert(input_ids, input_mask, segment_ids, training=training,
                        intermediates=intermediates)
    outputs["masked_lm_logits"] = self.masked_lm(
        outputs["sequence_output"], masked_lm_positions,
        self.bert.embeddings.word_embeddings)
    outputs["next_sentence_logits"] = self.next_sentence(
        outputs["pooled_output"])
    return outputs
