"""Fine-tuning examples/s of run_classifier.py's loop next to HuggingFace
transformers + PyTorch, as GFLOP/s and as a share of this machine's float32
GEMM rate.

The job: sentence-pair classification (2 labels), one step = forward pass in
training mode (the configs' dropout), softmax cross-entropy on the pooled
output's head, backward pass, AdamW-style update (weight decay 0.01, not on
LayerNorm and biases) with gradients clipped to global norm 1.0. Two models:

  * bert_base: BERT-Base's shape (12 layers, hidden 768, vocabulary 30522),
    dropout 0.1, seq 128;
  * demo_student: the demo's student (data/student_L3_H384_bert_config.json:
    3 layers, hidden 384, BERT's vocabulary, the exact GELU), seq 64.

  * tf: run_classifier.py's own pieces (classifier_data.train_dataset over
    TFRecords written with example_codec.serialize_example ->
    classifier.make_train_loop -> optimization.AdamWeightDecay) in
    --precision (float32, or mixed_bfloat16 as run_classifier.py
    --precision=mixed_bfloat16 builds it: bf16 compute, float32 variables,
    no loss scale);
  * torch: transformers' BertForSequenceClassification (the config's GELU:
    gelu_new for BERT's tanh one, gelu for the exact), torch.optim.AdamW,
    float32 or, with --precision=mixed_bfloat16, the forward pass and loss
    under torch.autocast("cpu", dtype=torch.bfloat16),
    torch.set_num_threads(--torch_threads, default: the cores).

Each (model, framework) round runs in a fresh worker process (start-up and
warm-up steps untimed) that ends before the next starts, so no idle process
holding a model sits beside the timed one; the order alternates from round
to round, so both frameworks see the same machine load. GFLOP/s counts
every matmul of the forward pass exactly (Q, K, V, attention output, the two
FFN matmuls, QK^T and attention x V, pooler, head) and takes training as 3x
the forward pass (the backward pass computes two matmuls for each). The
machine's GEMM rate is the best of numpy and tf.matmul of 3072 x 3072
float32 (flops.gemm_rates), measured before and after the rounds; in
mixed_bfloat16 the best of those and tf.matmul in bfloat16.

  .venv-bench/bin/python bench/bench_classifier.py
  .venv-bench/bin/python bench/bench_classifier.py --precision=mixed_bfloat16
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
import step_worker  # pylint: disable=g-import-not-at-top,wrong-import-position

MODELS = {
    "bert_base": flops.BERT_BASE,
    "demo_student": json.load(open(os.path.join(
        ROOT, "data", "student_L3_H384_bert_config.json"))),
}
# transformers' names of the GELUs: bert_distill.huggingface.TO_HF_ACTIVATION's,
# repeated here because importing that module loads TensorFlow into the
# PyTorch worker.
HF_ACTIVATIONS = {"gelu": "gelu_new", "gelu_exact": "gelu"}
NUM_LABELS = 2


def train_flops_per_example(config, seq):
  """Matmul FLOPs of one example's fine-tuning step (forward and backward).

  flops.train_flops with no masked-LM positions: the encoder, the pooler and
  a 2-way head, which with NUM_LABELS = 2 is the classifier's head exactly.
  """
  assert NUM_LABELS == 2, "flops.forward_flops counts a 2-way head"
  return flops.train_flops(config, seq, predictions=0)


def synthetic_batch(rng, config, batch, seq):
  import numpy as np  # pylint: disable=g-import-not-at-top
  lengths = rng.integers(seq // 2, seq + 1, batch)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
  return {
      "input_ids": rng.integers(5, config["vocab_size"], (batch, seq)) * mask,
      "input_mask": mask,
      "segment_ids": ((np.arange(seq)[None] >= lengths[:, None] // 2) *
                      mask).astype(np.int64),
      "label_ids": rng.integers(0, NUM_LABELS, (batch, 1)),
      "is_real_example": np.ones((batch, 1), np.int64),
  }


class TensorFlowJob:
  """run_classifier.py's training loop on classifier records."""

  def __init__(self, args, config):
    sys.path.insert(0, ROOT)
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from bert_distill import classifier  # pylint: disable=g-import-not-at-top
    from bert_distill import classifier_data  # pylint: disable=g-import-not-at-top
    import modeling  # pylint: disable=g-import-not-at-top
    import optimization  # pylint: disable=g-import-not-at-top
    from bert_distill import records  # pylint: disable=g-import-not-at-top
    from bert_distill import example_codec  # pylint: disable=g-import-not-at-top
    self.tf = tf
    path = os.path.join(args.tmp_dir, f"{args.model}.tf_record")
    rng = np.random.default_rng(0)
    num_examples = 4 * args.batch_size
    with tf.io.TFRecordWriter(path) as writer:
      for _ in range(4):
        batch = synthetic_batch(rng, config, args.batch_size, args.seq_length)
        for i in range(args.batch_size):
          writer.write(example_codec.serialize_example(
              {name: value[i] for name, value in batch.items()}))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
      model = classifier.BertClassifier(
          modeling.BertConfig.from_dict(config), NUM_LABELS,
          modeling.COMPUTE_DTYPES[args.precision], seed=1)
      optimizer = optimization.AdamWeightDecay(
          optimization.LinearWarmupLinearDecay(2e-5, 10000, 100))
      optimizer.build(model.variables_by_name())
    spec = records.classifier_feature_spec(args.seq_length)
    dataset = strategy.distribute_datasets_from_function(
        lambda context: classifier_data.train_dataset(
            path, spec, args.batch_size, 1, num_examples))
    self.iterator = iter(dataset)
    self.loop = classifier.make_train_loop(
        strategy, model, optimizer, classifier.TrainSettings(
            num_train_steps=10000, iterations_per_loop=1,
            save_checkpoints_steps=10000, keep_checkpoint_max=1,
            global_batch_size=args.batch_size, output_dir=args.tmp_dir,
            chief=False, is_regression=False,
            loss_scale=optimization.loss_scale_for(args.precision)))

  def run(self, steps):
    steps_run, terms, _ = self.loop(self.iterator, self.tf.constant(steps))
    assert int(steps_run) == steps
    return float(terms["loss"])


