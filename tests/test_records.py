"""The shared record formats: round trips and the one-line length checks."""
import os
import re
import struct

import numpy as np
import pytest
import tensorflow as tf

from bert_distill import example_codec
from bert_distill import label_settings
from bert_distill import records
from bert_distill import tfrecord
from conftest import ORIGINAL_RECORDS



def test_original_records_parse_with_the_pretraining_spec():
  spec = records.pretraining_feature_spec(128, 20)
  parsed = [tf.io.parse_single_example(r, spec)
            for r in tf.data.TFRecordDataset(ORIGINAL_RECORDS)]
  assert len(parsed) == 11
  for example in parsed:
    n_real = int(tf.reduce_sum(example["input_mask"]))
    assert example["input_ids"][0] == 101  # [CLS]
    assert example["input_ids"][n_real - 1] == 102  # [SEP]
    assert int(tf.reduce_sum(example["input_ids"][n_real:])) == 0
    assert int(example["next_sentence_labels"][0]) in (0, 1)


def test_serialize_then_parse_round_trip_keeps_values_and_types(tmp_path):
  rng = np.random.default_rng(0)
  features = {
      records.INPUT_IDS: rng.integers(0, 30522, 8),
      records.INPUT_MASK: np.ones(8, np.int64),
      records.SEGMENT_IDS: np.zeros(8, np.int64),
      records.MASKED_LM_POSITIONS: [1, 2, 0],
      records.MASKED_LM_IDS: [5, 6, 0],
      records.MASKED_LM_WEIGHTS: [1.0, 1.0, 0.0],
      records.NEXT_SENTENCE_LABELS: [1],
      records.TRUNCATED_PROBS: rng.random(6).astype(np.float32),
      records.TOP_K_INDICES: rng.integers(0, 30522, 6),
  }
  path = str(tmp_path / "r.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(example_codec.serialize_example(features))
  spec = label_settings.LabelSettings(label_settings.TOP_K, 2).feature_spec(8, 3)
  parsed = next(iter(tf.data.TFRecordDataset(path).map(
      lambda r: tf.io.parse_single_example(r, spec))))
  for name, values in features.items():
    np.testing.assert_array_equal(parsed[name].numpy(),
                                  np.asarray(values).astype(spec[name].dtype.as_numpy_dtype))
  decoded = records.read_first_example(path)
  assert decoded[records.MASKED_LM_WEIGHTS].dtype == np.float32
  assert decoded[records.TOP_K_INDICES].dtype == np.int64


def test_length_mismatch_names_file_feature_and_flag():
  with pytest.raises(ValueError) as error:
    records.check_record_lengths(ORIGINAL_RECORDS,
                                 records.pretraining_feature_spec(64, 20))
  message = str(error.value)
  assert "original_sample_records.tfrecord" in message
  assert "--max_seq_length=128" in message and "\n" not in message
  with pytest.raises(ValueError, match="--max_predictions_per_seq=20"):
    records.check_record_lengths(ORIGINAL_RECORDS,
                                 records.pretraining_feature_spec(128, 10))
  with pytest.raises(ValueError, match="truncated_masked_lm_probs"):
    records.check_record_lengths(ORIGINAL_RECORDS,
                                 label_settings.LabelSettings(
                                     label_settings.TOP_K, 10).feature_spec(
                                         128, 20))
  records.check_record_lengths(ORIGINAL_RECORDS,
                               records.pretraining_feature_spec(128, 20))


def test_corrupt_file_error_names_the_file(tmp_path):
  path = tmp_path / "corrupt.tfrecord"
  path.write_bytes(b"this is not a tfrecord file at all" * 3)
  with pytest.raises(ValueError, match="corrupt.tfrecord"):
    records.read_first_example(str(path))


@pytest.mark.parametrize("payload", [b"\x08\x05", b"\x0a\x02\x08",
                                     b"\x0a\x03\x0a\x01\x08"],
                         ids=["varint", "cut_short", "not_features"])
def test_a_record_that_is_not_an_example_names_the_file(tmp_path, payload):
  """A TFRecord file holds any bytes; one that is not a tf.train.Example
  is a one-line ValueError naming the file, not a TypeError from the
  decoder's insides."""
  path = str(tmp_path / "other.tfrecord")
  tfrecord.write_tfrecords(path, [payload])
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: record 0: not a tf.train.Example")):
    records.read_first_example(path)


def test_decoder_reads_protobufs_own_bytes_of_every_kind():
  """decode_example against protobuf's serializer: bytes, floats, negative
  int64s, packed and unpacked lists, an empty list."""
  example = tf.train.Example(features=tf.train.Features(feature={
      "ints": tf.train.Feature(int64_list=tf.train.Int64List(
          value=[0, 1, 127, 128, 300, -1, -2**63, 2**63 - 1])),
      "floats": tf.train.Feature(float_list=tf.train.FloatList(
          value=[0.0, -1.5, 3.25, 1e-30])),
      "strings": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[b"", b"abc"])),
      "empty": tf.train.Feature(int64_list=tf.train.Int64List(value=[])),
  }))
  decoded = example_codec.decode_example(example.SerializeToString())
  assert decoded["ints"].tolist() == [0, 1, 127, 128, 300, -1, -2**63,
                                      2**63 - 1]
  assert decoded["ints"].dtype == np.int64
  np.testing.assert_array_equal(
      decoded["floats"], np.array([0.0, -1.5, 3.25, 1e-30], np.float32))
  assert decoded["strings"] == [b"", b"abc"]
  assert decoded["empty"].size == 0
  # Unpacked repeated fields, as a proto2 writer may write them: an entry
  # {"i": int64_list [5, 7]} (field 1 as two varints) and {"f": [2.5]}.
  body = (b"\x0a\x0b" b"\x0a\x01i" b"\x12\x06" b"\x1a\x04" b"\x08\x05\x08\x07"
          b"\x0a\x0c" b"\x0a\x01f" b"\x12\x07" b"\x12\x05" b"\x0d" +
          struct.pack("<f", 2.5))
  parsed = tf.train.Example.FromString(b"\x0a" + bytes([len(body)]) + body)
  decoded = example_codec.decode_example_lists(b"\x0a" + bytes([len(body)]) + body)
  assert decoded == {"i": list(parsed.features.feature["i"].int64_list.value),
                     "f": list(parsed.features.feature["f"].float_list.value)}
  assert decoded == {"i": [5, 7], "f": [2.5]}


