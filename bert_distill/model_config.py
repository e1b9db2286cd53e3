"""Model config files, in either layout: Google's `bert_config.json` or
HuggingFace's `config.json`.

read_config is the one reader every stage uses: a file holding HF's keys
(modeling.HF_CONFIG_KEYS) is translated by huggingface.config_from_hf_dict
(its "gelu" is the exact form, its layer_norm_eps honoured), any other is
Google's (modeling.BertConfig.from_dict). write_config writes the
`bert_config.json` a stage leaves beside its checkpoint, atomically.

This module defines no flags.
"""

import json

import tensorflow as tf

import modeling
from bert_distill import file_io
from bert_distill import huggingface


def config_from_dict(d):
  """The BertConfig of a config dict in either layout."""
  if isinstance(d, dict) and "vocab_size" in d and modeling.is_hf_config(d):
    return huggingface.config_from_hf_dict(d)
  return modeling.BertConfig.from_dict(d)


def read_config(path, max_seq_length=None, whose="model"):
  """Reads `path` as a BertConfig, with positions for max_seq_length tokens
  when that is given.

  `whose` ("teacher", "student", "model") names the model in the error.

  Raises:
    ValueError: one line that starts with the file's name, when it is
      missing, unreadable or invalid, or max_seq_length exceeds its
      max_position_embeddings.
  """
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      config = config_from_dict(json.loads(f.read()))
  except tf.errors.NotFoundError:
    raise ValueError(f"{path}: BERT config file not found") from None
  except tf.errors.OpError as e:  # a directory, no permission, ...
    raise ValueError(f"{path}: cannot read ({e.message})") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  if max_seq_length and max_seq_length > config.max_position_embeddings:
    raise ValueError(
        f"{path}: --max_seq_length {max_seq_length} exceeds the {whose}'s "
        f"max_position_embeddings {config.max_position_embeddings}")
  return config


def write_config(path, config):
  """Writes `config` as Google's `bert_config.json` at `path`; the file
  appears under its name only when complete."""
  with file_io.atomic_output(path) as tmp_path:
    with tf.io.gfile.GFile(tmp_path, "w") as f:
      f.write(config.to_json_string())
