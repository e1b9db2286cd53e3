"""BERT in TF2 with Google's variable names (checkpoint I/O: checkpoints.py).

The model is a tf.Module holding explicit tf.Variables, one per name of
Google's BERT checkpoints (`bert/...`, `cls/...`); `variables_by_name()` is the
one mapping from those names to variables, used by every save and load. The
numerics follow Google's modeling.py: GELU with the tanh approximation,
LayerNorm epsilon 1e-12, -10000 added to masked attention logits, the pooler
tanh(dense(first token)), and the masked-LM decoder reusing the word-embedding
table. Dense kernels are [in, out], as stored in the checkpoints.

Shape legend:
  B = batch size          S = sequence length (<= max_position_embeddings)
  H = hidden size         N = number of attention heads
  D = size per head (H/N) I = intermediate size
  P = masked positions    V = vocabulary size
"""

import dataclasses
import json
import math

import numpy as np
import tensorflow as tf

import cli

_ACTIVATIONS = ("gelu", "relu", "tanh", "linear")
# --precision (stage V, fine-tuning): the dtype BertPretrainingModel computes
# in; its variables stay float32.
COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16,
                  "mixed_bfloat16": tf.bfloat16}


@dataclasses.dataclass
class BertConfig:
  """The fields of Google's `bert_config.json`, validated on construction.

  Keys of a json file that are not BERT fields (some releases add pooler_*
  or directionality) are kept in `extra` and written back unchanged.
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
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"BertConfig.hidden_act {self.hidden_act!r} is not "
                       f"supported; use one of {', '.join(_ACTIVATIONS)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"BertConfig.hidden_size ({self.hidden_size}) is not a multiple of "
          f"num_attention_heads ({self.num_attention_heads})")

  @classmethod
  def from_dict(cls, d):
    """Builds a config from a dict in the layout of `bert_config.json`."""
    if not isinstance(d, dict):
      raise ValueError(f"a BERT config must be a JSON object, got "
                       f"{type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
    if "vocab_size" not in d:
      raise ValueError("BERT config has no 'vocab_size' field")
    known = {k: v for k, v in d.items() if k in names}
    extra = {k: v for k, v in d.items() if k not in names}
    return cls(**known, extra=extra)

  @classmethod
  def from_json_file(cls, path):
    """Reads a `bert_config.json`; errors name the file."""
    try:
      with tf.io.gfile.GFile(path, "r") as f:
        d = json.loads(f.read())
      return cls.from_dict(d)
    except tf.errors.NotFoundError:
      raise ValueError(f"{path}: BERT config file not found") from None
    except tf.errors.OpError as e:  # a directory, no permission, ...
      raise ValueError(f"{path}: cannot read ({e.message})") from None
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None

  def to_dict(self):
    """The config as a dict with Google's keys (and any extra keys read)."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
         if f.name != "extra"}
    d.update(self.extra)
    return d

  def to_json_string(self):
    """The config as `bert_config.json` text."""
    return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

  def to_json_file(self, path):
    """Writes the config as `bert_config.json`, atomically."""
    with cli.atomic_output(path) as tmp_path:
      with tf.io.gfile.GFile(tmp_path, "w") as f:
        f.write(self.to_json_string())

  @property
  def size_per_head(self):
    return self.hidden_size // self.num_attention_heads


def read_config(path, max_seq_length, whose):
  """Reads `path` as a BertConfig with positions for max_seq_length tokens.

  `whose` ("teacher", "student") names the model in the error message.

  Raises:
    ValueError: one line that starts with the file's name, when it is
      missing, unreadable or invalid, or max_seq_length exceeds its
      max_position_embeddings.
  """
  config = BertConfig.from_json_file(path)
  if max_seq_length > config.max_position_embeddings:
    raise ValueError(
        f"{path}: --max_seq_length {max_seq_length} exceeds the {whose}'s "
        f"max_position_embeddings {config.max_position_embeddings}")
  return config


