"""extract_teacher_labels_truncated.py, run as users run it (one process per
command line, forked after a single shared TensorFlow import by
preloaded_runner.py, all at once), checked against an independent NumPy
forward pass of the checkpoint the test writes in Google's names."""
import os

import numpy as np
import pytest
import tensorflow as tf

from bert_distill import example_codec
from bert_distill import label_settings
from bert_distill import records
import bert_reference as ref
import stage_runs
from conftest import ROOT
from conftest import ORIGINAL_RECORDS

SCRIPT = os.path.join(ROOT, "extract_teacher_labels_truncated.py")
L, P = 32, 5  # the tiny records' max_seq_length and max_predictions_per_seq
# The original's records: real ids need the real vocabulary size.
WIDE_CONFIG = dict(ref.TINY_CONFIG, vocab_size=30522,
                   max_position_embeddings=128)


def _write_teacher(directory, config, seed, drop=None):
  """A teacher as Google ships one, with a pretraining checkpoint's extras."""
  return ref.write_model_dir(directory, config, seed, global_step=1000,
                             drop=drop)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Builds every input, runs every invocation concurrently, returns results."""
  base = tmp_path_factory.mktemp("teacher")
  tiny_config, tiny_ckpt, tiny_weights = _write_teacher(str(base / "tiny"),
                                                        ref.TINY_CONFIG, seed=1)
  wide_config, wide_ckpt, wide_weights = _write_teacher(str(base / "wide"),
                                                        WIDE_CONFIG, seed=2)
  _, partial_ckpt, _ = _write_teacher(
      str(base / "partial"), ref.TINY_CONFIG, seed=3,
      drop="bert/encoder/layer_1/output/dense/kernel")
  vocab = base / "vocab.txt"
  vocab.write_text("".join(f"t{i}\n" for i in range(99)))
  short_vocab = base / "short_vocab.txt"
  short_vocab.write_text("".join(f"t{i}\n" for i in range(98)))

  v = ref.TINY_CONFIG["vocab_size"]
  a = ref.random_pretraining_examples(13, L, P, v, seed=1)
  b = ref.random_pretraining_examples(6, L, P, v, seed=2)
  ref.write_records(base / "a.tfrecord", a)
  ref.write_records(base / "b.tfrecord", b)
  shard_dir = base / "shards"
  shard_dir.mkdir()
  for i in range(3):
    ref.write_records(shard_dir / f"part_{i}.tfrecord",
                      ref.random_pretraining_examples(3, L, P, v, seed=10 + i))
  out_dir = base / "labelled"
  out_dir.mkdir()
  (out_dir / "part_0.tfrecord").write_bytes(b"complete from an earlier run")
  ref.write_records(base / "long.tfrecord",
                    ref.random_pretraining_examples(2, L + 8, P, v))
  ref.write_records(base / "few_preds.tfrecord",
                    ref.random_pretraining_examples(2, L, P - 1, v))
  ref.write_records(base / "later_bad.tfrecord",
                    a[:3] + ref.random_pretraining_examples(1, L + 8, P, v))
  ref.write_records(base / "big_ids.tfrecord",
                    ref.random_pretraining_examples(2, L, P, v + 50, seed=5))
  good = open(base / "a.tfrecord", "rb").read()
  (base / "corrupt.tfrecord").write_bytes(good[:len(good) // 2] + b"\x07" * 40)
  (base / "same.tfrecord").write_bytes(good)
  (base / "empty.tfrecord").write_bytes(b"")
  err_dir = base / "errors"
  err_dir.mkdir()

  tiny = [f"--bert_config_file={tiny_config}",
          f"--max_seq_length={L}", f"--max_predictions_per_seq={P}",
          "--batch_size=4", "--progress_interval=0"]
  invocations = {
      "top_k": tiny + [f"--init_checkpoint={tiny_ckpt}",
                       f"--input_file={base}/a.tfrecord,{base}/b.tfrecord",
                       f"--output_file={base}/top_k.tfrecord",
                       "--truncation_factor=5", f"--vocab_file={vocab}"],
      "full": tiny + [f"--init_checkpoint={os.path.dirname(tiny_ckpt)}",
                      f"--input_file={base}/a.tfrecord",
                      f"--output_file={base}/full.tfrecord",
                      "--truncation_factor=0", "--use_xla=false",
                      "--length_multiple=0"],
      "full_bfloat16": tiny + [f"--init_checkpoint={tiny_ckpt}",
                               f"--input_file={base}/a.tfrecord",
                               f"--output_file={base}/full_bf16.tfrecord",
                               "--truncation_factor=0", "--use_xla=false",
                               "--precision=mixed_bfloat16"],
      "original": [f"--bert_config_file={wide_config}",
                   f"--init_checkpoint={wide_ckpt}",
                   f"--input_file={ORIGINAL_RECORDS}",
                   f"--output_file={base}/original.tfrecord",
                   "--max_seq_length=128", "--max_predictions_per_seq=20",
                   "--batch_size=4", "--truncation_factor=10"],
      "shards": tiny + [f"--init_checkpoint={tiny_ckpt}",
                        f"--input_file={shard_dir}/part_*.tfrecord",
                        f"--output_dir={out_dir}", "--num_shards=2",
                        "--shard_index=0", "--truncation_factor=3"],
  }
  invocations["empty"] = tiny + [f"--init_checkpoint={tiny_ckpt}",
                                 f"--input_file={base}/empty.tfrecord",
                                 f"--output_file={base}/empty_out.tfrecord"]
  error_cases = {
      "no_input": ("--input_file", [f"--input_file={base}/none_*.tfrecord"]),
      "no_checkpoint": (f"{base}/nowhere",
                        [f"--init_checkpoint={base}/nowhere/bert_model.ckpt"]),
      "missing_variable": ("bert/encoder/layer_1/output/dense/kernel",
                           [f"--init_checkpoint={partial_ckpt}"]),
      "seq_length": ("--max_seq_length=40",
                     [f"--input_file={base}/long.tfrecord"]),
      "predictions": ("--max_predictions_per_seq=4",
                      [f"--input_file={base}/few_preds.tfrecord"]),
      "corrupt": ("corrupt.tfrecord", [f"--input_file={base}/corrupt.tfrecord"]),
      "later_record": ("later_bad.tfrecord: bad record",
                       [f"--input_file={base}/later_bad.tfrecord"]),
      "ids_outside_vocab": ("vocab_size 99",
                            [f"--input_file={base}/big_ids.tfrecord"]),
      "k_too_large": ("--truncation_factor 100", ["--truncation_factor=100"]),
      "vocab_size": ("98 tokens", [f"--vocab_file={short_vocab}"]),
      "precision": ("--precision", ["--precision=bfloat16"]),
      "use_xla": ("--use_xla", ["--use_xla=maybe"]),
      "output_is_input": ("--output_file", [
          f"--input_file={base}/same.tfrecord",
          f"--output_file={base}/same.tfrecord"]),
      "input_twice": ("twice", [
          f"--input_file={base}/a.tfrecord,{base}/../{base.name}/a.tfrecord"]),
  }
  for name, (_, overrides) in error_cases.items():
    defaults = {"--init_checkpoint": tiny_ckpt,
                "--input_file": f"{base}/a.tfrecord",
                "--output_file": f"{err_dir}/{name}.tfrecord"}
    for flag in overrides:
      defaults.pop(flag.split("=")[0], None)
    invocations[name] = tiny + [f"{k}={x}" for k, x in defaults.items()] + list(
        overrides)

  results = stage_runs.run_all(
      {name: [SCRIPT] + args for name, args in invocations.items()},
      str(base / "logs"))
  return {"results": results, "base": base, "err_dir": err_dir,
          "out_dir": out_dir, "a": a, "b": b, "errors": error_cases,
          "tiny_weights": tiny_weights, "wide_weights": wide_weights}


def _check_ran(result):
  assert result.returncode == 0, result.stderr[-3000:]


def _stack(examples, name):
  return np.stack([e[name] for e in examples])


def _reference(weights, config, examples):
  """NumPy teacher probabilities at the masked positions.  [N, P, V]"""
  logits = ref.bert_forward(
      weights, config, _stack(examples, records.INPUT_IDS),
      _stack(examples, records.INPUT_MASK), _stack(examples, records.SEGMENT_IDS),
      _stack(examples, records.MASKED_LM_POSITIONS))["masked_lm_logits"]
  return ref.softmax(logits)


def test_top_k_equals_numpy_reference_in_input_order(runs):
  _check_ran(runs["results"]["top_k"])
  out = ref.read_records(runs["base"] / "top_k.tfrecord")
  inputs = runs["a"] + runs["b"]  # 13 + 6: partial last batches of 1 and 2
  assert len(out) == len(inputs)
  expected = _reference(runs["tiny_weights"], ref.TINY_CONFIG, inputs)
  ref.assert_top_k_matches(out, expected, k=5)


def test_top_k_properties(runs):
  _check_ran(runs["results"]["top_k"])
  out = ref.read_records(runs["base"] / "top_k.tfrecord")
  probs = _stack(out, records.TRUNCATED_PROBS).reshape(-1, 5)
  ids = _stack(out, records.TOP_K_INDICES).reshape(-1, 5)
  assert np.all(probs > 0) and np.all(probs <= 1)
  assert np.all(np.diff(probs, axis=-1) <= 0)
  assert np.all(probs.sum(axis=-1) <= 1 + 1e-6)
  assert np.all((ids >= 0) & (ids < ref.TINY_CONFIG["vocab_size"]))
  assert all(len(set(row)) == len(row) for row in ids.tolist())


def test_input_features_copied_exactly_and_spec_parses(runs):
  _check_ran(runs["results"]["top_k"])
  path = runs["base"] / "top_k.tfrecord"
  out = ref.read_records(path)
  for written, given in zip(out, runs["a"] + runs["b"]):
    assert set(written) == set(records.PRETRAINING_FEATURES) | {
        records.TRUNCATED_PROBS, records.TOP_K_INDICES}
    for name in records.PRETRAINING_FEATURES:
      np.testing.assert_array_equal(written[name], given[name])
  # The fast encoder's bytes are the same proto as example_codec.serialize_example's.
  for serialized, decoded in zip(tf.data.TFRecordDataset(str(path)), out):
    assert tf.train.Example.FromString(serialized.numpy()) == (
        tf.train.Example.FromString(example_codec.serialize_example(decoded)))
  spec = label_settings.LabelSettings(label_settings.TOP_K, 5).feature_spec(L, P)
  parsed = tf.io.parse_example(
      list(tf.data.TFRecordDataset(str(path)).batch(100))[0], spec)
  assert parsed[records.TOP_K_INDICES].shape == (19, P * 5)


def test_full_distribution_sums_to_one_and_matches_reference(runs):
  _check_ran(runs["results"]["full"])
  out = ref.read_records(runs["base"] / "full.tfrecord")
  v = ref.TINY_CONFIG["vocab_size"]
  assert [set(o) for o in out] == [set(records.PRETRAINING_FEATURES) | {
      records.FULL_PROBS}] * 13
  probs = _stack(out, records.FULL_PROBS).reshape(13, P, v)
  np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
  expected = _reference(runs["tiny_weights"], ref.TINY_CONFIG, runs["a"])
  np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)


def test_bfloat16_teacher_labels_match_float32_within_tolerance(runs):
  """--precision=mixed_bfloat16: the teacher's matmuls in bfloat16 (8
  significant bits), its softmax in float32. The tiny teacher's random
  weights (std 0.5) make sharper logits than a trained BERT's, so its
  rounding errors are larger; still: the labels are a float32 distribution,
  the mean KL(float32 || bfloat16) is under 2e-3 nats (measured 5.6e-4;
  the issue's goal for a trained BERT-Base is 0.01), and the most probable
  token agrees at >= 90% of positions (measured 95%) and at every position
  where float32's two most probable tokens are 0.02 or more apart."""
  _check_ran(runs["results"]["full_bfloat16"])
  out = ref.read_records(runs["base"] / "full_bf16.tfrecord")
  v = ref.TINY_CONFIG["vocab_size"]
  probs = _stack(out, records.FULL_PROBS).reshape(13, P, v)
  assert probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
  expected = _reference(runs["tiny_weights"], ref.TINY_CONFIG, runs["a"])
  kl = np.sum(expected * (np.log(expected) - np.log(probs)), axis=-1)
  assert 0.0 < kl.mean() < 2e-3, kl.mean()
  agree = probs.argmax(-1) == expected.argmax(-1)  # [13, P]
  assert agree.mean() >= 0.9, agree.mean()
  top2 = np.sort(expected, axis=-1)[..., -2:]
  assert agree[top2[..., 1] - top2[..., 0] >= 0.02].all()
  # Rounded, not merely equal to float32: bfloat16 really ran.
  assert np.abs(probs - expected).max() > 1e-5


def test_original_records_are_valid_input(runs):
  _check_ran(runs["results"]["original"])
  given = ref.read_records(ORIGINAL_RECORDS)
  out = ref.read_records(runs["base"] / "original.tfrecord")
  assert len(out) == len(given) == 11
  for written, original in zip(out, given):
    for name in records.PRETRAINING_FEATURES:
      np.testing.assert_array_equal(written[name], original[name])
  expected = _reference(runs["wide_weights"], WIDE_CONFIG, given)
  ref.assert_top_k_matches(out, expected, k=10)


def test_output_dir_takes_its_shard_and_redoes_an_output_of_unknown_origin(
    runs):
  """part_0.tfrecord has no record of what it was made from (made before
  stage IV kept one, or by something else): made again. The skip of an
  output made as now: tests/test_silent_failures.py."""
  _check_ran(runs["results"]["shards"])
  assert "no record of what it was made from" in (
      runs["results"]["shards"].stderr)
  out_dir = runs["out_dir"]
  assert sorted(os.listdir(out_dir)) == [
      "part_0.tfrecord", "part_0.tfrecord.made_from.json", "part_2.tfrecord",
      "part_2.tfrecord.made_from.json"]
  assert (out_dir / "part_0.tfrecord").read_bytes() != (
      b"complete from an earlier run")
  given = ref.read_records(runs["base"] / "shards" / "part_2.tfrecord")
  out = ref.read_records(out_dir / "part_2.tfrecord")
  assert len(out) == 3
  expected = _reference(runs["tiny_weights"], ref.TINY_CONFIG, given)
  ref.assert_top_k_matches(out, expected, k=3)


@pytest.mark.parametrize("case", ["no_input", "no_checkpoint",
                                  "missing_variable", "seq_length",
                                  "predictions", "corrupt", "later_record",
                                  "ids_outside_vocab", "k_too_large",
                                  "vocab_size", "precision", "use_xla",
                                  "output_is_input", "input_twice"])
def test_bad_input_one_line_error_and_no_output(runs, case):
  stage_runs.assert_one_line_error(runs["results"][case],
                                   runs["errors"][case][0])
  assert os.listdir(runs["err_dir"]) == []


def test_an_empty_input_is_said_and_gives_an_empty_output(runs):
  result = runs["results"]["empty"]
  _check_ran(result)
  assert f"{runs['base'] / 'empty.tfrecord'} holds no records" in result.stderr
  assert (runs["base"] / "empty_out.tfrecord").read_bytes() == b""


def test_an_output_file_that_is_the_input_is_refused_and_left_as_it_was(
    runs):
  assert "is an input" in runs["results"]["output_is_input"].stderr
  assert (runs["base"] / "same.tfrecord").read_bytes() == (
      runs["base"] / "a.tfrecord").read_bytes()
