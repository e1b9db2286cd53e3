"""run_classifier.py: the GLUE readers, features, metrics against hand and
NumPy computations, fine-tuning a toy task, loading a Google checkpoint,
resume after kill -9, and the one-line input errors."""
import json
import logging
import os
import pathlib
import re
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import checkpoints
from bert_distill import classifier
from bert_distill import classifier_data
from bert_distill import classifier_metrics as metrics
import modeling
from bert_distill import example_codec
from bert_distill import records
import stage_runs
import tokenization
from bert_reference import assert_same_checkpoints, checkpoint_values
from conftest import ROOT
from stage_runs import replace_flag, run, start
from classifier_cases import TOY_CONFIG, TOY_VOCAB
from classifier_cases import command, write_toy_task, write_tsv, write_vocab

# ---------------------------------------------------------------------------
# The GLUE layouts: a tiny file of each, as GLUE's download holds them.

MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
               "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
               "sentence1", "sentence2"]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1",
               "source2", "sentence1", "sentence2"]

# task: {file: rows}, and what the train file's first example must read as:
# (text_a, text_b, label), and the test file's first (guid, text_a, text_b).
GLUE_FILES = {
    "cola": ({
        "train.tsv": [["gj04", "1", "", "Our friends won't buy this."],
                      ["gj04", "0", "*", "They drank the pub."]],
        "dev.tsv": [["gj04", "0", "*", "The more we study."]],
        "test.tsv": [["index", "sentence"], ["0", "Bill whistled."]],
    }, ("Our friends won't buy this.", None, "1"), ("0", "Bill whistled.", None)),
    "sst-2": ({
        "train.tsv": [["sentence", "label"], ["a gorgeous film ", "1"]],
        "dev.tsv": [["sentence", "label"], ["dull", "0"]],
        "test.tsv": [["index", "sentence"], ["7", "uneven"]],
    }, ("a gorgeous film ", None, "1"), ("7", "uneven", None)),
    "mrpc": ({
        "train.tsv": [["\ufeffQuality", "#1 ID", "#2 ID", "#1 String",
                       "#2 String"], ["1", "702876", "702977", "He said.",
                                      "He stated."]],
        "dev.tsv": [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                    ["0", "1", "2", "A.", "B."]],
        "test.tsv": [["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                     ["3", "1", "2", "C.", "D."]],
    }, ("He said.", "He stated.", "1"), ("3", "C.", "D.")),
    "sts-b": ({
        "train.tsv": [STSB_HEADER + ["score"],
                      ["0", "main-captions", "MSRvid", "2012test", "0001",
                       "none", "none", "A plane is taking off.",
                       "An air plane is taking off.", "5.000"]],
        "dev.tsv": [STSB_HEADER + ["score"],
                    ["0", "g", "f", "y", "1", "n", "n", "A man.", "A boy.",
                     "2.5"]],
        "test.tsv": [STSB_HEADER, ["4", "g", "f", "y", "1", "n", "n", "X.",
                                   "Y."]],
    }, ("A plane is taking off.", "An air plane is taking off.", "5.000"),
        ("4", "X.", "Y.")),
    "qqp": ({
        "train.tsv": [["id", "qid1", "qid2", "question1", "question2",
                       "is_duplicate"], ["133273", "213221", "213222",
                                         "How is it?", "What is it?", "0"]],
        "dev.tsv": [["id", "qid1", "qid2", "question1", "question2",
                     "is_duplicate"], ["1", "2", "3", "Q?", "R?", "1"]],
        "test.tsv": [["id", "question1", "question2"], ["9", "S?", "T?"]],
    }, ("How is it?", "What is it?", "0"), ("9", "S?", "T?")),
    "mnli": ({
        "train.tsv": [MNLI_HEADER + ["label1", "gold_label"],
                      ["0", "31193", "31193n", "government", "( ( x ) )",
                       "( y )", "(ROOT x)", "(ROOT y)", "Conceptually cream.",
                       "Product and geography.", "neutral", "neutral"]],
        "dev_matched.tsv": [
            MNLI_HEADER + ["label1", "label2", "label3", "label4", "label5",
                           "gold_label"],
            ["0", "1", "1n", "g", "b", "b", "p", "p", "P.", "H.", "neutral",
             "entailment", "neutral", "neutral", "neutral", "neutral"]],
        "test_matched.tsv": [MNLI_HEADER, ["5", "1", "1n", "g", "b", "b", "p",
                                           "p", "P2.", "H2."]],
    }, ("Conceptually cream.", "Product and geography.", "neutral"),
        ("5", "P2.", "H2.")),
    "mnli-mm": ({
        "train.tsv": [MNLI_HEADER + ["label1", "gold_label"],
                      ["0", "1", "1n", "g", "b", "b", "p", "p", "A.", "B.",
                       "contradiction", "contradiction"]],
        "dev_mismatched.tsv": [MNLI_HEADER + ["label1", "gold_label"],
                               ["0", "1", "1n", "g", "b", "b", "p", "p", "C.",
                                "D.", "entailment", "entailment"]],
        "test_mismatched.tsv": [MNLI_HEADER, ["6", "1", "1n", "g", "b", "b",
                                              "p", "p", "E.", "F."]],
    }, ("A.", "B.", "contradiction"), ("6", "E.", "F.")),
    "qnli": ({
        "train.tsv": [["index", "question", "sentence", "label"],
                      ["0", "When?", "In 1990.", "entailment"]],
        "dev.tsv": [["index", "question", "sentence", "label"],
                    ["0", "Who?", "Nobody.", "not_entailment"]],
        "test.tsv": [["index", "question", "sentence"], ["2", "Why?", "So."]],
    }, ("When?", "In 1990.", "entailment"), ("2", "Why?", "So.")),
    "rte": ({
        "train.tsv": [["index", "sentence1", "sentence2", "label"],
                      ["0", "No weapons.", "Weapons found.", "not_entailment"]],
        "dev.tsv": [["index", "sentence1", "sentence2", "label"],
                    ["0", "A.", "B.", "entailment"]],
        "test.tsv": [["index", "sentence1", "sentence2"], ["0", "C.", "D."]],
    }, ("No weapons.", "Weapons found.", "not_entailment"), ("0", "C.", "D.")),
    "wnli": ({
        "train.tsv": [["index", "sentence1", "sentence2", "label"],
                      ["0", "I stuck a pin.", "The pin had a hole.", "1"]],
        "dev.tsv": [["index", "sentence1", "sentence2", "label"],
                    ["0", "A.", "B.", "0"]],
        "test.tsv": [["index", "sentence1", "sentence2"], ["1", "C.", "D."]],
    }, ("I stuck a pin.", "The pin had a hole.", "1"), ("1", "C.", "D.")),
}


@pytest.mark.parametrize("task_name", sorted(GLUE_FILES))
def test_each_glue_processor_reads_its_layout(tmp_path, task_name):
  files, train_first, test_first = GLUE_FILES[task_name]
  for name, rows in files.items():
    write_tsv(tmp_path / name, rows)
  task = classifier_data.get_task(task_name.upper())
  train = task.get_examples(str(tmp_path), "train")
  assert (train[0].text_a, train[0].text_b, train[0].label) == train_first
  dev = task.get_examples(str(tmp_path), "dev")
  assert len(dev) == 1 and dev[0].label is not None
  test = task.get_examples(str(tmp_path), "test")
  assert (test[0].guid, test[0].text_a, test[0].text_b) == test_first
  assert test[0].label is None
  assert task.submission_name.endswith(".tsv")


def test_generic_tsv_task_reads_named_columns_and_training_labels(tmp_path):
  header = ["id", "premise", "hypothesis", "verdict"]
  write_tsv(tmp_path / "train.tsv", [header, ["1", "p1", "h1", "yes"],
                                     ["2", "p2", "h2", "no"],
                                     ["3", "p3", "h3", "maybe"]])
  write_tsv(tmp_path / "dev.tsv", [header, ["4", "p4", "h4", "no"]])
  task = classifier_data.get_task("tsv", str(tmp_path), "premise",
                                  "hypothesis", "verdict")
  assert task.labels == ("maybe", "no", "yes")
  dev = task.get_examples(str(tmp_path), "dev")
  assert (dev[0].text_a, dev[0].text_b, dev[0].label) == ("p4", "h4", "no")
  # Numeric labels sort as numbers.
  write_tsv(tmp_path / "num" / "train.tsv",
            [["t", "y"], ["a", "10"], ["b", "9"], ["c", "10"]])
  task = classifier_data.get_task("tsv", str(tmp_path / "num"), "t", None, "y")
  assert task.labels == ("9", "10")


def test_a_tsv_line_that_is_not_utf8_is_named(tmp_path):
  (tmp_path / "train.tsv").write_bytes(b"sentence\tlabel\ngood\t1\n"
                                       b"caf\xe9\t1\n")
  task = classifier_data.get_task("sst-2")
  with pytest.raises(ValueError, match=re.escape(
      f"{tmp_path / 'train.tsv'}: line 3: not UTF-8 text (byte 3 of the "
      f"line)")):
    task.get_examples(str(tmp_path), "train")


@pytest.mark.parametrize("rows, split, message", [
    ([["text", "label"], ["good", "1"]], "train", "no column 'sentence'"),
    ([["sentence", "label"], ["good"]], "train",
     "line 2 has 1 field(s); column 'label' is field 2"),
    ([["sentence", "label"], ["good", "positive"]], "dev",
     "line 2: label 'positive' is not among task sst-2's labels (0, 1)"),
])
def test_bad_tsv_is_a_one_line_error_naming_file_and_line(tmp_path, rows,
                                                          split, message):
  write_tsv(tmp_path / f"{split}.tsv", rows)
  task = classifier_data.get_task("sst-2")
  with pytest.raises(ValueError) as error:
    task.get_examples(str(tmp_path), split)
  assert str(error.value).startswith(str(tmp_path / f"{split}.tsv"))
  assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_task_lists_the_tasks():
  with pytest.raises(ValueError, match="'glue9' is not a task; use one of "
                     "cola, sst-2"):
    classifier_data.get_task("glue9")


# ---------------------------------------------------------------------------
# Features: Google's convert_single_example.

def test_truncate_seq_pair_trims_the_longer_one_token_at_a_time():
  a, b = list("abcdefg"), list("xyz")
  classifier_data.truncate_seq_pair(a, b, 6)
  assert a == list("abc") and b == list("xyz")
  a, b = list("ab"), list("wxyz")
  classifier_data.truncate_seq_pair(a, b, 3)  # on a tie b loses, as Google's
  assert a == list("ab") and b == list("w")


def test_convert_single_example_by_hand(tmp_path, caplog):
  tokenizer = tokenization.FullTokenizer(write_vocab(tmp_path / "vocab.txt"))
  task = classifier_data.get_task("rte")
  example = classifier_data.InputExample(
      "0", "The movie was good", "a plot and a scene and a story",
      "not_entailment")
  stats = classifier_data.TextStats()
  features = classifier_data.convert_single_example(example, task, 12,
                                                    tokenizer, stats)
  ids = {t: i for i, t in enumerate(TOY_VOCAB)}
  # 12 - 3 = 9 tokens: a has 4, b 7 -> b loses 2.
  tokens = ["[CLS]", "the", "movie", "was", "good", "[SEP]", "a", "plot",
            "and", "a", "scene", "[SEP]"]
  assert features["input_ids"] == [ids[t] for t in tokens]
  assert features["segment_ids"] == [0] * 6 + [1] * 6
  assert features["input_mask"] == [1] * 12
  assert features["label_ids"] == [1] and features["is_real_example"] == [1]
  single = classifier_data.convert_single_example(
      classifier_data.InputExample("1", "Awful, UNKNOWNWORD", None, "0"),
      classifier_data.get_task("sst-2"), 8, tokenizer, stats)
  assert single["input_ids"] == [ids["[CLS]"], ids["awful"], ids["[UNK]"],
                                 ids["[UNK]"], ids["[SEP]"], 0, 0, 0]
  assert single["input_mask"] == [1] * 5 + [0] * 3
  assert single["segment_ids"] == [0] * 8
  # The pair's 12 text tokens lost 3; the single's 3 fit, 2 of them [UNK].
  assert stats == classifier_data.TextStats(
      examples=2, truncated=1, tokens=15, tokens_cut=3, unknown=2)
  with caplog.at_level(logging.WARNING):
    stats.log("train", 12)
  assert ("train: 1 of 2 examples (50%) are longer than --max_seq_length 12 "
          "and were truncated: 3 of the split's 15 text tokens (20%) "
          "are not in the features") in caplog.text
  assert ("train: 2 of 15 tokens (13%) are [UNK]: is --vocab_file the "
          "model's, and --do_lower_case right for it") in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    classifier_data.TextStats(examples=1, tokens=200, unknown=1).log("dev", 8)
  assert not caplog.text  # 0.5%: no warning


def test_feature_cache_round_trips_and_is_reused(tmp_path):
  data = tmp_path / "data"
  write_tsv(data / "train.tsv", [["sentence", "label"], ["good film", "1"],
                                 ["bad plot", "0"], ["a story", "1"]])
  vocab = write_vocab(tmp_path / "vocab.txt")
  tokenizer = tokenization.FullTokenizer(vocab)
  task = classifier_data.get_task("sst-2")
  examples = task.get_examples(str(data), "train")
  out = str(tmp_path / "out")
  path = classifier_data.feature_cache(examples, task, "train", 8, tokenizer,
                                       vocab, str(data), out)
  read = [example_codec.decode_example(r.numpy())
          for r in tf.data.TFRecordDataset(path)]
  want = [classifier_data.convert_single_example(e, task, 8, tokenizer)
          for e in examples]
  assert [{k: list(v) for k, v in r.items()} for r in read] == want
  # Google's reader parses them with its own spec (ours is the same).
  spec = records.classifier_feature_spec(8)
  parsed = tf.io.parse_single_example(next(iter(tf.data.TFRecordDataset(
      path))), spec)
  assert parsed["label_ids"].numpy().tolist() == [1]
  mtime = os.path.getmtime(path)
  assert classifier_data.feature_cache(examples, task, "train", 8, tokenizer,
                                       vocab, str(data), out) == path
  assert os.path.getmtime(path) == mtime
  classifier_data.feature_cache(examples, task, "train", 10, tokenizer, vocab,
                                str(data), out)
  assert len(next(iter(tf.data.TFRecordDataset(path))).numpy()) > 0
  assert json.load(open(path + ".json"))["max_seq_length"] == 10
  assert not [p for p in os.listdir(out) if ".tmp-" in p]


def test_eval_dataset_pads_to_whole_batches_and_keeps_the_order(tmp_path):
  path = str(tmp_path / "eval.tf_record")
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(5):
      writer.write(example_codec.serialize_example({
          "input_ids": [i] * 4, "input_mask": [1] * 4, "segment_ids": [0] * 4,
          "label_ids": [i % 2], "is_real_example": [1]}))
  batches = list(classifier_data.eval_dataset(
      path, records.classifier_feature_spec(4), 4, 5, 4, trim=False))
  assert [b["input_ids"].shape[0] for b in batches] == [4, 4]
  index = np.concatenate([b["example_index"].numpy() for b in batches])
  real = np.concatenate([b["is_real_example"].numpy() for b in batches])
  assert index.tolist() == [0, 1, 2, 3, 4, -1, -1, -1]
  assert real.tolist() == [1] * 5 + [0] * 3


def test_trimmed_eval_batches_hold_similar_lengths_and_every_example_once(
    tmp_path):
  """Sorted by length within chunks of GROUP_BATCHES batches: each example
  (and each padding example) once, with its own index and features."""
  path = str(tmp_path / "eval.tf_record")
  rng = np.random.default_rng(1)
  batch = 3
  count = classifier_data.GROUP_BATCHES * batch + 7  # 2 chunks, padding 2
  lengths = rng.integers(1, 33, count)
  write_examples_of_lengths(path, lengths.tolist(), 32)
  batches = list(classifier_data.eval_dataset(
      path, records.classifier_feature_spec(32), batch, count, batch))
  assert all(b["input_ids"].shape[0] == batch for b in batches)
  index = np.concatenate([b["example_index"].numpy() for b in batches])
  assert sorted(index.tolist()) == [-1, -1] + list(range(count))
  for b in batches:
    for i, ids, mask in zip(b["example_index"].numpy(),
                            b["input_ids"].numpy(), b["input_mask"].numpy()):
      expected = lengths[i] if i >= 0 else 0
      assert mask.sum() == expected and (ids[:expected] == i + 1).all()
  # The first chunk's batches come shortest first, each cut to its longest.
  first_chunk = batches[:classifier_data.GROUP_BATCHES]
  longest = [b["input_mask"].numpy().sum(1).max() for b in first_chunk]
  assert longest == sorted(longest)
  assert sum(b["input_ids"].shape[1] for b in first_chunk) < (
      0.75 * 32 * len(first_chunk))


def write_examples_of_lengths(path, lengths, seq_length):
  """A classifier feature file: example i has lengths[i] real tokens (ids
  i + 1), then padding; label i % 2."""
  with tf.io.TFRecordWriter(path) as writer:
    for i, length in enumerate(lengths):
      pad = [0] * (seq_length - length)
      writer.write(example_codec.serialize_example({
          "input_ids": [i + 1] * length + pad,
          "input_mask": [1] * length + pad, "segment_ids": [0] * seq_length,
          "label_ids": [i % 2], "is_real_example": [1]}))


def test_classifier_pipelines_run_without_tf_data_autotuning(tmp_path):
  """As stage V's (distribution.prefetched): an iterator a tf.function
  consumed is deleted at once, not after the autotuner's next round."""
  path = str(tmp_path / "train.tf_record")
  write_examples_of_lengths(path, [3, 5, 2, 4], 8)
  spec = records.classifier_feature_spec(8)
  train = classifier_data.train_dataset(path, spec, 2, seed=1, num_examples=4)
  evaluation = classifier_data.eval_dataset(path, spec, 2, 4, 2)
  for dataset in (train, evaluation):
    assert dataset.options().autotune.enabled is False
  assert sum(len(b["example_index"]) for b in evaluation) == 4


def test_batches_are_cut_after_their_longest_example(tmp_path):
  path = str(tmp_path / "eval.tf_record")
  write_examples_of_lengths(path, [3, 9, 2, 5, 4, 1], 32)
  batches = list(classifier_data.eval_dataset(
      path, records.classifier_feature_spec(32), 3, 6, 3))
  # Sorted by length: [1, 2, 3] -> 8, [4, 5, 9] -> 16 (multiples of
  # TRIM_MULTIPLE 8).
  assert [b["input_ids"].shape[1] for b in batches] == [8, 16]
  assert batches[1]["input_mask"].numpy().sum(1).tolist() == [4, 5, 9]
  assert batches[1]["example_index"].numpy().tolist() == [4, 3, 1]
  untrimmed = list(classifier_data.eval_dataset(
      path, records.classifier_feature_spec(32), 3, 6, 3, trim=False))
  assert untrimmed[0]["input_ids"].shape[1] == 32
  full = untrimmed[0]["input_ids"].numpy()  # examples 0, 1, 2
  np.testing.assert_array_equal(
      full[[1], :16], batches[1]["input_ids"].numpy()[[2]])
  assert not full[:, 16:].any()


def test_a_trimmed_batch_gives_the_classifier_the_same_logits(tmp_path):
  """Padded positions are masked out of attention and read by no pooling:
  both poolings' logits on the cut batch equal those on the full one."""
  path = str(tmp_path / "eval.tf_record")
  write_examples_of_lengths(path, [3, 9, 6, 2], 40)
  spec = records.classifier_feature_spec(40)
  full = next(iter(classifier_data.eval_dataset(path, spec, 4, 4, 4,
                                                trim=False)))
  cut = classifier_data.trim_padding(full)
  assert cut["input_ids"].shape[1] == 16
  config = modeling.BertConfig.from_dict(ref.TINY_CONFIG)
  for pooling in ("cls", "mean"):
    model = classifier.BertClassifier(config, 2, seed=3, pooling=pooling)
    logits = [model(f["input_ids"], f["input_mask"], f["segment_ids"])[
        "logits"].numpy() for f in (full, cut)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


def test_length_grouped_batches_cover_each_chunk_once_and_resume(tmp_path):
  path = str(tmp_path / "train.tf_record")
  rng = np.random.default_rng(0)
  count, batch = 2 * classifier_data.GROUP_BATCHES * 2, 2
  write_examples_of_lengths(path, rng.integers(1, 33, count).tolist(), 32)
  spec = records.classifier_feature_spec(32)

  def batches(skip, how_many):
    dataset = classifier_data.train_dataset(
        path, spec, batch, seed=7, num_examples=count, skip_examples=skip,
        group_by_length=True)
    return [{k: v.numpy() for k, v in b.items()}
            for b in dataset.take(how_many)]

  chunk = classifier_data.GROUP_BATCHES
  first = batches(0, 2 * chunk)
  ids = [b["input_ids"][:, 0] for b in first]
  # Each chunk of GROUP_BATCHES batches holds GROUP_BATCHES * batch distinct
  # examples; the file's examples all appear once over an epoch (2 chunks).
  assert sorted(np.concatenate(ids).tolist()) == list(range(1, count + 1))
  # Similar lengths within a batch: sorted chunks put neighbours together.
  spread = [np.ptp(b["input_mask"].sum(1)) for b in first]
  assert np.mean(spread) <= 2
  # Not in increasing length: the chunk's batches are in a drawn order.
  longest = [b["input_mask"].sum(1).max() for b in first[:chunk]]
  assert longest != sorted(longest)
  # Each batch is cut after its longest example.
  assert all(b["input_ids"].shape[1] == min(
      32, -(-b["input_mask"].sum(1).max() // 8) * 8) for b in first)
  # A run resumed after 13 steps sees the batches an uninterrupted one does.
  resumed = batches(13 * batch, 5)
  for a, b in zip(first[13:18], resumed):
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


# ---------------------------------------------------------------------------
# Metrics, against hand counts and NumPy.

def test_f1_and_matthews_from_the_confusion_counts():
  predictions = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 1])
  labels = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 1])
  tp, tn, fp, fn = 4, 3, 2, 1  # counted by hand
  assert metrics.accuracy(predictions, labels) == pytest.approx(0.7)
  precision, recall = tp / (tp + fp), tp / (tp + fn)
  assert metrics.f1_score(predictions, labels) == pytest.approx(
      2 * precision * recall / (precision + recall))
  assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
      (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) *
                                    (tn + fn)))
  assert metrics.matthews_corrcoef(np.ones(4), [0, 1, 0, 1]) == 0.0
  assert metrics.matthews_corrcoef(labels, labels) == pytest.approx(1.0)
  assert metrics.matthews_corrcoef(1 - labels, labels) == pytest.approx(-1.0)