class TorchJob(step_worker.CyclingBatches):
  """The same step in transformers + PyTorch."""

  def __init__(self, args, config):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    import torch_peer  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    self.torch = torch
    self.autocast = lambda: torch_peer.autocast(
        "cpu", "bfloat16" if flops.is_bfloat16(args.precision) else "float32")
    hf_config = transformers.BertConfig(
        **{k: config[k] for k in (
            "vocab_size", "hidden_size", "num_hidden_layers",
            "num_attention_heads", "intermediate_size", "hidden_dropout_prob",
            "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size")},
        hidden_act=HF_ACTIVATIONS[config.get("hidden_act", "gelu")],
        num_labels=NUM_LABELS)
    self.model = transformers.BertForSequenceClassification(hf_config).train()
    decay = [p for n, p in self.model.named_parameters()
             if "LayerNorm" not in n and "bias" not in n]
    no_decay = [p for n, p in self.model.named_parameters()
                if "LayerNorm" in n or "bias" in n]
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01},
         {"params": no_decay, "weight_decay": 0.0}], lr=2e-5, eps=1e-6)
    rng = np.random.default_rng(0)
    self.batches = [
        {n: torch.from_numpy(v) for n, v in synthetic_batch(
            rng, config, args.batch_size, args.seq_length).items()}
        for _ in range(4)]

  def step(self, b):
    with self.autocast():
      outputs = self.model(input_ids=b["input_ids"],
                           attention_mask=b["input_mask"],
                           token_type_ids=b["segment_ids"],
                           labels=b["label_ids"].view(-1))
    self.optimizer.zero_grad(set_to_none=True)
    outputs.loss.backward()
    self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.optimizer.step()
    return float(outputs.loss.detach())


def worker(args):
  """Serves `run N` lines on stdin (step_worker.serve)."""
  config = MODELS[args.model]
  job = (TorchJob if args.worker == "torch" else TensorFlowJob)(args, config)
  step_worker.serve(job, args.warmup_steps, args.batch_size)


