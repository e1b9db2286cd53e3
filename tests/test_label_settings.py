"""The label mode as a value: each mode's settings read once from a record
file (or declared by the online teacher), the batch's labels value of that
mode, and the loss it gives, against NumPy from the record's own numbers."""

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import distill_input
from bert_distill import distill_training
from bert_distill import label_settings
from bert_distill import losses
from bert_distill import records
from distill_cases import CONFIG, P, SEQ, VOCAB, random_example
import modeling

BATCH, K, N = 3, 4, 8


def np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def labelled(mode, rng):
  """A record's features with teacher labels of `mode`."""
  example = random_example(rng, truncation_factor=0)
  full = rng.dirichlet(np.full(VOCAB, 0.3), P)  # [P, V]
  if mode == label_settings.FULL:
    example[records.FULL_PROBS] = full.reshape(-1)
  elif mode == label_settings.TOP_K:
    ids = np.argsort(-full, -1)[:, :K]
    example[records.TRUNCATED_PROBS] = np.take_along_axis(full, ids, -1)
    example[records.TOP_K_INDICES] = ids
  else:
    ids = np.stack([rng.permutation(VOCAB)[:K] for _ in range(P)])
    counts = np.sort(rng.integers(0, 4, (P, K)), -1)[:, ::-1]
    counts[:, 0] = N - counts[:, 1:].sum(-1)
    example[records.SAMPLED_IDS] = ids
    example[records.SAMPLED_COUNTS] = counts
    example[records.NUM_SAMPLES] = [N]
    example[records.SAMPLE_TEMPERATURE] = [1.0]
  return example


def soft_loss(logits, examples, mode, tail_mass_loss):
  """The soft loss from the records' numbers, position by position."""
  log_q = np_log_softmax(logits.astype(np.float64))  # [B, P, V]
  total = weight = 0.0
  for b, example in enumerate(examples):
    for p in range(P):
      w = example[records.MASKED_LM_WEIGHTS][p]
      if mode == label_settings.FULL:
        t = example[records.FULL_PROBS].reshape(P, VOCAB)[p]
        term = -np.sum(t * log_q[b, p])
      elif mode == label_settings.TOP_K:
        probs = example[records.TRUNCATED_PROBS].reshape(P, K)[p]
        ids = example[records.TOP_K_INDICES].reshape(P, K)[p]
        term = -np.sum(probs * log_q[b, p, ids])
        if tail_mass_loss:
          term -= (1 - probs.sum()) * np.log(1 - np.exp(log_q[b, p, ids]).sum())
      else:
        counts = example[records.SAMPLED_COUNTS].reshape(P, K)[p]
        ids = example[records.SAMPLED_IDS].reshape(P, K)[p]
        term = -np.sum(counts / counts.sum() * log_q[b, p, ids])
      total += w * term
      weight += w
  return total / (weight + losses.WEIGHT_EPSILON)


@pytest.mark.parametrize("case", ["top_k", "top_k+tail", "sampled", "full"])
def test_each_modes_value_flows_from_the_record_file_to_the_loss(tmp_path,
                                                                 case):
  mode = case.split("+")[0]
  rng = np.random.default_rng(len(case))
  examples = [labelled(mode, rng) for _ in range(BATCH)]
  path = ref.write_records(tmp_path / f"{mode}.tfrecord", examples)

  settings = label_settings.of_files([path], P, "--input_file")  # once a run
  assert settings.mode == mode and settings.k == (
      VOCAB if mode == label_settings.FULL else K)
  batch = next(iter(distill_input.make_dataset(
      [path], settings, BATCH, SEQ, P, is_training=False)))
  labels = batch[label_settings.TEACHER_LABELS]
  assert labels.mode == mode  # the value carries the mode decided above

  logits = rng.standard_normal((BATCH, P, VOCAB)).astype(np.float32)
  nsp_logits = np.zeros((BATCH, 2), np.float32)
  config = losses.LossConfig(tail_mass_loss=case == "top_k+tail")
  terms = losses.compute_losses(logits, nsp_logits, batch, config)
  np.testing.assert_allclose(
      float(terms["soft_loss"]),
      soft_loss(logits, examples, mode, config.tail_mass_loss), rtol=1e-4)
  sums = losses.evaluation_sums(logits, nsp_logits, batch, config)
  assert ("teacher_kl_w" in sums) == (mode == label_settings.FULL)


def test_the_online_teacher_gives_the_full_modes_value(tmp_path):
  rng = np.random.default_rng(7)
  path = ref.write_records(tmp_path / "plain.tfrecord",
                           [random_example(rng, 0) for _ in range(BATCH)])
  assert label_settings.of_files([path], P, "--input_file") is None
  batch = next(iter(distill_input.make_dataset([path], None, BATCH, SEQ, P,
                                               is_training=False)))
  assert label_settings.TEACHER_LABELS not in batch
  model = modeling.BertPretrainingModel(modeling.BertConfig(**CONFIG), seed=3)
  teacher = distill_training.OnlineTeacher(model, losses.LossConfig(), {})
  batch, outputs = teacher.label(batch)
  labels = batch[label_settings.TEACHER_LABELS]
  assert labels.mode == label_settings.FULL
  probs = tf.nn.softmax(outputs["masked_lm_logits"]).numpy()
  np.testing.assert_allclose(labels.probs.numpy(), probs, rtol=1e-6)

  logits = rng.standard_normal((BATCH, P, VOCAB)).astype(np.float32)
  terms = losses.compute_losses(logits, np.zeros((BATCH, 2), np.float32),
                                batch)
  weights = batch[records.MASKED_LM_WEIGHTS].numpy()
  want = -(weights[..., None] * probs * np_log_softmax(logits)).sum() / (
      weights.sum() + losses.WEIGHT_EPSILON)
  np.testing.assert_allclose(float(terms["soft_loss"]), want, rtol=1e-4)
