"""The record formats that flow between the stages: one definition of each.

Pretraining records are tf.train.Examples exactly as Google's
`create_pretraining_data.py` writes them (L = max_seq_length,
P = max_predictions_per_seq):

  input_ids, input_mask, segment_ids      int64  [L]
  masked_lm_positions, masked_lm_ids      int64  [P]
  masked_lm_weights                       float  [P]
  next_sentence_labels                    int64  [1]

Teacher-label records hold all of the above plus, with k = truncation_factor:

  truncated_masked_lm_probs               float  [P * k]  teacher's top-k probs
  top_k_indices                           int64  [P * k]  their vocabulary ids

or, with truncation_factor 0 (label mode `full`), the whole distribution:

  masked_lm_probs                         float  [P * vocab_size]

or, in label mode `sampled` (N draws with replacement from the teacher's
softmax at temperature T, the distinct ids drawn most frequent first, in k
slots per position padded with id 0 and count 0):

  sampled_token_ids                       int64  [P * k]  distinct ids drawn
  sampled_token_counts                    int64  [P * k]  how often each
  num_samples                             int64  [1]      N
  sample_temperature                      float  [1]      T

optionally (--exact_top_k h > 0: the teacher's h most probable tokens kept
exactly, the draws made from the rest of its distribution, renormalised):

  sampled_head_probs                      float  [P * h]  descending
  sampled_head_ids                        int64  [P * h]

Which of these a record holds says its label mode (label_settings.py), so
the reader never guesses; docs/label_modes.md has the byte counts.

Classifier records (run_classifier.py's features), as Google's
run_classifier.py writes them, plus a float label for regression tasks:

  input_ids, input_mask, segment_ids      int64  [L]
  label_ids                               int64  [1]  class index
  (or label_values                        float  [1]  regression target)
  is_real_example                         int64  [1]

and, in task distillation's training records (run_classifier.py with a
teacher), C = num_labels (1 for regression):

  teacher_logits                          float  [C]  the teacher's outputs
  label_weight                            float  [1]  1 labeled, 0 unlabeled

Every reader parses with the specs below, so no script repeats a feature
spec; check_record_lengths and invalid_records check a file's first record
and every value against the flags and the model. The bytes are written and
read by example_codec.py (tf.train.Example, without TensorFlow) and
tfrecord.py (the TFRecord framing). TensorFlow is imported inside the
functions that use it: stage III-b's worker processes use the names alone.
"""

INPUT_IDS = "input_ids"
INPUT_MASK = "input_mask"
SEGMENT_IDS = "segment_ids"
MASKED_LM_POSITIONS = "masked_lm_positions"
MASKED_LM_IDS = "masked_lm_ids"
MASKED_LM_WEIGHTS = "masked_lm_weights"
NEXT_SENTENCE_LABELS = "next_sentence_labels"
TRUNCATED_PROBS = "truncated_masked_lm_probs"
TOP_K_INDICES = "top_k_indices"
FULL_PROBS = "masked_lm_probs"
SAMPLED_IDS = "sampled_token_ids"
SAMPLED_COUNTS = "sampled_token_counts"
NUM_SAMPLES = "num_samples"
SAMPLE_TEMPERATURE = "sample_temperature"
SAMPLED_HEAD_PROBS = "sampled_head_probs"
SAMPLED_HEAD_IDS = "sampled_head_ids"

LABEL_IDS = "label_ids"
LABEL_VALUES = "label_values"
IS_REAL_EXAMPLE = "is_real_example"
# Task distillation's training records add the teacher's logits and the
# weight of the gold label (0 for unlabeled text).
TEACHER_LOGITS = "teacher_logits"
LABEL_WEIGHT = "label_weight"

# The order in which Google's create_pretraining_data.py adds the features.
PRETRAINING_FEATURES = (INPUT_IDS, INPUT_MASK, SEGMENT_IDS,
                        MASKED_LM_POSITIONS, MASKED_LM_IDS, MASKED_LM_WEIGHTS,
                        NEXT_SENTENCE_LABELS)
FLOAT_FEATURES = frozenset([MASKED_LM_WEIGHTS, TRUNCATED_PROBS, FULL_PROBS,
                            SAMPLE_TEMPERATURE, SAMPLED_HEAD_PROBS,
                            LABEL_VALUES, TEACHER_LOGITS, LABEL_WEIGHT])