def gemm_gflops(precision):
  """{library: the best 3072^3 GEMM rate in GFLOP/s} (flops.py): float32,
  and for mixed_bfloat16 TensorFlow's bfloat16 too."""
  rates = flops.gemm_rates(("numpy", "tensorflow"), size=3072)
  if flops.is_bfloat16(precision):
    rates.update(flops.gemm_rates(("tensorflow",), size=3072,
                                  dtype="bfloat16"))
  return {library: rate / 1e9 for library, rate in rates.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="bert_base,demo_student")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps_per_round", type=int, default=3)
  parser.add_argument("--warmup_steps", type=int, default=2)
  parser.add_argument("--bert_base_batch", type=int, default=8)
  parser.add_argument("--bert_base_seq", type=int, default=128)
  parser.add_argument("--student_batch", type=int, default=32)
  parser.add_argument("--student_seq", type=int, default=64)
  parser.add_argument("--precision", default="float32",
                      choices=["float32", "mixed_bfloat16"],
                      help="Both frameworks' (PyTorch: bfloat16 autocast).")
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count(),
                      help="PyTorch's intra-op threads (on a loaded machine "
                      "1 can be faster than the cores)")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--model", help=argparse.SUPPRESS)
  parser.add_argument("--batch_size", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--seq_length", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--tmp_dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)

  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
  print(flops.cpu_line(), flush=True)
  print("load average (1, 5, 15 min) at start: %.1f %.1f %.1f on %d cores"
        % (*os.getloadavg(), os.cpu_count()), flush=True)
  gemm_before = gemm_gflops(args.precision)
  print(f"GEMM 3072^3: " + ", ".join(
      f"{k} {v:.1f}" for k, v in gemm_before.items()) + " GFLOP/s", flush=True)
  summary = []
  with tempfile.TemporaryDirectory() as tmp_dir:
    for model in args.models.split(","):
      batch, seq = ((args.bert_base_batch, args.bert_base_seq)
                    if model == "bert_base" else
                    (args.student_batch, args.student_seq))
      frameworks = ["torch", "tf"]
      rates = {framework: [] for framework in frameworks}
      for round_ in range(args.rounds):
        for framework in (frameworks if round_ % 2 == 0 else
                          frameworks[::-1]):
          result = step_worker.run_alone(
              [sys.executable, os.path.abspath(__file__),
               f"--worker={framework}", f"--model={model}",
               f"--batch_size={batch}", f"--seq_length={seq}",
               f"--warmup_steps={args.warmup_steps}", f"--tmp_dir={tmp_dir}",
               f"--torch_threads={args.torch_threads}",
               f"--precision={args.precision}"],
              args.steps_per_round, env)
          rates[framework].append(result["examples_per_second"])
          print(f"{model} round {round_ + 1} {framework}: "
                f"{result['examples_per_second']:.2f} examples/s, "
                f"loss {result['loss']:.3f}", flush=True)
      summary.append((model, batch, seq, rates))
  gemm_after = gemm_gflops(args.precision)
  print("load average (1, 5, 15 min) at end: %.1f %.1f %.1f" % os.getloadavg())
  gemm = max(max(gemm_before.values()), max(gemm_after.values()))
  print(f"GEMM 3072^3 after: " + ", ".join(
      f"{k} {v:.1f}" for k, v in gemm_after.items()) + " GFLOP/s")

  print(f"\n{args.precision}, {args.rounds} rounds x "
        f"{args.steps_per_round} steps, torch threads {args.torch_threads}; "
        f"GEMM peak {gemm:.1f} GFLOP/s (best of before/after, numpy/tf"
        + (", float32/bfloat16" if flops.is_bfloat16(args.precision) else "")
        + ")")
  print(f"{'model':13s} {'batch x seq':11s} {'framework':9s} "
        f"{'examples/s':>10s} {'GFLOP/s':>8s} {'% GEMM':>7s}")
  for model, batch, seq, rates in summary:
    train_flops = train_flops_per_example(MODELS[model], seq)
    for framework, values in rates.items():
      rate = statistics.median(values)
      gflops = rate * train_flops / 1e9
      percent = flops.percent_of_gemm(gflops * 1e9, gemm * 1e9,
                                      f"{model} {framework}")
      print(f"{model:13s} {f'{batch} x {seq}':11s} {framework:9s} "
            f"{rate:10.2f} {gflops:8.1f} {percent:6.1f}%")
    ratios = [t / p for t, p in zip(rates["tf"], rates["torch"])]
    print(f"{model:13s} tf / torch: median {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
  main()
