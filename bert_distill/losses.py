"""The losses of distillation and the sums behind its evaluation metrics.

One definition of each loss term, shared by training and evaluation; every
weight and option of them is one LossConfig. The soft term depends on what
the teacher's labels hold (docs/label_modes.md), the mode their value
declares (label_settings.TopKLabels, FullLabels, SampledLabels):

  top_k   (probs and ids [B, P, k], the original's)
          soft_i = -T^2 * sum_j p_ij^T * log q_i[t_ij],  q_i = softmax(z_i / T)
          with tail_mass_loss also - T^2 * (1 - sum_j p_ij^T) *
          log(1 - sum_j q_i[t_ij]), the log taken as logsumexp of z_i / T
          over the ids outside the top k minus logsumexp over all of them
  full    (probs [B, P, V]: stored, or an online teacher's)
          soft_i = -T^2 * sum_v p_iv^T * log q_iv
  sampled (weights + ids [B, P, k]: c_ij / sum_j c_ij of N draws
          made at temperature T) soft_i = -T^2 * sum_j (c_ij / N) log q_i[t_ij],
          the Monte Carlo estimate of the full term (no re-tempering: the
          draws already are at T)
  hard_i = -log_softmax(z_i)[masked_lm_ids_i]
  loss = (soft_loss_weight * sum_i w_i soft_i
          + hard_mlm_loss_weight * sum_i w_i hard_i) / (sum_i w_i + 1e-5)
         + mean next-sentence cross-entropy

where w_i is masked_lm_weights and p^T is the teacher's stored probability
raised to 1/T and renormalised to the mass the top k held (so T = 1 leaves it
exactly as stored). With the defaults this is the original project's loss.

Shapes: B = batch size (per replica), P = max_predictions_per_seq,
k = truncation_factor, V = vocab_size.
"""

import dataclasses

import tensorflow as tf

from bert_distill import label_settings
from bert_distill import records

