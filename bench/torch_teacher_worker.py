"""The PyTorch side of bench_teacher_labels.py: HuggingFace BertForPreTraining
doing the teacher's job (eval, no_grad, MLM head at the masked positions only,
softmax, top-k), driven over stdin so its rounds interleave with ours.

Runs in .venv-bench (torch + transformers, no TensorFlow):
  .venv-bench/bin/python bench/torch_teacher_worker.py WEIGHTS.npz INPUTS.npz \
      CONFIG.json BATCH_SIZE K THREADS [PRECISION]
(PRECISION float32, the default, or bfloat16: torch.autocast, softmax in
float32) then reads commands, one a line, and answers each with one JSON line:
  run     -> {"sequences": n, "seconds": t, "cpu_seconds": c}  (one pass)
  labels  -> {"probs": [...], "ids": [...]}      (the first batch's top-k)
  quit    -> {"peak_rss_mb": m}

WEIGHTS.npz holds Google-named arrays; INPUTS.npz holds input_ids,
input_mask, segment_ids [N, L] and masked_lm_positions [N, P].
"""

import json
import resource
import sys
import time

import numpy as np
import torch
import transformers

import torch_peer


def hf_state_dict(weights, num_layers):
  """Maps Google's variable names to BertForPreTraining's (kernels transposed)."""
  state = {}

  def dense(google, hf):
    state[hf + ".weight"] = weights[google + "/kernel"].T
    state[hf + ".bias"] = weights[google + "/bias"]

  def norm(google, hf):
    state[hf + ".weight"] = weights[google + "/gamma"]
    state[hf + ".bias"] = weights[google + "/beta"]

  for part in ("word", "token_type", "position"):
    state[f"bert.embeddings.{part}_embeddings.weight"] = weights[
        f"bert/embeddings/{part}_embeddings"]
  norm("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm")
  for i in range(num_layers):
    g, h = f"bert/encoder/layer_{i}/", f"bert.encoder.layer.{i}."
    for part in ("query", "key", "value"):
      dense(g + f"attention/self/{part}", h + f"attention.self.{part}")
    dense(g + "attention/output/dense", h + "attention.output.dense")
    norm(g + "attention/output/LayerNorm", h + "attention.output.LayerNorm")
    dense(g + "intermediate/dense", h + "intermediate.dense")
    dense(g + "output/dense", h + "output.dense")
    norm(g + "output/LayerNorm", h + "output.LayerNorm")
  dense("bert/pooler/dense", "bert.pooler.dense")
  dense("cls/predictions/transform/dense", "cls.predictions.transform.dense")
  norm("cls/predictions/transform/LayerNorm",
       "cls.predictions.transform.LayerNorm")
  state["cls.predictions.bias"] = weights["cls/predictions/output_bias"]
  state["cls.seq_relationship.weight"] = weights[
      "cls/seq_relationship/output_weights"]
  state["cls.seq_relationship.bias"] = weights["cls/seq_relationship/output_bias"]
  return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def build_model(weights, config):
  """BertForPreTraining with Google's numerics (tanh GELU, eps 1e-12)."""
  hf_config = transformers.BertConfig(
      vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
      num_hidden_layers=config["num_hidden_layers"],
      num_attention_heads=config["num_attention_heads"],
      intermediate_size=config["intermediate_size"],
      hidden_act="gelu_new",  # HF's name for BERT's tanh approximation
      max_position_embeddings=config["max_position_embeddings"],
      type_vocab_size=config["type_vocab_size"], layer_norm_eps=1e-12)
  model = transformers.BertForPreTraining(hf_config)
  missing, unexpected = model.load_state_dict(
      hf_state_dict(weights, config["num_hidden_layers"]), strict=False)
  # Only tied/derived entries may be absent (decoder weight = embeddings).
  assert all("decoder" in m or "position_ids" in m for m in missing), missing
  assert not unexpected, unexpected
  model.tie_weights()
  return model.eval()


@torch.no_grad()
def top_k_labels(model, ids, mask, segments, positions, k):
  """Top-k softmax at the masked positions.  [B, P, K] probs and ids."""
  sequence = model.bert(input_ids=ids, attention_mask=mask,
                        token_type_ids=segments).last_hidden_state  # [B, L, H]
  gathered = torch.gather(
      sequence, 1, positions[:, :, None].expand(-1, -1, sequence.shape[-1]))
  logits = model.cls.predictions(gathered)  # [B, P, V]
  probs = torch.softmax(logits.float(), dim=-1)
  return torch.topk(probs, k, dim=-1)


def main():
  weights_path, inputs_path, config_path = sys.argv[1:4]
  batch_size, k, threads = (int(a) for a in sys.argv[4:7])
  precision = sys.argv[7] if len(sys.argv) > 7 else "float32"
  torch.set_num_threads(threads)
  with open(config_path) as f:
    config = json.load(f)
  model = build_model(dict(np.load(weights_path)), config)
  data = np.load(inputs_path)
  tensors = [torch.from_numpy(data[name].astype(np.int64)) for name in (
      "input_ids", "input_mask", "segment_ids", "masked_lm_positions")]
  count = tensors[0].shape[0]
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    command = line.strip()
    if command == "run":
      start, cpu = time.perf_counter(), time.process_time()
      for begin in range(0, count, batch_size):
        with torch_peer.autocast("cpu", precision):
          top_k_labels(model, *[t[begin:begin + batch_size] for t in tensors],
                       k)
      print(json.dumps({"sequences": count,
                        "seconds": time.perf_counter() - start,
                        "cpu_seconds": time.process_time() - cpu}), flush=True)
    elif command == "labels":
      with torch_peer.autocast("cpu", precision):
        top = top_k_labels(model, *[t[:batch_size] for t in tensors], k)
      print(json.dumps({"probs": top.values.tolist(),
                        "ids": top.indices.tolist()}), flush=True)
    elif command == "quit":
      rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
      print(json.dumps({"peak_rss_mb": rss}), flush=True)
      return


if __name__ == "__main__":
  main()
