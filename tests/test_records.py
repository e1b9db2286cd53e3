"""The shared record formats: round trips and the one-line length checks."""
import os

import numpy as np
import pytest
import tensorflow as tf

import records
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
    writer.write(records.serialize_example(features))
  spec = records.teacher_label_feature_spec(8, 3, 2)
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
                                 records.teacher_label_feature_spec(128, 20, 10))
  records.check_record_lengths(ORIGINAL_RECORDS,
                               records.pretraining_feature_spec(128, 20))


def test_corrupt_file_error_names_the_file(tmp_path):
  path = tmp_path / "corrupt.tfrecord"
  path.write_bytes(b"this is not a tfrecord file at all" * 3)
  with pytest.raises(ValueError, match="corrupt.tfrecord"):
    records.read_first_example(str(path))