# Google's run_pretraining adds this to the sum of masked_lm_weights.
WEIGHT_EPSILON = 1e-5
# Equal-width confidence bins of the expected calibration error.
CALIBRATION_BINS = 15


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Every weight and option of stage V's loss, decided once a run (from the
  flags, or a --preset's values where a flag is not given).

  The intermediate-layer fields are for online distillation; hidden_layer_map
  (M teacher layers, see the intermediate-loss section) and relation_heads
  are resolved against the two models (distill_training.resolve_layers).
  """
  temperature: float = 1.0
  soft_loss_weight: float = 1.0
  hard_mlm_loss_weight: float = 0.0
  next_sentence_loss_weight: float = 1.0
  tail_mass_loss: bool = False
  embedding_loss_weight: float = 0.0
  hidden_loss_weight: float = 0.0
  hidden_loss: str = "mse"
  hidden_layer_map: tuple = ()
  attention_loss_weight: float = 0.0
  attention_loss: str = "kl"
  relation_heads: int = 0

  @property
  def has_intermediate_losses(self):
    return any(getattr(self, f"{name}_weight") for name in INTERMEDIATE_TERMS)


def tempered_teacher_probs(probs, temperature):
  """Teacher probabilities p^(1/T), renormalised to the mass they held.

  Args:
    probs: [..., k] the teacher's stored probabilities (its top k, or all).
    temperature: Python float T.

  Returns:
    [..., k]; exactly `probs` when T is 1. Positions whose probabilities are
    all zero (padding) stay zero.
  """
  if temperature == 1.0:
    return probs
  mass = tf.reduce_sum(probs, axis=-1, keepdims=True)
  tempered = tf.pow(probs, 1.0 / temperature)
  total = tf.reduce_sum(tempered, axis=-1, keepdims=True)
  return tempered * mass / tf.maximum(total, 1e-30)


def _tempered(logits, temperature):
  """logits / T, or the logits themselves at T = 1 (no [B, P, V] pass)."""
  return logits if temperature == 1.0 else logits / temperature


def _vocabulary_indices(ids):
  """[B, P, k, 3] scatter_nd indices (row, position, id) of [B, P, k]
  vocabulary ids into a [B, P, V] tensor."""
  shape = tf.shape(ids)
  rows = tf.broadcast_to(tf.range(shape[0])[:, tf.newaxis, tf.newaxis], shape)
  positions = tf.broadcast_to(tf.range(shape[1])[tf.newaxis, :, tf.newaxis],
                              shape)
  return tf.stack([rows, positions, tf.cast(ids, tf.int32)], axis=-1)


@tf.custom_gradient
def gathered_cross_entropy(logits, ids, weights):
  """-sum_j w_j * log_softmax(logits)[id_j] per row, and its gradient.

  The cross-entropy of the vocabulary logits against a target held as k
  (id, weight) pairs a row: top-k and sampled teacher labels, the true
  token (k = 1). Autodiff of log_softmax + gather scatters the k weights
  into a zeroed [B, P, V] tensor (UnsortedSegmentSum) and then runs
  log_softmax's gradient over it; the gradient here is the closed form

    d loss / d logits = (sum_j w_j) * softmax(logits) - scatter(w)

  built from the saved log-probabilities in one [B, P, V] pass plus a
  k-element scatter a row: about half the time of the autodiff form at
  BERT's vocabulary (docs/performance.md).

  Args:
    logits: [B, P, V] float32.
    ids: [B, P, k] integer vocabulary ids; a repeated id's weights add.
    weights: [B, P, k] float32.

  Returns:
    [B, P].
  """
  log_probs = tf.nn.log_softmax(logits, axis=-1)  # [B, P, V]
  picked = tf.gather(log_probs, ids, batch_dims=2)  # [B, P, k]
  loss = -tf.reduce_sum(weights * picked, axis=-1)  # [B, P]

  def gradient(upstream):  # [B, P]
    total = tf.reduce_sum(weights, axis=-1) * upstream  # [B, P]
    d_logits = tf.exp(log_probs) * total[..., tf.newaxis]  # [B, P, V]
    d_logits = tf.tensor_scatter_nd_sub(
        d_logits, _vocabulary_indices(ids), weights * upstream[..., tf.newaxis])
    d_weights = -picked * upstream[..., tf.newaxis]  # [B, P, k]
    return d_logits, None, d_weights

  return loss, gradient


def soft_cross_entropy(logits, teacher_probs, teacher_ids=None,
                       temperature=1.0):
  """Distillation cross-entropy per masked position.

  Args:
    logits: [B, P, V] float32 student logits at the masked positions.
    teacher_probs: [B, P, k] the teacher's top-k probabilities, or [B, P, V].
    teacher_ids: [B, P, k] vocabulary ids of those k, or None for [B, P, V].
    temperature: Python float T.

  Returns:
    [B, P]: -T^2 * sum_j p^T_j * log_softmax(logits / T)[id_j].
  """
  target = tempered_teacher_probs(teacher_probs, temperature)
  if teacher_ids is not None:
    return gathered_cross_entropy(
        _tempered(logits, temperature), teacher_ids, target) * temperature**2
  log_probs = tf.nn.log_softmax(_tempered(logits, temperature),
                                axis=-1)  # [B, P, V]
  return -tf.reduce_sum(target * log_probs, axis=-1) * temperature**2


def class_kl_divergence(logits, teacher_logits, temperature=1.0):
  """Task distillation's soft term: T^2 * KL(teacher || student) of the
  class distributions at temperature T, per example.

  Args:
    logits: [B, C] float32 student logits.
    teacher_logits: [B, C] float32 teacher logits.
    temperature: Python float T.

  Returns:
    [B]: T^2 * sum_c p_c (log p_c - log q_c), p = softmax(teacher_logits / T),
    q = softmax(logits / T): soft_cross_entropy minus the teacher's entropy
    (a constant to the student), so it is 0 where the two agree.
  """
  teacher_log_probs = tf.nn.log_softmax(teacher_logits / temperature,
                                        axis=-1)  # [B, C]
  teacher_probs = tf.exp(teacher_log_probs)
  # soft_cross_entropy tempers what it is given: pass the T = 1 distribution.
  cross_entropy = soft_cross_entropy(
      logits, tf.nn.softmax(teacher_logits, axis=-1), temperature=temperature)
  entropy = -tf.reduce_sum(teacher_probs * teacher_log_probs, axis=-1)
  return cross_entropy - entropy * temperature**2


def tail_mass_cross_entropy(logits, teacher_probs, teacher_ids,
                            temperature=1.0):
  """The "all other tokens" class of top-k labels, per masked position.

  Args:
    logits: [B, P, V] float32 student logits.
    teacher_probs: [B, P, k] the teacher's top-k probabilities.
    teacher_ids: [B, P, k] their (distinct) vocabulary ids.
    temperature: Python float T.

  Returns:
    [B, P]: -T^2 * (1 - sum_j p^T_j) * log(1 - sum_j q_j), q = softmax(z / T),
    with log(1 - sum_j q_j) = logsumexp(z / T outside the top k) -
    logsumexp(z / T): exact where 1 - sum q rounds to 0 in float32.
  """
  scaled = _tempered(logits, temperature)  # [B, P, V]
  in_top_k = tf.scatter_nd(
      _vocabulary_indices(teacher_ids),
      tf.ones(tf.shape(teacher_ids), tf.float32),
      tf.shape(scaled)) > 0  # [B, P, V]
  # A large finite value rather than -inf keeps gradients finite.
  tail = tf.where(in_top_k, tf.constant(-1e30, scaled.dtype), scaled)
  log_tail_mass = (tf.reduce_logsumexp(tail, axis=-1) -
                   tf.reduce_logsumexp(scaled, axis=-1))  # [B, P], <= 0
  target = tempered_teacher_probs(teacher_probs, temperature)
  teacher_tail = tf.maximum(1.0 - tf.reduce_sum(target, axis=-1), 0.0)
  return -tf.math.multiply_no_nan(log_tail_mass, teacher_tail) * temperature**2


def sampled_cross_entropy(logits, sample_weights, sampled_ids,
                          temperature=1.0):
  """Monte Carlo distillation cross-entropy of sampled labels.

  Args:
    logits: [B, P, V] float32 student logits.
    sample_weights: [B, P, k] c_j / sum_j c_j (0 in empty slots).
    sampled_ids: [B, P, k] the distinct ids drawn.
    temperature: Python float T, the one the draws were made at.

  Returns:
    [B, P]: -T^2 * sum_j w_j log softmax(logits / T)[id_j].
  """
  return gathered_cross_entropy(_tempered(logits, temperature), sampled_ids,
                                sample_weights) * temperature**2


def soft_loss_per_position(logits, labels, temperature=1.0,
                           tail_mass_loss=False):
  """The soft term of `labels` in their mode (see the module doc): [B, P].

  tail_mass_loss adds the top-k labels' "all other tokens" class; it is
  ignored for full and sampled labels, which need none.
  """
  if labels.mode == label_settings.SAMPLED:
    return sampled_cross_entropy(logits, labels.weights, labels.ids,
                                 temperature)
  if labels.mode == label_settings.FULL:
    return soft_cross_entropy(logits, labels.probs, None, temperature)
  per_position = soft_cross_entropy(logits, labels.probs, labels.ids,
                                    temperature)
  if tail_mass_loss:
    per_position += tail_mass_cross_entropy(logits, labels.probs, labels.ids,
                                            temperature)
  return per_position


def hard_cross_entropy(logits, label_ids):
  """Cross-entropy of [B, P, V] logits against [B, P] true ids -> [B, P]."""
  ids = label_ids[..., tf.newaxis]  # [B, P, 1]
  return gathered_cross_entropy(logits, ids, tf.ones_like(ids, logits.dtype))


def next_sentence_cross_entropy(logits, labels):
  """Cross-entropy of [B, 2] logits against [B] labels -> [B]."""
  return -tf.gather(tf.nn.log_softmax(logits, axis=-1), labels, batch_dims=1)


def compute_losses(masked_lm_logits, next_sentence_logits, features,
                   config=LossConfig(), weight_total=None, example_total=None):
  """The training loss and its terms for one batch.

  Args:
    masked_lm_logits: [B, P, V] float32.
    next_sentence_logits: [B, 2] float32.
    features: a parsed batch (see parse_batch): masked_lm_weights [B, P],
      masked_lm_ids [B, P], next_sentence_labels [B], and with
      soft_loss_weight > 0 the teacher's labels value under
      label_settings.TEACHER_LABELS.
    config: a LossConfig (its weights, temperature and tail_mass_loss).
    weight_total: the denominator of the masked-LM terms; defaults to this
      batch's sum of masked_lm_weights + 1e-5. Replicas pass the global one.
    example_total: the denominator of the next-sentence term; defaults to B.
      Replicas pass the global batch size.

  Returns:
    {"loss", "soft_loss", "hard_mlm_loss", "next_sentence_loss"}: scalars;
    a term whose weight is 0 is reported as 0 and not computed.
  """
  weights = features[records.MASKED_LM_WEIGHTS]  # [B, P]
  if weight_total is None:
    weight_total = tf.reduce_sum(weights) + WEIGHT_EPSILON
  if example_total is None:
    example_total = tf.cast(tf.shape(next_sentence_logits)[0], tf.float32)
  zero = tf.constant(0.0)
  soft = hard = zero
  if config.soft_loss_weight:
    per_position = soft_loss_per_position(
        masked_lm_logits, features[label_settings.TEACHER_LABELS],
        config.temperature, config.tail_mass_loss)
    soft = tf.reduce_sum(weights * per_position) / weight_total
  if config.hard_mlm_loss_weight:
    per_position = hard_cross_entropy(masked_lm_logits,
                                      features[records.MASKED_LM_IDS])
    hard = tf.reduce_sum(weights * per_position) / weight_total
  next_sentence = tf.reduce_sum(next_sentence_cross_entropy(
      next_sentence_logits, features[records.NEXT_SENTENCE_LABELS]))
  next_sentence /= example_total
  return {
      "loss": config.soft_loss_weight * soft +
              config.hard_mlm_loss_weight * hard +
              config.next_sentence_loss_weight * next_sentence,
      "soft_loss": soft,
      "hard_mlm_loss": hard,
      "next_sentence_loss": next_sentence,
  }


def calibration_gaps(probs, true_ids, weights):
  """Per confidence bin, the weighted sum of (correct - confidence) of top-1.

  Args:
    probs: [B, P, V] a model's probabilities.
    true_ids: [B, P] int32 the true masked ids.
    weights: [B, P] masked_lm_weights.

  Returns:
    [CALIBRATION_BINS]: bin b holds the positions whose top-1 probability c
    has min(floor(c * bins), bins - 1) = b (equal widths), each adding
    w * ([top-1 id == true id] - c). The expected calibration error is
    sum_b |gap_b| / sum w.
  """
  confidence = tf.reduce_max(probs, axis=-1)  # [B, P]
  top1 = tf.argmax(probs, axis=-1, output_type=tf.int32)  # [B, P]
  correct = tf.cast(top1 == true_ids, tf.float32)
  bins = tf.minimum(tf.cast(confidence * CALIBRATION_BINS, tf.int32),
                    CALIBRATION_BINS - 1)
  return tf.math.unsorted_segment_sum(
      tf.reshape(weights * (correct - confidence), [-1]),
      tf.reshape(bins, [-1]), CALIBRATION_BINS)


def evaluation_sums(masked_lm_logits, next_sentence_logits, features,
                    config=LossConfig()):
  """Per-batch sums from which the evaluation metrics are ratios.

  Returns {name: scalar or [CALIBRATION_BINS]}: weighted sums over masked
  positions ("*_w") with "weight" their denominator, and sums over examples
  with "examples". With full labels (the teacher's whole distribution:
  full-mode records, or a teacher run alongside) also the sums of
  teacher_kl, teacher_cross_entropy, teacher_entropy and both calibration
  gaps. The sums hold every term unweighted (evaluation_metrics weighs
  them); config gives the temperature and tail_mass_loss.
  """
  labels = features.get(label_settings.TEACHER_LABELS)
  weights = features[records.MASKED_LM_WEIGHTS]  # [B, P]
  next_sentence_labels = features[records.NEXT_SENTENCE_LABELS]  # [B]
  predicted = tf.argmax(masked_lm_logits, axis=-1, output_type=tf.int32)
  true_ids = tf.cast(features[records.MASKED_LM_IDS], tf.int32)
  sums = {
      "weight": tf.reduce_sum(weights),
      "examples": tf.cast(tf.size(next_sentence_labels), tf.float32),
      "mlm_correct_w": tf.reduce_sum(
          weights * tf.cast(predicted == true_ids, tf.float32)),
      "hard_mlm_loss_w": tf.reduce_sum(
          weights * hard_cross_entropy(masked_lm_logits, true_ids)),
      "next_sentence_correct": tf.reduce_sum(tf.cast(
          tf.argmax(next_sentence_logits, -1, output_type=tf.int32) ==
          tf.cast(next_sentence_labels, tf.int32), tf.float32)),
      "next_sentence_loss": tf.reduce_sum(next_sentence_cross_entropy(
          next_sentence_logits, next_sentence_labels)),
  }
  if labels is None:
    return sums
  if labels.mode == label_settings.SAMPLED:
    # Sampled labels: their loss at the temperature they were drawn at.
    per_position = soft_loss_per_position(masked_lm_logits, labels,
                                          config.temperature)
    sums["soft_loss_w"] = tf.reduce_sum(weights * per_position)
    sums["trained_soft_loss_w"] = sums["soft_loss_w"]
    return sums
  top_ids = labels.ids if labels.mode == label_settings.TOP_K else None
  teacher_top1 = tf.argmax(labels.probs, axis=-1,
                           output_type=tf.int32)  # [B, P]
  if top_ids is not None:
    teacher_top1 = tf.gather(top_ids, teacher_top1, batch_dims=2)
  sums["agreement_w"] = tf.reduce_sum(
      weights * tf.cast(predicted == teacher_top1, tf.float32))
  # The original's loss: temperature 1, whatever training used.
  sums["soft_loss_w"] = tf.reduce_sum(weights * soft_cross_entropy(
      masked_lm_logits, labels.probs, top_ids))
  sums["trained_soft_loss_w"] = tf.reduce_sum(weights * (
      soft_loss_per_position(masked_lm_logits, labels, config.temperature,
                             config.tail_mass_loss)))
  if labels.mode == label_settings.FULL:
    sums.update(teacher_distribution_sums(masked_lm_logits, labels.probs,
                                          true_ids, weights))
  return sums


def teacher_distribution_sums(masked_lm_logits, teacher_probs, true_ids,
                              weights):
  """Weighted sums of the student-to-teacher metrics, at temperature 1.

  Args:
    masked_lm_logits: [B, P, V] the student's logits z; q = softmax(z).
    teacher_probs: [B, P, V] the teacher's whole distribution t.
    true_ids: [B, P] int32; weights: [B, P].

  Returns:
    {"teacher_kl_w": sum w KL(t || q), "teacher_cross_entropy_w":
    sum w H(t, q), "teacher_entropy_w": sum w H(t), "student_calibration_w",
    "teacher_calibration_w": calibration_gaps of q and t}. KL is computed as
    sum_v t_v (log t_v - log q_v) with 0 log 0 = 0, not as H(t, q) - H(t).
  """
  teacher_probs = tf.cast(teacher_probs, tf.float32)
  log_q = tf.nn.log_softmax(masked_lm_logits, axis=-1)  # [B, P, V]
  t_log_t = tf.math.xlogy(teacher_probs, teacher_probs)  # [B, P, V]
  cross_entropy = -tf.reduce_sum(teacher_probs * log_q, axis=-1)  # [B, P]
  kl = tf.reduce_sum(t_log_t - teacher_probs * log_q, axis=-1)  # [B, P]
  return {
      "teacher_kl_w": tf.reduce_sum(weights * kl),
      "teacher_cross_entropy_w": tf.reduce_sum(weights * cross_entropy),
      "teacher_entropy_w": tf.reduce_sum(
          weights * -tf.reduce_sum(t_log_t, axis=-1)),
      "student_calibration_w": calibration_gaps(tf.exp(log_q), true_ids,
                                                weights),
      "teacher_calibration_w": calibration_gaps(teacher_probs, true_ids,
                                                weights),
  }


def evaluation_metrics(sums, config=LossConfig()):
  """Turns evaluation_sums (added over batches) into the reported metrics.

  With the teacher's whole distribution: teacher_kl, teacher_cross_entropy
  and teacher_entropy are means over real masked positions (nats);
  student_ece and teacher_ece are sum_b |gap_b| / sum w over the
  CALIBRATION_BINS confidence bins of calibration_gaps. The loss is weighed
  as config (a LossConfig) weighs training's.
  """
  import numpy as np
  weight = sums["weight"] + WEIGHT_EPSILON
  hard = sums["hard_mlm_loss_w"] / weight
  next_sentence = sums["next_sentence_loss"] / sums["examples"]
  metrics = {
      "masked_lm_accuracy": sums["mlm_correct_w"] / weight,
      "hard_mlm_loss": hard,
      "masked_lm_loss": hard,
      "next_sentence_accuracy": (sums["next_sentence_correct"] /
                                 sums["examples"]),
      "next_sentence_loss": next_sentence,
  }
  trained_soft = 0.0
  if "agreement_w" in sums:
    metrics["teacher_top1_agreement"] = sums["agreement_w"] / weight
  if "soft_loss_w" in sums:
    metrics["masked_lm_loss"] = sums["soft_loss_w"] / weight
    trained_soft = sums["trained_soft_loss_w"] / weight
  for name in ("teacher_kl", "teacher_cross_entropy", "teacher_entropy"):
    if name + "_w" in sums:
      metrics[name] = sums[name + "_w"] / weight
  for model in ("student", "teacher"):
    if model + "_calibration_w" in sums:
      metrics[model + "_ece"] = np.sum(
          np.abs(sums[model + "_calibration_w"])) / weight
  metrics["loss"] = (config.soft_loss_weight * trained_soft +
                     config.hard_mlm_loss_weight * hard +
                     config.next_sentence_loss_weight * next_sentence)
  return {name: float(value) for name, value in metrics.items()}


# ----------------------------------------------------------------------------
# Intermediate-layer losses: online distillation, the teacher in memory.
#
# `student` and `teacher` are the dicts of modeling.BertPretrainingModel(...,
# intermediates=True). Layers are counted as in their hidden_states: 0 is the
# embedding output, i (1..num_hidden_layers) the output of encoder layer i - 1
# (the variables bert/encoder/layer_{i-1}/...). A layer map m gives student
# layer j (1..M) the teacher layer m[j - 1] (0..N) it learns from.
#
# Every term is a sum over real tokens (input_mask 1) divided by a total the
# caller may pass: replicas pass the global one, so that their losses add up
# to the loss of one replica holding the whole batch (as compute_losses).
#
# Shapes: S = sequence length, Hs / Ht = the student's / teacher's hidden
# size, Ns / Nt their attention heads, R = relation heads.

# The training-only variables, under a prefix Google's loaders ignore (they
# load the names their graph holds, bert/... and cls/...).
PROJECTION_PREFIX = "distill/"
EMBEDDING_PROJECTION = PROJECTION_PREFIX + "embedding_projection"
HIDDEN_PROJECTION = PROJECTION_PREFIX + "hidden_projection"

INTERMEDIATE_TERMS = ("embedding_loss", "hidden_loss", "attention_loss")


def uniform_layer_map(student_layers, teacher_layers):
  """TinyBERT's uniform map: student layer j learns from teacher layer
  j * N / M (rounded down), j = 1..M; e.g. 6 of 12 -> 2, 4, 6, 8, 10, 12."""
  return [j * teacher_layers // student_layers
          for j in range(1, student_layers + 1)]


def projection_shapes(student_hidden, teacher_hidden, config):
  """{name: shape} of the learned [Hs, Ht] projections a LossConfig needs.

  TinyBERT's W_e (embeddings) and W_h (hidden states, shared by every mapped
  layer), each a kernel and a bias; none when the widths are equal.
  """
  if student_hidden == teacher_hidden:
    return {}
  shapes = {}
  for prefix, weight in ((EMBEDDING_PROJECTION, "embedding_loss_weight"),
                         (HIDDEN_PROJECTION, "hidden_loss_weight")):
    if getattr(config, weight):
      shapes[prefix + "/kernel"] = [student_hidden, teacher_hidden]
      shapes[prefix + "/bias"] = [teacher_hidden]
  return shapes


def _project(hidden, projections, prefix):
  """[B, S, Hs] -> float32 [B, S, Ht] through `prefix`'s kernel and bias, or
  unchanged (as float32) when there is no such projection."""
  hidden = tf.cast(hidden, tf.float32)
  if prefix + "/kernel" not in projections:
    return hidden
  return (tf.matmul(hidden, projections[prefix + "/kernel"]) +
          projections[prefix + "/bias"])


def _token_mask_and_total(input_mask, token_total):
  mask = tf.cast(input_mask, tf.float32)  # [B, S]
  if token_total is None:
    token_total = tf.reduce_sum(mask)
  return mask, tf.maximum(token_total, 1.0)


def hidden_cosine_loss(student_hidden, teacher_hidden, input_mask,
                       token_total=None):
  """DistilBERT's cosine loss: mean over real tokens of 1 - cos(s, t).

  Args:
    student_hidden, teacher_hidden: [B, S, H] of one width.
    input_mask: [B, S], 1 for real tokens.
    token_total: the denominator; default this batch's real tokens.

  Returns:
    A scalar; 0 when the directions agree at every real token.
  """
  mask, total = _token_mask_and_total(input_mask, token_total)
  s = tf.math.l2_normalize(tf.cast(student_hidden, tf.float32), axis=-1)
  t = tf.math.l2_normalize(tf.cast(teacher_hidden, tf.float32), axis=-1)
  cosine = tf.reduce_sum(s * t, axis=-1)  # [B, S]
  return tf.reduce_sum(mask * (1.0 - cosine)) / total


def hidden_mse_loss(student_hidden, teacher_hidden, input_mask,
                    token_total=None):
  """TinyBERT's MSE: mean over real tokens and the H features of (s - t)^2.

  (TinyBERT's code averages over padding too; here padding counts for
  nothing, so the loss does not depend on how much of a batch is padding.)
  """
  mask, total = _token_mask_and_total(input_mask, token_total)
  squared = tf.reduce_mean(tf.square(tf.cast(student_hidden, tf.float32) -
                                     tf.cast(teacher_hidden, tf.float32)),
                           axis=-1)  # [B, S]
  return tf.reduce_sum(mask * squared) / total


def attention_score_mse_loss(student_scores, teacher_scores, input_mask,
                             pair_total=None):
  """TinyBERT's attention loss: MSE of the pre-softmax scores q.k / sqrt(D)
  over the heads and the (query, key) pairs of real tokens.

  TinyBERT zeroes the entries its -10000 mask made (padded keys); here
  padded queries are left out too. Head counts must be equal.

  Args:
    student_scores, teacher_scores: float32 [B, N, S, S].
    input_mask: [B, S].
    pair_total: the denominator's count of real pairs, sum_b len_b^2;
      default this batch's. It is multiplied by N.
  """
  mask = tf.cast(input_mask, tf.float32)  # [B, S]
  pairs = mask[:, :, tf.newaxis] * mask[:, tf.newaxis, :]  # [B, S, S]
  if pair_total is None:
    pair_total = tf.reduce_sum(pairs)
  heads = tf.cast(tf.shape(student_scores)[1], tf.float32)
  squared = tf.square(tf.cast(student_scores, tf.float32) -
                      tf.cast(teacher_scores, tf.float32))  # [B, N, S, S]
  return tf.reduce_sum(pairs[:, tf.newaxis] * squared) / (
      heads * tf.maximum(pair_total, 1.0))


def relation_log_probs(left, right, input_mask, relation_heads):
  """MiniLMv2's self-attention relation: log softmax(a_r . b_r / sqrt(d_r)).

  The [B, S, H] projections are split into R relation heads of d_r = H / R
  features each (whatever the model's own head count), and padded keys get
  -10000 as in BERT's attention. With a = queries, b = keys and R equal to
  the model's head count this is exactly its attention distribution.

  Returns:
    float32 [B, R, S, S], log-probabilities over the keys (last axis).
  """
  batch, length = tf.shape(left)[0], tf.shape(left)[1]
  hidden = left.shape[-1]
  size = hidden // relation_heads

  def split(x):  # [B, S, H] -> [B, R, S, d_r]
    x = tf.reshape(tf.cast(x, tf.float32),
                   [batch, length, relation_heads, size])
    return tf.transpose(x, [0, 2, 1, 3])

  logits = tf.matmul(split(left), split(right), transpose_b=True) / (
      size ** 0.5)  # [B, R, S, S]
  adder = (1.0 - tf.cast(input_mask, tf.float32)) * -10000.0  # [B, S]
  return tf.nn.log_softmax(logits + adder[:, tf.newaxis, tf.newaxis, :],
                           axis=-1)


def relation_kl_loss(student_pair, teacher_pair, input_mask, relation_heads,
                     token_total=None):
  """KL(teacher relation || student relation), summed over keys, averaged
  over the relation heads and the real query tokens.

  Args:
    student_pair, teacher_pair: (a, b), [B, S, Hs] and [B, S, Ht]; each
      width a multiple of relation_heads.
    input_mask: [B, S].
    relation_heads: R, a Python int.
    token_total: the real-query denominator (before the factor R).
  """
  mask, total = _token_mask_and_total(input_mask, token_total)
  student = relation_log_probs(*student_pair, input_mask, relation_heads)
  teacher = relation_log_probs(*teacher_pair, input_mask, relation_heads)
  kl = tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)  # [B,R,S]
  return tf.reduce_sum(mask[:, tf.newaxis, :] * kl) / (relation_heads * total)


def minilm_attention_loss(student, teacher, input_mask, relation_heads,
                          token_total=None):
  """MiniLM's loss on the last layer: the attention-distribution KL (queries
  with keys) plus the value-relation KL (values with values), both over R
  relation heads (MiniLMv2's formulation; with R equal to both models' head
  count the first is MiniLM's per-head attention KL exactly)."""
  def pair(outputs, a, b):
    return outputs[f"attention_{a}"][-1], outputs[f"attention_{b}"][-1]
  attention = relation_kl_loss(pair(student, "queries", "keys"),
                               pair(teacher, "queries", "keys"), input_mask,
                               relation_heads, token_total)
  value = relation_kl_loss(pair(student, "values", "values"),
                           pair(teacher, "values", "values"), input_mask,
                           relation_heads, token_total)
  return attention + value


def intermediate_losses(student, teacher, input_mask, config, projections,
                        token_total=None, pair_total=None):
  """The weighted intermediate-layer terms of one batch.

  Args:
    student, teacher: model output dicts with intermediates=True.
    input_mask: [B, S].
    config: a LossConfig: embedding_loss_weight, hidden_loss_weight,
      hidden_loss ("cosine" | "mse"), hidden_layer_map (M teacher layers),
      attention_loss_weight, attention_loss ("mse" | "kl"), relation_heads.
    projections: {name: variable} of projection_shapes (maybe empty).
    token_total, pair_total: global denominators (see the section comment).

  Returns:
    {"embedding_loss", "hidden_loss", "attention_loss": unweighted scalars
     (0 when their weight is 0), "intermediate_loss": their weighted sum}.

  embedding_loss: MSE of the embedding outputs (layer 0), through W_e.
  hidden_loss: cosine, DistilBERT: the last layers (M with N) only;
    mse, TinyBERT: the sum over mapped layers j of MSE(W_h S_j, T_m[j]).
  attention_loss: mse, TinyBERT: the sum over mapped layers j with m[j] > 0
    of the score MSE of encoder layers j - 1 and m[j] - 1; kl, MiniLM: the
    last layers' attention and value-relation KL.
  """
  zero = tf.constant(0.0)
  terms = dict.fromkeys(INTERMEDIATE_TERMS, zero)
  student_hidden, teacher_hidden = (student["hidden_states"],
                                    teacher["hidden_states"])
  layer_map = config.hidden_layer_map
  if config.embedding_loss_weight:
    terms["embedding_loss"] = hidden_mse_loss(
        _project(student_hidden[0], projections, EMBEDDING_PROJECTION),
        teacher_hidden[0], input_mask, token_total)
  if config.hidden_loss_weight:
    if config.hidden_loss == "cosine":
      terms["hidden_loss"] = hidden_cosine_loss(
          _project(student_hidden[-1], projections, HIDDEN_PROJECTION),
          teacher_hidden[-1], input_mask, token_total)
    else:
      terms["hidden_loss"] = tf.add_n([hidden_mse_loss(
          _project(student_hidden[j], projections, HIDDEN_PROJECTION),
          teacher_hidden[m], input_mask, token_total)
                                       for j, m in enumerate(layer_map, 1)])
  if config.attention_loss_weight:
    if config.attention_loss == "mse":
      terms["attention_loss"] = tf.add_n([zero] + [attention_score_mse_loss(
          student["attention_scores"][j - 1], teacher["attention_scores"][m - 1],
          input_mask, pair_total) for j, m in enumerate(layer_map, 1) if m])
    else:
      terms["attention_loss"] = minilm_attention_loss(
          student, teacher, input_mask, config.relation_heads,
          token_total)
  terms["intermediate_loss"] = tf.add_n(
      [getattr(config, f"{name}_weight") * terms[name]
       for name in INTERMEDIATE_TERMS])
  return terms


def check_intermediate_options(student_config, teacher_config, config):
  """Raises ValueError (one line, naming the flag) unless a LossConfig fits
  the two models: the layer map's length and layers, head counts for the
  score MSE, relation heads dividing both widths."""
  layer_map = config.hidden_layer_map
  student_layers = student_config.num_hidden_layers
  teacher_layers = teacher_config.num_hidden_layers
  if len(layer_map) != student_layers:
    raise ValueError(
        f"--hidden_layer_map {','.join(map(str, layer_map))} names "
        f"{len(layer_map)} student layers but the student has "
        f"{student_layers} (one teacher layer per student layer 1..{student_layers})")
  absent = [str(m) for m in layer_map if not 0 <= m <= teacher_layers]
  if absent:
    raise ValueError(
        f"--hidden_layer_map names teacher layer(s) {', '.join(absent)} but "
        f"the teacher has layers 0 (embeddings) to {teacher_layers}")
  if config.attention_loss_weight and config.attention_loss == "mse":
    heads = (student_config.num_attention_heads,
             teacher_config.num_attention_heads)
    if heads[0] != heads[1]:
      raise ValueError(
          f"--attention_loss mse needs equal head counts, but the student has "
          f"{heads[0]} and the teacher {heads[1]}; use --attention_loss kl")
  if config.attention_loss_weight and config.attention_loss == "kl":
    relation_heads = config.relation_heads
    for whose, config in (("student", student_config),
                          ("teacher", teacher_config)):
      if config.hidden_size % relation_heads:
        raise ValueError(
            f"--relation_heads {relation_heads} does not divide the {whose}'s "
            f"hidden_size {config.hidden_size}")