# Every feature of teacher labels, whatever the mode (label_settings.py says
# which a mode holds).
LABEL_FEATURES = frozenset([TRUNCATED_PROBS, TOP_K_INDICES, FULL_PROBS,
                            SAMPLED_IDS, SAMPLED_COUNTS, NUM_SAMPLES,
                            SAMPLE_TEMPERATURE, SAMPLED_HEAD_PROBS,
                            SAMPLED_HEAD_IDS])


def pretraining_feature_spec(max_seq_length, max_predictions_per_seq):
  """Returns the parse spec {name: tf.io.FixedLenFeature} of a pretraining record."""
  import tensorflow as tf
  seq = [max_seq_length]
  preds = [max_predictions_per_seq]
  return {
      INPUT_IDS: tf.io.FixedLenFeature(seq, tf.int64),
      INPUT_MASK: tf.io.FixedLenFeature(seq, tf.int64),
      SEGMENT_IDS: tf.io.FixedLenFeature(seq, tf.int64),
      MASKED_LM_POSITIONS: tf.io.FixedLenFeature(preds, tf.int64),
      MASKED_LM_IDS: tf.io.FixedLenFeature(preds, tf.int64),
      MASKED_LM_WEIGHTS: tf.io.FixedLenFeature(preds, tf.float32),
      NEXT_SENTENCE_LABELS: tf.io.FixedLenFeature([1], tf.int64),
  }


def classifier_feature_spec(max_seq_length, is_regression=False):
  """Returns the parse spec of a classifier record (L = max_seq_length).

  Classification records hold the class index in `label_ids`, as Google's
  run_classifier.py writes them; regression records (STS-B) hold the target
  in the float feature `label_values`.
  """
  import tensorflow as tf
  seq = [max_seq_length]
  label = (tf.io.FixedLenFeature([1], tf.float32) if is_regression else
           tf.io.FixedLenFeature([1], tf.int64))
  return {
      INPUT_IDS: tf.io.FixedLenFeature(seq, tf.int64),
      INPUT_MASK: tf.io.FixedLenFeature(seq, tf.int64),
      SEGMENT_IDS: tf.io.FixedLenFeature(seq, tf.int64),
      LABEL_VALUES if is_regression else LABEL_IDS: label,
      IS_REAL_EXAMPLE: tf.io.FixedLenFeature([1], tf.int64),
  }


def task_distillation_feature_spec(max_seq_length, num_labels,
                                   is_regression=False):
  """Returns the parse spec of a task distillation training record: a
  classifier record plus `teacher_logits` float [C] (C = num_labels, 1 for
  regression) and `label_weight` float [1] (1 labeled, 0 unlabeled)."""
  import tensorflow as tf
  return {**classifier_feature_spec(max_seq_length, is_regression),
          TEACHER_LOGITS: tf.io.FixedLenFeature([num_labels], tf.float32),
          LABEL_WEIGHT: tf.io.FixedLenFeature([1], tf.float32)}


def read_first_example(path):
  """Returns the first record of a TFRecord file, decoded, or None if empty.

  Raises:
    ValueError: the file cannot be read as TFRecords (names the file).
  """
  # Imported here: both import the names above.
  from bert_distill import example_codec
  from bert_distill import tfrecord
  for serialized in tfrecord.read_tfrecords(path):
    try:
      return example_codec.decode_example(serialized)
    except ValueError as e:
      raise ValueError(f"{path}: record 0: {e}") from None
  return None