def variable_shapes(config):
  """Returns {Google name: shape} of every BERT variable, in checkpoint order.

  This is the one place that lists the names; the model creates exactly these.
  """
  h, i = config.hidden_size, config.intermediate_size
  shapes = {
      "bert/embeddings/word_embeddings": [config.vocab_size, h],
      "bert/embeddings/token_type_embeddings": [config.type_vocab_size, h],
      "bert/embeddings/position_embeddings": [
          config.max_position_embeddings, h],
      "bert/embeddings/LayerNorm/gamma": [h],
      "bert/embeddings/LayerNorm/beta": [h],
  }
  for layer in range(config.num_hidden_layers):
    prefix = f"bert/encoder/layer_{layer}/"
    for part in ("query", "key", "value"):
      shapes[f"{prefix}attention/self/{part}/kernel"] = [h, h]
      shapes[f"{prefix}attention/self/{part}/bias"] = [h]
    shapes[f"{prefix}attention/output/dense/kernel"] = [h, h]
    shapes[f"{prefix}attention/output/dense/bias"] = [h]
    shapes[f"{prefix}attention/output/LayerNorm/gamma"] = [h]
    shapes[f"{prefix}attention/output/LayerNorm/beta"] = [h]
    shapes[f"{prefix}intermediate/dense/kernel"] = [h, i]
    shapes[f"{prefix}intermediate/dense/bias"] = [i]
    shapes[f"{prefix}output/dense/kernel"] = [i, h]
    shapes[f"{prefix}output/dense/bias"] = [h]
    shapes[f"{prefix}output/LayerNorm/gamma"] = [h]
    shapes[f"{prefix}output/LayerNorm/beta"] = [h]
  shapes.update({
      "bert/pooler/dense/kernel": [h, h],
      "bert/pooler/dense/bias": [h],
      "cls/predictions/transform/dense/kernel": [h, h],
      "cls/predictions/transform/dense/bias": [h],
      "cls/predictions/transform/LayerNorm/gamma": [h],
      "cls/predictions/transform/LayerNorm/beta": [h],
      "cls/predictions/output_bias": [config.vocab_size],
      "cls/seq_relationship/output_weights": [2, h],
      "cls/seq_relationship/output_bias": [2],
  })
  return shapes


def _initial_value(name, shape, initializer_range, seed):
  """Google's initial values: LayerNorm gamma 1, biases and beta 0, the rest
  truncated normal (2 stddev) with stddev initializer_range."""
  if name.endswith("/gamma"):
    return tf.ones(shape)
  if name.endswith("/beta") or name.endswith("bias"):
    return tf.zeros(shape)
  return tf.random.stateless_truncated_normal(shape, seed=seed,
                                              stddev=initializer_range)


@tf.custom_gradient
def gelu(x):
  """GELU with the tanh approximation, as Google's BERT computes it:
  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), by tf.nn.gelu.

  The gradient is written out and recomputes the tanh from x: autodiff
  through tf.nn.gelu (a chain of elementwise ops) keeps about five tensors
  of x's shape for the backward pass, [B*S, I] each in every layer (0.9 GB
  at batch 32, seq 128 with 6 layers of intermediate size 3072); this keeps
  x alone.
  """
  def grad(dy):
    c = math.sqrt(2.0 / math.pi)
    x_squared = tf.square(x)
    t = tf.tanh(c * (x + 0.044715 * x * x_squared))
    # d/dx: 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - tf.square(t)) * c *
                 (1.0 + 3.0 * 0.044715 * x_squared))
  return tf.nn.gelu(x, approximate=True), grad


def get_activation(name):
  """Maps a config's hidden_act to a function."""
  return {"gelu": gelu, "relu": tf.nn.relu, "tanh": tf.tanh,
          "linear": tf.identity}[name]


def layer_norm(x, gamma, beta):
  """LayerNorm over the last axis with epsilon 1e-12.

  Statistics are taken in float32 even when x is float16/bfloat16.
  """
  dtype = x.dtype
  x = tf.cast(x, tf.float32)
  mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
  y = (x - mean) * tf.math.rsqrt(variance + 1e-12) * gamma + beta
  return tf.cast(y, dtype)


