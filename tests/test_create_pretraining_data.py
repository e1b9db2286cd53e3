"""multifile_create_pretraining_data.py: Google's examples exactly, any worker count.

The golden records under tests/data/pretraining/ were written by Google's own
create_pretraining_data.py (PyPI bert-tensorflow 1.0.4) with
bench/verify_against_google.py: input file i with seed 7+i. Google's
published version has no whole-word masking; google_whole_word/ was written
by its pipeline with the masking function re-derived from the rules of its
later version (see the bench script).
"""
import glob
import json
import os
import random
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import ROOT, VOCAB_FILE
from bert_distill import example_codec
from bert_distill import pretraining_data
from bert_distill import records
from bert_distill import tfrecord
from stage_runs import assert_one_line_error
import tokenization

SCRIPT = os.path.join(ROOT, "multifile_create_pretraining_data.py")
DATA = os.path.join(ROOT, "tests", "data", "pretraining")
INPUT_DIR = os.path.join(DATA, "input")


def golden_settings(name):
  with open(os.path.join(DATA, name, "settings.json")) as f:
    return json.load(f)


def read_records(path, max_seq_length, max_predictions_per_seq):
  """Every record of a file, parsed by TensorFlow with the project's spec."""
  spec = records.pretraining_feature_spec(max_seq_length,
                                          max_predictions_per_seq)
  return [{k: v.numpy().tolist() for k, v in
           tf.io.parse_single_example(s, spec).items()}
          for s in tf.data.TFRecordDataset(path)]


def run_script(output_dir, *extra, input_dir=INPUT_DIR, settings=None,
               vocab_file=VOCAB_FILE):
  settings = settings or golden_settings("google_token")
  args = [sys.executable, SCRIPT, f"--input_dir={input_dir}",
          f"--output_dir={output_dir}", "--output_base_name=ours",
          f"--vocab_file={vocab_file}"]
  args += [f"--{k}={v}" for k, v in settings.items()]
  return subprocess.run(args + list(extra), capture_output=True, text=True,
                        cwd=ROOT, timeout=120)


@pytest.mark.parametrize("golden", ["google_token", "google_whole_word"])
def test_examples_equal_googles_for_each_file_with_seed_plus_index(
    tmp_path, golden):
  settings = golden_settings(golden)
  result = run_script(tmp_path, "--num_workers=1", settings=settings)
  assert result.returncode == 0, result.stderr
  length, preds = settings["max_seq_length"], settings["max_predictions_per_seq"]
  for i in range(2):
    ours = read_records(str(tmp_path / f"ours_{i}.tfrecord"), length, preds)
    google = read_records(os.path.join(DATA, golden, f"google_{i}.tfrecord"),
                          length, preds)
    assert len(ours) == len(google) > 30
    for n, (a, b) in enumerate(zip(ours, google)):
      assert a == b, f"file {i} example {n}"


def test_whole_word_golden_masks_whole_words():
  """The whole-word fixture exercises words of several pieces."""
  vocab = tokenization.load_vocab(VOCAB_FILE)
  inv = {i: t for t, i in vocab.items()}
  multi_piece_words = 0
  for i in range(2):
    for ex in read_records(
        os.path.join(DATA, "google_whole_word", f"google_{i}.tfrecord"), 32, 5):
      masked = [p for p, w in zip(ex["masked_lm_positions"],
                                  ex["masked_lm_weights"]) if w]
      labels = dict(zip(masked, ex["masked_lm_ids"]))
      for p in masked:
        if inv[labels[p]].startswith("##"):
          # A masked "##" piece is masked with the piece before it.
          assert p - 1 in labels or ex["input_ids"][p - 1] == vocab["[SEP]"]
          multi_piece_words += 1
  assert multi_piece_words >= 3


