"""Label modes (docs/label_modes.md): the sampled encoding, each mode's loss
and the teacher-distance metrics against NumPy, stage IV's draws (from the
teacher's softmax at T, deterministic across batch sizes, sort windows and
shards), stage V reading the mode from the records (train, resume, eval in
every mode) and the one-line errors for bad input."""
import collections
import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import distill_input
from bert_distill import example_codec
from bert_distill import label_settings
from bert_distill import losses
from bert_distill import records
from bert_distill import teacher_labels
import stage_runs
from conftest import ROOT
from stage_runs import replace_flag
from distill_cases import CONFIG, P, SEQ, VOCAB, assert_replica_losses_add_up


def np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------
# records.py: the sampled encoding and its generator.

def test_compact_samples_matches_a_counter():
  rng = np.random.default_rng(0)
  draws = rng.integers(0, 12, (200, 9))
  for k in (3, 9, 14):
    ids, counts, dropped = teacher_labels.compact_samples(draws, k)
    assert ids.shape == counts.shape == (200, k)
    for row in range(200):
      first = {}
      for position, token in enumerate(draws[row].tolist()):
        first.setdefault(token, position)
      ranked = sorted(collections.Counter(draws[row].tolist()).items(),
                      key=lambda item: (-item[1], first[item[0]]))[:k]
      n = len(ranked)
      assert ids[row, :n].tolist() == [i for i, _ in ranked]
      assert counts[row, :n].tolist() == [c for _, c in ranked]
      assert not counts[row, n:].any() and not ids[row, n:].any()
      assert dropped[row] == 9 - sum(c for _, c in ranked)


def test_uniforms_depend_on_file_record_position_and_draw_only():
  key = teacher_labels.sample_key(7, "/a/b/part_3.tfrecord")
  assert key == teacher_labels.sample_key(7, "/elsewhere/part_3.tfrecord")
  assert key != teacher_labels.sample_key(8, "/a/b/part_3.tfrecord")
  whole = teacher_labels.sample_uniforms(key, np.arange(10), 5, 6)  # [10, 5, 6]
  assert whole.dtype == np.float32 and whole.shape == (10, 5, 6)
  np.testing.assert_array_equal(
      teacher_labels.sample_uniforms(key, [7, 2], 5, 6), whole[[7, 2]])
  np.testing.assert_array_equal(  # more draws: the first ones stay
      teacher_labels.sample_uniforms(key, [3], 5, 9)[0, :, :6], whole[3])
  assert 0.0 <= whole.min() and whole.max() < 1.0
  many = teacher_labels.sample_uniforms(key, np.arange(2000), 5, 10).ravel()
  assert abs(many.mean() - 0.5) < 0.01 and abs(many.var() - 1 / 12) < 0.002
  # Neighbouring counters are uncorrelated.
  assert abs(np.corrcoef(many[:-1], many[1:])[0, 1]) < 0.02


def test_label_settings_read_back_from_each_mode():
  base = ref.random_pretraining_examples(1, SEQ, P, VOCAB)[0]
  k = 3
  cases = {
      label_settings.TOP_K: {records.TRUNCATED_PROBS: np.zeros(P * k),
                      records.TOP_K_INDICES: np.zeros(P * k)},
      label_settings.FULL: {records.FULL_PROBS: np.zeros(P * VOCAB)},
      label_settings.SAMPLED: {records.SAMPLED_IDS: np.zeros(P * k),
                        records.SAMPLED_COUNTS: np.zeros(P * k),
                        records.NUM_SAMPLES: [32],
                        records.SAMPLE_TEMPERATURE: [2.5]},
  }
  cases["head"] = {**cases[label_settings.SAMPLED],
                   records.SAMPLED_HEAD_PROBS: np.zeros(P * 2),
                   records.SAMPLED_HEAD_IDS: np.zeros(P * 2)}
  want = {label_settings.TOP_K: (label_settings.TOP_K, k, 0, 1.0, 0),
          label_settings.FULL: (label_settings.FULL, VOCAB, 0, 1.0, 0),
          label_settings.SAMPLED: (label_settings.SAMPLED, k, 32, 2.5, 0),
          "head": (label_settings.SAMPLED, k, 32, 2.5, 2)}
  for mode, labels in cases.items():
    example = example_codec.decode_example(
        example_codec.serialize_example({**base, **labels}))
    assert label_settings.of_record(example, P) == want[mode]
  assert label_settings.of_record(example_codec.decode_example(
      example_codec.serialize_example(base)), P) is None
  with pytest.raises(ValueError, match="several modes"):
    label_settings.of_record({**cases[label_settings.TOP_K], **cases[label_settings.FULL]}, P)


# ---------------------------------------------------------------------------
# losses.py against NumPy.

def batch_features(rng, batch=3, k=4, vocab=VOCAB):
  weights = (rng.random((batch, P)) < 0.7).astype(np.float32)
  weights[:, 0] = 1.0
  features = {
      records.MASKED_LM_WEIGHTS: weights,
      records.MASKED_LM_IDS: rng.integers(0, vocab, (batch, P), dtype=np.int32),
      records.NEXT_SENTENCE_LABELS: rng.integers(0, 2, batch, dtype=np.int32),
  }
  logits = (3 * rng.standard_normal((batch, P, vocab))).astype(np.float32)
  nsp = rng.standard_normal((batch, 2)).astype(np.float32)
  return logits, nsp, features


def top_k_labels(rng, batch, k, vocab=VOCAB):
  full = rng.dirichlet(np.full(vocab, 0.3), (batch, P))
  ids = np.argsort(-full, axis=-1)[..., :k].astype(np.int32)
  return {label_settings.TEACHER_LABELS: label_settings.TopKLabels(
      np.take_along_axis(full, ids, -1).astype(np.float32), ids)}


