"""Shared fine-tuning test inputs: GLUE-layout TSV files, a toy vocabulary,
config and separable task, and the run_classifier.py command line.
Imported by several test files."""

import os
import random
import sys

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "run_classifier.py")


def write_tsv(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join("\t".join(row) + "\n" for row in rows),
                  encoding="utf-8")


TOY_WORDS = ["the", "a", "movie", "film", "plot", "actor", "scene", "story",
             "was", "is", "very", "quite", "and", "but", "good", "great",
             "bad", "awful"]
TOY_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TOY_WORDS +
             [f"w{i}" for i in range(37)])  # 60 tokens


def write_vocab(path, tokens=TOY_VOCAB):
  path.write_text("\n".join(tokens) + "\n")
  return str(path)


TOY_CONFIG = {"vocab_size": len(TOY_VOCAB), "hidden_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0,
              "max_position_embeddings": 32, "type_vocab_size": 2}


def write_toy_task(folder, num_train=256, num_dev=64, seed=0):
  """SST-2 layout; label 1 iff the sentence holds "good" or "great", among
  random filler words: separable by a single token."""
  rng = random.Random(seed)
  filler = TOY_WORDS[:14] + [f"w{i}" for i in range(37)]
  def sentence():
    label = rng.randint(0, 1)
    words = [rng.choice(filler) for _ in range(rng.randint(3, 8))]
    words.insert(rng.randint(0, len(words)),
                 rng.choice(["good", "great"] if label else ["bad", "awful"]))
    return " ".join(words), str(label)
  write_tsv(folder / "train.tsv", [["sentence", "label"]] +
            [sentence() for _ in range(num_train)])
  write_tsv(folder / "dev.tsv", [["sentence", "label"]] +
            [sentence() for _ in range(num_dev)])
  write_tsv(folder / "test.tsv", [["index", "sentence"]] +
            [[str(100 + i), sentence()[0]] for i in range(10)])
  return str(folder)


def command(data_dir, vocab, config, output_dir, *extra):
  return [sys.executable, SCRIPT, "--task_name=sst-2", f"--data_dir={data_dir}",
          f"--vocab_file={vocab}", f"--bert_config_file={config}",
          f"--output_dir={output_dir}", "--max_seq_length=16",
          "--train_batch_size=16", "--learning_rate=5e-4",
          "--num_train_epochs=6", "--iterations_per_loop=1",
          "--save_checkpoints_steps=4", "--keep_checkpoint_max=2", *extra]