def test_correlations_match_numpy_and_hand_ranks():
  rng = np.random.default_rng(0)
  x = rng.normal(size=50)
  y = 0.5 * x + rng.normal(size=50)
  assert metrics.pearson_correlation(x, y) == pytest.approx(
      np.corrcoef(x, y)[0, 1])
  # Without ties Spearman is Pearson of argsort-ranks.
  ranks = lambda v: np.argsort(np.argsort(v)).astype(float)
  assert metrics.spearman_correlation(x, y) == pytest.approx(
      np.corrcoef(ranks(x), ranks(y))[0, 1])
  # Ties share their mean rank: [1, 2, 2, 3] ranks as [1, 2.5, 2.5, 4].
  assert metrics.average_ranks([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
  assert metrics.average_ranks([5, 5, 5]).tolist() == [2, 2, 2]
  a, b = [1, 2, 2, 3], [1, 3, 2, 4]
  assert metrics.spearman_correlation(a, b) == pytest.approx(
      np.corrcoef([1, 2.5, 2.5, 4], [1, 3, 2, 4])[0, 1])
  assert set(metrics.task_metrics("correlation", x, y)) == {"pearson",
                                                            "spearman"}
  assert set(metrics.task_metrics("f1_accuracy", [1], [1])) == {"accuracy",
                                                                "f1"}
  assert set(metrics.task_metrics("matthews", [1], [1])) == {
      "accuracy", "matthews_corr"}


# ---------------------------------------------------------------------------
# A Google-name checkpoint: the encoder loads, the missing head warns.

def tiny_vocab(tmp_path, size):
  return write_vocab(tmp_path / "tiny_vocab.txt",
                     (TOY_VOCAB + [f"x{i}" for i in range(size)])[:size])


def test_google_checkpoint_loads_with_warnings_for_the_head_only(tmp_path,
                                                                 caplog):
  weights = ref.random_google_weights(ref.TINY_CONFIG, seed=3)
  prefix = ref.write_google_checkpoint(str(tmp_path / "bert_model.ckpt"),
                                       weights, global_step=7)
  config = modeling.BertConfig.from_dict(ref.TINY_CONFIG)
  model = classifier.BertClassifier(config, 3, seed=1)
  with caplog.at_level(logging.WARNING):
    result = classifier.initialize_from(model, prefix)
  assert sorted(result["initialized"]) == ["output_bias", "output_weights"]
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING]
  assert len(warnings) == 2 and all("initialized" in w for w in warnings)
  assert any("output_weights of shape [3, 32]" in w for w in warnings)
  # The loaded encoder computes the NumPy reference's pooled output, and
  # the head is one dense layer on it.
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 99, (2, 10))
  mask = np.ones((2, 10), np.int64)
  mask[1, 6:] = 0
  segments = (np.arange(10) >= 5).astype(np.int64)[None].repeat(2, 0)
  got = model(ids, mask, segments)
  want = ref.bert_forward(weights, ref.TINY_CONFIG, ids, mask, segments,
                          np.zeros((2, 1), np.int64))["pooled_output"]
  np.testing.assert_allclose(got["pooled_output"], want, atol=1e-4)
  np.testing.assert_allclose(
      got["logits"], want @ model.output_weights.numpy().T +
      model.output_bias.numpy(), atol=1e-4)
  # A checkpoint lacking an encoder variable is an error, not a warning.
  del weights["bert/encoder/layer_1/output/dense/kernel"]
  broken = ref.write_google_checkpoint(str(tmp_path / "broken.ckpt"), weights)
  with pytest.raises(ValueError, match="1 encoder variables missing"):
    classifier.initialize_from(classifier.BertClassifier(config, 2), broken)


