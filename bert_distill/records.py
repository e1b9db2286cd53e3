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

and, in task distillation's training records (run_classifier.py with a
teacher), C = num_labels (1 for regression):

  teacher_logits                          float  [C]  the teacher's outputs
  label_weight                            float  [1]  1 labeled, 0 unlabeled

Every reader parses with the specs below, so no script repeats a feature
spec. The wire format is written here once, without TensorFlow:

  PretrainingExampleEncoder  one pretraining instance -> Example bytes, padded
                             as Google pads (stage III-b, per instance)
  ExampleBatchEncoder        {name: [B, ...] array} -> B Example strings,
                             encoded a feature at a time with NumPy (B = batch)
  decode_example             Example bytes -> {name: values} (any writer's)
  TFRecordWriter, write_tfrecords, read_tfrecords, count_records
                             the TFRecord framing (length, data, CRC32C each)

Both encoders write what protobuf writes (packed lists, the entries in the
order given; PretrainingExampleEncoder's in sorted key order, as protobuf's
deterministic serialization), checked against `serialize_example`, which is
protobuf's own serializer (tf.train.Example): the reference, and the writer
where speed does not matter (classifier_data.py, tests, benches).

TensorFlow and NumPy are imported inside the functions that use them: stage
III-b's worker processes use only the encoder, the framing and the names
above, and start in 0.1 s and 20 MB instead of 4.5 s and 600 MB.
"""

import contextlib
import functools
import itertools
import mmap
import os
import struct

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


def task_distillation_feature_spec(max_seq_length, num_labels,
                                   is_regression=False):
  """Returns the parse spec of a task distillation training record: a
  classifier record plus `teacher_logits` float [C] (C = num_labels, 1 for
  regression) and `label_weight` float [1] (1 labeled, 0 unlabeled)."""
  import tensorflow as tf
  return {**classifier_feature_spec(max_seq_length, is_regression),
          TEACHER_LOGITS: tf.io.FixedLenFeature([num_labels], tf.float32),
          LABEL_WEIGHT: tf.io.FixedLenFeature([1], tf.float32)}


def serialize_example(features):
  """Serializes {name: 1-D sequence of numbers} to a tf.train.Example string.

  Features named in FLOAT_FEATURES are written as float lists, every other one
  as an int64 list, as Google's tools write them. Insertion order is kept.
  This is protobuf's own serializer (it loads TensorFlow): the reference the
  encoders below are tested against, and a writer for tests and benches.
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


def read_first_example(path):
  """Returns the first record of a TFRecord file, decoded, or None if empty.

  Raises:
    ValueError: the file cannot be read as TFRecords (names the file).
  """
  for serialized in read_tfrecords(path):
    return decode_example(serialized)
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
    ValueError: the record holds another P than max_predictions_per_seq,
      the features of two modes, or a label feature whose length is not a
      multiple of P (names `path`).
  """
  positions = example.get(MASKED_LM_POSITIONS)
  if positions is not None and len(positions) != max_predictions_per_seq:
    raise ValueError(
        f"{path}: records hold P = {len(positions)} masked positions "
        f"(masked_lm_positions) but --max_predictions_per_seq is "
        f"{max_predictions_per_seq}; set --max_predictions_per_seq="
        f"{len(positions)} to match the records")
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


# ---------------------------------------------------------------------------
# The tf.train.Example wire format, written and read without TensorFlow.
#
#   Example  { features: 1 -> Features }
#   Features { feature: 1 -> repeated map entry { key: 1 -> name,
#                                                 value: 2 -> Feature } }
#   Feature  { bytes_list: 1 | float_list: 2 | int64_list: 3 -> { value: 1 } }
#
# Every field here is length-delimited (tag byte, varint length, payload);
# values are packed: little-endian float32s, or int64 varints (a negative one
# as 10 bytes, its two's complement).

# Feature's field tags: float_list is field 2, int64_list field 3.
_FLOAT_LIST_TAG = b"\x12"
_INT64_LIST_TAG = b"\x1a"


def varint(value):
  """The protobuf base-128 varint of a non-negative int, as bytes."""
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def packed_varints(values):
  """Varint-encodes int64 [B, N] row by row, with NumPy.

  Negatives take 10 bytes, as protobuf writes them.

  Returns:
    (the bytes of all rows in order, each row's byte length [B]).
  """
  import numpy as np
  u = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
  shifts = np.arange(10, dtype=np.uint64) * np.uint64(7)
  groups = (u[..., None] >> shifts) & np.uint64(0x7F)  # [B, N, 10]
  sizes = np.ones(u.shape, np.int64)  # [B, N]
  for i in range(1, 10):
    sizes += (u >> np.uint64(7 * i)) != 0
  index = np.arange(10)
  groups |= (index < sizes[..., None] - 1).astype(np.uint64) << np.uint64(7)
  data = groups[index < sizes[..., None]].astype(np.uint8).tobytes()
  return data, sizes.sum(axis=-1)


def _field(tag, payload):
  """A length-delimited protobuf field: tag byte, varint length, payload."""
  return tag + varint(len(payload)) + payload


@functools.lru_cache(maxsize=None)
def feature_entry_prefix(name, payload_size):
  """The bytes of the Features map entry {name: Feature} before its values.

  The entry of a packed list of payload_size bytes is this prefix followed
  by the payload. It depends only on the name and the payload's size, so it
  is computed once for each. An empty list has no packed field, as protobuf
  writes it.
  """
  tag = _FLOAT_LIST_TAG if name in FLOAT_FEATURES else _INT64_LIST_TAG
  # FloatList/Int64List { value: 1 -> packed }, then the Feature around it.
  list_header = b"\x0a" + varint(payload_size) if payload_size else b""
  list_size = len(list_header) + payload_size
  feature_header = tag + varint(list_size)
  feature_size = len(feature_header) + list_size
  # The map entry { key: 1 -> name, value: 2 -> Feature }.
  entry_header = _field(b"\x0a", name.encode()) + b"\x12" + varint(feature_size)
  entry_size = len(entry_header) + feature_size
  return (b"\x0a" + varint(entry_size) + entry_header + feature_header +
          list_header)


class PretrainingExampleEncoder:
  """Encodes pretraining instances as tf.train.Example bytes, one at a time.

  The features are PRETRAINING_FEATURES, padded as Google pads them:
  input_ids/input_mask/segment_ids to max_seq_length [L], the masked-LM
  fields to max_predictions_per_seq [P]. The bytes are what protobuf's
  deterministic serialization writes (map keys in sorted order, packed
  lists), so every run and worker count writes the same file.

  Built for stage III-b's inner loop, from plain lists of ints: varints come
  from a table, and the entries that take few distinct values (input_mask,
  masked_lm_weights, next_sentence_labels) are kept whole.
  """

  def __init__(self, max_seq_length, max_predictions_per_seq, vocab_size):
    self.max_seq_length = max_seq_length
    self.max_predictions_per_seq = max_predictions_per_seq
    # Ids, positions and lengths up to the largest possible Example body.
    self.varints = [varint(v) for v in range(
        max(vocab_size, 5 * max_seq_length + 10 * max_predictions_per_seq +
            256) + 1)]
    self.prefixes = {name: {} for name in PRETRAINING_FEATURES}
    length, preds = max_seq_length, max_predictions_per_seq
    self.mask_entries = [
        self.entry(INPUT_MASK, b"\x01" * n + b"\x00" * (length - n))
        for n in range(length + 1)]
    self.weight_entries = [
        self.entry(MASKED_LM_WEIGHTS,
                   struct.pack("<f", 1.0) * n + b"\x00" * 4 * (preds - n))
        for n in range(preds + 1)]
    self.label_entries = [self.entry(NEXT_SENTENCE_LABELS, b"\x00"),
                          self.entry(NEXT_SENTENCE_LABELS, b"\x01")]
    self.zeros = b"\x00" * (length + 1)
    self.ones = b"\x01" * (length + 1)
    # encode() writes the entries in protobuf's deterministic (sorted) order.
    assert sorted(PRETRAINING_FEATURES) == [
        INPUT_IDS, INPUT_MASK, MASKED_LM_IDS, MASKED_LM_POSITIONS,
        MASKED_LM_WEIGHTS, NEXT_SENTENCE_LABELS, SEGMENT_IDS]

  def entry(self, name, payload):
    """The map entry {name: Feature} of a packed list, as bytes."""
    # feature_entry_prefix's, kept in plain dicts: the inner loop's lookup.
    prefixes = self.prefixes[name]
    prefix = prefixes.get(len(payload))
    if prefix is None:
      prefix = prefixes[len(payload)] = feature_entry_prefix(name, len(payload))
    return prefix + payload

  def encode(self, tokens, len_a, masked_positions, masked_ids,
             is_random_next):
    """Returns the serialized Example of one instance.

    Args:
      tokens: [num_tokens] ids of [CLS] A [SEP] B [SEP] after masking.
      len_a: the number of tokens in A.
      masked_positions: [num_masked] sorted positions of predicted tokens.
      masked_ids: [num_masked] their original ids.
      is_random_next: whether B was taken from a random document.
    """
    varints = self.varints.__getitem__
    zeros = self.zeros
    num_tokens = len(tokens)
    seq_pad = self.max_seq_length - num_tokens
    pred_pad = b"\x00" * (self.max_predictions_per_seq - len(masked_positions))
    entry = self.entry
    body = b"".join((
        entry(INPUT_IDS, b"".join(map(varints, tokens)) + zeros[:seq_pad]),
        self.mask_entries[num_tokens],
        entry(MASKED_LM_IDS, b"".join(map(varints, masked_ids)) + pred_pad),
        entry(MASKED_LM_POSITIONS,
              b"".join(map(varints, masked_positions)) + pred_pad),
        self.weight_entries[len(masked_positions)],
        self.label_entries[is_random_next],
        entry(SEGMENT_IDS,
              zeros[:len_a + 2] + self.ones[:num_tokens - len_a - 2] +
              zeros[:seq_pad]),
    ))
    return b"\x0a" + self.varints[len(body)] + body


class ExampleBatchEncoder:
  """Serializes batches of features into tf.train.Example strings.

  Gives the same protos as serialize_example (FLOAT_FEATURES as packed
  floats, the rest as packed int64 varints, the entries in the order of
  `names`) but encodes each feature of a whole batch with NumPy; per example
  only byte strings are joined.
  """

  def __init__(self, names):
    self.names = tuple(names)

  def encode(self, features):
    """{name: [B, ...] array} -> a list of B serialized Examples."""
    import numpy as np
    columns = []  # [(name, bytes of every row, row byte sizes [B])]
    for name in self.names:
      values = np.asarray(features[name])
      rows = values.shape[0]
      if name in FLOAT_FEATURES:
        width = 4 * (values.size // rows if rows else 0)
        data = np.ascontiguousarray(values, dtype="<f4").tobytes()
        sizes = [width] * rows
      else:
        data, sizes = packed_varints(values.reshape(rows, -1))
        sizes = sizes.tolist()
      columns.append((name, data, sizes))
    serialized = []
    offsets = [0] * len(columns)
    for row in range(len(columns[0][2]) if columns else 0):
      parts = []
      for c, (name, data, sizes) in enumerate(columns):
        size = sizes[row]
        parts.append(feature_entry_prefix(name, size))
        parts.append(data[offsets[c]:offsets[c] + size])
        offsets[c] += size
      body = b"".join(parts)
      serialized.append(b"\x0a" + varint(len(body)) + body)
    return serialized


def _read_varint(data, position):
  """Returns (value, next position) of the varint at data[position]."""
  value = shift = 0
  while True:
    byte = data[position]
    position += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if byte < 0x80:
      return value, position


def _fields(data):
  """Yields (field number, wire type, value) of a protobuf message's fields.

  value is an int for a varint, bytes for the others.
  """
  position = 0
  while position < len(data):
    key, position = _read_varint(data, position)
    wire_type = key & 7
    if wire_type == 0:
      value, position = _read_varint(data, position)
    elif wire_type == 2:
      length, position = _read_varint(data, position)
      value = data[position:position + length]
      position += length
    elif wire_type in (1, 5):  # fixed64, fixed32
      size = 8 if wire_type == 1 else 4
      value = data[position:position + size]
      position += size
    else:
      raise ValueError(f"not a tf.train.Example: wire type {wire_type}")
    yield key >> 3, wire_type, value


def _int64(value):
  """A varint read as protobuf's int64 (two's complement)."""
  return value - (1 << 64) if value >= 1 << 63 else value


def _feature_values(feature, float_array=None):
  """Returns (kind, values) of one serialized Feature: kind is "bytes",
  "float" or "int64"; an empty Feature reads as an empty int64 list.

  float_array: a function of packed little-endian float32 bytes (NumPy's
  frombuffer: P * vocab_size floats at C speed); without it floats are a list.
  """
  kind, values = 3, []
  for kind, _, value_list in _fields(feature):
    values = []
    for number, wire_type, value in _fields(value_list):
      if number != 1:
        continue
      if kind == 1:
        values.append(bytes(value))
      elif kind == 2:
        if float_array is not None:
          values.append(float_array(value))
        else:
          values.extend(struct.unpack(f"<{len(value) // 4}f", value))
      elif wire_type == 0:  # An unpacked int64.
        values.append(_int64(value))
      else:
        position = 0
        while position < len(value):
          number, position = _read_varint(value, position)
          values.append(_int64(number))
  return {1: "bytes", 2: "float", 3: "int64"}[kind], values


def _example_features(serialized, float_array=None):
  """Yields (name, kind, values) for each feature of a serialized Example."""
  for _, _, features in _fields(serialized):
    for _, _, entry in _fields(features):
      name, feature = "", b""
      for number, _, value in _fields(entry):
        if number == 1:
          name = value.decode()
        elif number == 2:
          feature = value
      yield (name, *_feature_values(feature, float_array))


def decode_example_lists(serialized):
  """Parses a serialized tf.train.Example into {name: list of values}.

  Any writer's Example (packed or not). Needs neither TensorFlow nor NumPy,
  so stage III-b's workers log their first examples with it.
  """
  return {name: values for name, _, values in _example_features(serialized)}


def decode_example(serialized):
  """Parses one serialized tf.train.Example into {name: np.ndarray} (any lengths).

  Floats come back float32, integers int64, bytes as a list of bytes.
  """
  import numpy as np
  float_array = lambda packed: np.frombuffer(packed, "<f4")
  decoded = {}
  for name, kind, values in _example_features(serialized, float_array):
    if kind == "float":  # A new, writable array (frombuffer's are views).
      decoded[name] = np.concatenate(
          values or [np.zeros(0, np.float32)]).astype(np.float32)
    elif kind == "int64":
      decoded[name] = np.array(values, dtype=np.int64)
    else:
      decoded[name] = values
  return decoded


# ---------------------------------------------------------------------------
# TFRecord framing, as tf.io.TFRecordWriter writes it (uncompressed): per
# record, its length (uint64 LE), the length's masked CRC32C (uint32 LE), the
# data, the data's masked CRC32C.

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")  # length, its masked CRC


def _load_crc32c():
  """google_crc32c's C implementation, or None (then TensorFlow frames)."""
  try:
    import google_crc32c  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return google_crc32c if google_crc32c.implementation == "c" else None


def _masked_crc(crc32c, data):
  """The TFRecord checksum: crc32c rotated right by 15 plus a constant."""
  crc = crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _open(path, mode):
  """A local path through open, others (gs://...) through tf.io.gfile."""
  if "://" in path:
    import tensorflow as tf
    return tf.io.gfile.GFile(path, mode)
  return open(path, mode)


class TFRecordWriter:
  """Writes records to a TFRecord file, the bytes of tf.io.TFRecordWriter.

  Frames them itself when google_crc32c's C code is installed (no
  TensorFlow); otherwise hands them to TensorFlow's writer. A context
  manager, like TensorFlow's.
  """

  def __init__(self, path):
    crc32c = _load_crc32c()
    if crc32c is None:
      import tensorflow as tf
      self._file = tf.io.TFRecordWriter(path)
      self.write = self._file.write
    else:
      self._file = _open(path, "wb")
      self._crc = lambda data: _CRC.pack(_masked_crc(crc32c, data))

  def write(self, record):
    """Appends one record (bytes)."""
    length = _LENGTH.pack(len(record))
    crc = self._crc
    self._file.write(length + crc(length) + record + crc(record))

  def close(self):
    self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *unused_exception):
    self.close()


