"""Online distillation: the intermediate-layer losses against NumPy, zero for
a copy of the teacher, where gradients go, online full-distribution training
against offline `full` labels, resume and two workers with the teacher in the
loop, and the one-line errors of bad input."""
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import distill_input
from bert_distill import distill_training
from bert_distill import label_settings
from bert_distill import losses
import modeling
import optimization
from bert_distill import records
import stage_runs
from bert_distill import teacher_labels
from bert_distill import training
from bert_reference import assert_same_checkpoints, checkpoint_values
from conftest import ROOT
from stage_runs import run, start

VOCAB, SEQ, P = 60, 16, 4
BASE = {"vocab_size": VOCAB, "num_hidden_layers": 2, "intermediate_size": 64,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 32,
        "type_vocab_size": 2, "initializer_range": 0.02}
STUDENT = {**BASE, "hidden_size": 32, "num_attention_heads": 4}
# Twice the layers, a wider hidden size; the same head count (TinyBERT's
# score MSE) or another one (MiniLM's relations).
TEACHER = {**BASE, "hidden_size": 48, "num_attention_heads": 4,
           "num_hidden_layers": 4}
TEACHER_3_HEADS = {**TEACHER, "num_attention_heads": 3}
ALL_LOSSES = {"embedding_loss_weight": 1.0, "hidden_loss_weight": 1.0,
              "attention_loss_weight": 1.0}


