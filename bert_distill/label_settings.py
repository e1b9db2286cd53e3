"""The teacher's labels as a value: what a record holds, decided once a run.

Stage IV writes one of three label modes (docs/label_modes.md); the mode and
its sizes travel as a LabelSettings from the flags (stage IV: from_flags) or
the first record (stage V: of_record, of_files) to the parse spec
(feature_spec) and, per batch, as a labels value whose `mode` the losses
switch on:

  TopKLabels     top_k    probs, ids [B, P, k]   the teacher's k most probable
  FullLabels     full     probs [B, P, V]        its whole distribution (also
                                                 what an online teacher gives)
  SampledLabels  sampled  weights, ids [B, P, k] c_j / sum c of N draws at T
                                                 (an exact head of h first)

The record features of each mode are named in records.py. Nothing here
imports TensorFlow at module level.

Shapes: B = batch size, P = max_predictions_per_seq, k = truncation_factor,
V = vocab_size.
"""

import typing

from bert_distill import cli
from bert_distill import records

# The label modes of stage IV: what its records hold about the teacher.
TOP_K, FULL, SAMPLED = "top_k", "full", "sampled"
LABEL_MODES = (TOP_K, FULL, SAMPLED)

# The key of the labels value in a parsed batch.
TEACHER_LABELS = "teacher_labels"

_FEATURES = {
    TOP_K: (records.TRUNCATED_PROBS, records.TOP_K_INDICES),
    FULL: (records.FULL_PROBS,),
    SAMPLED: (records.SAMPLED_IDS, records.SAMPLED_COUNTS, records.NUM_SAMPLES,
              records.SAMPLE_TEMPERATURE),
}
_HEAD_FEATURES = (records.SAMPLED_HEAD_PROBS, records.SAMPLED_HEAD_IDS)
assert records.LABEL_FEATURES == frozenset(
    [name for names in _FEATURES.values() for name in names] +
    list(_HEAD_FEATURES))


def mode_of(truncation_factor, label_mode=TOP_K):
  """The effective label mode: truncation_factor 0 spells `full` (as the
  original's later version did) unless the mode is `sampled`."""
  if label_mode == TOP_K and truncation_factor == 0:
    return FULL
  return label_mode


class LabelSettings(typing.NamedTuple):
  """What a teacher-label record holds.

  k is the values kept per masked position (the vocabulary size for
  `full`); num_samples is N for `sampled`, else 0; temperature is the T the
  labels were drawn at (`sampled`), 1.0 for stored probabilities; head_k is
  the exact head of sampled labels (0: none).
  """
  mode: str
  k: int
  num_samples: int = 0
  temperature: float = 1.0
  head_k: int = 0

  def describe(self):
    if self.mode == SAMPLED:
      head = (f"the top {self.head_k} exact, then " if self.head_k else "")
      return (f"sampled ({head}N = {self.num_samples} draws at temperature "
              f"{self.temperature:g}, k = {self.k} slots)")
    if self.mode == TOP_K:
      return f"top_k (k = {self.k})"
    return "full"

  def feature_names(self):
    """The record features of these labels, in the order stage IV writes."""
    names = _FEATURES[self.mode]
    if self.mode == SAMPLED and self.head_k:
      names += _HEAD_FEATURES
    return names

  def feature_spec(self, max_seq_length, max_predictions_per_seq):
    """The parse spec {name: tf.io.FixedLenFeature} of a record holding
    these labels (the pretraining features and the labels'), L =
    max_seq_length, P = max_predictions_per_seq."""
    import tensorflow as tf
    spec = records.pretraining_feature_spec(max_seq_length,
                                            max_predictions_per_seq)
    width = [max_predictions_per_seq * self.k]
    if self.mode == TOP_K:
      spec[records.TRUNCATED_PROBS] = tf.io.FixedLenFeature(width, tf.float32)
      spec[records.TOP_K_INDICES] = tf.io.FixedLenFeature(width, tf.int64)
    elif self.mode == SAMPLED:
      spec[records.SAMPLED_IDS] = tf.io.FixedLenFeature(width, tf.int64)
      spec[records.SAMPLED_COUNTS] = tf.io.FixedLenFeature(width, tf.int64)
      spec[records.NUM_SAMPLES] = tf.io.FixedLenFeature([1], tf.int64)
      spec[records.SAMPLE_TEMPERATURE] = tf.io.FixedLenFeature([1],
                                                               tf.float32)
      if self.head_k:
        head = [max_predictions_per_seq * self.head_k]
        spec[records.SAMPLED_HEAD_PROBS] = tf.io.FixedLenFeature(head,
                                                                 tf.float32)
        spec[records.SAMPLED_HEAD_IDS] = tf.io.FixedLenFeature(head, tf.int64)
    else:
      spec[records.FULL_PROBS] = tf.io.FixedLenFeature(width, tf.float32)
    return spec


