"""distill.py: the loss against NumPy, checkpoints, resume after kill -9,
two workers against one, evaluation output and the one-line input errors."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import distill
import modeling
import records
from conftest import ROOT

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
  rng = np.random.default_rng(seed)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for _ in range(n):
      writer.write(records.serialize_example(random_example(rng, **kwargs)))
  return str(path)


def write_config(path, **changes):
  path.write_text(json.dumps({**CONFIG, **changes}))
  return str(path)


def distill_command(config, input_file, output_dir, *extra):
  return [sys.executable, os.path.join(ROOT, "distill.py"),
          f"--bert_config_file={config}", f"--input_file={input_file}",
          f"--output_dir={output_dir}", f"--max_seq_length={SEQ}",
          f"--max_predictions_per_seq={P}", f"--truncation_factor={K}",
          "--train_batch_size=4", "--learning_rate=1e-3",
          "--num_warmup_steps=2", *extra]


def run(command, env=None, **kwargs):
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
         **(env or {})}
  return subprocess.run(command, capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=120, **kwargs)