def write_tfrecords(path, serialized_records):
  """Writes the records, in order, as one TFRecord file."""
  with TFRecordWriter(path) as writer:
    write = writer.write
    for record in serialized_records:
      write(record)


def read_tfrecords(path):
  """Yields the records of a TFRecord file, checking both checksums of each.

  Without google_crc32c's C code, TensorFlow reads them.

  Raises:
    ValueError: a truncated or corrupt file, or one that is not TFRecords;
      the one-line message names the file and the record's offset.
  """
  crc32c = _load_crc32c()
  if crc32c is None:
    yield from _read_tfrecords_with_tensorflow(path)
    return
  with _open(path, "rb") as f:
    offset = 0
    while True:
      header = f.read(12)
      if not header:
        return
      problem = None
      if len(header) < 12:
        problem = "truncated record header"
      else:
        length = header[:8]
        if _CRC.unpack(header[8:])[0] != _masked_crc(crc32c, length):
          problem = "corrupt record length"
      if problem is None:
        (size,) = _LENGTH.unpack(length)
        record = f.read(size)
        footer = f.read(4)
        if len(record) < size or len(footer) < 4:
          problem = "truncated record"
        elif _CRC.unpack(footer)[0] != _masked_crc(crc32c, record):
          problem = "corrupt record data"
      if problem:
        raise ValueError(f"{path}: not a readable TFRecord file ({problem} "
                         f"at byte {offset})")
      yield record
      offset += 16 + size


