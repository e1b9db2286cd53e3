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

or, with truncation_factor 0, the whole distribution:

  masked_lm_probs                         float  [P * vocab_size]

Classifier records (run_classifier.py's features), as Google's
run_classifier.py writes them, plus a float label for regression tasks:

  input_ids, input_mask, segment_ids      int64  [L]
  label_ids                               int64  [1]  class index
  (or label_values                        float  [1]  regression target)
  is_real_example                         int64  [1]

Every writer serializes with `serialize_example` and every reader parses with
the specs below, so no script repeats a feature spec.

TensorFlow and NumPy are imported inside the functions that use them: stage
III-b's worker processes use only the names above and start in 0.1 s and
20 MB instead of 4.5 s and 600 MB.
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
LABEL_IDS = "label_ids"
LABEL_VALUES = "label_values"
IS_REAL_EXAMPLE = "is_real_example"

# The order in which Google's create_pretraining_data.py adds the features.
PRETRAINING_FEATURES = (INPUT_IDS, INPUT_MASK, SEGMENT_IDS,
                        MASKED_LM_POSITIONS, MASKED_LM_IDS, MASKED_LM_WEIGHTS,
                        NEXT_SENTENCE_LABELS)
FLOAT_FEATURES = frozenset([MASKED_LM_WEIGHTS, TRUNCATED_PROBS, FULL_PROBS,
                            LABEL_VALUES])


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


def teacher_label_features(truncation_factor):
  """Names of the teacher-label features for a truncation_factor (0 = full)."""
  if truncation_factor > 0:
    return (TRUNCATED_PROBS, TOP_K_INDICES)
  return (FULL_PROBS,)


def teacher_label_feature_spec(max_seq_length, max_predictions_per_seq,
                               truncation_factor, vocab_size=None):
  """Returns the parse spec of a teacher-label record.

  Args:
    max_seq_length: L.
    max_predictions_per_seq: P.
    truncation_factor: k, the number of teacher probabilities kept per masked
      position; 0 keeps the whole distribution (needs vocab_size).
    vocab_size: the teacher's vocabulary size; only used when k is 0.
  """
  import tensorflow as tf
  spec = pretraining_feature_spec(max_seq_length, max_predictions_per_seq)
  if truncation_factor > 0:
    width = [max_predictions_per_seq * truncation_factor]
    spec[TRUNCATED_PROBS] = tf.io.FixedLenFeature(width, tf.float32)
    spec[TOP_K_INDICES] = tf.io.FixedLenFeature(width, tf.int64)
  else:
    if not vocab_size:
      raise ValueError("truncation_factor 0 (full distribution) needs vocab_size")
    spec[FULL_PROBS] = tf.io.FixedLenFeature(
        [max_predictions_per_seq * vocab_size], tf.float32)
  return spec


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


def serialize_example(features):
  """Serializes {name: 1-D sequence of numbers} to a tf.train.Example string.

  Features named in FLOAT_FEATURES are written as float lists, every other one
  as an int64 list, as Google's tools write them. Insertion order is kept.
  """
  import numpy as np
  import tensorflow as tf
  feature = {}
  for name, values in features.items():
    values = np.asarray(values).reshape(-1)
    if name in FLOAT_FEATURES:
      feature[name] = tf.train.Feature(
          float_list=tf.train.FloatList(value=values.astype(np.float32)))
    else:
      feature[name] = tf.train.Feature(
          int64_list=tf.train.Int64List(value=values.astype(np.int64)))
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def decode_example(serialized):
  """Parses one serialized tf.train.Example into {name: np.ndarray} (any lengths)."""
  import numpy as np
  import tensorflow as tf
  example = tf.train.Example.FromString(serialized)
  decoded = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
      decoded[name] = np.array(feature.float_list.value, dtype=np.float32)
    elif kind == "int64_list":
      decoded[name] = np.array(feature.int64_list.value, dtype=np.int64)
    else:
      decoded[name] = list(feature.bytes_list.value)
  return decoded


def read_first_example(path):
  """Returns the first record of a TFRecord file, decoded, or None if empty.

  Raises:
    ValueError: the file cannot be read as TFRecords (names the file).
  """
  import tensorflow as tf
  try:
    for serialized in tf.data.TFRecordDataset(path).take(1):
      return decode_example(serialized.numpy())
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"{path}: not a readable TFRecord file "
                     f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
  return None


# Which flag sets the length of each feature, for error messages.
_FLAG_OF_FEATURE = {
    INPUT_IDS: "--max_seq_length", INPUT_MASK: "--max_seq_length",
    SEGMENT_IDS: "--max_seq_length",
    MASKED_LM_POSITIONS: "--max_predictions_per_seq",
    MASKED_LM_IDS: "--max_predictions_per_seq",
    MASKED_LM_WEIGHTS: "--max_predictions_per_seq",
    TRUNCATED_PROBS: "--truncation_factor", TOP_K_INDICES: "--truncation_factor",
    FULL_PROBS: "--truncation_factor",
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
      if name in (TRUNCATED_PROBS, TOP_K_INDICES, FULL_PROBS):
        held = [n for n in teacher_label_features(1) + teacher_label_features(0)
                if n in example]
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
