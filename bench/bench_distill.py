"""Training examples/s of distill.py's loop next to HuggingFace + PyTorch.

The job: a 6-layer, hidden-768 BERT student (BERT-Base's vocabulary), batch
32, seq 128, 20 masked positions, teacher top k = 10; one step is the
forward pass, the soft distillation loss on the gathered top-k plus the
next-sentence loss, the backward pass and an AdamW update with gradients
clipped to norm 1.0 (dropout 0.1 on both sides).

  * ours: distill.py's own pieces (records -> make_dataset -> the
    tf.function train loop -> optimization.AdamWeightDecay), float32, with
    XLA (jit) and without (graph);
  * PyTorch: transformers' BertForPreTraining, the MLM head run only at the
    masked positions (as ours does), torch.optim.AdamW, float32,
    torch.set_num_threads(2).

Each framework runs in its own worker process (so each peak RSS is its
own); the rounds alternate between them so they see the same machine load,
and each round's ratio is reported.

  .venv-bench/bin/python bench/bench_distill.py
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VOCAB, LAYERS, HIDDEN, HEADS, INTERMEDIATE = 30522, 6, 768, 12, 3072


def synthetic_batch(rng, batch, seq, preds, k):
  """Random but well-formed features, as numpy arrays."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  features = {
      "input_ids": rng.integers(1000, VOCAB, (batch, seq)),
      "input_mask": np.ones((batch, seq), np.int64),
      "segment_ids": (np.arange(seq) >= seq // 2).astype(np.int64)[None].repeat(
          batch, 0),
      "masked_lm_positions": np.sort(np.stack(
          [rng.choice(np.arange(1, seq), preds, replace=False)
           for _ in range(batch)]), axis=1),
      "masked_lm_ids": rng.integers(1000, VOCAB, (batch, preds)),
      "masked_lm_weights": np.ones((batch, preds), np.float32),
      "next_sentence_labels": rng.integers(0, 2, (batch, 1)),
  }
  probs = rng.dirichlet(np.ones(k + 5), (batch, preds))[..., :k]
  features["truncated_masked_lm_probs"] = -np.sort(-probs, -1).astype(
      np.float32).reshape(batch, -1)
  features["top_k_indices"] = rng.integers(0, VOCAB, (batch, preds * k))
  return features


class TensorFlowJob:
  """distill.py's loop on records written with records.serialize_example."""

  def __init__(self, args, jit):
    sys.path.insert(0, ROOT)
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import distill  # pylint: disable=g-import-not-at-top
    import modeling  # pylint: disable=g-import-not-at-top
    import optimization  # pylint: disable=g-import-not-at-top
    import records  # pylint: disable=g-import-not-at-top
    self.tf = tf
    path = os.path.join(args.tmp_dir, "teacher_labels.tfrecord")
    if not os.path.exists(path):
      rng = np.random.default_rng(0)
      with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for _ in range(4):
          batch = synthetic_batch(rng, args.batch_size, args.seq_length,
                                  args.predictions, args.k)
          for i in range(args.batch_size):
            writer.write(records.serialize_example(
                {name: value[i] for name, value in batch.items()}))
      os.replace(path + ".tmp", path)
    config = modeling.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
      model = modeling.BertPretrainingModel(config, seed=1)
      optimizer = optimization.AdamWeightDecay(
          optimization.LinearWarmupLinearDecay(1e-4, 10000, 100))
      optimizer.build(model.variables_by_name())
    spec = records.teacher_label_feature_spec(args.seq_length,
                                              args.predictions, args.k)
    dataset = distill.distributed_dataset(
        strategy, [path], spec, args.batch_size, args.predictions,
        is_training=True, seed=1)
    self.iterator = iter(dataset)
    self.loop = distill.make_train_loop(
        strategy, model, optimizer, args.batch_size,
        {"temperature": 1.0, "soft_loss_weight": 1.0,
         "hard_mlm_loss_weight": 0.0}, use_xla=jit)

  def run(self, steps):
    steps_run, terms = self.loop(self.iterator, self.tf.constant(steps))
    assert int(steps_run) == steps, terms
    return float(terms["loss"])