def test_batch_encoder_equals_protobuf_for_each_row():
  rng = np.random.default_rng(1)
  names = (records.INPUT_IDS, records.MASKED_LM_WEIGHTS, records.TOP_K_INDICES)
  features = {records.INPUT_IDS: rng.integers(0, 2**40, (5, 9)),
              records.MASKED_LM_WEIGHTS: rng.random((5, 3), np.float32),
              records.TOP_K_INDICES: rng.integers(-3, 3, (5, 2, 2))}
  serialized = example_codec.ExampleBatchEncoder(names).encode(features)
  assert len(serialized) == 5
  for row, data in enumerate(serialized):
    reference = example_codec.serialize_example(
        {name: features[name][row] for name in names})
    assert (tf.train.Example.FromString(data) ==
            tf.train.Example.FromString(reference))
    assert list(example_codec.decode_example(data)) == list(names)  # Their order.


def test_tfrecord_reader_and_count_equal_tensorflows(tmp_path, monkeypatch):
  path = str(tmp_path / "r.tfrecord")
  written = [b"", b"x", b"y" * 70000] + [bytes([i]) * i for i in range(50)]
  with tf.io.TFRecordWriter(path) as writer:
    for record in written:
      writer.write(record)
  assert list(tfrecord.read_tfrecords(path)) == written
  assert tfrecord.count_records([path]) == len(written)
  assert tfrecord.count_records([ORIGINAL_RECORDS]) == 11
  # Without google_crc32c's C code, TensorFlow reads: the same records.
  monkeypatch.setattr(tfrecord, "_load_crc32c", lambda: None)
  assert list(tfrecord.read_tfrecords(path)) == written
  assert tfrecord.count_records([path]) == len(written)