def sampled_labels(rng, batch, k, vocab=VOCAB, n=12):
  draws = rng.integers(0, vocab // 4, (batch * P, n))
  ids, counts, _ = teacher_labels.compact_samples(draws, k)
  counts = counts.astype(np.float32)
  weights = counts / counts.sum(-1, keepdims=True)
  return {label_settings.TEACHER_LABELS: label_settings.SampledLabels(
      weights.reshape(batch, P, k), ids.reshape(batch, P, k).astype(np.int32))}


def test_gathered_cross_entropy_gradient_is_the_numeric_one():
  """The hand-written gradient against central differences in float64, with
  a repeated id (its weights add) and a zero-weight padding slot."""
  rng = np.random.default_rng(11)
  logits = tf.constant(rng.standard_normal((2, 3, 7)))  # float64
  ids = tf.constant(rng.integers(0, 7, (2, 3, 4)), tf.int32)
  ids = tf.tensor_scatter_nd_update(ids, [[0, 0, 1]], [ids[0, 0, 0]])
  weights = tf.constant(rng.random((2, 3, 4)))
  weights = tf.tensor_scatter_nd_update(weights, [[1, 2, 3]], [0.0])
  theoretical, numerical = tf.test.compute_gradient(
      lambda z, w: losses.gathered_cross_entropy(z, ids, w),
      [logits, weights])
  for got, want in zip(theoretical, numerical):
    np.testing.assert_allclose(got, want, atol=1e-7)


@pytest.mark.parametrize("mode", ["top_k", "sampled", "hard"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_masked_lm_losses_have_autodiffs_gradient_in_graph_and_xla(
    mode, temperature):
  """compute_losses' gradient with the closed form equals TensorFlow's
  autodiff of log_softmax + gather, the form it replaces."""
  rng = np.random.default_rng(12)
  logits, nsp, features = batch_features(rng)
  config = losses.LossConfig(temperature=temperature)
  if mode == "hard":
    config = losses.LossConfig(soft_loss_weight=0.0, hard_mlm_loss_weight=1.0)
    want_ids = features[records.MASKED_LM_IDS][..., None]
    want_weights = np.ones_like(want_ids, np.float32)
    temperature = 1.0
  else:
    features.update((top_k_labels if mode == "top_k" else sampled_labels)(
        rng, 3, 4))
    labels = features[label_settings.TEACHER_LABELS]
    want_ids = labels.ids
    want_weights = (labels.weights if mode == "sampled" else
                    losses.tempered_teacher_probs(labels.probs, temperature))

  def autodiff_form(z):
    log_q = tf.nn.log_softmax(z / temperature, axis=-1)
    per_position = -tf.reduce_sum(
        want_weights * tf.gather(log_q, want_ids, batch_dims=2), -1)
    w = features[records.MASKED_LM_WEIGHTS]
    return tf.reduce_sum(w * per_position) * temperature**2 / (
        tf.reduce_sum(w) + losses.WEIGHT_EPSILON)

  def gradient_of(loss_fn, jit_compile=False):
    @tf.function(jit_compile=jit_compile)
    def run(z):
      with tf.GradientTape() as tape:
        tape.watch(z)
        loss = loss_fn(z)
      return loss, tape.gradient(loss, z)
    return run(tf.constant(logits))

  term = "hard_mlm_loss" if mode == "hard" else "soft_loss"
  want_loss, want_grad = gradient_of(autodiff_form)
  for jit_compile in (False, True):
    loss, grad = gradient_of(
        lambda z: losses.compute_losses(z, nsp, features, config)[term],
        jit_compile)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), atol=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_tail_mass_term_matches_numpy(temperature):
  rng = np.random.default_rng(1)
  logits, _, _ = batch_features(rng)
  labels = top_k_labels(rng, 3, 4)[label_settings.TEACHER_LABELS]
  got = losses.tail_mass_cross_entropy(
      logits, labels.probs, labels.ids,
      temperature).numpy()
  p = labels.probs.astype(np.float64)
  tempered = p ** (1 / temperature)
  tempered *= p.sum(-1, keepdims=True) / tempered.sum(-1, keepdims=True)
  q = np.exp(np_log_softmax(logits.astype(np.float64) / temperature))
  q_top = np.take_along_axis(q, labels.ids, -1).sum(-1)
  want = -(1 - tempered.sum(-1)) * np.log(1 - q_top) * temperature**2
  # The teacher's 1 - sum p is taken in float32, as stored.
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)


def test_tail_mass_term_is_exact_where_one_minus_the_sum_rounds_to_zero():
  # The student puts all but ~e^-40 of its mass on the top k: 1 - sum q is
  # 0 in float32, while log(1 - sum q) is about -40.
  logits = np.full((1, 1, VOCAB), -20.0, np.float32)
  logits[..., :3] = 20.0
  ids = np.array([[[0, 1, 2]]], np.int32)
  probs = np.array([[[0.5, 0.2, 0.1]]], np.float32)
  got = losses.tail_mass_cross_entropy(logits, probs, ids).numpy()
  log_tail = (np.log(VOCAB - 3) - 20.0) - (np.log(3) + 20.0)
  np.testing.assert_allclose(got, [[-0.2 * log_tail]], rtol=1e-5)
  with tf.GradientTape() as tape:
    z = tf.constant(logits)
    tape.watch(z)
    loss = tf.reduce_sum(losses.tail_mass_cross_entropy(z, probs, ids))
  assert np.isfinite(tape.gradient(loss, z).numpy()).all()


def test_tail_mass_loss_adds_the_term_and_compiles_with_xla():
  rng = np.random.default_rng(2)
  logits, nsp, features = batch_features(rng)
  features.update(top_k_labels(rng, 3, 4))
  plain = losses.compute_losses(logits, nsp, features)
  with_tail = tf.function(
      lambda z, n: losses.compute_losses(
          z, n, features, losses.LossConfig(tail_mass_loss=True)),
      jit_compile=True)(logits, nsp)
  w = features[records.MASKED_LM_WEIGHTS]
  tail = losses.tail_mass_cross_entropy(
      logits, features[label_settings.TEACHER_LABELS].probs,
      features[label_settings.TEACHER_LABELS].ids).numpy()
  np.testing.assert_allclose(
      float(with_tail["soft_loss"]),
      float(plain["soft_loss"]) + (w * tail).sum() / (w.sum() + 1e-5),
      rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_sampled_loss_is_the_monte_carlo_estimate_at_its_temperature(
    temperature):
  rng = np.random.default_rng(3)
  logits, nsp, features = batch_features(rng)
  features.update(sampled_labels(rng, 3, 5))
  terms = losses.compute_losses(logits, nsp, features,
                                losses.LossConfig(temperature=temperature))
  log_q = np_log_softmax(logits.astype(np.float64) / temperature)
  per_position = -temperature**2 * np.sum(
      features[label_settings.TEACHER_LABELS].weights *
      np.take_along_axis(log_q, features[label_settings.TEACHER_LABELS].ids,
                         -1), -1)
  w = features[records.MASKED_LM_WEIGHTS]
  np.testing.assert_allclose(float(terms["soft_loss"]),
                             (w * per_position).sum() / (w.sum() + 1e-5),
                             rtol=1e-5)


def test_sampled_loss_is_unbiased_for_the_full_cross_entropy():
  """Averaged over independent draws, the sampled loss and its gradient are
  the full-distribution ones (what top-k's are not)."""
  rng = np.random.default_rng(4)
  vocab, rows, n, k, repeats = 30, 2, 8, 8, 4000
  teacher = rng.dirichlet(np.full(vocab, 0.5), rows)  # [R, V]
  logits = tf.constant(rng.standard_normal((1, rows, vocab)), tf.float32)
  draws = np.stack([rng.choice(vocab, (repeats, n), p=t) for t in teacher],
                   1).reshape(-1, n)  # [repeats * R, N]
  ids, counts, _ = teacher_labels.compact_samples(draws, k)
  weights = (counts / n).reshape(repeats, rows, k).astype(np.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(logits)
    full = losses.soft_cross_entropy(logits,
                                     teacher[None].astype(np.float32))
    tiled = tf.tile(logits, [repeats, 1, 1])
    sampled = losses.sampled_cross_entropy(
        tiled, weights, ids.reshape(repeats, rows, k).astype(np.int32))
    mean_sampled = tf.reduce_mean(sampled, axis=0)
    full_sum, sampled_sum = tf.reduce_sum(full), tf.reduce_sum(mean_sampled)
  np.testing.assert_allclose(mean_sampled.numpy(), full.numpy()[0],
                             rtol=0.02)
  np.testing.assert_allclose(tape.gradient(sampled_sum, logits).numpy(),
                             tape.gradient(full_sum, logits).numpy(),
                             atol=0.02)
  top_k = losses.soft_cross_entropy(
      logits, np.sort(teacher)[None, :, ::-1][..., :k].astype(np.float32),
      np.argsort(-teacher)[None, :, :k].astype(np.int32))
  assert np.all(top_k.numpy() < full.numpy() - 0.1)  # top-k's is biased


@pytest.mark.parametrize("mode", ["top_k", "top_k+tail", "sampled", "full"])
def test_replicas_with_global_denominators_add_up_in_every_mode(mode):
  """What multi-worker training relies on: replica losses add up."""
  rng = np.random.default_rng(5)
  logits, nsp, features = batch_features(rng, batch=4)
  if mode == "sampled":
    features.update(sampled_labels(rng, 4, 5))
  elif mode == "full":
    features[label_settings.TEACHER_LABELS] = label_settings.FullLabels(
        rng.dirichlet(np.ones(VOCAB), (4, P)).astype(np.float32))
  else:
    features.update(top_k_labels(rng, 4, 4))
  assert_replica_losses_add_up(logits, nsp, features, losses.LossConfig(
      temperature=2.0, hard_mlm_loss_weight=0.5,
      tail_mass_loss=mode == "top_k+tail"))


def numpy_ece(probs, true_ids, weights, bins=15):
  """Expected calibration error written out bin by bin."""
  confidence = probs.max(-1).ravel()
  correct = (probs.argmax(-1) == true_ids).ravel()
  w = weights.ravel()
  total = 0.0
  for b in range(bins):
    low, high = b / bins, (b + 1) / bins
    in_bin = (confidence >= low) & ((confidence < high) | (b == bins - 1))
    if w[in_bin].sum():
      accuracy = (w * correct)[in_bin].sum() / w[in_bin].sum()
      mean_confidence = (w * confidence)[in_bin].sum() / w[in_bin].sum()
      total += w[in_bin].sum() * abs(accuracy - mean_confidence)
  return total / (w.sum() + 1e-5)


def test_teacher_distance_metrics_match_numpy():
  rng = np.random.default_rng(6)
  logits, nsp, features = batch_features(rng, batch=6)
  teacher = rng.dirichlet(np.full(VOCAB, 0.2), (6, P))
  teacher[0, 0, :] = 0.0  # exact zeros: 0 log 0 = 0
  teacher[0, 0, 5] = 1.0
  features[label_settings.TEACHER_LABELS] = label_settings.FullLabels(
      teacher.astype(np.float32))
  features[records.MASKED_LM_IDS][:, :2] = teacher[:, :2].argmax(-1)
  # Split in two batches, as evaluation adds them up.
  parts = [losses.evaluation_sums(
      logits[s], nsp[s], tf.nest.map_structure(lambda v: v[s], features))  # pylint: disable=cell-var-from-loop
           for s in (slice(0, 2), slice(2, 6))]
  sums = {n: sum(p[n].numpy().astype(np.float64) for p in parts)
          for n in parts[0]}
  metrics = losses.evaluation_metrics(sums)
  t = features[label_settings.TEACHER_LABELS].probs.astype(np.float64)
  log_q = np_log_softmax(logits.astype(np.float64))
  w = features[records.MASKED_LM_WEIGHTS]
  mean = lambda x: (w * x).sum() / (w.sum() + 1e-5)
  with np.errstate(divide="ignore", invalid="ignore"):
    t_log_t = np.where(t > 0, t * np.log(t), 0.0)
  np.testing.assert_allclose(metrics["teacher_kl"],
                             mean((t_log_t - t * log_q).sum(-1)), rtol=1e-5)
  np.testing.assert_allclose(metrics["teacher_cross_entropy"],
                             mean(-(t * log_q).sum(-1)), rtol=1e-5)
  np.testing.assert_allclose(metrics["teacher_entropy"],
                             mean(-t_log_t.sum(-1)), rtol=1e-5)
  np.testing.assert_allclose(
      metrics["teacher_top1_agreement"],
      mean(logits.argmax(-1) == t.argmax(-1)), rtol=1e-6)
  true_ids = features[records.MASKED_LM_IDS]
  np.testing.assert_allclose(metrics["student_ece"],
                             numpy_ece(np.exp(log_q), true_ids, w), rtol=1e-4)
  np.testing.assert_allclose(metrics["teacher_ece"],
                             numpy_ece(t, true_ids, w), rtol=1e-4)
  assert metrics["teacher_kl"] > 0 and metrics["teacher_ece"] > 0


def test_kl_of_the_teacher_against_itself_is_zero():
  rng = np.random.default_rng(7)
  logits, nsp, features = batch_features(rng)
  features[label_settings.TEACHER_LABELS] = label_settings.FullLabels(
      tf.nn.softmax(logits).numpy())
  metrics = losses.evaluation_metrics(
      {n: v.numpy().astype(np.float64) for n, v in losses.evaluation_sums(
          logits, nsp, features).items()})
  assert abs(metrics["teacher_kl"]) < 1e-5
  assert metrics["teacher_top1_agreement"] > 0.99
  np.testing.assert_allclose(metrics["student_ece"], metrics["teacher_ece"],
                             atol=1e-5)


def test_top_k_and_sampled_labels_report_no_teacher_distance():
  rng = np.random.default_rng(8)
  for labels in (top_k_labels(rng, 3, 4), sampled_labels(rng, 3, 4)):
    logits, nsp, features = batch_features(rng)
    sums = losses.evaluation_sums(logits, nsp, {**features, **labels})
    metrics = losses.evaluation_metrics(
        {n: v.numpy() for n, v in sums.items()})
    assert "teacher_kl" not in metrics and "student_ece" not in metrics


# ---------------------------------------------------------------------------
# Stage IV, run as users run it.

STAGE_IV = os.path.join(ROOT, "extract_teacher_labels_truncated.py")
L4, P4 = 32, 5


@pytest.fixture(scope="module")
def stage_iv(tmp_path_factory):
  base = tmp_path_factory.mktemp("stage_iv")
  config = dict(ref.TINY_CONFIG)
  config_path = base / "bert_config.json"
  config_path.write_text(json.dumps(config))
  weights = ref.random_google_weights(config, seed=1)
  checkpoint = ref.write_google_checkpoint(str(base / "bert_model.ckpt"),
                                           weights)
  v = config["vocab_size"]
  parts = base / "parts"
  parts.mkdir()
  examples = {}
  for i, count in enumerate((9, 5, 6)):
    examples[i] = ref.random_pretraining_examples(count, L4, P4, v,
                                                  seed=30 + i)
    ref.write_records(parts / f"part_{i}.tfrecord", examples[i])
  few = ref.random_pretraining_examples(2, L4, P4, v, seed=40)
  ref.write_records(base / "few.tfrecord", few)
  common = [f"--bert_config_file={config_path}",
            f"--init_checkpoint={checkpoint}", f"--max_seq_length={L4}",
            f"--max_predictions_per_seq={P4}", "--progress_interval=0"]
  sampled = ["--label_mode=sampled", "--num_samples=12",
             "--truncation_factor=6", "--seed=5"]
  all_parts = f"--input_file={parts}/part_*.tfrecord"
  on_few = common + [f"--input_file={base}/few.tfrecord"]
  invocations = {
      "sampled_b4": common + sampled + [all_parts, "--batch_size=4",
                                        f"--output_file={base}/b4.tfrecord"],
      "sampled_b3_unsorted": common + sampled + [
          all_parts, "--batch_size=3", "--sort_batches=1",
          "--length_multiple=0", "--use_xla=false",
          f"--output_file={base}/b3.tfrecord"],
      "sampled_shard0": common + sampled + [
          all_parts, "--batch_size=2", "--num_shards=2", "--shard_index=0",
          f"--output_dir={base}/shards"],
      "sampled_shard1": common + sampled + [
          all_parts, "--batch_size=5", "--num_shards=2", "--shard_index=1",
          f"--output_dir={base}/shards"],
      "draws_t1": on_few + ["--label_mode=sampled", "--num_samples=20000",
                            "--truncation_factor=99",
                            f"--output_file={base}/t1.tfrecord"],
      "draws_t2": on_few + ["--label_mode=sampled", "--num_samples=20000",
                            "--truncation_factor=99",
                            "--sample_temperature=2",
                            f"--output_file={base}/t2.tfrecord"],
      "draws_head": on_few + ["--label_mode=sampled", "--num_samples=20000",
                              "--truncation_factor=96", "--exact_top_k=3",
                              f"--output_file={base}/head.tfrecord"],
      "overflow": on_few + ["--label_mode=sampled", "--num_samples=50",
                            "--truncation_factor=2",
                            f"--output_file={base}/overflow.tfrecord"],
      "full_mode": on_few + ["--label_mode=full",
                             f"--output_file={base}/full_mode.tfrecord"],
      "full_first_record": on_few + ["--label_mode=full", "--max_records=1",
                                     f"--output_file={base}/first.tfrecord"],
      "full_k0": on_few + ["--truncation_factor=0",
                           f"--output_file={base}/full_k0.tfrecord"],
      "top_k_default": on_few + [f"--output_file={base}/default.tfrecord"],
      "top_k_named": on_few + ["--label_mode=top_k",
                               f"--output_file={base}/named.tfrecord"],
  }
  bad = {
      "num_samples_0": (["--label_mode=sampled", "--num_samples=0"],
                        "--num_samples must be >= 1"),
      "sampled_k_0": (["--label_mode=sampled", "--truncation_factor=0"],
                      "--label_mode sampled needs --truncation_factor"),
      "temperature_0": (["--label_mode=sampled", "--sample_temperature=0"],
                        "--sample_temperature must be > 0"),
      "bad_mode": (["--label_mode=sample"], "--label_mode"),
      "head_without_sampling": (["--exact_top_k=2"],
                                "--exact_top_k applies to --label_mode "
                                "sampled only"),
  }
  for name, (flags, _) in bad.items():
    output = f"--output_file={base}/{name}.tfrecord"
    invocations[name] = on_few + [output] + flags
  results = stage_runs.run_all(
      {name: [STAGE_IV] + args for name, args in invocations.items()},
      str(base / "logs"))
  return {"base": base, "results": results,
          "examples": examples, "few": few, "weights": weights,
          "config": config, "bad": bad}


def ran(stage_iv, name):
  result = stage_iv["results"][name]
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def read(path):
  return ref.read_records(path)


def test_sampled_records_are_the_same_whatever_batch_sort_and_shards(
    stage_iv):
  for name in ("sampled_b4", "sampled_b3_unsorted", "sampled_shard0",
               "sampled_shard1"):
    ran(stage_iv, name)
  base = stage_iv["base"]
  one = (base / "b4.tfrecord").read_bytes()
  assert one == (base / "b3.tfrecord").read_bytes()
  # Shard outputs, one per input file, concatenated in file order.
  shards = b"".join((base / "shards" / f"part_{i}.tfrecord").read_bytes()
                    for i in range(3))
  assert shards == one
  out = read(base / "b4.tfrecord")
  inputs = sum((stage_iv["examples"][i] for i in range(3)), [])
  assert len(out) == len(inputs)
  for got, example in zip(out, inputs):
    assert set(got) == set(records.PRETRAINING_FEATURES) | {
        records.SAMPLED_IDS, records.SAMPLED_COUNTS, records.NUM_SAMPLES,
        records.SAMPLE_TEMPERATURE}
    for name in records.PRETRAINING_FEATURES:
      np.testing.assert_array_equal(got[name], example[name])
    counts = got[records.SAMPLED_COUNTS].reshape(P4, 6)
    real = example[records.MASKED_LM_WEIGHTS] > 0
    assert (counts[real].sum(-1) <= 12).all() and counts[real].min() >= 0
    assert not counts[~real].any()
    assert (np.diff(counts, axis=-1) <= 0).all()  # most frequent first
    assert got[records.NUM_SAMPLES].tolist() == [12]
    assert got[records.SAMPLE_TEMPERATURE].tolist() == [1.0]
  # Other records of the same file draw differently.
  assert not np.array_equal(out[0][records.SAMPLED_IDS],
                            out[1][records.SAMPLED_IDS])


@pytest.mark.parametrize("temperature", [1, 2])
def test_draws_follow_the_teachers_softmax_at_the_temperature(stage_iv,
                                                              temperature):
  ran(stage_iv, f"draws_t{temperature}")
  few = stage_iv["few"]
  logits = reference_logits(stage_iv)  # [2, P, V]
  vocab = logits.shape[-1]
  out = read(stage_iv["base"] / f"t{temperature}.tfrecord")
  n = 20000
  assert len(out) == len(few) == 2
  for row, (got, example) in enumerate(zip(out, few)):
    ids = got[records.SAMPLED_IDS].reshape(P4, vocab)
    counts = got[records.SAMPLED_COUNTS].reshape(P4, vocab)
    for p in np.flatnonzero(example[records.MASKED_LM_WEIGHTS]):
      frequency = np.zeros(vocab)
      np.add.at(frequency, ids[p], counts[p])
      frequency /= n
      want = ref.softmax(logits[row, p] / temperature)
      other = ref.softmax(logits[row, p] / (3 - temperature))  # the other T
      tolerance = 5 * np.sqrt(want * (1 - want) / n) + 1e-3
      assert np.all(np.abs(frequency - want) < tolerance)
      assert np.abs(frequency - other).max() > 3 * tolerance.max()


def reference_logits(stage_iv):
  few = stage_iv["few"]
  stack = lambda name: np.stack([e[name] for e in few])
  return ref.bert_forward(
      stage_iv["weights"], stage_iv["config"], stack(records.INPUT_IDS),
      stack(records.INPUT_MASK), stack(records.SEGMENT_IDS),
      stack(records.MASKED_LM_POSITIONS))["masked_lm_logits"]  # [2, P, V]


def test_exact_head_is_the_top_tokens_and_the_draws_come_from_the_rest(
    stage_iv):
  ran(stage_iv, "draws_head")
  logits = reference_logits(stage_iv)
  vocab, n = logits.shape[-1], 20000
  out = read(stage_iv["base"] / "head.tfrecord")
  assert len(out) == len(stage_iv["few"]) == 2
  for row, (got, example) in enumerate(zip(out, stage_iv["few"])):
    head_ids = got[records.SAMPLED_HEAD_IDS].reshape(P4, 3)
    head_probs = got[records.SAMPLED_HEAD_PROBS].reshape(P4, 3)
    ids = got[records.SAMPLED_IDS].reshape(P4, 96)
    counts = got[records.SAMPLED_COUNTS].reshape(P4, 96)
    for p in np.flatnonzero(example[records.MASKED_LM_WEIGHTS]):
      want = ref.softmax(logits[row, p])
      top = np.argsort(-want)[:3]
      np.testing.assert_array_equal(head_ids[p], top)
      np.testing.assert_allclose(head_probs[p], want[top], rtol=1e-5)
      assert not np.isin(ids[p][counts[p] > 0], top).any()
      frequency = np.zeros(vocab)
      np.add.at(frequency, ids[p], counts[p])
      tail = want.copy()
      tail[top] = 0.0
      tail /= tail.sum()
      tolerance = 5 * np.sqrt(tail * (1 - tail) / n) + 1e-3
      assert np.all(np.abs(frequency / n - tail) < tolerance)


def test_overflow_keeps_the_most_frequent_and_is_reported(stage_iv):
  stderr = ran(stage_iv, "overflow")
  assert "drew more than k = 2 distinct ids" in stderr
  assert "dropping" in stderr
  out = read(stage_iv["base"] / "overflow.tfrecord")
  assert len(out) == len(stage_iv["few"]) == 2
  for got, example in zip(out, stage_iv["few"]):
    counts = got[records.SAMPLED_COUNTS].reshape(P4, 2)
    real = example[records.MASKED_LM_WEIGHTS] > 0
    assert (counts[real].sum(-1) < 50).all()  # a broad teacher overflows
    # Both slots kept, the more frequent id first; none at padding.
    assert (counts[real] > 0).all() and not counts[~real].any()
    assert (counts[real][:, 0] >= counts[real][:, 1]).all()


def test_full_mode_is_truncation_factor_0_and_top_k_stays_the_default(
    stage_iv):
  for name in ("full_mode", "full_k0", "top_k_default", "top_k_named"):
    ran(stage_iv, name)
  base = stage_iv["base"]
  assert (base / "full_mode.tfrecord").read_bytes() == (
      base / "full_k0.tfrecord").read_bytes()
  assert (base / "default.tfrecord").read_bytes() == (
      base / "named.tfrecord").read_bytes()
  ran(stage_iv, "full_first_record")  # --max_records: the first ones only
  first_record = next(iter(tf.data.TFRecordDataset(
      str(base / "full_mode.tfrecord")))).numpy()
  assert [r.numpy() for r in tf.data.TFRecordDataset(
      str(base / "first.tfrecord"))] == [first_record]
  first = read(base / "default.tfrecord")[0]
  assert set(first) == set(records.PRETRAINING_FEATURES) | {
      records.TRUNCATED_PROBS, records.TOP_K_INDICES}
  assert len(first[records.TOP_K_INDICES]) == P4 * 10


@pytest.mark.parametrize("case", ["num_samples_0", "sampled_k_0",
                                  "temperature_0", "bad_mode",
                                  "head_without_sampling"])
def test_stage_iv_bad_input_is_one_line_error(stage_iv, case):
  stage_runs.assert_one_line_error(stage_iv["results"][case],
                                   stage_iv["bad"][case][1])
  assert not (stage_iv["base"] / f"{case}.tfrecord").exists()


# ---------------------------------------------------------------------------
# Stage V reads the mode from the records: train, resume, evaluate.

def labelled_examples(mode, count, seed, k=5, n=16, temperature=1.0):
  """Pretraining examples plus synthetic teacher labels of `mode`."""
  rng = np.random.default_rng(seed)
  examples = ref.random_pretraining_examples(count, SEQ, P, VOCAB, seed=seed)
  for example in examples:
    logits = 2 * rng.standard_normal((P, VOCAB))
    logits[np.arange(P), example[records.MASKED_LM_IDS]] += 3
    teacher = np.exp(np_log_softmax(logits))
    if mode == "full":
      example[records.FULL_PROBS] = teacher
    elif mode == "top_k":
      ids = np.argsort(-teacher, -1)[:, :k]
      example[records.TOP_K_INDICES] = ids
      example[records.TRUNCATED_PROBS] = np.take_along_axis(teacher, ids, -1)
    elif mode.startswith("sampled"):
      tempered = np.exp(np_log_softmax(logits / temperature))
      if mode == "sampled_head":  # the top 2 exact, draws from the rest
        head = np.argsort(-tempered, -1)[:, :2]
        example[records.SAMPLED_HEAD_IDS] = head
        example[records.SAMPLED_HEAD_PROBS] = np.take_along_axis(
            tempered, head, -1)
        np.put_along_axis(tempered, head, 0.0, -1)
        tempered /= tempered.sum(-1, keepdims=True)
      draws = np.stack([rng.choice(VOCAB, n, p=t) for t in tempered])
      ids, counts, _ = teacher_labels.compact_samples(draws, k)
      example[records.SAMPLED_IDS] = ids
      example[records.SAMPLED_COUNTS] = counts
      example[records.NUM_SAMPLES] = [n]
      example[records.SAMPLE_TEMPERATURE] = [temperature]
  return examples


def distill_command(tmp, train, output, *extra):
  return [sys.executable, os.path.join(ROOT, "distill.py"),
          f"--bert_config_file={tmp / 'student.json'}",
          f"--input_file={train}", f"--output_dir={output}",
          f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={P}",
          "--train_batch_size=4", "--eval_batch_size=4",
          "--learning_rate=1e-3", "--num_warmup_steps=1",
          "--save_checkpoints_steps=3", "--iterations_per_loop=1",
          "--use_xla=false", *extra]


STUDENT_MODES = {  # name: (records, extra flags)
    "top_k_tail": ("top_k", ["--tail_mass_loss"]),
    "sampled": ("sampled_t2", ["--temperature=2", "--label_mode=sampled"]),
    "full": ("full", ["--truncation_factor=0"]),
    "sampled_bf16": ("sampled_t2", ["--temperature=2",
                                    "--precision=mixed_bfloat16"]),
    "sampled_head": ("sampled_head", []),
}


@pytest.fixture(scope="module")
def stage_v(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("stage_v")
  (tmp / "student.json").write_text(json.dumps(CONFIG))
  files = {}
  for name, mode, temperature in (("top_k", "top_k", 1.0),
                                  ("full", "full", 1.0),
                                  ("sampled_t2", "sampled", 2.0),
                                  ("sampled_head", "sampled_head", 1.0)):
    files[name] = ref.write_records(
        tmp / f"{name}.tfrecord",
        labelled_examples(mode, 16, seed=1, temperature=temperature))
  files["eval_full"] = ref.write_records(tmp / "eval_full.tfrecord",
                                         labelled_examples("full", 8, seed=2))
  evaluation = ["--do_eval", f"--eval_input_file={files['eval_full']}",
                "--require_full_eval_labels"]
  commands = {}
  for name, (data, flags) in STUDENT_MODES.items():
    once = distill_command(tmp, files[data], tmp / f"{name}_once",
                           "--do_train", "--num_train_steps=6", *flags,
                           *evaluation)
    commands[name + "_once"] = once
  bad = {
      "mode mismatch": (
          distill_command(tmp, files["sampled_t2"], tmp / "bad1", "--do_train",
                          "--num_train_steps=2", "--label_mode=top_k"),
          "--label_mode top_k: "),
      "temperature mismatch": (
          distill_command(tmp, files["sampled_t2"], tmp / "bad2", "--do_train",
                          "--num_train_steps=2"),
          "--temperature 1: " + files["sampled_t2"] +
          " holds labels sampled at temperature 2"),
      "tail mass on sampled labels": (
          distill_command(tmp, files["sampled_t2"], tmp / "bad3", "--do_train",
                          "--num_train_steps=2", "--temperature=2",
                          "--tail_mass_loss"),
          "--tail_mass_loss needs top_k labels"),
      "teacher_kl without the full distribution": (
          distill_command(tmp, files["top_k"], tmp / "bad4", "--do_train",
                          "--num_train_steps=2", "--do_eval",
                          f"--eval_input_file={files['top_k']}",
                          "--require_full_eval_labels"),
          "--require_full_eval_labels needs evaluation records with the "
          "teacher's whole distribution"),
      "files of two modes": (
          distill_command(tmp, f"{files['top_k']},{files['full']}",
                          tmp / "bad5", "--do_train", "--num_train_steps=2"),
          "give files of one label mode"),
      "soft loss on plain records": (
          distill_command(tmp, ref.write_records(
              tmp / "plain.tfrecord",
              ref.random_pretraining_examples(4, SEQ, P, VOCAB)),
              tmp / "bad6", "--do_train", "--num_train_steps=2"),
          "records hold no teacher labels"),
  }
  for case, (command, _) in bad.items():
    commands[case] = command
  results = stage_runs.run_all(
      {name: command[1:] for name, command in commands.items()},
      str(tmp / "logs"))
  # A crash after the checkpoint of step 3: the same command resumes there.
  resumed = {}
  for name in STUDENT_MODES:
    once_dir, resumed_dir = tmp / f"{name}_once", tmp / f"{name}_resumed"
    once = results[name + "_once"]
    assert once.returncode == 0, once.stderr[-3000:]
    shutil.copytree(once_dir, resumed_dir, ignore=shutil.ignore_patterns(
        "model.ckpt-6.*", "checkpoint", "eval_results.txt", "eval"))
    resumed[name + "_resumed"] = replace_flag(
        commands[name + "_once"], "output_dir", resumed_dir)[1:]
  results.update(stage_runs.run_all(resumed, str(tmp / "logs_resumed")))
  return {"tmp": tmp, "results": results, "bad": bad}


def eval_results(path):
  return {k: float(v) for k, v in (
      line.split(" = ") for line in (path / "eval_results.txt").read_text(
      ).splitlines())}


@pytest.mark.parametrize("name", list(STUDENT_MODES))
def test_every_mode_trains_resumes_and_reports_teacher_kl(stage_v, name):
  tmp, results = stage_v["tmp"], stage_v["results"]
  for run in ("once", "resumed"):
    result = results[f"{name}_{run}"]
    assert result.returncode == 0, result.stderr[-3000:]
  assert "at step 3" in results[f"{name}_resumed"].stderr
  once = eval_results(tmp / f"{name}_once")
  resumed = eval_results(tmp / f"{name}_resumed")
  assert once["global_step"] == resumed["global_step"] == 6
  for metric in ("teacher_kl", "teacher_cross_entropy", "teacher_entropy",
                 "teacher_top1_agreement", "student_ece", "teacher_ece"):
    assert np.isfinite(once[metric])
    np.testing.assert_allclose(resumed[metric], once[metric], rtol=1e-3,
                               atol=1e-5)
  assert once["teacher_kl"] > 0
  np.testing.assert_allclose(
      once["teacher_kl"],
      once["teacher_cross_entropy"] - once["teacher_entropy"], rtol=1e-4)
  mode = {"top_k_tail": "top_k (k = 5)", "full": "full",
          "sampled": "sampled (N = 16 draws at temperature 2, k = 5 slots)",
          "sampled_bf16": "sampled (N = 16",
          "sampled_head": "sampled (the top 2 exact, then N = 16"}[name]
  assert f"Training records hold {mode}" in results[f"{name}_once"].stderr


@pytest.mark.parametrize("case", [
    "mode mismatch", "temperature mismatch", "tail mass on sampled labels",
    "teacher_kl without the full distribution", "files of two modes",
    "soft loss on plain records"])
def test_stage_v_bad_label_input_is_one_line_error(stage_v, case):
  stage_runs.assert_one_line_error(stage_v["results"][case],
                                   stage_v["bad"][case][1])
  assert not list(stage_v["tmp"].glob("bad*/model.ckpt-*"))


def test_parse_batch_puts_the_exact_head_first(tmp_path):
  examples = labelled_examples("sampled_head", 3, seed=5, k=5, n=16)
  path = ref.write_records(tmp_path / "h.tfrecord", examples)
  settings = label_settings.LabelSettings(label_settings.SAMPLED, 5, 16, 1.0,
                                          2)
  serialized = next(iter(tf.data.TFRecordDataset(path).batch(3)))
  features = distill_input.parse_batch(serialized, settings, SEQ, P)
  labels = features[label_settings.TEACHER_LABELS]
  assert labels.mode == label_settings.SAMPLED
  stack = lambda name, width: np.stack([e[name] for e in examples]).reshape(
      3, P, width)
  head = stack(records.SAMPLED_HEAD_PROBS, 2)
  counts = stack(records.SAMPLED_COUNTS, 5)
  want = np.concatenate([head, (1 - head.sum(-1, keepdims=True)) * counts /
                         counts.sum(-1, keepdims=True)], -1)
  np.testing.assert_allclose(labels.weights.numpy(), want, rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_array_equal(
      labels.ids.numpy(),
      np.concatenate([stack(records.SAMPLED_HEAD_IDS, 2),
                      stack(records.SAMPLED_IDS, 5)], -1))
  assert set(features) == {
      records.INPUT_IDS, records.INPUT_MASK, records.SEGMENT_IDS,
      records.MASKED_LM_POSITIONS, records.MASKED_LM_IDS,
      records.MASKED_LM_WEIGHTS, records.NEXT_SENTENCE_LABELS,
      label_settings.TEACHER_LABELS}


def test_parse_batch_turns_counts_into_weights(tmp_path):
  examples = labelled_examples("sampled", 3, seed=4, k=5, n=16)
  path = ref.write_records(tmp_path / "s.tfrecord", examples)
  settings = label_settings.LabelSettings(label_settings.SAMPLED, 5, 16)
  serialized = next(iter(tf.data.TFRecordDataset(path).batch(3)))
  features = distill_input.parse_batch(serialized, settings, SEQ, P)
  assert records.NUM_SAMPLES not in features
  labels = features[label_settings.TEACHER_LABELS]
  weights = labels.weights.numpy()  # [3, P, 5]
  counts = np.stack([e[records.SAMPLED_COUNTS] for e in examples]).reshape(
      3, P, 5)
  np.testing.assert_allclose(weights, counts / counts.sum(-1, keepdims=True),
                             rtol=1e-6)
  np.testing.assert_array_equal(
      labels.ids.numpy(),
      np.stack([e[records.SAMPLED_IDS] for e in examples]).reshape(3, P, 5))


# ---------------------------------------------------------------------------
# run_pipeline.sh: the held-out file in full mode, teacher_kl in the results.

def test_pipeline_labels_the_held_out_file_in_full_and_reports_teacher_kl(
    tmp_path):
  config = dict(ref.TINY_CONFIG, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
  teacher_config = tmp_path / "teacher.json"
  teacher_config.write_text(json.dumps(config))
  student_config = tmp_path / "student.json"
  student_config.write_text(json.dumps(dict(config, hidden_size=16,
                                            num_attention_heads=2)))
  checkpoint = ref.write_google_checkpoint(
      str(tmp_path / "bert_model.ckpt"), ref.random_google_weights(config, 3))
  work = tmp_path / "work"
  (work / "records").mkdir(parents=True)
  for i in range(3):
    ref.write_records(work / "records" / f"pretraining_data_{i}.tfrecord",
                      ref.random_pretraining_examples(12, L4, P4, 99,
                                                      seed=50 + i))
  result = stage_runs.run(
      ["bash", os.path.join(ROOT, "run_pipeline.sh"), f"--work_dir={work}",
       f"--python={sys.executable}", "--stages=IV,V",
       f"--teacher_config={teacher_config}",
       f"--teacher_checkpoint={checkpoint}",
       f"--student_config={student_config}", f"--max_seq_length={L4}",
       f"--max_predictions_per_seq={P4}", "--truncation_factor=6",
       "--num_samples=8", "--heldout_examples=8", "--train_batch_size=4",
       "--eval_batch_size=4", "--max_eval_steps=2", "--num_train_steps=4",
       "--num_warmup_steps=1", "--iterations_per_loop=2",
       "--save_checkpoints_steps=4", "--teacher_batch_size=4",
       "--distill_flags=--use_xla=false"],
      env={"PATH": os.path.dirname(sys.executable) + os.pathsep +
                   os.environ["PATH"]}, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  train = sorted(n for n in os.listdir(work / "teacher_labels")
                 if n.endswith(".tfrecord"))  # not their made_from records
  assert train == ["pretraining_data_0.tfrecord",
                   "pretraining_data_1.tfrecord"]
  assert label_settings.of_record(records.read_first_example(
      str(work / "teacher_labels" / train[0])), P4) == (
          label_settings.SAMPLED, 6, 8, 1.0, 0)
  held_out = work / "teacher_labels_held_out" / "pretraining_data_2.tfrecord"
  held = ref.read_records(held_out)
  assert len(held) == 8
  assert label_settings.of_record(held[0], P4) == (label_settings.FULL, 99, 0, 1.0, 0)
  results = eval_results(work / "student")
  assert results["teacher_kl"] > 0 and 0 <= results["student_ece"] <= 1