class TorchJob:
  """The same step in HuggingFace transformers + PyTorch."""

  def __init__(self, args):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(2)
    torch.manual_seed(0)
    self.torch = torch
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
        hidden_act="gelu_new")  # the tanh GELU, as BERT's
    self.model = transformers.BertForPreTraining(config).train()
    decay = [p for n, p in self.model.named_parameters()
             if "LayerNorm" not in n and "bias" not in n]
    no_decay = [p for n, p in self.model.named_parameters()
                if "LayerNorm" in n or "bias" in n]
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01},
         {"params": no_decay, "weight_decay": 0.0}], lr=1e-4, eps=1e-6)
    rng = np.random.default_rng(0)
    self.batches = []
    for _ in range(4):
      batch = synthetic_batch(rng, args.batch_size, args.seq_length,
                              args.predictions, args.k)
      t = {n: torch.from_numpy(np.asarray(v)) for n, v in batch.items()}
      t["truncated_masked_lm_probs"] = t["truncated_masked_lm_probs"].view(
          args.batch_size, args.predictions, args.k)
      t["top_k_indices"] = t["top_k_indices"].view(
          args.batch_size, args.predictions, args.k)
      self.batches.append(t)
    self.count = 0

  def step(self, b):
    torch = self.torch
    outputs = self.model.bert(input_ids=b["input_ids"],
                              attention_mask=b["input_mask"],
                              token_type_ids=b["segment_ids"])
    sequence, pooled = outputs.last_hidden_state, outputs.pooler_output
    index = b["masked_lm_positions"].unsqueeze(-1).expand(-1, -1,
                                                          sequence.size(-1))
    gathered = torch.gather(sequence, 1, index)  # [B, P, H]
    logits = self.model.cls.predictions(gathered)  # [B, P, V]
    log_probs = torch.log_softmax(logits, -1)
    per_position = -(b["truncated_masked_lm_probs"] * torch.gather(
        log_probs, 2, b["top_k_indices"])).sum(-1)
    weights = b["masked_lm_weights"]
    soft = (weights * per_position).sum() / (weights.sum() + 1e-5)
    nsp = torch.nn.functional.cross_entropy(
        self.model.cls.seq_relationship(pooled),
        b["next_sentence_labels"].view(-1))
    loss = soft + nsp
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.optimizer.step()
    return float(loss.detach())

  def run(self, steps):
    loss = None
    for _ in range(steps):
      loss = self.step(self.batches[self.count % len(self.batches)])
      self.count += 1
    return loss


def worker(args):
  """Serves `run N` lines on stdin with one JSON line each on stdout."""
  if args.worker == "torch":
    job = TorchJob(args)
  else:
    job = TensorFlowJob(args, jit=args.worker == "tf_xla")
  job.run(args.warmup_steps)  # tracing, compilation, allocation
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    steps = int(line.split()[1])
    started, cpu = time.perf_counter(), time.process_time()
    loss = job.run(steps)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "examples_per_second": steps * args.batch_size / seconds,
        "cpu_seconds_per_example": (time.process_time() - cpu) /
                                   (steps * args.batch_size),
        "loss": loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss /
                       1024}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seq_length", type=int, default=128)
  parser.add_argument("--predictions", type=int, default=20)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps_per_round", type=int, default=3)
  parser.add_argument("--warmup_steps", type=int, default=2)
  parser.add_argument("--jobs", default="torch,tf_xla,tf_graph",
                      help="comma list of torch, tf_xla, tf_graph")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--tmp_dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)

  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
  jobs = args.jobs.split(",")
  with tempfile.TemporaryDirectory() as tmp_dir:
    workers = {}
    for job in jobs:  # one at a time: start-up is not measured
      command = [sys.executable, os.path.abspath(__file__), f"--worker={job}",
                 f"--tmp_dir={tmp_dir}"] + [
                     f"--{n}={getattr(args, n)}" for n in
                     ("batch_size", "seq_length", "predictions", "k",
                      "warmup_steps")]
      workers[job] = subprocess.Popen(command, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True,
                                      env=env)
      assert json.loads(workers[job].stdout.readline())["ready"]
      print(f"{job}: ready", flush=True)
    results = {job: [] for job in jobs}
    for round_ in range(args.rounds):
      for job in jobs:
        workers[job].stdin.write(f"run {args.steps_per_round}\n")
        workers[job].stdin.flush()
        result = json.loads(workers[job].stdout.readline())
        results[job].append(result)
        print(f"round {round_ + 1} {job}: "
              f"{result['examples_per_second']:.2f} examples/s, "
              f"{result['cpu_seconds_per_example']:.3f} CPU s/example, "
              f"loss {result['loss']:.3f}", flush=True)
      if "torch" in jobs:
        torch_rate = results["torch"][-1]["examples_per_second"]
        print("  ratios vs PyTorch this round: " + ", ".join(
            f"{job} {results[job][-1]['examples_per_second'] / torch_rate:.2f}x"
            for job in jobs if job != "torch"), flush=True)
    for process in workers.values():
      process.stdin.close()
      process.wait()

  print(f"\nbatch {args.batch_size}, seq {args.seq_length}, P "
        f"{args.predictions}, k {args.k}, student {LAYERS} layers hidden "
        f"{HIDDEN}; {args.rounds} rounds x {args.steps_per_round} steps")
  for job in jobs:
    rates = [r["examples_per_second"] for r in results[job]]
    print(f"{job:9s} median {statistics.median(rates):6.2f} examples/s "
          f"(rounds: {', '.join(f'{r:.2f}' for r in rates)}), peak RSS "
          f"{results[job][-1]['peak_rss_mb']:.0f} MB")
  if "torch" in jobs:
    for job in jobs:
      if job != "torch":
        ratios = [a["examples_per_second"] / b["examples_per_second"]
                  for a, b in zip(results[job], results["torch"])]
        print(f"{job} / torch: median {statistics.median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
  main()
