"""Shared stage V test inputs: the tiny student (CONFIG), record sizes
(VOCAB, SEQ, P, K), random teacher-label records (random_example,
write_records) and the replica-sum check of the loss. Imported by several
test files."""

import json

import numpy as np
import tensorflow as tf

import bert_reference as ref
from bert_distill import losses
from bert_distill import records

VOCAB, SEQ, P, K = 60, 16, 4, 3
CONFIG = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 64,
          "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
          "max_position_embeddings": 32, "type_vocab_size": 2}


def random_example(rng, truncation_factor=K, vocab=VOCAB):
  """One record's features: a real sequence, masked positions, teacher top-k."""
  length = int(rng.integers(SEQ // 2, SEQ + 1))
  n_masked = int(rng.integers(1, P + 1))
  ids = np.zeros(SEQ, np.int64)
  ids[:length] = rng.integers(5, vocab, length)
  positions = np.zeros(P, np.int64)
  positions[:n_masked] = np.sort(rng.choice(np.arange(1, length), n_masked,
                                            replace=False))
  weights = np.zeros(P, np.float32)
  weights[:n_masked] = 1.0
  masked_ids = np.where(weights > 0, ids[positions], 0)
  features = {
      records.INPUT_IDS: ids,
      records.INPUT_MASK: (np.arange(SEQ) < length).astype(np.int64),
      records.SEGMENT_IDS: (np.arange(SEQ) >= length // 2).astype(np.int64)
                           * (np.arange(SEQ) < length),
      records.MASKED_LM_POSITIONS: positions,
      records.MASKED_LM_IDS: masked_ids,
      records.MASKED_LM_WEIGHTS: weights,
      records.NEXT_SENTENCE_LABELS: [int(rng.integers(0, 2))],
  }
  if truncation_factor:
    probs = rng.dirichlet(np.ones(truncation_factor + 2), P)[:, :truncation_factor]
    order = np.argsort(-probs, axis=1)
    probs = np.take_along_axis(probs, order, axis=1)
    top_ids = np.stack([rng.choice(vocab, truncation_factor, replace=False)
                        for _ in range(P)])
    # The true id is usually the teacher's favourite: a learnable target.
    top_ids[:, 0] = np.where(weights > 0, masked_ids, top_ids[:, 0])
    for row in range(P):
      _, first = np.unique(top_ids[row], return_index=True)
      if len(first) < truncation_factor:
        top_ids[row] = rng.choice(vocab, truncation_factor, replace=False)
    features[records.TRUNCATED_PROBS] = probs
    features[records.TOP_K_INDICES] = top_ids
  return features


def write_records(path, n, seed=0, **kwargs):
  """Writes `n` random_example records to `path`; returns the path."""
  rng = np.random.default_rng(seed)
  return ref.write_records(path, [random_example(rng, **kwargs)
                                  for _ in range(n)])


def write_config(path, **changes):
  path.write_text(json.dumps({**CONFIG, **changes}))
  return str(path)


def assert_replica_losses_add_up(mlm_logits, nsp_logits, features, config):
  """What multi-worker training relies on: the batch split in two halves (two
  replicas), each half's loss with the global weight and example totals; the
  two add up to the whole batch's loss."""
  batch = len(nsp_logits)
  whole = losses.compute_losses(mlm_logits, nsp_logits, features, config)
  weight_total = features[records.MASKED_LM_WEIGHTS].sum() + 1e-5
  halves = [losses.compute_losses(
      mlm_logits[s], nsp_logits[s],
      tf.nest.map_structure(lambda v: v[s], features),  # pylint: disable=cell-var-from-loop
      config, weight_total=weight_total, example_total=float(batch))
            for s in (slice(0, batch // 2), slice(batch // 2, batch))]
  np.testing.assert_allclose(halves[0]["loss"] + halves[1]["loss"],
                             whole["loss"], rtol=1e-5)
