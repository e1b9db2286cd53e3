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

export_huggingface writes HuggingFace's layout instead (config.json,
model.safetensors, vocab.txt; huggingface.py's names), for transformers'
from_pretrained.
"""

import glob
import json
import os
import shutil

from absl import logging
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import classifier
from bert_distill import cli
from bert_distill import file_io
from bert_distill import huggingface
from bert_distill import model_config
import modeling


def checkpoint_head_size(checkpoint):
  """The number of outputs of the checkpoint's classifier head, or None."""
  shapes = checkpoints.checkpoint_shapes(checkpoint)
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
    model = classifier.BertClassifier(config, num_labels,
                                      pooling=classifier.pooling_of(config))
    checkpoints.load_checkpoint(model.variables_by_name(), checkpoint,
                                whole_encoder=True)
  else:
    model = modeling.BertModel(config)
    checkpoints.load_checkpoint(model.variables_by_name(), checkpoint,
                                whole_encoder=True)
  return model, num_labels


def _temporary_folder(export_dir):
  """The folder an export is written into before its rename, after removing
  those of killed exports (which cannot remove their own)."""
  export_dir = export_dir.rstrip("/")
  file_io.remove_stale_temporaries(glob.escape(export_dir))
  return file_io.temporary_path(export_dir)


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
  """A dict with transformers' BertConfig keys for `config.json`
  (huggingface.hf_config_dict: hidden_act "gelu", Google's tanh
  approximation, becomes transformers' "gelu_new")."""
  d = huggingface.hf_config_dict(
      config, ["BertForSequenceClassification" if num_labels else "BertModel"])
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
  tmp_dir = _temporary_folder(export_dir)
  try:
    tf.saved_model.save(module, tmp_dir,
                        signatures={"serving_default": module.serve})
    model_config.write_config(os.path.join(tmp_dir, "bert_config.json"), config)
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


def checkpoint_values(config, checkpoint):
  """{Google name: float32 array} of the model a checkpoint holds, checked
  against the config: the encoder, the pooler, and whichever heads it has
  (masked-LM, next-sentence, classifier). Training state (optimizer slots,
  global_step, distill/ projections) is left out.

  Raises:
    ValueError: one line: not a checkpoint, or an encoder variable missing
      or mis-shaped.
  """
  shapes = checkpoints.checkpoint_shapes(checkpoint)
  if checkpoint_head_size(checkpoint):
    if classifier.pooling_of(config) != "cls":
      raise ValueError(
          f"{checkpoint}: a classifier with {classifier.POOLING_KEY} "
          f"{classifier.pooling_of(config)!r}: transformers' "
          f"BertForSequenceClassification reads the pooled [CLS] output")
    variables = classifier.BertClassifier(
        config, shapes[classifier.OUTPUT_BIAS][0]).variables_by_name()
  elif any(name.startswith("cls/") for name in shapes):
    variables = modeling.BertPretrainingModel(config).variables_by_name()
  else:
    variables = modeling.BertModel(config).variables_by_name()
  report = checkpoints.load_checkpoint(
      variables, checkpoint, optional=("cls/", "bert/pooler/"),
      whole_encoder=True)
  return {name: variables[name].numpy() for name in report["loaded"]}


def export_huggingface(config, checkpoint, export_dir, vocab_file=None):
  """Writes HuggingFace's layout into export_dir (config.json with the
  hidden_act of the same numerics, model.safetensors, vocab.txt), which
  appears only when complete (a temporary folder beside it, renamed).

  Returns transformers' class the names are of (BertForPreTraining,
  BertForMaskedLM, BertForSequenceClassification or BertModel).

  Raises:
    ValueError: export_dir exists, or the checkpoint does not fit the config.
  """
  if tf.io.gfile.exists(export_dir):
    raise ValueError(f"{export_dir} already exists; remove it or give "
                     f"another --export_dir")
  values = checkpoint_values(config, checkpoint)
  extra = {}
  if "output_bias" in values:
    extra["num_labels"] = int(values["output_bias"].shape[0])
    if extra["num_labels"] == 1:
      extra["problem_type"] = "regression"
  tmp_dir = _temporary_folder(export_dir)
  try:
    os.makedirs(tmp_dir)
    kind = huggingface.write_folder(tmp_dir, config, values, vocab_file,
                                    extra)
    os.rename(tmp_dir, export_dir)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  logging.info("Exported %s to %s in HuggingFace's layout (%s, %d tensors, "
               "hidden_act %s)", checkpoint, export_dir, kind, len(values),
               huggingface.TO_HF_ACTIVATION[config.hidden_act])
  return kind