def _read_tfrecords_with_tensorflow(path):
  """read_tfrecords through tf.data, with the same one-line errors."""
  import tensorflow as tf
  try:
    for record in tf.data.TFRecordDataset(path):
      yield record.numpy()
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"{path}: not a readable TFRecord file "
                     f"({type(e).__name__}: {str(e).splitlines()[0]})") from None


def count_records(paths, limit=None, check_data=False):
  """The number of records in the TFRecord files `paths` together, counting
  no further than `limit` (None: all of them).

  Reads each record's 12-byte header, checks its length's CRC and seeks over
  the data and the data's CRC: one small read per record whatever its size
  (a record of label mode `full` is megabytes). The data's CRC is left to
  the reader that uses the records (tf.data and read_tfrecords check it),
  unless check_data: then every record is read whole and both CRCs checked
  (stage IV checks its inputs so before it opens its output). Files past
  the limit are not opened, records past it not read, as tf.data's
  take(limit) reads. Without google_crc32c's C code TensorFlow reads the
  files whole.

  Raises:
    ValueError: a truncated or corrupt file, or one that is not TFRecords;
      the one-line message starts with the file's path and names the
      record's offset.
  """
  if isinstance(paths, str):
    raise TypeError(f"count_records takes a list of paths, not {paths!r}")
  crc32c = _load_crc32c()
  count = 0
  for path in paths:
    most = None if limit is None else limit - count
    if most == 0:
      break
    if check_data or crc32c is None:
      count += sum(1 for _ in itertools.islice(read_tfrecords(path), most))
    else:
      count += _count_file_records(path, crc32c, most)
  return count


def _count_file_records(path, crc32c, most):
  """count_records of one file, its headers only, up to `most` records."""
  with _open(path, "rb") as f, contextlib.ExitStack() as stack:
    if "://" in path:
      import tensorflow as tf
      size = tf.io.gfile.stat(path).length

      def header_at(offset):
        f.seek(offset)
        return f.read(12)
    else:  # Mapped: a header is a slice, no read or seek call (2x faster).
      size = os.fstat(f.fileno()).st_size
      view = stack.enter_context(
          mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) if size else b""
      header_at = lambda offset: view[offset:offset + 12]
    offset = count = 0
    while offset < size and (most is None or count < most):
      header = header_at(offset)
      problem = None
      if len(header) < 12:
        problem = "truncated record header"
      else:
        length, length_crc = _HEADER.unpack(header)
        end = offset + 16 + length
        if length_crc != _masked_crc(crc32c, header[:8]):
          problem = "corrupt record length"
        elif end > size:
          problem = "truncated record"
      if problem:
        raise ValueError(f"{path}: not a readable TFRecord file ({problem} "
                         f"at byte {offset})")
      count += 1
      offset = end
  return count
