"""The losses of distillation and the sums behind its evaluation metrics.

One definition of each loss term, shared by training and evaluation. The
soft term depends on what the teacher's labels hold (docs/label_modes.md),
told apart by the parsed batch's keys:

  top_k   (TEACHER_PROBS + TEACHER_IDS, the original's)
          soft_i = -T^2 * sum_j p_ij^T * log q_i[t_ij],  q_i = softmax(z_i / T)
          with tail_mass_loss also - T^2 * (1 - sum_j p_ij^T) *
          log(1 - sum_j q_i[t_ij]), the log taken as logsumexp of z_i / T
          over the ids outside the top k minus logsumexp over all of them
  full    (TEACHER_PROBS [B, P, V] only)
          soft_i = -T^2 * sum_v p_iv^T * log q_iv
  sampled (TEACHER_SAMPLE_WEIGHTS + TEACHER_IDS: c_ij / sum_j c_ij of N draws
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

import tensorflow as tf

import records

# Google's run_pretraining adds this to the sum of masked_lm_weights.
WEIGHT_EPSILON = 1e-5
# The parsed batch's names for the teacher's labels.
TEACHER_PROBS = "teacher_probs"   # [B, P, k] or [B, P, V] after parsing
TEACHER_IDS = "teacher_ids"       # [B, P, k]; absent for the full distribution
# Sampled labels: each slot's share of the draws kept, c_j / sum c; 0 = empty.
TEACHER_SAMPLE_WEIGHTS = "teacher_sample_weights"  # [B, P, k]
# Equal-width confidence bins of the expected calibration error.
CALIBRATION_BINS = 15


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
  scaled = logits / temperature  # [B, P, V]
  vocab_size = tf.shape(scaled)[-1]
  rows = tf.reshape(scaled, [-1, vocab_size])  # [B*P, V]
  ids = tf.reshape(tf.cast(teacher_ids, tf.int32), [tf.shape(rows)[0], -1])
  row_index = tf.broadcast_to(tf.range(tf.shape(rows)[0])[:, None],
                              tf.shape(ids))
  in_top_k = tf.scatter_nd(
      tf.stack([tf.reshape(row_index, [-1]), tf.reshape(ids, [-1])], axis=1),
      tf.ones([tf.size(ids)], tf.float32), tf.shape(rows)) > 0  # [B*P, V]
  # A large finite value rather than -inf keeps gradients finite.
  tail = tf.where(in_top_k, tf.constant(-1e30, rows.dtype), rows)
  log_tail_mass = (tf.reduce_logsumexp(tail, axis=-1) -
                   tf.reduce_logsumexp(rows, axis=-1))  # [B*P], <= 0
  log_tail_mass = tf.reshape(log_tail_mass, tf.shape(teacher_probs)[:2])
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
  log_probs = tf.nn.log_softmax(logits / temperature, axis=-1)  # [B, P, V]
  log_probs = tf.gather(log_probs, sampled_ids, batch_dims=2)  # [B, P, k]
  return -tf.reduce_sum(sample_weights * log_probs, axis=-1) * temperature**2


def soft_loss_per_position(logits, features, temperature=1.0,
                           tail_mass_loss=False):
  """The soft term of the labels `features` hold (see the module doc): [B, P].

  tail_mass_loss adds the top-k labels' "all other tokens" class; it is
  ignored for full and sampled labels, which need none.
  """
  if TEACHER_SAMPLE_WEIGHTS in features:
    return sampled_cross_entropy(logits, features[TEACHER_SAMPLE_WEIGHTS],
                                 features[TEACHER_IDS], temperature)
  per_position = soft_cross_entropy(logits, features[TEACHER_PROBS],
                                    features.get(TEACHER_IDS), temperature)
  if tail_mass_loss and TEACHER_IDS in features:
    per_position += tail_mass_cross_entropy(
        logits, features[TEACHER_PROBS], features[TEACHER_IDS], temperature)
  return per_position


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
                   example_total=None, tail_mass_loss=False):
  """The training loss and its terms for one batch.

  Args:
    masked_lm_logits: [B, P, V] float32.
    next_sentence_logits: [B, 2] float32.
    features: a parsed batch (see parse_batch): masked_lm_weights [B, P],
      masked_lm_ids [B, P], next_sentence_labels [B], and with
      soft_loss_weight > 0 the teacher's labels (teacher_probs and
      teacher_ids, teacher_probs alone, or teacher_sample_weights and
      teacher_ids).
    temperature, soft_loss_weight, hard_mlm_loss_weight: Python floats.
    weight_total: the denominator of the masked-LM terms; defaults to this
      batch's sum of masked_lm_weights + 1e-5. Replicas pass the global one.
    example_total: the denominator of the next-sentence term; defaults to B.
      Replicas pass the global batch size.
    tail_mass_loss: with top-k labels, add their "all other tokens" class.

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
    per_position = soft_loss_per_position(masked_lm_logits, features,
                                          temperature, tail_mass_loss)
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
                    temperature, soft_loss_weight, hard_mlm_loss_weight,
                    tail_mass_loss=False):
  """Per-batch sums from which the evaluation metrics are ratios.

  Returns {name: scalar or [CALIBRATION_BINS]}: weighted sums over masked
  positions ("*_w") with "weight" their denominator, and sums over examples
  with "examples". With the teacher's whole distribution in the batch
  (TEACHER_PROBS [B, P, V], no TEACHER_IDS: full-mode records, or a teacher
  run alongside) also the sums of teacher_kl, teacher_cross_entropy,
  teacher_entropy and both calibration gaps.
  """
  del soft_loss_weight, hard_mlm_loss_weight  # The sums hold every term.
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
  if TEACHER_SAMPLE_WEIGHTS in features:
    # Sampled labels: their loss at the temperature they were drawn at.
    per_position = soft_loss_per_position(masked_lm_logits, features,
                                          temperature)
    sums["soft_loss_w"] = tf.reduce_sum(weights * per_position)
    sums["trained_soft_loss_w"] = sums["soft_loss_w"]
  elif TEACHER_PROBS in features:
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
    sums["trained_soft_loss_w"] = tf.reduce_sum(weights * (
        soft_loss_per_position(masked_lm_logits, features, temperature,
                               tail_mass_loss)))
    if TEACHER_IDS not in features:
      sums.update(teacher_distribution_sums(masked_lm_logits, probs,
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


def evaluation_metrics(sums, soft_loss_weight, hard_mlm_loss_weight):
  """Turns evaluation_sums (added over batches) into the reported metrics.

  With the teacher's whole distribution: teacher_kl, teacher_cross_entropy
  and teacher_entropy are means over real masked positions (nats);
  student_ece and teacher_ece are sum_b |gap_b| / sum w over the
  CALIBRATION_BINS confidence bins of calibration_gaps.
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
  metrics["loss"] = (soft_loss_weight * trained_soft +
                     hard_mlm_loss_weight * hard + next_sentence)
  return {name: float(value) for name, value in metrics.items()}
