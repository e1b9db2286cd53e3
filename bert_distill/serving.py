"""A BERT checkpoint as a TF SavedModel for serving (export_model.py).

The SavedModel's `serving_default` signature takes int32 `input_ids`,
`input_mask`, `segment_ids` [B, L] (any B, any L up to
max_position_embeddings) and returns `pooled_output` [B, H] and
`sequence_output` [B, L, H], plus, when the checkpoint holds a classifier
head (`output_weights` / `output_bias` from run_classifier.py), `logits`
[B, C] and `probabilities` [B, C] (softmax; a regression head, C = 1,
returns `logits` only). The graph and the weights are all in the SavedModel:
tf.saved_model.load reads it without this project's code.

Next to it go the vocabulary (`vocab.txt`), Google's `bert_config.json`
and a `config.json` with transformers' BertConfig keys.
"""

import json
import os
import shutil

from absl import logging
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import classifier
from bert_distill import cli
import modeling


def checkpoint_head_size(checkpoint):
  """The number of outputs of the checkpoint's classifier head, or None."""
  shapes = tf.train.load_checkpoint(
      checkpoints.resolve_checkpoint(checkpoint)).get_variable_to_shape_map()
  if classifier.OUTPUT_WEIGHTS in shapes and classifier.OUTPUT_BIAS in shapes:
    return shapes[classifier.OUTPUT_WEIGHTS][0]
  return None


def load_model(config, checkpoint):
  """The model of a checkpoint: a BertClassifier when it holds a head,
  else the encoder and pooler alone (modeling.BertModel).

  Returns (model, num_labels or None).

  Raises:
    ValueError: one line: not a checkpoint, or an encoder or pooler
      variable missing or mis-shaped.
  """
  num_labels = checkpoint_head_size(checkpoint)
  if num_labels:
    model = classifier.BertClassifier(config, num_labels)
    checkpoints.load_checkpoint(model.variables_by_name(), checkpoint)
  else:
    model = modeling.BertModel(config)
    checkpoints.load_checkpoint(model.variables_by_name(), checkpoint)
  return model, num_labels


class ServingModule(tf.Module):
  """Holds the model's variables and the serving function."""

  def __init__(self, model, num_labels):
    super().__init__(name="bert_serving")
    self.model = model
    self.num_labels = num_labels
    self.serve = tf.function(self._serve, input_signature=[
        tf.TensorSpec([None, None], tf.int32, name="input_ids"),
        tf.TensorSpec([None, None], tf.int32, name="input_mask"),
        tf.TensorSpec([None, None], tf.int32, name="segment_ids")])

  def _serve(self, input_ids, input_mask, segment_ids):
    if self.num_labels:
      outputs = self.model(input_ids, input_mask, segment_ids)
      results = {"logits": outputs["logits"]}
      if self.num_labels > 1:
        results["probabilities"] = tf.nn.softmax(outputs["logits"], axis=-1)
    else:
      outputs = self.model(input_ids, input_mask, segment_ids)
      results = {}
    results["pooled_output"] = tf.cast(outputs["pooled_output"], tf.float32)
    results["sequence_output"] = tf.cast(outputs["sequence_output"],
                                         tf.float32)
    return results


def transformers_config(config, num_labels):
  """A dict with transformers' BertConfig keys for `config.json`.

  hidden_act "gelu" is Google's tanh approximation, which transformers
  calls "gelu_new" (its "gelu" is the exact erf form).
  """
  act = {"gelu": "gelu_new"}.get(config.hidden_act, config.hidden_act)
  d = {
      "model_type": "bert",
      "architectures": ["BertForSequenceClassification" if num_labels
                        else "BertModel"],
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_hidden_layers,
      "num_attention_heads": config.num_attention_heads,
      "intermediate_size": config.intermediate_size,
      "hidden_act": act,
      "hidden_dropout_prob": config.hidden_dropout_prob,
      "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
      "max_position_embeddings": config.max_position_embeddings,
      "type_vocab_size": config.type_vocab_size,
      "initializer_range": config.initializer_range,
      "layer_norm_eps": 1e-12,
      "pad_token_id": 0,
      "position_embedding_type": "absolute",
  }
  if num_labels:
    d["num_labels"] = num_labels
    if num_labels == 1:
      d["problem_type"] = "regression"
  return d


def export(config, checkpoint, export_dir, vocab_file=None):
  """Writes the SavedModel, config.json, bert_config.json (and vocab.txt)
  into export_dir, which appears only when all are written (they are
  written into a temporary folder beside it, then renamed).

  Returns the number of labels of the head (None without one).

  Raises:
    ValueError: export_dir exists, the checkpoint does not fit the config,
      or the export cannot be written (nothing of it stays).
  """
  if tf.io.gfile.exists(export_dir):
    raise ValueError(f"{export_dir} already exists; remove it or give "
                     f"another --export_dir")
  model, num_labels = load_model(config, checkpoint)
  module = ServingModule(model, num_labels)
  tmp_dir = f"{export_dir.rstrip('/')}.tmp-{os.getpid()}"
  try:
    tf.saved_model.save(module, tmp_dir,
                        signatures={"serving_default": module.serve})
    config.to_json_file(os.path.join(tmp_dir, "bert_config.json"))
    with open(os.path.join(tmp_dir, "config.json"), "w") as f:
      f.write(json.dumps(transformers_config(config, num_labels), indent=2,
                         sort_keys=True) + "\n")
    if vocab_file:
      tf.io.gfile.copy(vocab_file, os.path.join(tmp_dir, "vocab.txt"))
    os.rename(tmp_dir, export_dir)
  except BaseException as e:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    if isinstance(e, (tf.errors.OpError, OSError)):  # a full disk, ...
      raise ValueError(f"{export_dir}: cannot write ({cli.error_line(e)}); "
                       f"check the space and permissions there") from None
    raise
  logging.info("Exported %s to %s (%s)", checkpoint, export_dir,
               f"classifier head with {num_labels} outputs" if num_labels
               else "encoder and pooler")
  return num_labels