# ---------------------------------------------------------------------------
# Whole runs: a separable toy task, resume after kill -9, bad input.

STEPS = 96  # 256 examples / batch 16 * 6 epochs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Together: an uninterrupted toy fine-tune with eval and predict, the
  same run killed with -9 after its step-8 checkpoint, then the killed run
  resumed."""
  root = tmp_path_factory.mktemp("classifier")
  data = write_toy_task(root / "toy")
  vocab = write_vocab(root / "vocab.txt")
  config = root / "bert_config.json"
  config.write_text(json.dumps(TOY_CONFIG))
  reference = command(data, vocab, config, root / "uninterrupted",
                      "--do_train", "--do_eval", "--do_predict")
  killed = command(data, vocab, config, root / "killed", "--do_train")
  reference_run = start(reference, root / "uninterrupted.log")
  killed_at = stage_runs.kill_after_checkpoint(
      start(killed, root / "killed.log"), root / "killed", 8)
  stage_runs.assert_finished(reference_run, root / "uninterrupted.log")
  resumed = run(killed)
  return {"root": root, "data": data, "vocab": vocab, "config": config,
          "command": reference, "killed_at": killed_at, "resumed": resumed}


def test_fine_tuning_a_separable_toy_task_learns_it(runs):
  output_dir = runs["root"] / "uninterrupted"
  results = dict(line.split(" = ") for line in
                 (output_dir / "eval_results.txt").read_text().splitlines())
  assert set(results) == {"eval_accuracy", "eval_loss", "global_step"}
  assert int(results["global_step"]) == STEPS
  assert float(results["eval_accuracy"]) >= 0.9  # chance is 0.5
  assert list((output_dir / "eval").glob("events.out.tfevents.*"))
  assert list(output_dir.glob("events.out.tfevents.*"))
  lines = (output_dir / "test_results.tsv").read_text().splitlines()
  assert lines[0] == "index\tprediction" and len(lines) == 11
  assert [line.split("\t")[0] for line in lines[1:]] == [
      str(100 + i) for i in range(10)]
  # The test file's sentences say their label: 1 iff "good" or "great".
  sentences = [line.split("\t")[1] for line in
               (pathlib.Path(runs["data"]) / "test.tsv").read_text()
               .splitlines()[1:]]
  truth = [str(int(bool({"good", "great"} & set(s.split()))))
           for s in sentences]
  predicted = [line.split("\t")[1] for line in lines[1:]]
  assert sum(p == t for p, t in zip(predicted, truth)) >= 9, (predicted, truth)
  assert set(truth) == {"0", "1"}  # both classes in the file
  log = (runs["root"] / "uninterrupted.log").read_text()
  assert "steps/s" in log and "time left" in log and "examples/s" in log


def test_checkpoint_holds_google_names_and_the_head(runs):
  values = checkpoint_values(runs["root"] / "uninterrupted" /
                             f"model.ckpt-{STEPS}")
  model_names = [n for n in ref.google_shapes(TOY_CONFIG)
                 if n.startswith("bert/")] + ["output_weights", "output_bias"]
  assert set(values) == set(
      model_names + [f"{n}/adam_{s}" for n in model_names for s in "mv"] +
      ["global_step"])
  assert values["output_weights"].shape == (2, 32)
  assert values["output_bias"].shape == (2,)
  assert values["global_step"] == STEPS


def test_resume_after_kill_ends_with_the_uninterrupted_weights(runs):
  killed_at = runs["killed_at"]
  assert killed_at is not None and killed_at < STEPS, "finished before kill"
  assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-3000:]
  assert f"at step {killed_at}" in runs["resumed"].stderr
  assert_same_checkpoints(
      runs["root"] / "killed" / f"model.ckpt-{STEPS}",
      runs["root"] / "uninterrupted" / f"model.ckpt-{STEPS}", atol=1e-6)
  # A rerun of the finished run trains nothing and reuses the features.
  again = run(runs["command"])
  assert again.returncode == 0, again.stderr[-3000:]
  assert "nothing to train" in again.stderr
  assert "Reusing" in again.stderr and "train.tf_record" in again.stderr


def bad_input_cases(runs, root):
  """{case: (argv, what the one error line must contain)}."""
  data = runs["data"]
  base = command(data, runs["vocab"], runs["config"], root / "out",
                 "--do_train", "--do_eval")
  no_column = root / "no_column"
  write_tsv(no_column / "train.tsv", [["text", "label"], ["good", "1"]])
  write_tsv(no_column / "dev.tsv", [["sentence", "label"], ["good", "1"]])
  unseen = root / "unseen"
  write_tsv(unseen / "train.tsv", [["review", "stars"], ["good", "5"],
                                   ["bad", "1"]])
  write_tsv(unseen / "dev.tsv", [["review", "stars"], ["fine", "3"]])
  big_config = root / "big_vocab.json"
  big_config.write_text(json.dumps({**TOY_CONFIG, "vocab_size": 99}))
  google = ref.write_google_checkpoint(
      str(root / "bert_model.ckpt"),
      ref.random_google_weights(ref.TINY_CONFIG))  # vocab 99
  return {
      "an unknown task": (replace_flag(base, "task_name", "glue9"),
                          "--task_name 'glue9' is not a task"),
      "a TSV missing a column": (
          replace_flag(base, "data_dir", no_column),
          f"{no_column / 'train.tsv'}: no column 'sentence' in the header"),
      "a label not seen in training": (
          replace_flag(replace_flag(base, "data_dir", unseen), "task_name",
                       "tsv") + ["--text_a_column=review",
                                 "--label_column=stars"],
          f"{unseen / 'dev.tsv'}: line 2: label '3' is not among the "
          f"training file's labels (1, 5)"),
      "a config vocab_size unlike the vocab file": (
          replace_flag(base, "bert_config_file", big_config),
          "has vocab_size 99 but --vocab_file"),
      "a checkpoint vocab_size unlike the vocab file": (
          base + [f"--init_checkpoint={google}"],
          "has word embeddings for 99 tokens but --vocab_file"),
      "max_seq_length above max_position_embeddings": (
          replace_flag(base, "max_seq_length", 64),
          "--max_seq_length 64 exceeds the model's max_position_embeddings "
          "32"),
      # A mistyped --output_dir: the predictions would be random weights'.
      "a prediction without a model": (
          [a for a in base if a not in ("--do_train", "--do_eval")] +
          ["--do_predict"],
          "--do_predict without --do_train: --output_dir"),
  }


@pytest.fixture(scope="module")
def bad_runs(runs, tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  cases = bad_input_cases(runs, root)
  # The Google checkpoint with its own vocabulary: a good run, which must
  # load with warnings about the head only.
  tiny_config = root / "tiny_config.json"
  tiny_config.write_text(json.dumps({**ref.TINY_CONFIG}))
  google_run = command(runs["data"], tiny_vocab(root, 99), tiny_config,
                       root / "google_out", "--do_train",
                       f"--init_checkpoint={root / 'bert_model.ckpt'}",
                       "--num_train_epochs=0.125")
  results = stage_runs.run_all(
      {"google checkpoint": google_run[1:],
       **{case: argv[1:] for case, (argv, _) in cases.items()}},
      str(root / "logs"))
  return root, cases, results, results["google checkpoint"]


@pytest.mark.parametrize("case", [
    "an unknown task", "a TSV missing a column",
    "a label not seen in training",
    "a config vocab_size unlike the vocab file",
    "a checkpoint vocab_size unlike the vocab file",
    "max_seq_length above max_position_embeddings",
    "a prediction without a model"])
def test_bad_input_is_one_line_error_and_writes_nothing(bad_runs, case):
  root, cases, results, _ = bad_runs
  stage_runs.assert_one_line_error(results[case], cases[case][1])
  assert not (root / "out").exists() or not os.listdir(root / "out")


def test_a_google_checkpoint_run_warns_about_the_head_only(bad_runs):
  root, _, _, google_run = bad_runs
  stderr = google_run.stderr
  assert google_run.returncode == 0, stderr[-3000:]
  warnings = [line for line in stderr.splitlines()
              if line.startswith("W") and "initialized" in line]
  assert len(warnings) == 2, stderr[-3000:]
  assert any("has no output_weights of shape [2, 32]" in w for w in warnings)
  assert checkpoints.latest_checkpoint(str(root / "google_out"))


def test_pipeline_stage_g_scores_teacher_and_students_then_skips(tmp_path):
  """run_pipeline.sh --stages=G on Google-name checkpoints of a teacher and
  a (one-layer) student, the student fine-tuned alone and task-distilled
  from the fine-tuned teacher (--glue_task_distillation)."""
  data = write_toy_task(tmp_path / "toy")
  vocab = write_vocab(tmp_path / "vocab.txt")
  student_config = {**TOY_CONFIG, "num_hidden_layers": 1}
  paths = {}
  for name, config in (("teacher", TOY_CONFIG), ("student", student_config)):
    (tmp_path / name).mkdir()
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    paths[name] = ref.write_google_checkpoint(
        str(tmp_path / name / "model.ckpt-5"),
        ref.random_google_weights(config, seed=len(name)), global_step=5)
  argv = ["bash", os.path.join(ROOT, "run_pipeline.sh"),
          f"--work_dir={tmp_path / 'work'}", f"--python={sys.executable}",
          "--stages=G", f"--vocab_file={vocab}",
          f"--teacher_config={tmp_path / 'teacher.json'}",
          f"--teacher_checkpoint={paths['teacher']}",
          f"--student_config={tmp_path / 'student.json'}",
          f"--student_dir={tmp_path / 'student'}", "--glue_task=sst-2",
          f"--glue_data_dir={data}", "--glue_max_seq_length=16",
          "--glue_flags=--num_train_epochs=0.25 --train_batch_size=16",
          "--glue_task_distillation=true",
          "--glue_distill_flags=--temperature=2"]
  result = run(argv)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  work = tmp_path / "work"
  assert sorted(os.listdir(work / "stages")) == [
      "G-distilled.done", "G-student.done", "G-teacher.done"]
  for name in ("teacher", "student", "student_distilled"):
    text = (work / "glue" / name / "eval_results.txt").read_text()
    assert "global_step = 4" in text
  assert (work / "glue" / "student_distilled" /
          "task_distillation_train.tf_record").exists()
  for who in ("student", "student_distilled"):
    summary = [line for line in result.stdout.splitlines()
               if f" {who}/teacher " in line]
    assert len(summary) == 1 and summary[0].split()[0] == "eval_accuracy"
  again = run(argv)
  assert again.returncode == 0, again.stderr[-2000:]
  assert again.stdout.count("done before, skipped") == 3


def test_resume_passes_over_a_truncated_newest_checkpoint(runs, tmp_path):
  """Fine-tuning shares stage V's resume rule (training.resume): a newest
  checkpoint cut short is passed over for the older one, and training
  from there ends with the uninterrupted weights."""
  source = runs["root"] / "uninterrupted"
  output_dir = tmp_path / "copy"
  shutil.copytree(source, output_dir)
  older, newest = checkpoints.complete_checkpoints(str(output_dir))[1::-1]
  assert checkpoints.checkpoint_step(newest) == STEPS
  data_file = f"{newest}.data-00000-of-00001"
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 2)
  rerun = run(replace_flag(runs["command"], "output_dir", output_dir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "Passing over" in rerun.stderr
  assert f"Resuming from {older} at step " in rerun.stderr
  assert_same_checkpoints(output_dir / f"model.ckpt-{STEPS}",
                          source / f"model.ckpt-{STEPS}", atol=1e-6)