def feature_spec(settings, max_seq_length, max_predictions_per_seq):
  """The parse spec of records holding `settings` (None: no labels)."""
  if settings is None:
    return records.pretraining_feature_spec(max_seq_length,
                                            max_predictions_per_seq)
  return settings.feature_spec(max_seq_length, max_predictions_per_seq)


def from_flags(label_mode, truncation_factor, num_samples, temperature,
               vocab_size, exact_top_k=0):
  """The LabelSettings stage IV writes (N, T, head only for sampled).

  Raises:
    cli.StageError: sampled k + h exceeds the teacher's vocabulary.
  """
  mode = mode_of(truncation_factor, label_mode)
  if mode == SAMPLED:
    if truncation_factor + exact_top_k > vocab_size:
      raise cli.StageError(
          f"--truncation_factor {truncation_factor} + --exact_top_k "
          f"{exact_top_k} exceeds the teacher's vocab_size {vocab_size}")
    return LabelSettings(mode, truncation_factor, num_samples,
                         float(temperature), exact_top_k)
  if mode == FULL:
    return LabelSettings(mode, vocab_size)
  return LabelSettings(mode, truncation_factor)


def of_record(example, max_predictions_per_seq, path="the records"):
  """The LabelSettings of a decoded record, or None if it holds no labels.

  Raises:
    ValueError: the record holds another P than max_predictions_per_seq,
      the features of two modes, or a label feature whose length is not a
      multiple of P (names `path`).
  """
  positions = example.get(records.MASKED_LM_POSITIONS)
  if positions is not None and len(positions) != max_predictions_per_seq:
    raise ValueError(
        f"{path}: records hold P = {len(positions)} masked positions "
        f"(masked_lm_positions) but --max_predictions_per_seq is "
        f"{max_predictions_per_seq}; set --max_predictions_per_seq="
        f"{len(positions)} to match the records")
  held = [mode for mode, names in _FEATURES.items()
          if all(name in example for name in names)]
  if not held:
    return None
  if len(held) > 1:
    raise ValueError(f"{path}: records hold the labels of several modes "
                     f"({', '.join(held)})")
  mode = held[0]
  width = len(example[_FEATURES[mode][0]])
  if width % max_predictions_per_seq:
    raise ValueError(
        f"{path}: '{_FEATURES[mode][0]}' has length {width}, not a "
        f"multiple of --max_predictions_per_seq {max_predictions_per_seq}")
  k = width // max_predictions_per_seq
  if mode == SAMPLED:
    head_k = len(example.get(records.SAMPLED_HEAD_PROBS, ())) // (
        max_predictions_per_seq)
    return LabelSettings(mode, k, int(example[records.NUM_SAMPLES][0]),
                         float(example[records.SAMPLE_TEMPERATURE][0]), head_k)
  return LabelSettings(mode, k)


def of_files(files, max_predictions_per_seq, flag):
  """The LabelSettings every file's first record shares, or None when they
  hold no teacher labels.

  Raises:
    cli.StageError: a file is empty or unreadable, or two files hold
      labels of different modes, k, N or T (names both).
  """
  found = first = None
  for path in files:
    try:
      example = records.read_first_example(path)
      if example is None:
        raise ValueError(f"{path}: holds no records")
      settings = of_record(example, max_predictions_per_seq, path)
    except ValueError as e:
      raise cli.StageError(str(e)) from None
    if first is None:
      found, first = settings, path
    elif settings != found:
      raise cli.StageError(
          f"{flag}: {path} holds {describe(settings)} but {first} holds "
          f"{describe(found)}; give files of one label mode")
  return found


def describe(settings):
  """A LabelSettings (or None) in words."""
  return f"{settings.describe()} labels" if settings else "no teacher labels"


