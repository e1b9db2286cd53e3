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

Which of these a record holds says its label mode (`label_settings`), so the
reader never guesses; docs/label_modes.md has the byte counts.

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
SAMPLED_IDS = "sampled_token_ids"
SAMPLED_COUNTS = "sampled_token_counts"
NUM_SAMPLES = "num_samples"
SAMPLE_TEMPERATURE = "sample_temperature"
SAMPLED_HEAD_PROBS = "sampled_head_probs"
SAMPLED_HEAD_IDS = "sampled_head_ids"

# The label modes of stage IV: what its records hold about the teacher.
TOP_K, FULL, SAMPLED = "top_k", "full", "sampled"
LABEL_MODES = (TOP_K, FULL, SAMPLED)

LABEL_IDS = "label_ids"
LABEL_VALUES = "label_values"
IS_REAL_EXAMPLE = "is_real_example"

# The order in which Google's create_pretraining_data.py adds the features.
PRETRAINING_FEATURES = (INPUT_IDS, INPUT_MASK, SEGMENT_IDS,
                        MASKED_LM_POSITIONS, MASKED_LM_IDS, MASKED_LM_WEIGHTS,
                        NEXT_SENTENCE_LABELS)
FLOAT_FEATURES = frozenset([MASKED_LM_WEIGHTS, TRUNCATED_PROBS, FULL_PROBS,
                            SAMPLE_TEMPERATURE, SAMPLED_HEAD_PROBS,
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


_LABEL_FEATURES = {
    TOP_K: (TRUNCATED_PROBS, TOP_K_INDICES),
    FULL: (FULL_PROBS,),
    SAMPLED: (SAMPLED_IDS, SAMPLED_COUNTS, NUM_SAMPLES, SAMPLE_TEMPERATURE),
}


def label_mode_of(truncation_factor, label_mode=TOP_K):
  """The effective label mode: truncation_factor 0 spells `full` (as the
  original's later version did) unless the mode is `sampled`."""
  if label_mode == TOP_K and truncation_factor == 0:
    return FULL
  return label_mode


def teacher_label_features(truncation_factor, label_mode=TOP_K, head_k=0):
  """Names of the teacher-label features of a mode (k 0 with top_k = full);
  head_k > 0 adds the exact head of sampled labels."""
  names = _LABEL_FEATURES[label_mode_of(truncation_factor, label_mode)]
  if head_k and label_mode == SAMPLED:
    names += (SAMPLED_HEAD_PROBS, SAMPLED_HEAD_IDS)
  return names


def teacher_label_feature_spec(max_seq_length, max_predictions_per_seq,
                               truncation_factor, vocab_size=None,
                               label_mode=TOP_K, head_k=0):
  """Returns the parse spec of a teacher-label record.

  Args:
    max_seq_length: L.
    max_predictions_per_seq: P.
    truncation_factor: k, the number of teacher probabilities (top_k) or
      sample slots (sampled) kept per masked position; 0 with top_k keeps the
      whole distribution (needs vocab_size).
    vocab_size: the teacher's vocabulary size; only used for `full`.
    label_mode: one of LABEL_MODES.
    head_k: sampled labels: the exact head's tokens per position (0: none).
  """
  import tensorflow as tf
  spec = pretraining_feature_spec(max_seq_length, max_predictions_per_seq)
  label_mode = label_mode_of(truncation_factor, label_mode)
  width = [max_predictions_per_seq * truncation_factor]
  if label_mode == TOP_K:
    spec[TRUNCATED_PROBS] = tf.io.FixedLenFeature(width, tf.float32)
    spec[TOP_K_INDICES] = tf.io.FixedLenFeature(width, tf.int64)
  elif label_mode == SAMPLED:
    spec[SAMPLED_IDS] = tf.io.FixedLenFeature(width, tf.int64)
    spec[SAMPLED_COUNTS] = tf.io.FixedLenFeature(width, tf.int64)
    spec[NUM_SAMPLES] = tf.io.FixedLenFeature([1], tf.int64)
    spec[SAMPLE_TEMPERATURE] = tf.io.FixedLenFeature([1], tf.float32)
    if head_k:
      head = [max_predictions_per_seq * head_k]
      spec[SAMPLED_HEAD_PROBS] = tf.io.FixedLenFeature(head, tf.float32)
      spec[SAMPLED_HEAD_IDS] = tf.io.FixedLenFeature(head, tf.int64)
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
    FULL_PROBS: "--truncation_factor", SAMPLED_IDS: "--truncation_factor",
    SAMPLED_COUNTS: "--truncation_factor", SAMPLED_HEAD_PROBS: "--exact_top_k",
    SAMPLED_HEAD_IDS: "--exact_top_k",
}
_ALL_LABEL_FEATURES = frozenset(
    [name for names in _LABEL_FEATURES.values() for name in names] +
    [SAMPLED_HEAD_PROBS, SAMPLED_HEAD_IDS])


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
      if name in _ALL_LABEL_FEATURES:
        held = [n for n in sorted(_ALL_LABEL_FEATURES) if n in example]
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


# ------------------------------------------------------------ label modes


class LabelSettings(tuple):
  """What a teacher-label record holds:
  (mode, k, num_samples, temperature, head_k).

  k is the values kept per masked position (the vocabulary size for
  `full`); num_samples is N for `sampled`, else 0; temperature is the T the
  labels were drawn at (`sampled`), 1.0 for stored probabilities; head_k is
  the exact head of sampled labels (0: none).
  """
  __slots__ = ()

  def __new__(cls, mode, k, num_samples=0, temperature=1.0, head_k=0):
    return super().__new__(cls, (mode, int(k), int(num_samples),
                                 float(temperature), int(head_k)))

  mode = property(lambda self: self[0])
  k = property(lambda self: self[1])
  num_samples = property(lambda self: self[2])
  temperature = property(lambda self: self[3])
  head_k = property(lambda self: self[4])

  def describe(self):
    if self.mode == SAMPLED:
      head = (f"the top {self.head_k} exact, then " if self.head_k else "")
      return (f"sampled ({head}N = {self.num_samples} draws at temperature "
              f"{self.temperature:g}, k = {self.k} slots)")
    if self.mode == TOP_K:
      return f"top_k (k = {self.k})"
    return "full"


def label_settings(example, max_predictions_per_seq, path="the records"):
  """The LabelSettings of a decoded record, or None if it holds no labels.

  Raises:
    ValueError: the record holds the features of two modes, or a label
      feature whose length is not a multiple of P (names `path`).
  """
  held = [mode for mode, names in _LABEL_FEATURES.items()
          if all(name in example for name in names)]
  if not held:
    return None
  if len(held) > 1:
    raise ValueError(f"{path}: records hold the labels of several modes "
                     f"({', '.join(held)})")
  mode = held[0]
  width = len(example[_LABEL_FEATURES[mode][0]])
  if width % max_predictions_per_seq:
    raise ValueError(
        f"{path}: '{_LABEL_FEATURES[mode][0]}' has length {width}, not a "
        f"multiple of --max_predictions_per_seq {max_predictions_per_seq}")
  k = width // max_predictions_per_seq
  if mode == SAMPLED:
    head_k = len(example.get(SAMPLED_HEAD_PROBS, ())) // max_predictions_per_seq
    return LabelSettings(mode, k, int(example[NUM_SAMPLES][0]),
                         float(example[SAMPLE_TEMPERATURE][0]), head_k)
  return LabelSettings(mode, k)


def _splitmix64(x):
  """SplitMix64's finaliser on a uint64 array: a counter-based generator
  (each output a function of its input alone)."""
  import numpy as np
  with np.errstate(over="ignore"):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def sample_key(seed, file_name):
  """The 64-bit key of one input file's draws: its base name and the seed
  (so shards, output folders and reruns agree)."""
  import hashlib
  import os
  digest = hashlib.sha256(
      f"{int(seed)}:{os.path.basename(file_name)}".encode()).digest()
  return int.from_bytes(digest[:8], "little")


def sample_uniforms(key, record_indices, max_predictions_per_seq, num_samples):
  """The uniforms in [0, 1) behind the draws of some records of a file.

  Element [r, p, n] is a function of (key, record_indices[r], p, n) alone:
  the same whatever batch, window or shard the record falls into.

  Args:
    key: sample_key of the file.
    record_indices: int [w], the records' indices within their file.
    max_predictions_per_seq: P.
    num_samples: N.

  Returns:
    float32 [w, P, N], each below 1.
  """
  import numpy as np
  records_ = np.asarray(record_indices, np.uint64)[:, None, None]
  positions = np.arange(max_predictions_per_seq, dtype=np.uint64)[None, :, None]
  draws = np.arange(num_samples, dtype=np.uint64)[None, None, :]
  with np.errstate(over="ignore"):
    state = _splitmix64(np.uint64(key) ^ _splitmix64(records_))
    state = _splitmix64(state ^ ((positions << np.uint64(32)) | draws))
  uniforms = (state >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
  return uniforms  # 24 random bits: exact in float32, at most 1 - 2^-24


def compact_samples(sampled_ids, k):
  """The distinct ids of each row of draws, most frequent first, in k slots.

  Ties in count go to the id drawn first: the draws are independent, so
  among ids drawn equally often that is a uniformly random one, and the k
  kept after an overflow are not biased towards any part of the
  vocabulary. Rows with more than k distinct ids keep the k most frequent
  (the reader renormalises by the kept counts).

  Args:
    sampled_ids: int [R, N], N draws per row, in draw order.
    k: slots per row.

  Returns:
    (ids int64 [R, k], counts int64 [R, k], dropped int64 [R]: draws not
    kept), padded with id 0 and count 0.
  """
  import numpy as np
  rows, n = sampled_ids.shape
  draws = sampled_ids.astype(np.int64)
  order = np.argsort(draws, axis=1, kind="stable")  # [R, N]
  ordered = np.take_along_axis(draws, order, axis=1)
  starts = np.ones((rows, n), bool)
  starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
  # Run r of a row: its id, count and first draw, placed at index r.
  run_index = np.cumsum(starts, axis=1) - 1  # [R, N]
  row_index = np.repeat(np.arange(rows), n).reshape(rows, n)
  counts = np.zeros((rows, n), np.int64)
  np.add.at(counts, (row_index, run_index), 1)
  run_ids = np.zeros((rows, n), np.int64)
  run_ids[row_index[starts], run_index[starts]] = ordered[starts]
  first_draw = np.full((rows, n), n, np.int64)  # empty runs: last
  # The stable sort puts each id's earliest draw first in its run.
  first_draw[row_index[starts], run_index[starts]] = order[starts]
  rank = np.lexsort((first_draw, -counts), axis=1)  # most frequent first
  counts = np.take_along_axis(counts, rank, axis=1)
  run_ids = np.take_along_axis(run_ids, rank, axis=1)
  if n < k:
    counts = np.pad(counts, [(0, 0), (0, k - n)])
    run_ids = np.pad(run_ids, [(0, 0), (0, k - n)])
  dropped = n - counts[:, :k].sum(axis=1)
  return run_ids[:, :k], counts[:, :k], dropped
