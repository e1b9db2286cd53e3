"""Task distillation in run_classifier.py: the soft loss against NumPy, its
zero gradient where student and teacher agree, unlabeled examples without a
gold-label loss, a resumed run equal to an uninterrupted one, the teacher's
logits cached and relabelled when the teacher changes, and the one-line
errors of a teacher that does not fit the task or the student."""
import collections
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import checkpoints
from bert_distill import classifier
from bert_distill import classifier_data
from bert_distill import losses
from bert_distill import records
from bert_distill import task_distillation
import modeling
import stage_runs
from bert_reference import assert_same_checkpoints, checkpoint_values
from stage_runs import replace_flag, run, start
from classifier_cases import (TOY_CONFIG, TOY_VOCAB, command, write_toy_task,
                              write_tsv, write_vocab)


def numpy_kl(student, teacher, temperature):
  def log_softmax(x):
    x = x / temperature
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
  p = np.exp(log_softmax(teacher))
  return temperature**2 * (p * (log_softmax(teacher) -
                                log_softmax(student))).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_loss_is_t_squared_kl_as_numpy_computes_it(temperature):
  rng = np.random.default_rng(0)
  student = rng.normal(size=(5, 3)) * 3
  teacher = rng.normal(size=(5, 3)) * 3
  got = losses.class_kl_divergence(tf.constant(student, tf.float32),
                                   tf.constant(teacher, tf.float32),
                                   temperature)
  np.testing.assert_allclose(got.numpy(), numpy_kl(student, teacher,
                                                   temperature),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("is_regression", [False, True])
def test_soft_loss_gradient_is_zero_where_student_and_teacher_agree(
    is_regression):
  logits = tf.constant(np.random.default_rng(1).normal(
      size=(4, 1 if is_regression else 3)) * 2, tf.float32)
  loss = task_distillation.DistillationLoss(
      temperature=2.0, soft_loss_weight=1.0, hard_loss_weight=0.0,
      is_regression=is_regression)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    soft = tf.reduce_sum(loss.soft_per_example(logits, tf.identity(logits)))
  np.testing.assert_allclose(soft.numpy(), 0.0, atol=1e-5)
  np.testing.assert_allclose(tape.gradient(soft, logits).numpy(), 0.0,
                             atol=1e-6)


def test_unlabeled_examples_contribute_no_gold_label_loss():
  rng = np.random.default_rng(2)
  logits = tf.constant(rng.normal(size=(4, 2)), tf.float32)
  labels = np.array([1, 0, 1, 1])
  features = {records.LABEL_IDS: tf.constant(labels, tf.int32),
              records.IS_REAL_EXAMPLE: tf.ones([4], tf.int32),
              records.LABEL_WEIGHT: tf.constant([1.0, 0.0, 1.0, 0.0]),
              records.TEACHER_LOGITS: tf.constant(rng.normal(size=(4, 2)),
                                                  tf.float32)}
  loss = task_distillation.DistillationLoss(1.0, 0.0, 1.0, False)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    terms = loss(logits, features, global_batch_size=4)
  log_probs = logits.numpy() - np.log(np.exp(logits.numpy()).sum(
      -1, keepdims=True))
  cross_entropy = -log_probs[np.arange(4), labels]
  np.testing.assert_allclose(terms["hard_loss"].numpy(),
                             (cross_entropy[0] + cross_entropy[2]) / 4,
                             rtol=1e-5)
  gradient = tape.gradient(terms["loss"], logits).numpy()
  assert np.all(gradient[[1, 3]] == 0) and np.all(gradient[[0, 2]] != 0)
  # The soft term covers every example, labeled or not.
  with_soft = task_distillation.DistillationLoss(1.0, 1.0, 0.0, False)(
      logits, features, global_batch_size=4)
  np.testing.assert_allclose(
      with_soft["soft_loss"].numpy(),
      numpy_kl(logits.numpy(), features[records.TEACHER_LOGITS].numpy(),
               1.0).sum() / 4, rtol=1e-4)


def test_write_order_mixes_labeled_and_unlabeled_once_for_all():
  order = task_distillation.write_order(10, 30)
  assert sorted(i for i, labeled in order if labeled) == list(range(10))
  assert sorted(i for i, labeled in order if not labeled) == list(range(30))
  assert order == task_distillation.write_order(10, 30)
  labeled_positions = [p for p, (_, labeled) in enumerate(order) if labeled]
  assert labeled_positions[0] < 20 and labeled_positions[-1] >= 20


# ---------------------------------------------------------------------------
# Whole runs: a fine-tuned teacher, the student distilled from it with
# unlabeled text, killed and resumed.

STEPS = 48  # (128 labeled + 128 unlabeled) / batch 16 * 3 epochs
# The teacher: 128 labeled examples / batch 16 * 12 epochs. Trained so long
# it fits the task (accuracy 1 on its training examples; at 6 epochs 0.79,
# its logits under 0.2), so a student that learns from it learns the task.
TEACHER_STEPS = 96
MAX_SEQ_LENGTH = 16  # classifier_cases.command's --max_seq_length


def distill_command(root, output_dir, *extra):
  # --learning_rate 1e-3: the one-layer student learns the toy task in its
  # 48 steps (at command's 5e-4 its dev accuracy is 0.78 distilled, 0.56
  # fine-tuned alone).
  return replace_flag(replace_flag(
      command(root / "toy", root / "vocab.txt", root / "student.json",
              output_dir, "--do_train", "--do_eval",
              f"--teacher_checkpoint={root / 'teacher'}",
              f"--teacher_config={root / 'teacher' / 'bert_config.json'}",
              f"--unlabeled_file={root / 'unlabeled.tsv'}",
              "--temperature=2", "--hard_loss_weight=0.5", *extra),
      "num_train_epochs", 3), "learning_rate", 1e-3)


def numpy_teacher_logits(weights, config, rows):
  """[N, C] float64: a classifier's logits of decoded classifier records,
  in NumPy: the head (output_weights, output_bias) on BERT's pooled [CLS]
  output (ref.bert_forward). A fine-tuned classifier has no cls/ heads:
  random ones stand in, read only for the MLM and NSP outputs."""
  stand_ins = {n: v for n, v in ref.random_google_weights(config).items()
               if n.startswith("cls/")}
  def stack(name):
    return np.stack([row[name] for row in rows])
  pooled = ref.bert_forward(
      {**stand_ins, **weights}, config, stack(records.INPUT_IDS),
      stack(records.INPUT_MASK), stack(records.SEGMENT_IDS),
      np.zeros((len(rows), 1), np.int64))["pooled_output"]  # [N, H]
  return pooled @ weights["output_weights"].astype(np.float64).T + weights[
      "output_bias"]


def toy_input_ids(sentence):
  """A toy sentence's input ids, written out: [CLS], each word's id in the
  toy vocabulary (every word is one), [SEP], padding to MAX_SEQ_LENGTH."""
  ids = ([TOY_VOCAB.index("[CLS]")] +
         [TOY_VOCAB.index(word) for word in sentence.split()] +
         [TOY_VOCAB.index("[SEP]")])
  return tuple(ids + [0] * (MAX_SEQ_LENGTH - len(ids)))


def tsv_rows(path):
  """The rows of a TSV file with a header line, each a list of fields."""
  return [line.split("\t") for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A teacher fine-tuned on the toy task; the student distilled from it,
  uninterrupted and killed after its step-8 checkpoint, then resumed."""
  root = tmp_path_factory.mktemp("task_distillation")
  write_toy_task(root / "toy", num_train=128)
  write_toy_task(root / "more", num_train=128, seed=1)
  # Unlabeled text: other sentences of the task, with an extra column.
  lines = (root / "more" / "train.tsv").read_text().splitlines()[1:]
  write_tsv(root / "unlabeled.tsv", [["id", "sentence"]] + [
      [str(i), line.split("\t")[0]] for i, line in enumerate(lines)])
  write_vocab(root / "vocab.txt")
  (root / "teacher.json").write_text(json.dumps(TOY_CONFIG))
  (root / "student.json").write_text(json.dumps(
      {**TOY_CONFIG, "num_hidden_layers": 1}))
  teacher = run(replace_flag(
      command(root / "toy", root / "vocab.txt", root / "teacher.json",
              root / "teacher", "--do_train"),
      "num_train_epochs", 12))
  assert teacher.returncode == 0, teacher.stderr[-3000:]
  # The reference run leaves --teacher_config out: the teacher folder's
  # bert_config.json is read; the killed run names it.
  reference = [a for a in distill_command(root, root / "uninterrupted")
               if not a.startswith("--teacher_config=")]
  killed = distill_command(root, root / "killed")
  reference_run = start(reference, root / "uninterrupted.log")
  killed_at = stage_runs.kill_after_checkpoint(
      start(killed, root / "killed.log"), root / "killed", 8)
  stage_runs.assert_finished(reference_run, root / "uninterrupted.log")
  return {"root": root, "command": reference, "killed_at": killed_at,
          "resumed": run(killed)}


def test_task_distillation_trains_on_both_and_saves_the_student_only(runs):
  root = runs["root"]
  output_dir = root / "uninterrupted"
  log = (root / "uninterrupted.log").read_text()
  assert "128 labeled + 128 unlabeled examples" in log
  assert "soft_loss" in log and "hard_loss" in log
  results = dict(line.split(" = ") for line in
                 (output_dir / "eval_results.txt").read_text().splitlines())
  assert int(results["global_step"]) == STEPS
  # The student learnt the task, as plain fine-tuning does
  # (test_run_classifier.py's toy task).
  assert float(results["eval_accuracy"]) >= 0.9  # chance is 0.5
  assert "The teacher on the 128 labeled training examples: accuracy" in log
  # It trained on both: every labeled example with its label and weight 1,
  # every unlabeled one with weight 0 (the ids written out here from the
  # TSV files), each with the teacher's logits as NumPy computes them.
  rows = ref.read_records(output_dir / task_distillation.TRAIN_FILE)
  weights = np.array([row[records.LABEL_WEIGHT][0] for row in rows])
  assert (weights == 1).sum() == 128 and (weights == 0).sum() == 128
  assert collections.Counter(
      (tuple(row[records.INPUT_IDS]), int(row[records.LABEL_IDS][0]))
      for row, weight in zip(rows, weights) if weight == 1) == (
          collections.Counter((toy_input_ids(sentence), int(label)) for
                              sentence, label in tsv_rows(root / "toy" /
                                                          "train.tsv")))
  assert collections.Counter(
      tuple(row[records.INPUT_IDS])
      for row, weight in zip(rows, weights) if weight == 0) == (
          collections.Counter(toy_input_ids(sentence) for _, sentence in
                              tsv_rows(root / "unlabeled.tsv")))
  teacher = checkpoint_values(root / "teacher" /
                              f"model.ckpt-{TEACHER_STEPS}")
  np.testing.assert_allclose(
      np.stack([row[records.TEACHER_LOGITS] for row in rows]),
      numpy_teacher_logits(teacher, TOY_CONFIG, rows), rtol=1e-4, atol=1e-5)
  values = checkpoint_values(output_dir / f"model.ckpt-{STEPS}")
  model_names = [n for n in ref.google_shapes(
      {**TOY_CONFIG, "num_hidden_layers": 1}) if n.startswith("bert/")] + [
          "output_weights", "output_bias"]
  assert set(values) == set(
      model_names + [f"{n}/adam_{s}" for n in model_names for s in "mv"] +
      ["global_step"])


def test_resumed_task_distillation_ends_as_the_uninterrupted_one(runs):
  killed_at = runs["killed_at"]
  assert killed_at is not None and killed_at < STEPS, "finished before kill"
  assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-3000:]
  assert f"at step {killed_at}" in runs["resumed"].stderr
  # The teacher's logits were cached by the killed run and reused.
  assert "Reusing" in runs["resumed"].stderr
  assert task_distillation.TRAIN_FILE in runs["resumed"].stderr
  assert_same_checkpoints(
      runs["root"] / "killed" / f"model.ckpt-{STEPS}",
      runs["root"] / "uninterrupted" / f"model.ckpt-{STEPS}", atol=1e-6)


def test_another_teacher_is_labelled_anew_not_read_from_the_cache(
    runs, tmp_path):
  """The finished run's folder, its teacher's logits cached, run again with
  another teacher (same config, other weights): the cache is not reused;
  the other teacher labels every example and the recipe names it."""
  root = runs["root"]
  first = task_distillation.weights_digest(str(root / "teacher"))
  assert first == task_distillation.weights_digest(str(root / "teacher"))
  cached = task_distillation.read_recipe(
      str(root / "uninterrupted" / task_distillation.TRAIN_FILE))
  assert cached["teacher"] == first
  assert cached["features"]["unlabeled"]["num_examples"] == 128
  rng = np.random.default_rng(6)
  other_weights = {**ref.random_google_weights(TOY_CONFIG, seed=5),
                   "output_weights": rng.normal(size=(2, 32)).astype(
                       np.float32),
                   "output_bias": rng.normal(size=2).astype(np.float32)}
  (tmp_path / "other_teacher").mkdir()
  (tmp_path / "other_teacher" / "bert_config.json").write_text(
      json.dumps(TOY_CONFIG))
  other = ref.write_google_checkpoint(
      str(tmp_path / "other_teacher" / "model.ckpt-1"), other_weights)
  output_dir = tmp_path / "rerun"
  shutil.copytree(root / "uninterrupted", output_dir)
  # Already trained: the run labels, then trains no further
  # (--continue_despite_changes: the teacher is another input).
  rerun = run(replace_flag(replace_flag(
      runs["command"], "output_dir", output_dir), "teacher_checkpoint",
                           other) + ["--continue_despite_changes"])
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  # (The features without the teacher's logits are reused.)
  assert not [line for line in rerun.stderr.splitlines()
              if "Reusing" in line and task_distillation.TRAIN_FILE in line]
  assert "The teacher labelled 256 examples" in rerun.stderr
  recipe = task_distillation.read_recipe(
      str(output_dir / task_distillation.TRAIN_FILE))
  assert recipe["teacher"] == task_distillation.weights_digest(other)
  assert recipe["teacher"]["path"] == other
  assert recipe["teacher"]["sha256"] != first["sha256"]
  assert recipe["features"] == cached["features"]
  # The same examples in the same order, with the other teacher's logits.
  rows = ref.read_records(output_dir / task_distillation.TRAIN_FILE)
  before = ref.read_records(root / "uninterrupted" /
                            task_distillation.TRAIN_FILE)
  assert len(rows) == len(before) == 256
  for row, old in zip(rows, before):
    for name in set(old) - {records.TEACHER_LOGITS}:
      np.testing.assert_array_equal(row[name], old[name], err_msg=name)
  np.testing.assert_allclose(
      np.stack([row[records.TEACHER_LOGITS] for row in rows]),
      numpy_teacher_logits(other_weights, TOY_CONFIG, rows),
      rtol=1e-4, atol=1e-5)


def test_a_mean_pooling_teacher_labels_with_mean_pooling(tmp_path):
  """A teacher fine-tuned with --pooling=mean (its config records it) gives
  its logits from the mean of the last hidden states, as NumPy computes
  them from its encoder's outputs, not from the [CLS] pooler."""
  config = modeling.BertConfig.from_dict(
      {**TOY_CONFIG, classifier.POOLING_KEY: "mean"})
  source = classifier.BertClassifier(config, 2, seed=4, pooling="mean")
  prefix = checkpoints.save_checkpoint(
      {n: v.numpy() for n, v in source.variables_by_name().items()},
      str(tmp_path / "teacher"), 1)
  task = classifier_data.get_task("sst-2")
  teacher = task_distillation.build_teacher(
      tf.distribute.get_strategy(), config, task, prefix, "float32")
  rng = np.random.default_rng(0)
  ids = rng.integers(1, TOY_CONFIG["vocab_size"], (3, 8))
  mask = np.array([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6])
  segments = np.zeros((3, 8), np.int64)
  logits = teacher(ids, mask, segments)["logits"].numpy()
  hidden = teacher.bert(ids, mask, segments)["sequence_output"].numpy()
  mean = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
  weights = source.variables_by_name()
  want = mean @ weights["output_weights"].numpy().T + weights[
      "output_bias"].numpy()
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# One-line errors.

def test_a_teacher_unlike_the_task_or_the_student_is_one_error_line(
    runs, tmp_path):
  root = runs["root"]
  three_classes = ref.write_google_checkpoint(
      str(tmp_path / "three" / "model.ckpt-1"),
      {**ref.random_google_weights(TOY_CONFIG, seed=5),
       "output_weights": np.zeros((3, 32), np.float32),
       "output_bias": np.zeros(3, np.float32)})
  big_vocab = tmp_path / "big_vocab.json"
  big_vocab.write_text(json.dumps({**TOY_CONFIG, "vocab_size": 99}))
  other_labels = tmp_path / "other_labels"
  other_labels.mkdir()
  for name in os.listdir(root / "teacher"):
    if name.startswith("model.ckpt") or name in ("checkpoint",
                                                 "bert_config.json"):
      (other_labels / name).write_bytes((root / "teacher" / name).read_bytes())
  (other_labels / "train.tf_record.json").write_text(
      json.dumps({"labels": ["neg", "pos"]}))
  no_column = tmp_path / "no_column.tsv"
  write_tsv(no_column, [["text"], ["good"]])
  out = tmp_path / "out"
  base = distill_command(root, out)
  cases = {
      "label count": (
          replace_flag(base, "teacher_checkpoint", three_classes),
          ["--teacher_checkpoint", "output_weights",
           "checkpoint shape [3, 32]", "2 label(s)"]),
      "vocabulary": (
          replace_flag(base, "teacher_config", big_vocab),
          ["--teacher_config", "vocab_size 99 differs from the student's 60"]),
      "label names": (
          replace_flag(base, "teacher_checkpoint", other_labels),
          ["the teacher was fine-tuned on the labels (neg, pos) but task "
           "sst-2 has (0, 1)"]),
      "unlabeled column": (
          replace_flag(base, "unlabeled_file", no_column),
          [f"--unlabeled_file {no_column}: no column 'sentence'"]),
      "settings without a teacher": (
          [a for a in base if not a.startswith(("--teacher_", "--unlabeled"))],
          ["give --teacher_checkpoint"]),
  }
  results = stage_runs.run_all({case: argv[1:]
                                for case, (argv, _) in cases.items()},
                               str(tmp_path / "logs"))
  for case, (_, texts) in cases.items():
    stage_runs.assert_one_line_error(results[case], *texts)
  assert not checkpoints_in(out)


def checkpoints_in(folder):
  return [name for name in (os.listdir(folder) if folder.exists() else [])
          if name.startswith("model.ckpt")]