class BertPretrainingModel(tf.Module):
  """BERT with its masked-LM and next-sentence heads.

  Variables are created eagerly in __init__ (so the model can be built under
  a tf.distribute strategy scope) with Google's names and initial values.
  With compute_dtype float16/bfloat16 the math runs in that dtype (LayerNorm
  and softmax statistics in float32) while the variables stay float32.
  """

  def __init__(self, config, compute_dtype=tf.float32, name="bert", seed=None,
               trainable=True, initialize=True):
    """Creates the variables.

    Args:
      config: a BertConfig.
      compute_dtype: tf.float32, tf.float16 or tf.bfloat16.
      name: the tf.Module name (the checkpoint names never depend on it).
      seed: an int making the initial values reproducible; None draws one.
      trainable: False for a frozen model (an online teacher): a
        GradientTape then never watches its variables.
      initialize: False creates every variable as zeros, for a model whose
        every variable is loaded from a checkpoint next (a teacher): drawing
        BERT-Base's 110M truncated-normal values costs seconds of start-up.
    """
    super().__init__(name=name)
    self.config = config
    self.compute_dtype = tf.as_dtype(compute_dtype)
    if self.compute_dtype not in (tf.float32, tf.float16, tf.bfloat16):
      raise ValueError(f"compute_dtype must be float32, float16 or bfloat16, "
                       f"got {self.compute_dtype.name}")
    rng = np.random.default_rng(seed)
    self._variables = {}
    for var_name, shape in variable_shapes(config).items():
      var_seed = rng.integers(0, 2**31 - 1, size=2)
      value = (_initial_value(var_name, shape, config.initializer_range,
                              var_seed) if initialize else tf.zeros(shape))
      self._variables[var_name] = tf.Variable(value, name=var_name,
                                              trainable=trainable)

  def variables_by_name(self):
    """Returns {Google name: tf.Variable} of every model variable."""
    return dict(self._variables)

  def _weight(self, name):
    """The variable `name`, cast to the compute dtype."""
    return tf.cast(self._variables[name], self.compute_dtype)

  def _dense(self, x, prefix):
    """x @ kernel + bias for the `prefix/kernel`, `prefix/bias` variables.

    bias_add (not +) so that grappler fuses it into the matmul."""
    return tf.nn.bias_add(tf.matmul(x, self._weight(prefix + "/kernel")),
                          self._weight(prefix + "/bias"))

  def _layer_norm(self, x, prefix):
    return layer_norm(x, self._variables[prefix + "/gamma"],
                      self._variables[prefix + "/beta"])

  def _dropout(self, x, rate, training):
    if training and rate > 0.0:
      return tf.nn.dropout(x, rate=rate)
    return x

  def __call__(self, input_ids, input_mask, segment_ids, masked_lm_positions,
               training=False, intermediates=False):
    """Runs BERT and both pretraining heads.

    Args:
      input_ids, input_mask, segment_ids: int32/int64 [B, S].
      masked_lm_positions: int32/int64 [B, P], positions (< S) where the
        masked-LM logits are computed.
      training: apply dropout when True.
      intermediates: also return what intermediate-layer distillation
        matches (the entries below marked so). They are tensors the forward
        pass computes anyway; off by default so that a caller's graph keeps
        none of them alive without asking.

    Returns:
      A dict:
        masked_lm_logits      float32 [B, P, V]
        next_sentence_logits  float32 [B, 2]
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
    config = self.config
    input_ids = tf.convert_to_tensor(input_ids)
    batch_size = tf.shape(input_ids)[0]
    seq_length = input_ids.shape[1] or tf.shape(input_ids)[1]

    embedding_output = self._embeddings(input_ids, segment_ids, seq_length,
                                        training)
    # -10000 on padded keys: [B, 1, 1, S], broadcast over heads and queries.
    mask = tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]
    attention_adder = (1.0 - mask) * -10000.0

    hidden = tf.reshape(embedding_output, [-1, config.hidden_size])  # [B*S, H]
    all_encoder_layers, layer_pieces = [], []
    for layer in range(config.num_hidden_layers):
      hidden, pieces = self._encoder_layer(
          hidden, attention_adder, batch_size, seq_length,
          f"bert/encoder/layer_{layer}", training)
      all_encoder_layers.append(
          tf.reshape(hidden, [batch_size, seq_length, config.hidden_size]))
      layer_pieces.append(pieces)
    sequence_output = all_encoder_layers[-1]

    # The pooler: tanh(dense(first token)).  [B, H]
    pooled_output = tf.tanh(self._dense(sequence_output[:, 0, :],
                                        "bert/pooler/dense"))
    outputs = {
        "masked_lm_logits": self._masked_lm_logits(sequence_output,
                                                   masked_lm_positions),
        "next_sentence_logits": self._next_sentence_logits(pooled_output),
        "sequence_output": sequence_output,
        "pooled_output": pooled_output,
        "embedding_output": embedding_output,
        "all_encoder_layers": all_encoder_layers,
        "attention_probs": [pieces["probs"] for pieces in layer_pieces],
    }
    if intermediates:
      outputs["hidden_states"] = [embedding_output] + all_encoder_layers
      for name in ("scores", "queries", "keys", "values"):
        outputs[f"attention_{name}"] = [pieces[name] for pieces in layer_pieces]
    return outputs

  def _embeddings(self, input_ids, segment_ids, seq_length, training):
    """Word + token-type + position embeddings, LayerNorm, dropout. [B, S, H]"""
    words = tf.gather(self._weight("bert/embeddings/word_embeddings"),
                      input_ids)
    types = tf.gather(self._weight("bert/embeddings/token_type_embeddings"),
                      segment_ids)
    positions = self._weight("bert/embeddings/position_embeddings")[
        :seq_length]  # [S, H]
    output = words + types + positions[tf.newaxis]
    output = self._layer_norm(output, "bert/embeddings/LayerNorm")
    return self._dropout(output, self.config.hidden_dropout_prob, training)

  def _encoder_layer(self, hidden, attention_adder, batch_size, seq_length,
                     prefix, training):
    """One transformer layer on [B*S, H]: attention, then the feed-forward
    block, each with its residual LayerNorm.

    Returns:
      ([B*S, H] output, the attention's pieces as _self_attention gives them).
    """
    config = self.config
    context, pieces = self._self_attention(
        hidden, attention_adder, batch_size, seq_length,
        prefix + "/attention/self", training)  # [B*S, H]
    attention = self._dense(context, prefix + "/attention/output/dense")
    attention = self._dropout(attention, config.hidden_dropout_prob, training)
    attention = self._layer_norm(attention + hidden,
                                 prefix + "/attention/output/LayerNorm")

    intermediate = get_activation(config.hidden_act)(
        self._dense(attention, prefix + "/intermediate/dense"))  # [B*S, I]
    output = self._dense(intermediate, prefix + "/output/dense")  # [B*S, H]
    output = self._dropout(output, config.hidden_dropout_prob, training)
    output = self._layer_norm(output + attention, prefix + "/output/LayerNorm")
    return output, pieces

  def _self_attention(self, hidden, attention_adder, batch_size, seq_length,
                      prefix, training):
    """Multi-head self-attention (`prefix` = .../attention/self) on [B*S, H].

    Returns:
      ([B*S, H] context, before the output dense layer;
       {"probs", "scores" (q.k / sqrt(D), before the mask): float32
        [B, N, S, S], "queries", "keys", "values": [B, S, H]}).
    """
    config = self.config
    heads, head_size = config.num_attention_heads, config.size_per_head

    def split_heads(x):  # [B*S, H] -> [B, N, S, D]
      x = tf.reshape(x, [batch_size, seq_length, heads, head_size])
      return tf.transpose(x, [0, 2, 1, 3])

    # One [H, 3H] matmul instead of three [H, H] ones: a wider GEMM is faster.
    parts = [f"{prefix}/{p}" for p in ("query", "key", "value")]
    kernel = tf.concat([self._weight(p + "/kernel") for p in parts], axis=1)
    bias = tf.concat([self._weight(p + "/bias") for p in parts], axis=0)
    qkv = tf.nn.bias_add(tf.matmul(hidden, kernel), bias)  # [B*S, 3H]
    projections = tf.split(qkv, 3, axis=1)  # 3 x [B*S, H]
    query, key, value = [split_heads(x) for x in projections]

    scores = tf.matmul(query, key, transpose_b=True)  # [B, N, S, S]
    scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(head_size))
    probs = tf.nn.softmax(scores + attention_adder, axis=-1)  # [B, N, S, S]
    dropped = self._dropout(tf.cast(probs, self.compute_dtype),
                            config.attention_probs_dropout_prob, training)
    context = tf.matmul(dropped, value)  # [B, N, S, D]
    context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]),
                         [-1, config.hidden_size])  # [B*S, H]
    queries, keys, values = [
        tf.reshape(x, [batch_size, seq_length, config.hidden_size])
        for x in projections]  # [B, S, H] each
    return context, {"probs": probs, "scores": scores, "queries": queries,
                     "keys": keys, "values": values}

  def _masked_lm_logits(self, sequence_output, positions):
    """The masked-LM head at the gathered positions only.  [B, P, V] float32"""
    config = self.config
    gathered = tf.gather(sequence_output, positions, batch_dims=1)  # [B, P, H]
    # The head runs on [B*P, H]: a [B, P, H] @ [H, V] matmul broadcasts the
    # weight, and its gradient is then a [B, H, V] tensor summed over B (3 GB
    # at batch 32 with BERT's vocabulary) instead of one [H, V] matmul.
    x = tf.reshape(gathered, [-1, config.hidden_size])  # [B*P, H]
    x = self._dense(x, "cls/predictions/transform/dense")
    x = get_activation(config.hidden_act)(x)
    x = self._layer_norm(x, "cls/predictions/transform/LayerNorm")
    # The decoder is the word-embedding table, transposed.
    logits = tf.matmul(x, self._weight("bert/embeddings/word_embeddings"),
                       transpose_b=True)  # [B*P, V]
    logits = tf.cast(logits, tf.float32) + self._variables[
        "cls/predictions/output_bias"]
    return tf.reshape(logits, [tf.shape(positions)[0], tf.shape(positions)[1],
                               config.vocab_size])  # [B, P, V]

  def _next_sentence_logits(self, pooled_output):
    """The next-sentence head.  [B, 2] float32"""
    logits = tf.matmul(pooled_output,
                       self._weight("cls/seq_relationship/output_weights"),
                       transpose_b=True)
    return tf.cast(logits, tf.float32) + self._variables[
        "cls/seq_relationship/output_bias"]

