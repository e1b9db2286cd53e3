"""TFRecord files of tf.train.Examples, read and written without TensorFlow.

For the benches' PyTorch scripts, which do the stages' jobs on the same
files as the stages but should not load TensorFlow (its import and thread
pools would count against PyTorch). Handles what the project's records hold:
int64 and float lists (packed, as TensorFlow writes them; unpacked values
are read too).

TFRecord framing: uint64 length, uint32 masked CRC32C of the length, the
data, uint32 masked CRC32C of the data (little-endian).
"""

import struct

import google_crc32c
import numpy as np


def _masked_crc(data):
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
  """Yields the serialized records of a TFRecord file (CRCs checked)."""
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f"{path}: truncated record header")
      length, length_crc = struct.unpack("<QI", header)
      if _masked_crc(header[:8]) != length_crc:
        raise ValueError(f"{path}: corrupt record length")
      data = f.read(length)
      (data_crc,) = struct.unpack("<I", f.read(4))
      if len(data) < length or _masked_crc(data) != data_crc:
        raise ValueError(f"{path}: corrupt record")
      yield data


class RecordWriter:
  """Writes serialized records to a TFRecord file (a context manager)."""

  def __init__(self, path):
    self._file = open(path, "wb")

  def write(self, data):
    length = struct.pack("<Q", len(data))
    self._file.write(length + struct.pack("<I", _masked_crc(length)) + data +
                     struct.pack("<I", _masked_crc(data)))

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self._file.close()


def _varint(data, pos):
  """(value, next position) of the varint at data[pos]."""
  result = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7


def _fields(data, start=0, end=None):
  """Yields (field number, wire type, value or (start, end)) of a message."""
  pos, end = start, len(data) if end is None else end
  while pos < end:
    key, pos = _varint(data, pos)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(data, pos)
      yield field, wire, value
    elif wire == 2:
      size, pos = _varint(data, pos)
      yield field, wire, (pos, pos + size)
      pos += size
    elif wire == 5:
      yield field, wire, data[pos:pos + 4]
      pos += 4
    elif wire == 1:
      yield field, wire, data[pos:pos + 8]
      pos += 8
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")


def _int64_list(data, start, end):
  values = []
  for _, wire, value in _fields(data, start, end):
    if wire == 2:  # packed
      pos, stop = value
      while pos < stop:
        number, pos = _varint(data, pos)
        values.append(number)
    else:
      values.append(value)
  array = np.array(values, dtype=np.uint64)
  return array.view(np.int64)


def _float_list(data, start, end):
  chunks = []
  for _, wire, value in _fields(data, start, end):
    chunks.append(data[value[0]:value[1]] if wire == 2 else value)
  return np.frombuffer(b"".join(chunks), dtype="<f4").copy()


def decode_example(data):
  """A serialized tf.train.Example -> {name: np.ndarray} (int64 or float32)."""
  features = {}
  for _, _, (start, end) in _fields(data):  # Example.features
    for _, _, (entry_start, entry_end) in _fields(data, start, end):
      name, kind = None, None
      for field, _, value in _fields(data, entry_start, entry_end):
        if field == 1:
          name = bytes(data[value[0]:value[1]]).decode()
        elif field == 2:
          for list_field, _, (list_start, list_end) in _fields(
              data, value[0], value[1]):
            kind = (list_field, list_start, list_end)
      if kind is None:
        continue
      list_field, list_start, list_end = kind
      if list_field == 2:
        features[name] = _float_list(data, list_start, list_end)
      elif list_field == 3:
        features[name] = _int64_list(data, list_start, list_end)
  return features


def _encode_varint(value):
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _length_delimited(field, payload):
  return _encode_varint(field << 3 | 2) + _encode_varint(len(payload)) + payload


def encode_example(features, float_features):
  """{name: 1-D array} -> a serialized tf.train.Example (packed lists).

  Names in float_features become float lists, the rest int64 lists;
  insertion order is kept (as records.serialize_example writes them).
  """
  entries = []
  for name, values in features.items():
    values = np.asarray(values).reshape(-1)
    if name in float_features:
      payload = values.astype("<f4").tobytes()
      kind = 2
    else:
      payload = b"".join(_encode_varint(int(v) & 0xFFFFFFFFFFFFFFFF)
                         for v in values.astype(np.int64))
      kind = 3
    feature = _length_delimited(kind, _length_delimited(1, payload))
    entry = _length_delimited(1, name.encode()) + _length_delimited(2, feature)
    entries.append(_length_delimited(1, entry))
  return _length_delimited(1, b"".join(entries))