def expected(settings, truncation_factor, vocab_size):
  """The settings stage V expects: the records' own, with k (and top_k or
  full) as --truncation_factor says when it is given, so a mismatch is
  reported by records.check_record_lengths (with the k found)."""
  if settings is None or truncation_factor is None:
    return settings
  mode = settings.mode
  if mode != SAMPLED:
    mode = mode_of(truncation_factor)
  k = vocab_size if mode == FULL else truncation_factor
  return settings._replace(mode=mode, k=k)


def check_for_training(settings, path, label_mode, temperature,
                       tail_mass_loss, soft_loss_weight):
  """Checks the training records' labels against the flags that use them.

  Raises:
    cli.StageError: --label_mode disagrees with the records, sampled labels
      drawn at another --temperature, --tail_mass_loss without top_k
      labels, or a soft loss without any labels.
  """
  if settings is None:
    if soft_loss_weight > 0 or label_mode:
      raise cli.StageError(
          f"{path}: records hold no teacher labels (stage IV's output has "
          f"them); for plain pretraining give --soft_loss_weight 0")
    return
  if label_mode and label_mode != settings.mode:
    raise cli.StageError(f"--label_mode {label_mode}: {path} holds "
                         f"{describe(settings)}")
  if (settings.mode == SAMPLED and soft_loss_weight > 0 and
      temperature != settings.temperature):
    raise cli.StageError(
        f"--temperature {temperature:g}: {path} holds labels sampled at "
        f"temperature {settings.temperature:g} (stage IV's "
        f"--sample_temperature); distil at {settings.temperature:g}")
  if tail_mass_loss and settings.mode != TOP_K:
    raise cli.StageError(f"--tail_mass_loss needs top_k labels; {path} holds "
                         f"{describe(settings)}")


# ---------------------------------------------------------------------------
# A batch's labels. Named tuples (tf.data and tf.distribute carry them as
# they carry tuples) whose class says the mode: the losses read `.mode`.


class TopKLabels(typing.NamedTuple):
  """top_k: the teacher's k most probable tokens, descending."""
  probs: typing.Any  # [B, P, k] float32
  ids: typing.Any    # [B, P, k] int32
  mode = TOP_K


class FullLabels(typing.NamedTuple):
  """full: the teacher's whole distribution (stored, or an online teacher's)."""
  probs: typing.Any  # [B, P, V] float32
  mode = FULL


class SampledLabels(typing.NamedTuple):
  """sampled: each slot's share of the draws kept, c_j / sum c (0 = empty);
  with an exact head of h, weights [h_1..h_h, (1 - sum h) c / sum c]."""
  weights: typing.Any  # [B, P, h + k] float32
  ids: typing.Any      # [B, P, h + k] int32
  mode = SAMPLED


def parse_labels(parsed, settings, max_predictions_per_seq):
  """The labels value of a parsed batch: {record feature: [B, P * k]} ->
  TopKLabels, FullLabels or SampledLabels as settings.mode says."""
  import tensorflow as tf

  def per_position(name, dtype):  # [B, P * k] -> [B, P, k]
    value = tf.cast(parsed[name], dtype)
    return tf.reshape(value, [-1, max_predictions_per_seq,
                              value.shape[-1] // max_predictions_per_seq])

  if settings.mode == TOP_K:
    return TopKLabels(per_position(records.TRUNCATED_PROBS, tf.float32),
                      per_position(records.TOP_K_INDICES, tf.int32))
  if settings.mode == FULL:
    return FullLabels(per_position(records.FULL_PROBS, tf.float32))
  # N and T were checked once, before training.
  counts = per_position(records.SAMPLED_COUNTS, tf.float32)  # [B, P, k]
  ids = per_position(records.SAMPLED_IDS, tf.int32)
  kept = tf.reduce_sum(counts, axis=-1, keepdims=True)
  weights = counts / tf.maximum(kept, 1.0)  # [B, P, k]
  if settings.head_k:
    head = per_position(records.SAMPLED_HEAD_PROBS, tf.float32)  # [B, P, h]
    head_ids = per_position(records.SAMPLED_HEAD_IDS, tf.int32)
    tail_mass = tf.maximum(1.0 - tf.reduce_sum(head, -1, keepdims=True), 0.0)
    weights = tf.concat([head, tail_mass * weights], axis=-1)  # [B, P, h+k]
    ids = tf.concat([head_ids, ids], axis=-1)
  return SampledLabels(weights, ids)
