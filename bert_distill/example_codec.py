"""The tf.train.Example wire format, written and read without TensorFlow.

  PretrainingExampleEncoder  one pretraining instance -> Example bytes, padded
                             as Google pads (stage III-b, per instance)
  ExampleBatchEncoder        {name: [B, ...] array} -> B Example strings,
                             encoded a feature at a time with NumPy (B = batch)
  decode_example             Example bytes -> {name: values} (any writer's)

Both encoders write what protobuf writes (packed lists, the entries in the
order given; PretrainingExampleEncoder's in sorted key order, as protobuf's
deterministic serialization), checked against `serialize_example`, which is
protobuf's own serializer (tf.train.Example): the reference, and the writer
where speed does not matter (classifier_data.py, tests, benches). Which
features are floats and which int64s comes from records.py.

TensorFlow and NumPy are imported inside the functions that use them: stage
III-b's worker processes use only the encoder, the framing (tfrecord.py) and
the names, and start in 0.1 s and 20 MB instead of 4.5 s and 600 MB.
"""

import functools
import struct

from bert_distill.records import FLOAT_FEATURES
from bert_distill.records import INPUT_IDS
from bert_distill.records import INPUT_MASK
from bert_distill.records import MASKED_LM_IDS
from bert_distill.records import MASKED_LM_POSITIONS
from bert_distill.records import MASKED_LM_WEIGHTS
from bert_distill.records import NEXT_SENTENCE_LABELS
from bert_distill.records import PRETRAINING_FEATURES
from bert_distill.records import SEGMENT_IDS


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
  """[(name, kind, values)] for each feature of a serialized Example.

  Raises:
    ValueError: the bytes are not a tf.train.Example (another protobuf,
      or none: a TFRecord file can hold anything).
  """
  try:
    return list(_example_feature_items(serialized, float_array))
  except (TypeError, IndexError, KeyError, UnicodeDecodeError) as e:
    raise ValueError(f"not a tf.train.Example ({type(e).__name__} while "
                     f"parsing it)") from None


def _example_feature_items(serialized, float_array):
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
