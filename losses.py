"""The losses of distillation and the sums behind its evaluation metrics.

One definition of each loss term, shared by training and evaluation:

  soft_i = -T^2 * sum_j p_ij^T * log_softmax(z_i / T)[t_ij]   (teacher's top k)
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

import tensorflow as tf

import records

# Google's run_pretraining adds this to the sum of masked_lm_weights.
WEIGHT_EPSILON = 1e-5
# The parsed batch's names for the teacher's labels.
TEACHER_PROBS = "teacher_probs"   # [B, P, k] or [B, P, V] after parsing
TEACHER_IDS = "teacher_ids"       # [B, P, k]; absent for the full distribution


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
  log_probs = tf.nn.log_softmax(logits / temperature, axis=-1)  # [B, P, V]
  if teacher_ids is not None:
    log_probs = tf.gather(log_probs, teacher_ids, batch_dims=2)  # [B, P, k]
  target = tempered_teacher_probs(teacher_probs, temperature)
  return -tf.reduce_sum(target * log_probs, axis=-1) * temperature**2


def hard_cross_entropy(logits, label_ids):
  """Cross-entropy of [B, P, V] logits against [B, P] true ids -> [B, P]."""
  log_probs = tf.nn.log_softmax(logits, axis=-1)  # [B, P, V]
  return -tf.gather(log_probs, label_ids, batch_dims=2)


def next_sentence_cross_entropy(logits, labels):
  """Cross-entropy of [B, 2] logits against [B] labels -> [B]."""
  return -tf.gather(tf.nn.log_softmax(logits, axis=-1), labels, batch_dims=1)


def compute_losses(masked_lm_logits, next_sentence_logits, features,
                   temperature=1.0, soft_loss_weight=1.0,
                   hard_mlm_loss_weight=0.0, weight_total=None,
                   example_total=None):
  """The training loss and its terms for one batch.

  Args:
    masked_lm_logits: [B, P, V] float32.
    next_sentence_logits: [B, 2] float32.
    features: a parsed batch (see parse_batch): masked_lm_weights [B, P],
      masked_lm_ids [B, P], next_sentence_labels [B], and with
      soft_loss_weight > 0 teacher_probs / teacher_ids.
    temperature, soft_loss_weight, hard_mlm_loss_weight: Python floats.
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
  if soft_loss_weight:
    per_position = soft_cross_entropy(
        masked_lm_logits, features[TEACHER_PROBS], features.get(TEACHER_IDS),
        temperature)
    soft = tf.reduce_sum(weights * per_position) / weight_total
  if hard_mlm_loss_weight:
    per_position = hard_cross_entropy(masked_lm_logits,
                                      features[records.MASKED_LM_IDS])
    hard = tf.reduce_sum(weights * per_position) / weight_total
  next_sentence = tf.reduce_sum(next_sentence_cross_entropy(
      next_sentence_logits, features[records.NEXT_SENTENCE_LABELS]))
  next_sentence /= example_total
  return {
      "loss": soft_loss_weight * soft + hard_mlm_loss_weight * hard +
              next_sentence,
      "soft_loss": soft,
      "hard_mlm_loss": hard,
      "next_sentence_loss": next_sentence,
  }


def evaluation_sums(masked_lm_logits, next_sentence_logits, features,
                    temperature, soft_loss_weight, hard_mlm_loss_weight):
  """Per-batch sums from which the evaluation metrics are ratios.

  Returns {name: scalar}: weighted sums over masked positions ("*_w") with
  "weight" their denominator, and sums over examples with "examples".
  """
  weights = features[records.MASKED_LM_WEIGHTS]  # [B, P]
  labels = features[records.NEXT_SENTENCE_LABELS]  # [B]
  predicted = tf.argmax(masked_lm_logits, axis=-1, output_type=tf.int32)
  true_ids = tf.cast(features[records.MASKED_LM_IDS], tf.int32)
  sums = {
      "weight": tf.reduce_sum(weights),
      "examples": tf.cast(tf.size(labels), tf.float32),
      "mlm_correct_w": tf.reduce_sum(
          weights * tf.cast(predicted == true_ids, tf.float32)),
      "hard_mlm_loss_w": tf.reduce_sum(
          weights * hard_cross_entropy(masked_lm_logits, true_ids)),
      "next_sentence_correct": tf.reduce_sum(tf.cast(
          tf.argmax(next_sentence_logits, -1, output_type=tf.int32) ==
          tf.cast(labels, tf.int32), tf.float32)),
      "next_sentence_loss": tf.reduce_sum(
          next_sentence_cross_entropy(next_sentence_logits, labels)),
  }
  if TEACHER_PROBS in features:
    probs = features[TEACHER_PROBS]
    teacher_top1 = tf.argmax(probs, axis=-1, output_type=tf.int32)  # [B, P]
    if TEACHER_IDS in features:
      teacher_top1 = tf.gather(tf.cast(features[TEACHER_IDS], tf.int32),
                               teacher_top1, batch_dims=2)
    sums["agreement_w"] = tf.reduce_sum(
        weights * tf.cast(predicted == teacher_top1, tf.float32))
    # The original's loss: temperature 1, whatever training used.
    sums["soft_loss_w"] = tf.reduce_sum(weights * soft_cross_entropy(
        masked_lm_logits, probs, features.get(TEACHER_IDS)))
    sums["trained_soft_loss_w"] = tf.reduce_sum(weights * soft_cross_entropy(
        masked_lm_logits, probs, features.get(TEACHER_IDS), temperature))
  return sums


def evaluation_metrics(sums, soft_loss_weight, hard_mlm_loss_weight):
  """Turns evaluation_sums (added over batches) into the reported metrics."""
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
    metrics["masked_lm_loss"] = sums["soft_loss_w"] / weight
    trained_soft = sums["trained_soft_loss_w"] / weight
  metrics["loss"] = (soft_loss_weight * trained_soft +
                     hard_mlm_loss_weight * hard + next_sentence)
  return {name: float(value) for name, value in metrics.items()}
