"""Stage V's job done by HuggingFace transformers + PyTorch, as one process.

What a PyTorch user would run instead of distill.py --do_train: read the
teacher-label records, build the student (BertForPreTraining from the
student's bert_config.json, random init, dropout 0.1, tanh GELU), and train
it for --num_train_steps: forward, the soft top-k distillation loss at the
masked positions (MLM head there only) plus the next-sentence loss,
backward, gradients clipped to norm 1.0, AdamW (weight decay 0.01 except
LayerNorm and biases) under BERT's linear warmup/decay schedule; then save
the model and optimizer state. No TensorFlow: records are read by
records.py's own decoder (bench/torch_peer.py).

  .venv-bench/bin/python bench/torch_distill.py --bert_config_file C.json \
      --input_file LABELS --output_dir OUT --num_train_steps 3 \
      [--train_batch_size 32 --truncation_factor 10 --threads 2]

Prints one JSON line at the end: phase times and each step's seconds.
"""

import time

_START = time.perf_counter()

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import os  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position
import transformers  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_peer  # pylint: disable=g-import-not-at-top,wrong-import-position


class DistillStep:
  """The student, its AdamW optimizer and one training step."""

  def __init__(self, config, learning_rate=1e-4, num_train_steps=100000,
               num_warmup_steps=10000, seed=0, device="cpu",
               precision="float32"):
    torch.manual_seed(seed)
    self.device, self.precision = device, precision
    hf_config = transformers.BertConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        hidden_dropout_prob=config.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=config.get(
            "attention_probs_dropout_prob", 0.1),
        hidden_act="gelu_new",  # the tanh GELU, as BERT's
        layer_norm_eps=1e-12)
    self.model = transformers.BertForPreTraining(hf_config).to(device).train()
    named = list(self.model.named_parameters())
    decay = [p for n, p in named if "LayerNorm" not in n and "bias" not in n]
    no_decay = [p for n, p in named if "LayerNorm" in n or "bias" in n]
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01},
         {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate,
        eps=1e-6)

    def schedule(step):  # BERT's linear warmup, then linear decay to 0
      if step < num_warmup_steps:
        return (step + 1) / max(1, num_warmup_steps)
      return max(0.0, 1.0 - step / num_train_steps)
    self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                       schedule)

  def __call__(self, b):
    """One step on a batch {name: tensor}; teacher labels [B, P, k]."""
    b = {name: t.to(self.device) for name, t in b.items()}
    with torch_peer.autocast(self.device, self.precision):
      outputs = self.model.bert(input_ids=b["input_ids"],
                                attention_mask=b["input_mask"],
                                token_type_ids=b["segment_ids"])
      sequence, pooled = outputs.last_hidden_state, outputs.pooler_output
      index = b["masked_lm_positions"].unsqueeze(-1).expand(
          -1, -1, sequence.size(-1))
      gathered = torch.gather(sequence, 1, index)  # [B, P, H]
      logits = self.model.cls.predictions(gathered)  # [B, P, V]
      nsp_logits = self.model.cls.seq_relationship(pooled)
    log_probs = torch.log_softmax(logits.float(), -1)
    per_position = -(b["truncated_masked_lm_probs"] * torch.gather(
        log_probs, 2, b["top_k_indices"])).sum(-1)
    weights = b["masked_lm_weights"]
    soft = (weights * per_position).sum() / (weights.sum() + 1e-5)
    nsp = torch.nn.functional.cross_entropy(
        nsp_logits.float(), b["next_sentence_labels"].view(-1))
    loss = soft + nsp
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.optimizer.step()
    self.scheduler.step()
    return float(loss.detach())


def to_batch(examples, predictions):
  """Decoded examples -> {name: tensor}, teacher labels as [B, P, k]."""
  batch = {name: torch.from_numpy(np.stack([e[name] for e in examples]))
           for name in examples[0]}
  for name in ("truncated_masked_lm_probs", "top_k_indices"):
    batch[name] = batch[name].view(len(examples), predictions, -1)
  return batch


def flag_parser():
  parser = torch_peer.argument_parser(__doc__)
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_train_steps", type=int, required=True)
  parser.add_argument("--train_batch_size", type=int, default=32)
  parser.add_argument("--max_predictions_per_seq", type=int, default=20)
  parser.add_argument("--seed", type=int, default=12345)
  return parser


def main():
  args, imported, config = torch_peer.start(flag_parser())
  step = DistillStep(config, num_train_steps=args.num_train_steps,
                     num_warmup_steps=1, seed=args.seed, device=args.device,
                     precision=args.precision)
  examples = torch_peer.read_examples(args.input_file)
  rng = np.random.default_rng(args.seed)
  built = time.perf_counter()
  step_seconds, order, losses = [], [], []
  for _ in range(args.num_train_steps):
    started = time.perf_counter()
    if len(order) < args.train_batch_size:
      order.extend(rng.permutation(len(examples)).tolist())
    chosen, order = (order[:args.train_batch_size],
                     order[args.train_batch_size:])
    losses.append(step(to_batch([examples[i] for i in chosen],
                                args.max_predictions_per_seq)))  # syncs
    step_seconds.append(time.perf_counter() - started)
  trained = time.perf_counter()
  os.makedirs(args.output_dir, exist_ok=True)
  path = os.path.join(args.output_dir, "student.pt")
  torch.save({"model": step.model.state_dict(),
              "optimizer": step.optimizer.state_dict()}, path + ".tmp")
  os.replace(path + ".tmp", path)
  done = time.perf_counter()
  print(json.dumps({
      "import_seconds": imported - _START, "build_seconds": built - imported,
      "train_seconds": trained - built, "save_seconds": done - trained,
      "total_seconds": done - _START, "step_seconds": step_seconds,
      "final_loss": losses[-1],
      "peak_gpu_mb": torch_peer.peak_gpu_mb(args.device)}),
        flush=True)


if __name__ == "__main__":
  main()