# Which flag sets the length of each feature, for error messages.
_FLAG_OF_FEATURE = {
    INPUT_IDS: "--max_seq_length", INPUT_MASK: "--max_seq_length",
    SEGMENT_IDS: "--max_seq_length",
    MASKED_LM_POSITIONS: "--max_predictions_per_seq",
    MASKED_LM_IDS: "--max_predictions_per_seq",
    MASKED_LM_WEIGHTS: "--max_predictions_per_seq",
    TRUNCATED_PROBS: "--truncation_factor", TOP_K_INDICES: "--truncation_factor",
    FULL_PROBS: "--truncation_factor", SAMPLED_IDS: "--truncation_factor",
    SAMPLED_COUNTS: "--truncation_factor", SAMPLED_HEAD_PROBS: "--exact_top_k",
    SAMPLED_HEAD_IDS: "--exact_top_k",
}
def check_record_lengths(path, feature_spec, max_predictions_per_seq=None):
  """Checks that the first record of `path` fits `feature_spec`.

  Returns the first record, decoded, when it fits (None when the file is
  empty), so callers can check its values without reading it again;
  otherwise raises a ValueError whose one-line message names the file, the
  feature, the length found, the length expected and the flag to set.
  """
  import numpy as np
  example = read_first_example(path)
  if example is None:
    return None
  for name, spec in feature_spec.items():
    if name not in example:
      if name in LABEL_FEATURES:
        held = [n for n in sorted(LABEL_FEATURES) if n in example]
        raise ValueError(
            f"{path}: records hold no '{name}' feature (teacher labels found: "
            f"{held or 'none'}); check --truncation_factor and --input_file")
      raise ValueError(f"{path}: records have no '{name}' feature")
    expected = int(np.prod(spec.shape))
    found = len(example[name])
    if found == expected:
      continue
    flag = _FLAG_OF_FEATURE.get(name, "the length flags")
    if flag == "--truncation_factor" and name != FULL_PROBS and max_predictions_per_seq:
      hint = (f"they hold k = {found / max_predictions_per_seq:g} per masked "
              f"position; set --truncation_factor to match")
    elif flag in ("--max_seq_length", "--max_predictions_per_seq"):
      hint = f"set {flag}={found} to match the records"
    else:
      hint = f"set {flag} to match the records"
    raise ValueError(f"{path}: '{name}' has length {found} but {expected} "
                     f"was expected; {hint}")
  return example


def value_bounds(vocab_size, type_vocab_size, max_seq_length):
  """{feature: (exclusive upper bound, what sets it)} of the integer features
  a model indexes with; every value must lie in [0, bound).

  On a GPU or under XLA an index out of range does not fail: a gather reads
  zeros or a clamped row, so these are checked on the host.
  """
  vocab = (vocab_size, f"vocab_size {vocab_size}")
  return {
      INPUT_IDS: vocab, MASKED_LM_IDS: vocab, TOP_K_INDICES: vocab,
      SAMPLED_IDS: vocab, SAMPLED_HEAD_IDS: vocab,
      SEGMENT_IDS: (type_vocab_size, f"type_vocab_size {type_vocab_size}"),
      MASKED_LM_POSITIONS: (max_seq_length,
                            f"--max_seq_length {max_seq_length}"),
      NEXT_SENTENCE_LABELS: (2, "the labels 0 and 1"),
  }


def invalid_records(features, bounds):
  """The rows of a parsed batch that a model cannot use, and why.

  Checks every feature of `bounds` that `features` holds against its range,
  and that every masked position of weight > 0 lies within the record's real
  tokens (the ones of input_mask).

  Args:
    features: {name: np.ndarray [b, ...]}, as tf.io.parse_example gives them.
    bounds: value_bounds(...).

  Returns:
    {row: one-line reason} for the bad rows, in row order ({} when all fit).
  """
  import numpy as np
  reasons = {}
  for name, (limit, what) in bounds.items():
    if name not in features:
      continue
    values = np.asarray(features[name]).reshape(len(features[name]), -1)
    for row in np.flatnonzero(((values < 0) | (values >= limit)).any(axis=1)):
      bad = values[row][(values[row] < 0) | (values[row] >= limit)]
      reasons.setdefault(int(row), f"{name} holds {bad[0]}, outside [0, "
                                   f"{limit}) ({what})")
  if all(n in features for n in (INPUT_MASK, MASKED_LM_POSITIONS,
                                 MASKED_LM_WEIGHTS)):
    lengths = np.sum(np.asarray(features[INPUT_MASK]) != 0, axis=1)
    positions = np.asarray(features[MASKED_LM_POSITIONS])
    beyond = (positions >= lengths[:, None]) & (
        np.asarray(features[MASKED_LM_WEIGHTS]) > 0)
    for row in np.flatnonzero(beyond.any(axis=1)):
      reasons.setdefault(
          int(row), f"masked_lm_positions holds {positions[row][beyond[row]][0]}"
                    f" (weight > 0) beyond its {lengths[row]} real tokens")
  return dict(sorted(reasons.items()))