def batch(seed=0, size=3):
  """Model inputs [B, S] x 3, [B, P] with real lengths 16, 11 and 6."""
  rng = np.random.default_rng(seed)
  lengths = np.array([SEQ, SEQ - 5, 6][:size])
  mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(4, VOCAB, (size, SEQ)) * mask
  segments = ((np.arange(SEQ)[None] >= lengths[:, None] // 2) & (mask == 1))
  positions = np.stack([rng.choice(n, P, replace=False) for n in lengths])
  return ids, mask, segments.astype(np.int32), positions


def loaded_model(config, weights):
  model = modeling.BertPretrainingModel(modeling.BertConfig(**config), seed=0)
  for name, variable in model.variables_by_name().items():
    variable.assign(weights[name])
  return model


def options(**changes):
  """A LossConfig of intermediate losses (the soft loss at its default)."""
  return losses.LossConfig(**{"hidden_layer_map": (2, 4), "relation_heads": 4,
                              **changes})


# ---------------------------------------------------------------------------
# NumPy, example by example over its real tokens (no masks).

def np_cosine(s, t, lengths):
  values = [1 - np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
            for i, n in enumerate(lengths) for a, b in zip(s[i, :n], t[i, :n])]
  return np.mean(values)


def np_mse(s, t, lengths):
  return np.mean(np.concatenate([((s[i, :n] - t[i, :n])**2).mean(-1)
                                 for i, n in enumerate(lengths)]))


def np_score_mse(s, t, lengths):
  return np.mean(np.concatenate([
      ((s[i, :, :n, :n] - t[i, :, :n, :n])**2).ravel()
      for i, n in enumerate(lengths)]))


def np_relation(a, b, n, heads):
  """[R, n, n] relation distributions of one example's first n tokens."""
  d = a.shape[-1] // heads
  a = a[:n].reshape(n, heads, d).transpose(1, 0, 2)
  b = b[:n].reshape(n, heads, d).transpose(1, 0, 2)
  return ref.softmax(a @ b.transpose(0, 2, 1) / np.sqrt(d))


def np_relation_kl(s_pair, t_pair, lengths, heads):
  values = []
  for i, n in enumerate(lengths):
    p = np_relation(t_pair[0][i], t_pair[1][i], n, heads)
    q = np_relation(s_pair[0][i], s_pair[1][i], n, heads)
    values.append((p * (np.log(p) - np.log(q))).sum(-1).ravel())
  return np.mean(np.concatenate(values))


@pytest.fixture(scope="module")
def models():
  """NumPy-reference outputs and TF outputs of student and teachers."""
  inputs = batch()
  found = {}
  for name, config, seed in (("student", STUDENT, 1), ("teacher", TEACHER, 2),
                             ("teacher3", TEACHER_3_HEADS, 3)):
    weights = ref.random_google_weights(config, seed=seed)
    model = loaded_model(config, weights)
    found[name] = (ref.bert_forward(weights, config, *inputs),
                   model(*inputs, intermediates=True))
  rng = np.random.default_rng(4)
  projections = {
      name: tf.Variable(0.2 * rng.standard_normal(shape).astype(np.float32))
      for name, shape in losses.projection_shapes(
          32, 48, options(**ALL_LOSSES)).items()}
  return found, inputs, projections


def project(x, projections, prefix):
  return x @ projections[prefix + "/kernel"].numpy().astype(np.float64) + (
      projections[prefix + "/bias"].numpy())


@pytest.mark.parametrize("case", ["embedding", "hidden mse", "hidden cosine",
                                  "attention mse", "attention kl"])
def test_each_loss_matches_numpy(models, case):
  found, inputs, projections = models
  lengths = inputs[1].sum(1)
  teacher_name = "teacher3" if case == "attention kl" else "teacher"
  (s_np, s_tf), (t_np, t_tf) = found["student"], found[teacher_name]
  hs, ht = s_np["hidden_states"], t_np["hidden_states"]
  e, h = losses.EMBEDDING_PROJECTION, losses.HIDDEN_PROJECTION
  if case == "embedding":
    opts = options(embedding_loss_weight=1.0)
    want = np_mse(project(hs[0], projections, e), ht[0], lengths)
  elif case == "hidden mse":
    opts = options(hidden_loss_weight=1.0)  # student 1, 2 <- teacher 2, 4
    want = sum(np_mse(project(hs[j], projections, h), ht[2 * j], lengths)
               for j in (1, 2))
  elif case == "hidden cosine":
    opts = options(hidden_loss_weight=1.0, hidden_loss="cosine")
    want = np_cosine(project(hs[2], projections, h), ht[4], lengths)
  elif case == "attention mse":
    opts = options(attention_loss_weight=1.0, attention_loss="mse")
    want = sum(np_score_mse(s_np["attention_scores"][j - 1],
                            t_np["attention_scores"][2 * j - 1], lengths)
               for j in (1, 2))
  else:  # 4 student heads, 3 teacher heads: 4 relation heads (8 and 12 wide)
    opts = options(attention_loss_weight=1.0, attention_loss="kl")
    want = sum(np_relation_kl(
        (s_np[f"attention_{a}"][-1], s_np[f"attention_{b}"][-1]),
        (t_np[f"attention_{a}"][-1], t_np[f"attention_{b}"][-1]), lengths, 4)
               for a, b in (("queries", "keys"), ("values", "values")))
  got = losses.intermediate_losses(s_tf, t_tf, inputs[1], opts, projections)
  term = case.split()[0] + "_loss"
  np.testing.assert_allclose(float(got[term]), want, rtol=2e-4, atol=1e-6)
  np.testing.assert_allclose(float(got["intermediate_loss"]), want,
                             rtol=2e-4, atol=1e-6)
  assert want > 1e-3


def test_relation_kl_with_the_models_heads_is_the_attention_kl(models):
  """MiniLM's per-head attention KL, from the models' own attention_probs."""
  found, inputs, _ = models
  (s_np, s_tf), (t_np, t_tf) = found["student"], found["teacher"]
  want = []
  for i, n in enumerate(inputs[1].sum(1)):
    p = t_np["attention_probs"][-1][i, :, :n, :n]
    q = s_np["attention_probs"][-1][i, :, :n, :n]
    want.append((p * (np.log(p) - np.log(q))).sum(-1).ravel())
  got = losses.relation_kl_loss(
      (s_tf["attention_queries"][-1], s_tf["attention_keys"][-1]),
      (t_tf["attention_queries"][-1], t_tf["attention_keys"][-1]),
      inputs[1], relation_heads=4)
  np.testing.assert_allclose(float(got), np.mean(np.concatenate(want)),
                             rtol=2e-4)


def test_replica_terms_with_global_totals_add_up_to_the_batch(models):
  found, inputs, projections = models
  s_tf, t_tf = found["student"][1], found["teacher"][1]
  opts = options(**ALL_LOSSES, attention_loss="mse")
  whole = losses.intermediate_losses(s_tf, t_tf, inputs[1], opts, projections)
  lengths = inputs[1].sum(1).astype(np.float32)
  totals = {"token_total": lengths.sum(), "pair_total": (lengths**2).sum()}
  parts = [losses.intermediate_losses(
      tf.nest.map_structure(lambda x, s=s: x[s], s_tf),
      tf.nest.map_structure(lambda x, s=s: x[s], t_tf), inputs[1][s], opts,
      projections, **totals) for s in (slice(0, 1), slice(1, 3))]
  for name in whole:
    np.testing.assert_allclose(float(parts[0][name] + parts[1][name]),
                               float(whole[name]), rtol=1e-5)


# ---------------------------------------------------------------------------
# A copy of the teacher, gradients, and the train step.

def online_teacher(strategy, student_config, teacher_dir, teacher_config,
                   **changes):
  config = modeling.BertConfig(**teacher_config)
  # As the flags give them: the default layer map and relation heads.
  opts = distill_training.resolve_layers(
      losses.LossConfig(**changes), modeling.BertConfig(**student_config),
      config, None)
  return distill_training.make_online_teacher(
      strategy, modeling.BertConfig(**student_config), config,
      os.path.join(teacher_dir, "bert_model.ckpt"), "float32", opts, seed=1)


def all_terms(student, teacher, inputs, projections, **changes):
  s = student(*inputs, intermediates=True)
  t = teacher(*inputs, intermediates=True)
  return {f"{loss} {kind}": float(losses.intermediate_losses(
      s, t, inputs[1], options(hidden_layer_map=[1, 2], **ALL_LOSSES,
                               hidden_loss=loss, attention_loss=kind,
                               **changes), projections)[term])
          for loss, kind in (("mse", "mse"), ("cosine", "kl"))
          for term in losses.INTERMEDIATE_TERMS}


def test_every_loss_is_zero_for_a_copy_of_the_teacher(tmp_path):
  config = {**STUDENT}
  _, prefix, _ = ref.write_model_dir(str(tmp_path / "teacher"), config, seed=5)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  student, optimizer, _ = distill_training.build_student(
      strategy, modeling.BertConfig(**config), "float32", 7, lambda s: 1e-3)
  # The copy through --init_checkpoint's path.
  training.restore_or_initialize(
      student, optimizer, str(tmp_path / "out"), prefix,
      lambda path: checkpoints.load_checkpoint(student, path))
  teacher = checkpoints.load_teacher(
      strategy, modeling.BertConfig(**config), prefix, "float32")
  inputs = batch(seed=6)
  for name, value in all_terms(student, teacher, inputs, {}).items():
    assert abs(value) < 1e-5, name
  features = dict(zip([records.INPUT_IDS, records.INPUT_MASK,
                       records.SEGMENT_IDS, records.MASKED_LM_POSITIONS],
                      map(tf.constant, inputs)))
  labelled, _ = distill_training.OnlineTeacher(teacher, options(),
                                               {}).label(features)
  q = tf.nn.log_softmax(student(*inputs)["masked_lm_logits"])
  assert labelled[label_settings.TEACHER_LABELS].mode == label_settings.FULL
  p = labelled[label_settings.TEACHER_LABELS].probs
  assert float(tf.reduce_max(tf.abs(tf.reduce_sum(
      p * (tf.math.log(p) - q), -1)))) < 1e-5  # KL(teacher || student)

  other, _, _ = distill_training.build_student(
      strategy, modeling.BertConfig(**config), "float32", 8, lambda s: 1e-3)
  for name, value in all_terms(other, teacher, inputs, {}).items():
    assert value > 1e-4, name


def test_gradients_reach_the_student_and_projections_never_the_teacher(
    tmp_path):
  ref.write_model_dir(str(tmp_path / "t"), TEACHER, seed=9)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  teacher = online_teacher(strategy, STUDENT, str(tmp_path / "t"), TEACHER,
                           **ALL_LOSSES, attention_loss="mse")
  assert sorted(teacher.projections) == [
      "distill/embedding_projection/bias", "distill/embedding_projection/kernel",
      "distill/hidden_projection/bias", "distill/hidden_projection/kernel"]
  student, optimizer, _ = distill_training.build_student(
      strategy, modeling.BertConfig(**STUDENT), "float32", 1, lambda s: 1e-3,
      teacher.projections)
  inputs = batch(seed=10)
  features = dict(zip([records.INPUT_IDS, records.INPUT_MASK,
                       records.SEGMENT_IDS, records.MASKED_LM_POSITIONS],
                      map(tf.constant, inputs)))
  teacher_vars = list(teacher.model.variables_by_name().values())
  with tf.GradientTape(persistent=True) as tape:
    labelled, t_out = teacher.label(features)
    s_out = student(*inputs, intermediates=True, training=True)
    loss = teacher.intermediate_losses(s_out, t_out, inputs[1], {})[
        "intermediate_loss"] + tf.reduce_sum(losses.soft_cross_entropy(
            s_out["masked_lm_logits"],
            labelled[label_settings.TEACHER_LABELS].probs))
  assert all(g is None for g in tape.gradient(loss, teacher_vars))
  trained = {**student.variables_by_name(), **teacher.projections}
  grads = dict(zip(trained, tape.gradient(loss, list(trained.values()))))
  for name in teacher.projections:
    assert float(tf.reduce_sum(tf.abs(grads[name]))) > 0, name
  assert float(tf.reduce_sum(tf.abs(
      grads["bert/encoder/layer_0/attention/self/query/kernel"]))) > 0

  # The optimizer holds slots for the student and projections only.
  slots = optimizer.slot_variables_by_name()
  assert "distill/hidden_projection/kernel/adam_m" in slots
  assert len(slots) == 2 * len(trained)
  before = {n: v.numpy() for n, v in teacher.model.variables_by_name().items()}
  projection_before = teacher.projections[
      "distill/hidden_projection/kernel"].numpy()
  path = ref.write_records(tmp_path / "r.tfrecord",
                           ref.random_pretraining_examples(8, SEQ, P, VOCAB))
  dataset = distill_input.distributed_records_dataset(
      strategy, [path], None, 4, SEQ, P, is_training=True, seed=1)
  loop = distill_training.make_train_loop(
      strategy, student, optimizer, 4, teacher.config, use_xla=False,
      teacher=teacher)
  steps, terms, _ = loop(iter(dataset), tf.constant(2))
  assert int(steps) == 2 and all(float(terms[n]) > 0 for n in (
      "soft_loss", *losses.INTERMEDIATE_TERMS))
  for name, value in teacher.model.variables_by_name().items():
    np.testing.assert_array_equal(value.numpy(), before[name])
  assert np.abs(teacher.projections["distill/hidden_projection/kernel"].numpy()
                - projection_before).max() > 0


def test_online_soft_loss_trains_as_offline_full_labels(tmp_path):
  """The same records, labelled by stage IV with --truncation_factor 0, and
  trained offline, against the teacher in the loop: the same weights."""
  _, prefix, _ = ref.write_model_dir(str(tmp_path / "t"), TEACHER_3_HEADS,
                                     seed=11)
  plain = ref.write_records(tmp_path / "plain.tfrecord",
                            ref.random_pretraining_examples(12, SEQ, P, VOCAB,
                                                            seed=12))
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  teacher_config = modeling.BertConfig(**TEACHER_3_HEADS)
  labeler = teacher_labels.TeacherLabeler(
      checkpoints.load_teacher(strategy, teacher_config, prefix, "float32"), 0,
      strategy, use_xla=False)
  full = str(tmp_path / "full.tfrecord")
  teacher_labels.write_teacher_labels(
      labeler, [plain], full, records.pretraining_feature_spec(SEQ, P), 0,
      batch_size=4, length_multiple=8, sort_batches=1,
      bounds=records.value_bounds(VOCAB, teacher_config.type_vocab_size, SEQ))

  loss_config = losses.LossConfig(temperature=2.0, hard_mlm_loss_weight=0.5)
  finals = []
  for path, settings, online in (
      (full, label_settings.LabelSettings(label_settings.FULL, VOCAB), False),
      (plain, None, True)):
    teacher = (online_teacher(strategy, STUDENT, str(tmp_path / "t"),
                              TEACHER_3_HEADS) if online else None)
    student, optimizer, _ = distill_training.build_student(
        strategy, modeling.BertConfig(**STUDENT), "float32", 3,
        lambda s: 1e-3)
    dataset = distill_input.distributed_records_dataset(
        strategy, [path], settings, 4, SEQ, P, is_training=True, seed=2)
    loop = distill_training.make_train_loop(strategy, student, optimizer, 4,
                                            loss_config, use_xla=False,
                                            teacher=teacher)
    _, terms, _ = loop(iter(dataset), tf.constant(4))
    finals.append(({n: v.numpy() for n, v in
                    student.variables_by_name().items()}, terms))
  (offline, offline_terms), (online, online_terms) = finals
  np.testing.assert_allclose(float(online_terms["soft_loss"]),
                             float(offline_terms["soft_loss"]), rtol=1e-5)
  moved = 0.0
  for name, value in offline.items():
    np.testing.assert_allclose(online[name], value, rtol=1e-4, atol=1e-6,
                               err_msg=name)
  initial, _, _ = distill_training.build_student(
      strategy, modeling.BertConfig(**STUDENT), "float32", 3, lambda s: 1e-3)
  for name, variable in initial.variables_by_name().items():
    moved = max(moved, np.abs(variable.numpy() - offline[name]).max())
  assert moved > 1e-3  # training did change the weights


# ---------------------------------------------------------------------------
# Runs of the script with the teacher in the loop: uninterrupted, killed with
# -9 and resumed, two workers.

STEPS = 40


def command(root, output_dir, *extra):
  return [sys.executable, os.path.join(ROOT, "distill.py"),
          f"--bert_config_file={root}/student.json",
          f"--input_file={root}/train-*.tfrecord",
          f"--output_dir={output_dir}", f"--max_seq_length={SEQ}",
          f"--max_predictions_per_seq={P}", "--train_batch_size=4",
          "--learning_rate=1e-3", "--num_warmup_steps=2",
          f"--teacher_config={root}/t/bert_config.json",
          f"--teacher_checkpoint={root}/t/bert_model.ckpt", *extra]


ONLINE = ("--do_train", f"--num_train_steps={STEPS}",
          "--save_checkpoints_steps=4", "--keep_checkpoint_max=3",
          "--iterations_per_loop=1", "--use_xla=false",
          "--temperature=2", "--hard_mlm_loss_weight=0.5",
          "--embedding_loss_weight=0.5", "--hidden_loss_weight=1",
          "--hidden_loss=mse", "--attention_loss_weight=1",
          "--attention_loss=kl", "--relation_heads=4")


@pytest.fixture(scope="module")
def online_runs(tmp_path_factory):
  """Together: an uninterrupted online run with evaluation, the same run
  killed with -9 after step 4 and two workers through launch_multiworker.sh."""
  root = tmp_path_factory.mktemp("online")
  ref.write_model_dir(str(root / "t"), TEACHER_3_HEADS, seed=13)
  (root / "student.json").write_text(json.dumps(STUDENT))
  for i in range(2):  # plain pretraining records: no stage IV
    ref.write_records(root / f"train-{i}.tfrecord",
                      ref.random_pretraining_examples(24, SEQ, P, VOCAB,
                                                      seed=14 + i))
  ref.write_records(root / "eval.tfrecord",
                    ref.random_pretraining_examples(8, SEQ, P, VOCAB, seed=16))
  uninterrupted = command(root, root / "uninterrupted", *ONLINE, "--do_eval",
                          f"--eval_input_file={root}/eval.tfrecord",
                          "--eval_batch_size=4")

  reference = start(uninterrupted, root / "uninterrupted.log")
  killed_command = command(root, root / "killed", *ONLINE)
  killed = start(killed_command, root / "killed.log")
  stage_runs.launch_two_workers(root,
                                command(root, root / "two_workers", *ONLINE))
  killed_at = stage_runs.kill_after_checkpoint(killed, root / "killed", 4)
  stage_runs.assert_finished(reference, root / "uninterrupted.log")
  stage_runs.wait_for_workers(root / "logs")
  resumed = run(killed_command)
  return {"root": root, "killed_at": killed_at, "resumed": resumed}


def test_online_checkpoint_is_the_student_plus_distill_variables(online_runs):
  root = online_runs["root"]
  values = checkpoint_values(root / "uninterrupted" / f"model.ckpt-{STEPS}")
  student = set(ref.google_shapes(STUDENT))
  projections = {f"distill/{p}_projection/{v}" for p in ("embedding", "hidden")
                 for v in ("kernel", "bias")}
  trained = student | projections
  assert set(values) == trained | {f"{n}/adam_{s}" for n in trained
                                   for s in "mv"} | {"global_step"}
  # Nothing of the teacher (hidden 48, 4 layers) is in it.
  assert values["bert/embeddings/word_embeddings"].shape == (VOCAB, 32)
  assert values["distill/hidden_projection/kernel"].shape == (32, 48)
  # The student alone loads as a plain BERT, the distill/ entries unused.
  model = modeling.BertPretrainingModel(modeling.BertConfig(**STUDENT))
  report = checkpoints.load_checkpoint(model, str(root / "uninterrupted"))
  assert not report["initialized"]
  assert projections <= set(report["unused"])


def test_online_summaries_and_eval_results(online_runs):
  root = online_runs["root"] / "uninterrupted"
  tags = set()
  for path in root.glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags.update(v.tag for v in event.summary.value)
  assert {f"train/{n}" for n in ("loss", "soft_loss", "hard_mlm_loss",
                                 "next_sentence_loss", "embedding_loss",
                                 "hidden_loss", "attention_loss")} <= tags
  results = dict(line.split(" = ") for line in
                 (root / "eval_results.txt").read_text().splitlines())
  assert int(results["global_step"]) == STEPS
  # The records are plain pretraining records: the teacher metrics are
  # the online teacher's (its full distribution, no stored labels).
  assert 0 <= float(results["teacher_top1_agreement"]) <= 1
  assert float(results["masked_lm_loss"]) != float(results["hard_mlm_loss"])
  # The teacher's whole distribution is there, so the distance to it is too.
  assert float(results["teacher_kl"]) > 0
  np.testing.assert_allclose(
      float(results["teacher_kl"]),
      float(results["teacher_cross_entropy"]) -
      float(results["teacher_entropy"]), rtol=1e-4, atol=1e-5)


def test_online_resume_after_kill_ends_with_the_uninterrupted_weights(
    online_runs):
  root, killed_at = online_runs["root"], online_runs["killed_at"]
  assert killed_at is not None and killed_at < STEPS, "finished before kill"
  resumed = online_runs["resumed"]
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"at step {killed_at}" in resumed.stderr
  assert_same_checkpoints(root / "killed" / f"model.ckpt-{STEPS}",
                          root / "uninterrupted" / f"model.ckpt-{STEPS}",
                          rtol=1e-5, atol=1e-7)


def test_online_two_workers_reach_the_weights_of_one(online_runs):
  root = online_runs["root"]
  chief_log = (root / "logs" / "worker-0.log").read_text()
  assert "with 2 replica(s)" in chief_log
  assert f"step {STEPS}/{STEPS}" in chief_log, chief_log[-3000:]
  assert_same_checkpoints(root / "two_workers" / f"model.ckpt-{STEPS}",
                          root / "uninterrupted" / f"model.ckpt-{STEPS}",
                          rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------
# Bad input: one line, before training. The checks as functions, then the
# script's own runs (all forked from one TensorFlow import).

def test_checks_name_the_mismatch(tmp_path):
  student = modeling.BertConfig(**STUDENT)
  teacher = modeling.BertConfig(**TEACHER_3_HEADS)
  StageError = cli.StageError

  def message(function, *args, **kwargs):
    with pytest.raises(StageError) as error:
      function(*args, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)

  def resolve(hidden_layer_map=None, **changes):
    return message(distill_training.resolve_layers,
                   losses.LossConfig(**changes), student, teacher,
                   hidden_layer_map)

  assert "names 3 student layers but the student has 2" in resolve(
      hidden_layer_map=["1", "2", "3"])
  assert "teacher layer(s) 5 but the teacher has layers 0 (embeddings) to 4" \
      in resolve(hidden_layer_map=["2", "5"])
  assert ("--attention_loss mse needs equal head counts, but the student has "
          "4 and the teacher 3; use --attention_loss kl") in resolve(
              attention_loss_weight=1.0, attention_loss="mse")
  assert "--relation_heads 3 does not divide the student's hidden_size 32" \
      in resolve(attention_loss_weight=1.0)  # 0: the teacher's 3
  config_path = tmp_path / "teacher.json"
  config_path.write_text(json.dumps({**TEACHER, "vocab_size": 61}))
  assert "the teacher's vocab_size 61 differs from the student's 60" in message(
      distill_training.read_matching_teacher_config, str(config_path), SEQ, student)
  assert "BERT config file not found" in message(
      distill_training.read_matching_teacher_config, str(tmp_path / "none.json"), SEQ,
      student)
  _, prefix, _ = ref.write_model_dir(str(tmp_path / "t"), TEACHER_3_HEADS,
                                     seed=1)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  text = message(distill_training.make_online_teacher, strategy, student,
                 modeling.BertConfig(**{**TEACHER_3_HEADS,
                                        "num_hidden_layers": 5}),
                 prefix, "float32", losses.LossConfig(), 1)
  assert "bert/encoder/layer_4/" in text and "does it match" in text
  assert "no checkpoint there" in message(
      distill_training.make_online_teacher, strategy, student, teacher,
      str(tmp_path / "none"), "float32", losses.LossConfig(), 1)


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  ref.write_model_dir(str(root / "t"), TEACHER, seed=1)
  (root / "student.json").write_text(json.dumps(STUDENT))
  (root / "t" / "vocab61.json").write_text(json.dumps({**TEACHER,
                                                       "vocab_size": 61}))
  (root / "t" / "wide.json").write_text(json.dumps({**TEACHER,
                                                    "hidden_size": 64}))
  ref.write_records(root / "train-0.tfrecord",
                    ref.random_pretraining_examples(8, SEQ, P, VOCAB))
  out = root / "out"
  run = ("--do_train", "--num_train_steps=2")
  cases = {
      "intermediate weight without a teacher": (
          [a for a in command(root, out, *run, "--hidden_loss_weight=1")
           if not a.startswith("--teacher")],
          "need the teacher in the loop: give --teacher_checkpoint"),
      "preset without a teacher": (
          [a for a in command(root, out, *run, "--preset=minilm")
           if not a.startswith("--teacher")], "need the teacher in the loop"),
      "config without checkpoint": (
          [a for a in command(root, out, *run)
           if not a.startswith("--teacher_checkpoint")],
          "--teacher_config needs --teacher_checkpoint"),
      "missing teacher checkpoint": (
          command(root, out, *run) + [f"--teacher_checkpoint={root}/none"],
          "no checkpoint there"),
      "checkpoint of another config": (
          command(root, out, *run) + [f"--teacher_config={root}/t/wide.json"],
          "mis-shaped: bert/embeddings/word_embeddings"),
      "another vocabulary": (
          command(root, out, *run) + [f"--teacher_config={root}/t/vocab61.json"],
          "the teacher's vocab_size 61 differs from the student's 60"),
      "a layer map naming a layer the teacher lacks": (
          command(root, out, *run, "--hidden_loss_weight=1",
                  "--hidden_layer_map=2,7"), "teacher layer(s) 7"),
      "a layer map naming a layer the student lacks": (
          command(root, out, *run, "--hidden_loss_weight=1",
                  "--hidden_layer_map=1,2,3"),
          "names 3 student layers but the student has 2"),
      "attention mse with other head counts": (
          command(root, out, *run, "--attention_loss_weight=1",
                  "--attention_loss=mse", f"--teacher_config={root}/t/h3.json"),
          "use --attention_loss kl"),
  }
  (root / "t" / "h3.json").write_text(json.dumps(TEACHER_3_HEADS))
  results = stage_runs.run_all(
      {case: argv[1:] for case, (argv, _) in cases.items()},
      str(root / "logs"))
  return root, cases, results


@pytest.mark.parametrize("case", [
    "intermediate weight without a teacher", "preset without a teacher",
    "config without checkpoint", "missing teacher checkpoint",
    "checkpoint of another config", "another vocabulary",
    "a layer map naming a layer the teacher lacks",
    "a layer map naming a layer the student lacks",
    "attention mse with other head counts"])
def test_bad_online_input_is_one_line_error(bad_runs, case):
  root, cases, results = bad_runs
  stage_runs.assert_one_line_error(results[case], cases[case][1])
  assert not list(root.glob("out/model.ckpt-*"))


def test_presets_set_only_what_the_user_did_not_give():
  defaults = {"temperature": 1.0, "soft_loss_weight": 1.0,
              "hidden_loss": "mse"}
  config, applied = distill_training.loss_config(
      {**defaults, "temperature": 4.0}, {"temperature"}, "distilbert")
  assert config.temperature == 4.0 and "temperature" not in applied
  assert (config.soft_loss_weight, config.hard_mlm_loss_weight,
          config.hidden_loss_weight, config.hidden_loss) == (
              5.0, 2.0, 1.0, "cosine")
  assert distill_training.loss_config(defaults, set())[0] == losses.LossConfig()
  # No preset's paper trains the next-sentence head.
  for preset in distill_training.PRESETS.values():
    assert preset["next_sentence_loss_weight"] == 0.0


def test_float16_loss_scale_leaves_unreached_variables_alone():
  """With only intermediate losses (minilm, tinybert_general) the masked-LM
  head gets no gradient: None stays None under the float16 loss scale."""
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    loss_scale = optimization.DynamicLossScale(initial=4.0)
  grads, overflowed = strategy.run(loss_scale.unscale,
                                   args=([tf.constant([8.0]), None],))
  assert grads[1] is None and not bool(overflowed)
  np.testing.assert_array_equal(grads[0], [2.0])