def test_one_and_two_workers_write_identical_files(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  assert run_script(one, "--num_workers=1").returncode == 0
  result = run_script(two, "--num_workers=2")
  assert result.returncode == 0, result.stderr
  for i in range(2):
    assert ((one / f"ours_{i}.tfrecord").read_bytes() ==
            (two / f"ours_{i}.tfrecord").read_bytes())
  assert not glob.glob(str(two / "*.tmp-*"))


def test_logs_first_examples_and_progress(tmp_path):
  result = run_script(tmp_path, "--num_workers=1")
  assert "tokens: [CLS]" in result.stderr
  assert "masked_lm_positions: " in result.stderr
  assert "text_1.txt -> ours_1.tfrecord: 5 documents, 47 instances" in (
      result.stderr)
  assert "files: 2/2 files" in result.stderr


def test_rerun_skips_complete_outputs_and_redoes_a_temporary_one(tmp_path):
  assert run_script(tmp_path, "--num_workers=1").returncode == 0
  first = (tmp_path / "ours_1.tfrecord").read_bytes()
  # A complete output is never rewritten.
  mtime = os.stat(tmp_path / "ours_0.tfrecord").st_mtime_ns
  # A crash left file 1 under a temporary name only.
  (tmp_path / "ours_1.tfrecord").unlink()
  (tmp_path / "ours_1.tfrecord.tmp-12345").write_bytes(b"half")
  result = run_script(tmp_path, "--num_workers=2")
  assert result.returncode == 0, result.stderr
  assert "ours_0.tfrecord: already complete, skipped" in result.stderr
  assert os.stat(tmp_path / "ours_0.tfrecord").st_mtime_ns == mtime
  assert (tmp_path / "ours_1.tfrecord").read_bytes() == first
  assert sorted(os.listdir(tmp_path)) == [
      "ours_0.tfrecord", "ours_0.tfrecord.made_from.json",
      "ours_1.tfrecord", "ours_1.tfrecord.made_from.json"]
  # An output whose size is not the one recorded is made again.
  (tmp_path / "ours_1.tfrecord").write_bytes(first[:100])
  result = run_script(tmp_path, "--num_workers=1")
  assert "ours_1.tfrecord: its size differs" in result.stderr
  assert (tmp_path / "ours_1.tfrecord").read_bytes() == first


def test_undecodable_bytes_are_replaced_and_an_empty_file_skipped(tmp_path):
  clean, dirty = tmp_path / "clean", tmp_path / "dirty"
  clean.mkdir()
  dirty.mkdir()
  text = open(os.path.join(INPUT_DIR, "text_0.txt"), "rb").read()
  (clean / "a.txt").write_bytes(text)
  # U+FFFD is dropped by the tokenizer, so bad bytes vanish from the tokens.
  (dirty / "a.txt").write_bytes(text.replace(b"the ", b"th\xff\xfee ", 3))
  (dirty / "b.txt").write_bytes(b"\n \n")
  out_clean, out_dirty = tmp_path / "out_clean", tmp_path / "out_dirty"
  assert run_script(out_clean, input_dir=clean).returncode == 0
  result = run_script(out_dirty, input_dir=dirty)
  assert result.returncode == 0, result.stderr
  assert "b.txt holds no text: skipped" in result.stderr
  assert ((out_clean / "ours_0.tfrecord").read_bytes() ==
          (out_dirty / "ours_0.tfrecord").read_bytes())
  assert not (out_dirty / "ours_1.tfrecord").exists()


def test_bad_input_is_a_one_line_error(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "notes.md").write_text("not a txt")
  out = tmp_path / "out"
  assert_one_line_error(run_script(out, input_dir=str(tmp_path / "nope")),
                        "--input_dir")
  assert_one_line_error(run_script(out, input_dir=str(empty)), "no *.txt")
  assert_one_line_error(run_script(out, vocab_file=str(tmp_path / "v.txt")),
                        "--vocab_file")
  assert_one_line_error(
      run_script(out, "--max_seq_length=16", "--max_predictions_per_seq=17"),
      "--max_predictions_per_seq=17")
  for prob in ("0", "1.5", "-0.1"):
    assert_one_line_error(run_script(out, f"--masked_lm_prob={prob}"),
                          "--masked_lm_prob")
  bad_vocab = tmp_path / "vocab.txt"
  bad_vocab.write_text("[PAD]\n[UNK]\nthe\n")
  assert_one_line_error(run_script(out, vocab_file=str(bad_vocab)), "[CLS]")
  assert not out.exists() or not os.listdir(out)
  assert_one_line_error(run_script("gs://bucket/out"), "local paths")
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  assert_one_line_error(run_script(a_file / "out"), "a_file")


def random_instance(rng, length, preds, vocab_size):
  num_tokens = rng.randint(5, length)
  len_a = rng.randint(1, num_tokens - 4)
  tokens = [rng.randrange(vocab_size) for _ in range(num_tokens)]
  positions = sorted(rng.sample(range(1, num_tokens - 1),
                                rng.randint(1, min(preds, num_tokens - 2))))
  labels = [rng.randrange(vocab_size) for _ in positions]
  return tokens, len_a, positions, labels, rng.random() < 0.5


def padded_features(tokens, len_a, positions, labels, is_random_next, length,
                    preds):
  """Google's padding, re-derived: {feature: values} in Google's order."""
  pad, pred_pad = length - len(tokens), preds - len(positions)
  return {
      records.INPUT_IDS: tokens + [0] * pad,
      records.INPUT_MASK: [1] * len(tokens) + [0] * pad,
      records.SEGMENT_IDS: ([0] * (len_a + 2) + [1] * (len(tokens) - len_a - 2)
                            + [0] * pad),
      records.MASKED_LM_POSITIONS: positions + [0] * pred_pad,
      records.MASKED_LM_IDS: labels + [0] * pred_pad,
      records.MASKED_LM_WEIGHTS: [1.0] * len(positions) + [0.0] * pred_pad,
      records.NEXT_SENTENCE_LABELS: [int(is_random_next)],
  }


@pytest.mark.parametrize("length,preds,vocab_size",
                         [(32, 5, 30522), (512, 80, 30522), (9, 9, 100)])
def test_encoder_writes_protobufs_deterministic_bytes(length, preds,
                                                      vocab_size):
  rng = random.Random(length)
  encoder = example_codec.PretrainingExampleEncoder(length, preds, vocab_size)
  for _ in range(50):
    instance = random_instance(rng, length, preds, vocab_size)
    ours = encoder.encode(*instance)
    features = padded_features(*instance, length, preds)
    example = tf.train.Example.FromString(example_codec.serialize_example(features))
    assert ours == example.SerializeToString(deterministic=True)
    decoded = example_codec.decode_example_lists(ours)
    assert decoded == {k: list(v) for k, v in features.items()}


def test_tfrecord_framing_equals_tensorflows_writer(tmp_path, monkeypatch):
  rng = random.Random(0)
  encoder = example_codec.PretrainingExampleEncoder(32, 5, 30522)
  examples = [encoder.encode(*random_instance(rng, 32, 5, 30522))
              for _ in range(20)] + [b"", b"x" * 300]
  with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
    for example in examples:
      writer.write(example)
  tfrecord.write_tfrecords(str(tmp_path / "ours.tfrecord"), examples)
  reference = (tmp_path / "tf.tfrecord").read_bytes()
  assert (tmp_path / "ours.tfrecord").read_bytes() == reference
  # Without google_crc32c, TensorFlow's writer does it: the same bytes.
  monkeypatch.setattr(tfrecord, "_load_crc32c", lambda: None)
  tfrecord.write_tfrecords(str(tmp_path / "fallback.tfrecord"), examples)
  assert (tmp_path / "fallback.tfrecord").read_bytes() == reference


def test_fast_draws_equal_random_randints_and_shuffles():
  assert pretraining_data.check_draws_match()
  for seed in range(20):
    ours, theirs = random.Random(seed), random.Random(seed)
    for n in (1, 2, 3, 5, 64, 1000):
      assert pretraining_data.rand_below(ours.getrandbits, n) == theirs.randint(0, n - 1)
      a, b = list(range(n)), list(range(n))
      pretraining_data.shuffle(ours.getrandbits, a)
      theirs.shuffle(b)
      assert a == b
    assert ours.random() == theirs.random()


@pytest.mark.parametrize("whole_word", [False, True])
def test_instances_do_not_depend_on_the_draw_shortcuts(whole_word):
  tokenizer = tokenization.FullTokenizer(VOCAB_FILE, True)
  documents = pretraining_data.read_documents(os.path.join(INPUT_DIR, "text_1.txt"),
                                 tokenizer)
  settings = pretraining_data.Settings(VOCAB_FILE, True, 24, 4, 3, 0.2, 0.3, whole_word)
  made = []
  for fast in (True, False):
    maker = pretraining_data.InstanceMaker(
        settings, tokenizer.vocab,
        example_codec.PretrainingExampleEncoder(24, 4, 30522), fast)
    made.append(maker.make_file_instances(
        [list(d) for d in documents], random.Random(5)))
  assert made[0] == made[1] and len(made[0]) > 50


def test_truncate_seq_pair_keeps_the_pair_within_the_limit():
  rng = random.Random(1)
  for _ in range(200):
    a = list(range(rng.randint(1, 60)))
    b = list(range(100, 100 + rng.randint(1, 60)))
    limit = rng.randint(2, 70)
    draws = random.Random(3)
    kept_a, kept_b = pretraining_data.truncate_seq_pair(a, b, limit, draws.random)
    # Re-derivation with list deletions, as Google writes it.
    ref_a, ref_b, ref_draws = list(a), list(b), random.Random(3)
    while len(ref_a) + len(ref_b) > limit:
      longer = ref_a if len(ref_a) > len(ref_b) else ref_b
      if ref_draws.random() < 0.5:
        del longer[0]
      else:
        longer.pop()
    assert (kept_a, kept_b) == (ref_a, ref_b)
    assert len(kept_a) >= 1 and len(kept_b) >= 1


def test_shards_together_write_exactly_what_one_run_writes(tmp_path):
  inputs = tmp_path / "in"
  inputs.mkdir()
  for i, name in enumerate(["text_0.txt", "text_1.txt", "text_0.txt"]):
    text = open(os.path.join(INPUT_DIR, name), "rb").read()
    (inputs / f"piece_{i}.txt").write_bytes(text)  # Pieces 0 and 2 alike.
  whole, sharded = tmp_path / "whole", tmp_path / "sharded"
  result = run_script(whole, "--num_workers=1", input_dir=str(inputs))
  assert result.returncode == 0, result.stderr
  for shard in (1, 0):
    result = run_script(sharded, "--num_workers=1", "--num_shards=2",
                        f"--shard_index={shard}", input_dir=str(inputs))
    assert result.returncode == 0, result.stderr
    made = 1 if shard else 2
    assert f"Shard {shard} of 2: {made} of the 3 input files" in result.stderr
  names = sorted(os.listdir(whole))
  assert names == sorted(os.listdir(sharded))
  assert [n for n in names if n.endswith(".tfrecord")] == [
      "ours_0.tfrecord", "ours_1.tfrecord", "ours_2.tfrecord"]
  for name in names:
    if name.endswith(".tfrecord"):
      assert (whole / name).read_bytes() == (sharded / name).read_bytes()
  # File i is seeded by its index in the whole list (S + i), not in its
  # shard: pieces 0 and 2 hold the same text, made with other draws.
  assert ((whole / "ours_0.tfrecord").read_bytes() !=
          (whole / "ours_2.tfrecord").read_bytes())
  seed = golden_settings("google_token")["random_seed"]
  record = json.loads((sharded / "ours_2.tfrecord.made_from.json").read_text())
  assert record["random_seed"] == seed + 2
  assert_one_line_error(
      run_script(sharded, "--num_shards=2", "--shard_index=2",
                 input_dir=str(inputs)), "--shard_index")


def test_missing_flags_are_one_line_naming_each(tmp_path):
  result = subprocess.run([sys.executable, SCRIPT], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
  assert_one_line_error(result, "--input_dir")
  for name in ("--output_dir", "--vocab_file"):
    assert name in result.stderr.splitlines()[-1]


def test_stage_writes_its_records_without_loading_tensorflow(tmp_path):
  """The workers' point: no TensorFlow in a process that makes records."""
  code = ("import runpy, sys\n"
          f"sys.argv = [{SCRIPT!r}, '--input_dir={INPUT_DIR}', "
          f"'--output_dir={tmp_path}', '--vocab_file={VOCAB_FILE}', "
          "'--num_workers=1']\n"
          "try:\n"
          "  runpy.run_path(sys.argv[0], run_name='__main__')\n"
          "except SystemExit:\n"
          "  pass\n"
          "print('tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
  assert os.path.getsize(tmp_path / "pretraining_data_1.tfrecord") > 1000


def test_helpshort_lists_the_shard_flags():
  result = subprocess.run([sys.executable, SCRIPT, "--helpshort"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
  assert "--num_shards:" in result.stdout + result.stderr
  assert "--shard_index:" in result.stdout + result.stderr


def test_a_file_of_many_unknown_tokens_is_warned_of(tmp_path, caplog):
  """Cased text through BERT's uncased vocabulary without --do_lower_case:
  most capitalised words become [UNK], which the student would learn."""
  text = tmp_path / "a.txt"
  text.write_text("The Eiffel Tower is in Paris, France.\n"
                  "It was built by Gustave Eiffel.\n")
  for lower, warned in ((True, False), (False, True)):
    tokenizer = tokenization.FullTokenizer(VOCAB_FILE, lower)
    documents = pretraining_data.read_documents(str(text), tokenizer)
    caplog.clear()
    with caplog.at_level("WARNING"):
      share = pretraining_data.warn_of_unknown_tokens(
          str(text), documents, tokenizer,
          sum(len(s) for document in documents for s in document))
    assert (share > 0.2) == warned, share
    assert ("are [UNK]: is --vocab_file the model's, and --do_lower_case "
            "right for it" in caplog.text) == warned