def tensorflow_count(paths, limit=None):
  """The independent count: tf.data's reader over the same files."""
  dataset = tf.data.TFRecordDataset(paths)
  if limit is not None:
    dataset = dataset.take(limit)
  return sum(1 for _ in dataset)


@pytest.fixture(name="record_files")
def fixture_record_files(tmp_path):
  """Three TFRecord files written by TensorFlow: 7, 0 and 40 records of
  0 to 70000 bytes."""
  sizes = [[0, 1, 70000, 5, 300, 2, 9], [], list(range(0, 4000, 100))]
  paths = []
  for i, lengths in enumerate(sizes):
    path = str(tmp_path / f"part-{i}.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      for n in lengths:
        writer.write(bytes([n % 251]) * n)
    paths.append(path)
  return paths


def test_count_records_of_files_and_limits_equals_tensorflows(record_files):
  assert tfrecord.count_records(record_files) == tensorflow_count(
      record_files) == 47
  for limit in (0, 1, 6, 7, 8, 30, 47, 48, 1000):
    assert tfrecord.count_records(record_files, limit) == tensorflow_count(
        record_files, limit), limit
    assert tfrecord.count_records(record_files, limit, check_data=True) == (
        tensorflow_count(record_files, limit)), limit
  assert tfrecord.count_records(record_files[::-1], 10) == 10
  assert tfrecord.count_records([]) == 0
  with pytest.raises(TypeError, match="list of paths"):
    tfrecord.count_records(record_files[0])


@pytest.mark.parametrize("cut", [2, 5, 3000, 3916 + 3816 - 5])
def test_count_records_of_a_truncated_file_names_it(record_files, cut):
  """The last file cut `cut` bytes before its end: in its last record's data
  CRC, its data, or (its last two records are 3916 and 3816 bytes framed)
  the header of the one before. Both readers count the records before the
  cut alike; on the whole file ours names the file."""
  path = record_files[2]
  data = open(path, "rb").read()
  open(path, "wb").write(data[:-cut])
  lengths = range(0, 4000, 100)
  survivors = 7 + sum(1 for i in range(len(lengths))
                      if sum(16 + n for n in lengths[:i + 1]) <= len(data) - cut)
  assert tfrecord.count_records(record_files, survivors) == (
      tensorflow_count(record_files, survivors)) == survivors
  for check_data in (False, True):
    with pytest.raises(ValueError, match=f"^{path}: not a readable TFRecord "
                       "file \\(truncated record"):
      tfrecord.count_records(record_files, check_data=check_data)
  if cut < 3916:
    with pytest.raises(tf.errors.DataLossError):
      tensorflow_count(record_files)
  else:  # TensorFlow's reader takes a partial header for the end of file.
    assert tensorflow_count(record_files) == survivors


@pytest.mark.parametrize("damage", ["truncate", "flip_data", "flip_length"])
def test_reader_names_the_file_of_a_damaged_record(tmp_path, damage):
  path = tmp_path / "damaged.tfrecord"
  tfrecord.write_tfrecords(str(path), [b"abc" * 10, b"def" * 10])
  data = bytearray(path.read_bytes())
  if damage == "truncate":
    data = data[:-5]
  elif damage == "flip_data":
    data[70] ^= 1  # In the second record's data (bytes 58 to 87).
  else:
    data[46] ^= 1  # The second record's length (bytes 46 to 53).
  path.write_bytes(bytes(data))
  problem = {"truncate": "truncated record", "flip_data": "corrupt record "
             "data", "flip_length": "corrupt record length"}[damage]
  message = f"^{path}: not a readable TFRecord file \\({problem} at byte 46\\)$"
  with pytest.raises(ValueError, match=message):
    list(tfrecord.read_tfrecords(str(path)))
  with pytest.raises(ValueError, match=message):
    tfrecord.count_records([str(path)], check_data=True)
  if damage == "flip_data":  # Left to the reader that uses the data.
    assert tfrecord.count_records([str(path)]) == 2
  else:
    with pytest.raises(ValueError, match=message):
      tfrecord.count_records([str(path)])
  assert tfrecord.count_records([str(path)], limit=1) == 1
