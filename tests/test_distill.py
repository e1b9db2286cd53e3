"""distill.py: the loss against NumPy, checkpoints, resume after kill -9,
two workers against one, evaluation output and the one-line input errors."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import distill_input
from bert_distill import distill_training
from bert_distill import example_codec
from bert_distill import label_settings
from bert_distill import losses
import modeling
import optimization
from bert_distill import records
from bert_distill import teacher_labels
import stage_runs
from bert_reference import assert_same_checkpoints, checkpoint_values
from conftest import ROOT
from stage_runs import replace_flag, run, start
from distill_cases import CONFIG, K, P, SEQ, VOCAB, write_config, write_records
from distill_cases import assert_replica_losses_add_up

def distill_command(config, input_file, output_dir, *extra):
  return [sys.executable, os.path.join(ROOT, "distill.py"),
          f"--bert_config_file={config}", f"--input_file={input_file}",
          f"--output_dir={output_dir}", f"--max_seq_length={SEQ}",
          f"--max_predictions_per_seq={P}", f"--truncation_factor={K}",
          "--train_batch_size=4", "--learning_rate=1e-3",
          "--num_warmup_steps=2", *extra]


# ---------------------------------------------------------------------------
# The loss against a NumPy re-derivation.

def np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def numpy_losses(mlm_logits, nsp_logits, f, temperature, soft_w, hard_w):
  """The loss written out position by position, as the docstring defines it."""
  batch, preds, _ = mlm_logits.shape
  weights = f[records.MASKED_LM_WEIGHTS]
  soft = np.zeros((batch, preds))
  hard = np.zeros((batch, preds))
  for b in range(batch):
    for p in range(preds):
      labels = f[label_settings.TEACHER_LABELS]
      probs = labels.probs[b, p].astype(np.float64)
      tempered = probs ** (1.0 / temperature)
      if tempered.sum() > 0:
        tempered = tempered / tempered.sum() * probs.sum()
      log_q = np_log_softmax(mlm_logits[b, p].astype(np.float64) / temperature)
      if labels.mode == label_settings.TOP_K:
        log_q = log_q[labels.ids[b, p]]
      soft[b, p] = -temperature**2 * np.sum(tempered * log_q)
      hard[b, p] = -np_log_softmax(mlm_logits[b, p].astype(np.float64))[
          f[records.MASKED_LM_IDS][b, p]]
  denominator = weights.sum() + 1e-5
  nsp = -np_log_softmax(nsp_logits.astype(np.float64))[
      np.arange(batch), f[records.NEXT_SENTENCE_LABELS]].mean()
  soft_loss = (weights * soft).sum() / denominator
  hard_loss = (weights * hard).sum() / denominator
  return {"loss": soft_w * soft_loss + hard_w * hard_loss + nsp,
          "soft_loss": soft_loss, "hard_mlm_loss": hard_loss,
          "next_sentence_loss": nsp}


def random_batch(rng, batch=3, k=K, vocab=VOCAB):
  """Logits and a parsed batch with padded (weight 0) positions."""
  weights = (rng.random((batch, P)) < 0.7).astype(np.float32)
  weights[:, 0] = 1.0
  if k:
    probs = rng.dirichlet(np.ones(k + 3), (batch, P))[..., :k]  # mass < 1
    probs[weights == 0] = 0.0  # padding holds no teacher labels
    teacher = label_settings.TopKLabels(
        probs.astype(np.float32),
        rng.integers(0, vocab, (batch, P, k), dtype=np.int32))
  else:
    teacher = label_settings.FullLabels(rng.dirichlet(
        np.ones(vocab), (batch, P)).astype(np.float32))
  features = {records.MASKED_LM_WEIGHTS: weights,
              records.MASKED_LM_IDS: rng.integers(0, vocab, (batch, P),
                                                  dtype=np.int32),
              records.NEXT_SENTENCE_LABELS: rng.integers(0, 2, batch,
                                                         dtype=np.int32),
              label_settings.TEACHER_LABELS: teacher}
  mlm_logits = (3 * rng.standard_normal((batch, P, vocab))).astype(np.float32)
  nsp_logits = rng.standard_normal((batch, 2)).astype(np.float32)
  return mlm_logits, nsp_logits, features


@pytest.mark.parametrize("temperature,soft_w,hard_w,k", [
    (1.0, 1.0, 0.0, K), (2.5, 1.0, 0.0, K), (0.5, 0.7, 0.3, K),
    (1.0, 0.0, 1.0, K), (2.0, 1.0, 0.5, 0)])
def test_loss_matches_numpy(temperature, soft_w, hard_w, k):
  mlm_logits, nsp_logits, features = random_batch(np.random.default_rng(1), k=k)
  got = losses.compute_losses(
      tf.constant(mlm_logits), tf.constant(nsp_logits),
      tf.nest.map_structure(tf.constant, features), losses.LossConfig(
          temperature=temperature, soft_loss_weight=soft_w,
          hard_mlm_loss_weight=hard_w))
  want = numpy_losses(mlm_logits, nsp_logits, features, temperature, soft_w,
                      hard_w)
  for name in ("loss", "next_sentence_loss"):
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5)
  if soft_w:
    np.testing.assert_allclose(got["soft_loss"], want["soft_loss"], rtol=1e-5)
  if hard_w:
    np.testing.assert_allclose(got["hard_mlm_loss"], want["hard_mlm_loss"],
                               rtol=1e-5)


def test_default_loss_is_the_originals_by_hand():
  # One masked position, k = 2 holding mass 0.75 (not renormalised at T = 1).
  logits = np.array([[[2.0, 0.0, -1.0, 0.5]]], np.float32)
  features = {records.MASKED_LM_WEIGHTS: np.array([[1.0]], np.float32),
              records.MASKED_LM_IDS: np.array([[0]], np.int32),
              records.NEXT_SENTENCE_LABELS: np.array([1], np.int32),
              label_settings.TEACHER_LABELS: label_settings.TopKLabels(
                  np.array([[[0.5, 0.25]]], np.float32),
                  np.array([[[0, 3]]], np.int32))}
  nsp_logits = np.array([[0.0, 0.0]], np.float32)
  log_z = np.log(np.exp(2.0) + 1 + np.exp(-1.0) + np.exp(0.5))
  soft = -(0.5 * (2.0 - log_z) + 0.25 * (0.5 - log_z)) / (1 + 1e-5)
  got = losses.compute_losses(logits, nsp_logits, features)
  np.testing.assert_allclose(got["soft_loss"], soft, rtol=1e-6)
  np.testing.assert_allclose(got["loss"], soft + np.log(2.0), rtol=1e-6)


def test_next_sentence_weight_zero_leaves_it_out_of_the_loss():
  """The presets' papers train without NSP: weight 0 drops it from the
  loss (and the evaluation loss) while it is still reported."""
  mlm_logits, nsp_logits, features = random_batch(np.random.default_rng(2))
  with_nsp = losses.compute_losses(mlm_logits, nsp_logits, features)
  without = losses.compute_losses(
      mlm_logits, nsp_logits, features,
      losses.LossConfig(next_sentence_loss_weight=0.0))
  assert float(without["next_sentence_loss"]) > 0
  np.testing.assert_allclose(without["loss"], without["soft_loss"], rtol=1e-6)
  np.testing.assert_allclose(
      with_nsp["loss"], without["loss"] + with_nsp["next_sentence_loss"],
      rtol=1e-6)
  sums = {"weight": 4.0, "hard_mlm_loss_w": 2.0, "mlm_correct_w": 1.0,
          "next_sentence_loss": 3.0, "next_sentence_correct": 1.0,
          "examples": 2.0}
  hard_only = losses.LossConfig(soft_loss_weight=0.0, hard_mlm_loss_weight=1.0)
  assert losses.evaluation_metrics(sums, hard_only)["loss"] == pytest.approx(
      2.0 / (4.0 + losses.WEIGHT_EPSILON) + 1.5)
  assert losses.evaluation_metrics(sums, dataclasses.replace(
      hard_only, next_sentence_loss_weight=0.0))["loss"] == pytest.approx(
          2.0 / (4.0 + losses.WEIGHT_EPSILON))


def test_replica_losses_with_global_denominators_add_up_to_the_batch_loss():
  mlm_logits, nsp_logits, features = random_batch(np.random.default_rng(2),
                                                  batch=4)
  assert_replica_losses_add_up(mlm_logits, nsp_logits, features,
                               losses.LossConfig(temperature=2.0,
                                                 soft_loss_weight=1.0,
                                                 hard_mlm_loss_weight=0.5))


def test_evaluation_metrics_match_numpy():
  mlm_logits, nsp_logits, features = random_batch(np.random.default_rng(3),
                                                  batch=5)
  # Make some student predictions right, against both references.
  features[records.MASKED_LM_IDS][:, :2] = mlm_logits[:, :2].argmax(-1)
  labels = features[label_settings.TEACHER_LABELS]
  labels.probs[:, 1:, 0] = 0.9
  labels.ids[:, 1:, 0] = mlm_logits[:, 1:].argmax(-1)
  sums = losses.evaluation_sums(mlm_logits, nsp_logits, features)
  metrics = losses.evaluation_metrics(
      {n: v.numpy().astype(np.float64) for n, v in sums.items()})
  w = features[records.MASKED_LM_WEIGHTS]
  predicted = mlm_logits.argmax(-1)
  teacher_best = np.take_along_axis(
      labels.ids, labels.probs.argmax(-1)[..., None], -1)[..., 0]
  want = numpy_losses(mlm_logits, nsp_logits, features, 1.0, 1.0, 0.0)
  np.testing.assert_allclose(
      metrics["masked_lm_accuracy"],
      (w * (predicted == features[records.MASKED_LM_IDS])).sum() /
      (w.sum() + 1e-5), rtol=1e-6)
  np.testing.assert_allclose(
      metrics["teacher_top1_agreement"],
      (w * (predicted == teacher_best)).sum() / (w.sum() + 1e-5), rtol=1e-6)
  np.testing.assert_allclose(metrics["masked_lm_loss"], want["soft_loss"],
                             rtol=1e-5)
  np.testing.assert_allclose(metrics["next_sentence_accuracy"], np.mean(
      nsp_logits.argmax(-1) == features[records.NEXT_SENTENCE_LABELS]))


def test_dataset_parses_records_back_in_order(tmp_path):
  path = write_records(tmp_path / "r.tfrecord", 6, seed=4)
  settings = label_settings.LabelSettings(label_settings.TOP_K, K)
  batches = list(distill_input.make_dataset([path], settings, 3, SEQ, P,
                                            is_training=False).take(2))
  originals = [example_codec.decode_example(r.numpy())
               for r in tf.data.TFRecordDataset(path)]
  for i, original in enumerate(originals):
    batch = batches[i // 3]
    labels = batch[label_settings.TEACHER_LABELS]
    assert labels.mode == label_settings.TOP_K
    np.testing.assert_array_equal(labels.probs[i % 3],
                                  original[records.TRUNCATED_PROBS].reshape(P, K))
    np.testing.assert_array_equal(labels.ids[i % 3],
                                  original[records.TOP_K_INDICES].reshape(P, K))
    np.testing.assert_array_equal(batch[records.INPUT_IDS][i % 3],
                                  original[records.INPUT_IDS])
    assert batch[records.NEXT_SENTENCE_LABELS][i % 3] == (
        original[records.NEXT_SENTENCE_LABELS][0])


def test_input_pipelines_run_without_tf_data_autotuning(tmp_path):
  """Autotuning makes deleting an iterator a tf.function consumed wait up
  to a minute (distribution.prefetched): every pipeline of the stages
  turns it off."""
  path = write_records(tmp_path / "r.tfrecord", 6, seed=4)
  settings = label_settings.LabelSettings(label_settings.TOP_K, K)
  for is_training in (True, False):
    dataset = distill_input.make_dataset([path], settings, 3, SEQ, P,
                                         is_training=is_training)
    assert dataset.options().autotune.enabled is False
  spec = records.pretraining_feature_spec(SEQ, P)
  windows = teacher_labels.read_windows(path, spec, 4)
  assert windows.options().autotune.enabled is False
  assert [len(w[records.INPUT_IDS]) for w in windows] == [4, 2]


def test_workers_together_see_the_batches_of_one_worker(tmp_path):
  files = [write_records(tmp_path / f"{i}.tfrecord", 10, seed=i)
           for i in range(3)]
  settings = label_settings.LabelSettings(label_settings.TOP_K, K)

  def input_ids(batch_size, shards, index, skip=0):
    dataset = distill_input.make_dataset(files, settings, batch_size, SEQ, P,
                                   is_training=True, seed=7, num_shards=shards,
                                   shard_index=index, skip_examples=skip)
    return [b[records.INPUT_IDS].numpy() for b in dataset.take(6)]

  one = input_ids(4, 1, 0)
  two = [input_ids(2, 2, i) for i in range(2)]
  for step in range(6):
    together = np.concatenate([two[0][step], two[1][step]])
    assert sorted(map(tuple, together)) == sorted(map(tuple, one[step]))
  # Resuming after 2 steps continues with step 3's batch.
  np.testing.assert_array_equal(input_ids(4, 1, 0, skip=8)[0], one[2])


def test_float16_loss_scale_skips_overflowing_steps_and_adapts():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    loss_scale = optimization.DynamicLossScale(initial=8.0, period=2)
  finite = [tf.constant([4.0, 8.0]), tf.constant(16.0)]
  overflow = [tf.constant([np.inf, 8.0]), tf.constant(16.0)]
  grads, overflowed = strategy.run(loss_scale.unscale, args=(finite,))
  np.testing.assert_array_equal(grads[0], [0.5, 1.0])
  assert not bool(overflowed)
  assert float(loss_scale.scale) == 8.0
  strategy.run(loss_scale.unscale, args=(finite,))
  assert float(loss_scale.scale) == 16.0  # doubled after `period` clean steps
  grads, overflowed = strategy.run(loss_scale.unscale, args=(overflow,))
  assert bool(overflowed)
  assert float(loss_scale.scale) == 8.0
  assert not np.any(grads[0]) and not np.any(grads[1])


@pytest.mark.parametrize("precision, use_xla", [
    ("mixed_float16", False), ("mixed_bfloat16", False), ("float32", True)])
def test_mixed_precision_and_xla_training_steps_learn(tmp_path, precision,
                                                      use_xla):
  """Also the whole step XLA-compiled (--use_xla's choice on GPUs), with
  the model's own XLA kernels (GELU, LayerNorm, dropout) nested in it."""
  path = write_records(tmp_path / "r.tfrecord", 8, seed=5)
  config = modeling.BertConfig.from_dict(dict(
      CONFIG, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  schedule = lambda step: 1e-3
  model, optimizer, loss_scale = distill_training.build_student(
      strategy, config, precision, 1, schedule)
  settings = label_settings.LabelSettings(label_settings.TOP_K, K)
  iterator = iter(distill_input.distributed_records_dataset(
      strategy, [path], settings, 8, SEQ, P, is_training=True, seed=1))
  loop = distill_training.make_train_loop(
      strategy, model, optimizer, 8, losses.LossConfig(), use_xla=use_xla,
      loss_scale=loss_scale)
  first = float(loop(iterator, tf.constant(1))[1]["loss"])
  steps, terms, _ = loop(iterator, tf.constant(20))  # the same 8 examples
  assert int(steps) == 20 and float(terms["loss"]) < first
  assert (loss_scale is not None) == (precision == "mixed_float16")


# ---------------------------------------------------------------------------
# Runs of the script. The slow runs start together (2 cores: tracing is
# single-threaded), each test then checks its own.

STEPS = 40
TRAIN = ("--do_train", f"--num_train_steps={STEPS}",
         "--save_checkpoints_steps=4", "--keep_checkpoint_max=3",
         "--iterations_per_loop=1", "--use_xla=false")
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Data, then together: an uninterrupted run with evaluation (the
  reference), the same run killed with -9 mid-way, the same run stopped by
  Ctrl-C mid-way, and two workers launched with launch_multiworker.sh on
  loopback ports."""
  root = tmp_path_factory.mktemp("distill")
  for i in range(2):
    write_records(root / f"train-{i}.tfrecord", 24, seed=10 + i)
  data = {"root": root, "train": f"{root}/train-*.tfrecord",
          "eval": write_records(root / "eval.tfrecord", 12, seed=20),
          "config": write_config(root / "student.json")}
  command = distill_command(data["config"], data["train"],
                            root / "uninterrupted", *TRAIN, "--do_eval",
                            f"--eval_input_file={data['eval']}",
                            "--eval_batch_size=4")
  reference = start(command, root / "uninterrupted.log")
  killed_command = replace_flag(command, "output_dir", root / "killed")
  killed = start(killed_command, root / "killed.log")
  interrupted_command = replace_flag(command, "output_dir",
                                     root / "interrupted")
  interrupted = start(interrupted_command, root / "interrupted.log")

  launched = stage_runs.launch_two_workers(
      root, replace_flag(command, "output_dir", root / "two_workers"))
  killed_at, interrupted_at = stage_runs.signal_after_checkpoints([
      (killed, root / "killed", 8, signal.SIGKILL),
      (interrupted, root / "interrupted", 8, signal.SIGINT)])
  stage_runs.assert_finished(reference, root / "uninterrupted.log")
  stage_runs.wait_for_workers(root / "logs")
  return {**data, "command": command, "killed_command": killed_command,
          "killed_at": killed_at, "launched": launched,
          "interrupted_command": interrupted_command,
          "interrupted_at": interrupted_at,
          "interrupted_status": interrupted.returncode}


def test_checkpoints_hold_google_names_slots_and_step(runs):
  output_dir = runs["root"] / "uninterrupted"
  kept = sorted(p.name for p in output_dir.glob("model.ckpt-*.index"))
  assert kept == [f"model.ckpt-{s}.index" for s in (32, 36, 40)]
  values = checkpoint_values(output_dir / f"model.ckpt-{STEPS}")
  names = list(ref.google_shapes(CONFIG))
  assert set(values) == set(
      names + [f"{n}/adam_{s}" for n in names for s in "mv"] + ["global_step"])
  assert values["global_step"] == STEPS
  assert values["bert/encoder/layer_1/output/dense/kernel"].shape == (64, 32)
  assert np.abs(values["cls/predictions/output_bias/adam_v"]).sum() > 0
  log = (runs["root"] / "uninterrupted.log").read_text()
  assert "step 40/40" in log and "examples/s" in log and "time left" in log


def test_eval_results_hold_the_metrics(runs):
  output_dir = runs["root"] / "uninterrupted"
  text = (output_dir / "eval_results.txt").read_text()
  results = dict(line.split(" = ") for line in text.splitlines())
  assert set(results) == {
      "global_step", "loss", "masked_lm_accuracy", "masked_lm_loss",
      "hard_mlm_loss", "next_sentence_accuracy", "next_sentence_loss",
      "teacher_top1_agreement"}
  assert int(results["global_step"]) == STEPS
  assert 0 <= float(results["teacher_top1_agreement"]) <= 1
  assert list((output_dir / "eval").glob("events.out.tfevents.*"))


def test_resume_after_kill_ends_with_the_uninterrupted_weights(runs):
  killed_at = runs["killed_at"]
  assert killed_at is not None and killed_at < STEPS, "finished before kill"
  result = run(runs["killed_command"] + ["--nodo_eval"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"at step {killed_at}" in result.stderr
  assert_same_checkpoints(runs["root"] / "killed" / f"model.ckpt-{STEPS}",
                          runs["root"] / "uninterrupted" / f"model.ckpt-{STEPS}",
                          rtol=1e-5, atol=1e-7)


def test_ctrl_c_stops_at_a_step_and_the_rerun_ends_with_the_same_weights(
    runs):
  """Ctrl-C is taken after the training loop's step (interrupts.py): one
  line, exit 130, no temporary left; the rerun resumes from the newest
  checkpoint and ends where the uninterrupted run did."""
  interrupted_at = runs["interrupted_at"]
  assert interrupted_at is not None and interrupted_at < STEPS
  log = (runs["root"] / "interrupted.log").read_text()
  result = subprocess.CompletedProcess([], runs["interrupted_status"], None,
                                       log)
  assert result.returncode == 130, log[-3000:]
  stage_runs.assert_one_line_error(result, "interrupted; rerun to resume")
  assert "Ctrl-C again to stop at once" in log
  # Saved where it stopped, not only at the 4-step checkpoints.
  assert (f"Stopped on request at step {interrupted_at}; saved "
          f"model.ckpt-{interrupted_at}") in log
  output_dir = runs["root"] / "interrupted"
  assert not [p.name for p in output_dir.iterdir() if ".tmp-" in p.name]
  resumed = run(runs["interrupted_command"] + ["--nodo_eval"])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"at step {interrupted_at}" in resumed.stderr
  assert_same_checkpoints(output_dir / f"model.ckpt-{STEPS}",
                          runs["root"] / "uninterrupted" / f"model.ckpt-{STEPS}",
                          rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sig,status,words", [
    (signal.SIGTERM, 143, "terminated (SIGTERM); rerun to resume"),
    (signal.SIGINT, 130, "interrupted; rerun to resume")])
def test_a_signal_stops_a_long_training_loop_after_a_step_and_saves_it(
    runs, tmp_path, sig, status, words):
  """One tf.function call of a million steps: the handler in the main
  thread cannot run until it returns, the watcher thread stops its graph
  after the current step (interrupts.py); the chief saves that step."""
  output_dir = tmp_path / "student"
  command = distill_command(runs["config"], runs["train"], output_dir,
                            "--do_train", "--num_train_steps=1000000",
                            "--iterations_per_loop=1000000",
                            "--save_checkpoints_steps=1000000",
                            "--use_xla=false")
  log = tmp_path / "log"
  process = start(command, log)
  while process.poll() is None and "starting from" not in log.read_text():
    time.sleep(0.05)
  time.sleep(3)  # tracing done, the loop running
  process.send_signal(sig)
  sent = time.monotonic()
  assert process.wait(timeout=120) == status, log.read_text()[-3000:]
  assert time.monotonic() - sent < 60
  result = subprocess.CompletedProcess([], status, None, log.read_text())
  stage_runs.assert_one_line_error(result, words)
  latest = checkpoints.latest_checkpoint(str(output_dir))
  step = checkpoints.checkpoint_step(latest)
  assert 0 < step < 1000000
  assert checkpoint_values(latest)["global_step"] == step
  assert f"Stopped on request at step {step}; saved" in result.stderr


def test_a_sigterm_to_one_worker_stops_both_at_one_step(runs, tmp_path):
  """The stop request is summed over the workers inside the training loop:
  a SIGTERM to worker 1 alone (a scheduler preempting one machine) stops the
  chief before the same step, and the chief saves that step."""
  command = distill_command(runs["config"], runs["train"], tmp_path / "out",
                            "--do_train", "--num_train_steps=1000000",
                            "--iterations_per_loop=1000000",
                            "--save_checkpoints_steps=1000000",
                            "--use_xla=false")
  stage_runs.launch_two_workers(tmp_path, command)
  logs = tmp_path / "logs"
  deadline = time.monotonic() + 120
  while not all((logs / f"worker-{i}.log").exists() and "starting from" in
                (logs / f"worker-{i}.log").read_text() for i in (0, 1)):
    assert time.monotonic() < deadline, "the workers did not start"
    time.sleep(0.1)
  time.sleep(3)  # both in their loop
  os.kill(int((logs / "worker-1.pid").read_text()), signal.SIGTERM)
  stage_runs.wait_for_workers(logs, timeout=120)
  chief = (logs / "worker-0.log").read_text()
  other = (logs / "worker-1.log").read_text()
  step = checkpoints.checkpoint_step(
      checkpoints.latest_checkpoint(str(tmp_path / "out")))
  assert 0 < step < 1000000
  assert f"Stopped on request at step {step}; saved model.ckpt-{step}" in (
      chief), chief[-3000:]
  assert f"Stopped on request at step {step}\n" in other, other[-3000:]
  assert "error: terminated (SIGTERM); rerun to resume" in other
  assert "error: interrupted; rerun to resume" in chief


def test_two_workers_reach_the_weights_of_one(runs):
  assert "kill $(cat" in runs["launched"]  # tells how to stop them
  output_dir = runs["root"] / "two_workers"
  chief_log = (runs["root"] / "logs" / "worker-0.log").read_text()
  assert "with 2 replica(s)" in chief_log
  assert f"step {STEPS}/{STEPS}" in chief_log, chief_log[-3000:]
  other_log = (runs["root"] / "logs" / "worker-1.log").read_text()
  assert f"step {STEPS}/{STEPS}" in other_log and "Saved" not in other_log
  assert_same_checkpoints(output_dir / f"model.ckpt-{STEPS}",
                          runs["root"] / "uninterrupted" / f"model.ckpt-{STEPS}",
                          rtol=1e-3, atol=1e-5)
  # Each worker evaluates its half of the batches; their sums add up to
  # one worker's evaluation of the same weights.
  two, one = ({name: float(value) for name, value in (
      line.split(" = ") for line in (folder / "eval_results.txt").read_text(
          ).splitlines())} for folder in (output_dir,
                                          runs["root"] / "uninterrupted"))
  assert two["global_step"] == STEPS and set(two) == set(one)
  for name in one:
    np.testing.assert_allclose(two[name], one[name], rtol=1e-3, atol=1e-5,
                               err_msg=name)


def test_rerun_of_a_finished_run_does_nothing(runs):
  output_dir = runs["root"] / "uninterrupted"
  before = {p.name: p.stat().st_mtime_ns for p in output_dir.iterdir()}
  result = run(runs["command"])
  assert result.returncode == 0, result.stderr[-2000:]
  assert "nothing to train" in result.stderr
  assert "already holds the evaluation of step 40" in result.stderr
  after = {p.name: p.stat().st_mtime_ns for p in output_dir.iterdir()}
  assert after == before


def test_a_rerun_with_other_evaluation_files_evaluates_again(runs, tmp_path):
  """The skip of a finished evaluation holds only for the same evaluation
  files and settings: another --eval_input_file is evaluated, and its
  results replace the former ones."""
  output_dir = tmp_path / "copy"
  shutil.copytree(runs["root"] / "uninterrupted", output_dir)
  before = (output_dir / "eval_results.txt").read_text()
  other = replace_flag(replace_flag(runs["command"], "output_dir", output_dir),
                       "eval_input_file", f"{runs['root']}/train-0.tfrecord")
  result = run(other)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "nothing to train" in result.stderr
  assert "already holds the evaluation" not in result.stderr
  after = (output_dir / "eval_results.txt").read_text()
  assert after != before and "global_step = 40" in after
  again = run(other)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "already holds the evaluation of step 40" in again.stderr
  assert (output_dir / "eval_results.txt").read_text() == after


# ---------------------------------------------------------------------------
# Bad input: one line on stderr, exit status != 0, before any training.

def test_config_errors_name_the_flag_and_file(tmp_path):
  """model_config.read_config's checks, as distill reports them."""
  path = tmp_path / "bert_config.json"
  path.write_text(json.dumps(CONFIG))
  config = distill_training.read_student_config(str(path), 32)
  assert config.max_position_embeddings == 32
  cases = {  # path, max_seq_length -> what the message must hold
      (str(path), 33): "--max_seq_length 33 exceeds the student's "
                       "max_position_embeddings 32",
      (str(tmp_path / "none.json"), 16): "BERT config file not found",
      (str(tmp_path), 16): "cannot read",  # a directory
  }
  for (config_path, seq_length), text in cases.items():
    with pytest.raises(cli.StageError) as error:
      distill_training.read_student_config(config_path, seq_length)
    message = str(error.value)
    assert message.startswith(f"--bert_config_file {config_path}: ")
    assert text in message and "\n" not in message


def bad_input_cases(runs, root):
  """{case: (command, what the error line must contain)}."""
  finished = runs["root"] / "uninterrupted"
  command = distill_command(runs["config"], runs["train"], root / "out",
                            *TRAIN)
  for name in ("arch", "nan"):
    (root / name).mkdir()
    for path in finished.glob(f"model.ckpt-{STEPS}.*"):
      shutil.copy(path, root / name)
    shutil.copy(finished / "checkpoint", root / name)
  nan_file = write_records(root / "nan.tfrecord", 8, seed=3)
  with tf.io.TFRecordWriter(nan_file) as writer:
    for example in tf.data.TFRecordDataset(runs["train"].replace("*", "0")):
      features = example_codec.decode_example(example.numpy())
      features[records.TRUNCATED_PROBS][:] = np.nan
      writer.write(example_codec.serialize_example(features))
  return {
      "teacher labels of another k": (
          replace_flag(command, "truncation_factor", 5),
          "'truncated_masked_lm_probs' has length 12 but 20 was expected; "
          "they hold k = 3 per masked position"),
      "ids beyond the student vocabulary": (
          replace_flag(command, "bert_config_file",
                       write_config(root / "small_vocab.json", vocab_size=20)),
          "but the student's vocab_size is 20"),
      "no input files": (
          replace_flag(command, "input_file", root / "missing-*.tfrecord"),
          "matches no file"),
      "a checkpoint of another architecture": (
          replace_flag(replace_flag(
              command, "bert_config_file",
              write_config(root / "wide.json", hidden_size=48,
                           num_attention_heads=3)), "output_dir", root / "arch"),
          "of another architecture"),
      "a layer map naming a missing teacher layer": (
          command + [f"--init_checkpoint={finished}", "--init_layer_map=0,5"],
          "layer map names layer(s) 5"),
      "more warmup steps than steps": (
          replace_flag(command, "num_warmup_steps", 10**6),
          "--num_warmup_steps must not exceed --num_train_steps"),
      "every loss weight 0": (
          command + ["--soft_loss_weight=0", "--hard_mlm_loss_weight=0",
                     "--next_sentence_loss_weight=0"],
          "every loss weight is 0"),
      "an evaluation without a model": (
          replace_flag([a for a in command if a != "--do_train"], "output_dir",
                       root / "eval_only") + [
              "--do_eval", f"--eval_input_file={runs['train']}"],
          "--do_eval without --do_train: --output_dir"),
      "a NaN loss": (
          replace_flag(replace_flag(replace_flag(
              command, "input_file", nan_file), "output_dir", root / "nan"),
              "num_train_steps", STEPS + 8),
          f"the loss became nan at step {STEPS + 1}; stopped, the newest finite "
          f"checkpoint ({root / 'nan' / f'model.ckpt-{STEPS}'}) is the last good"),
  }


@pytest.fixture(scope="module")
def bad_runs(runs, tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  cases = bad_input_cases(runs, root)
  results = stage_runs.run_all(
      {case: command[1:] for case, (command, _) in cases.items()},
      str(root / "logs"))
  return root, cases, results


@pytest.mark.parametrize("case", [
    "teacher labels of another k", "ids beyond the student vocabulary",
    "no input files", "a checkpoint of another architecture",
    "a layer map naming a missing teacher layer",
    "more warmup steps than steps", "every loss weight 0",
    "an evaluation without a model", "a NaN loss"])
def test_bad_input_is_one_line_error(bad_runs, case):
  root, cases, results = bad_runs
  stage_runs.assert_one_line_error(results[case], cases[case][1])
  if case == "a NaN loss":
    assert checkpoints.latest_checkpoint(str(root / "nan")).endswith(
        f"model.ckpt-{STEPS}")
  elif case != "a checkpoint of another architecture":
    assert not list(root.glob("out/model.ckpt-*"))
  if case == "an evaluation without a model":
    assert not (root / "eval_only").exists()
