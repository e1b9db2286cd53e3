"""Task distillation: a student classifier learns a fine-tuned teacher's
predictions on the task (run_classifier.py --teacher_checkpoint).

- The teacher is a classifier of the task's labels (run_classifier.py's own
  output folder: Google's names plus `output_weights` / `output_bias`), read
  through checkpoints.load_checkpoint, the one checkpoint-reading path, and
  checked against the task (its label set; its vocabulary against the
  student's by distill_training.read_matching_teacher_config, as stage V's).
- It is frozen and, in inference, has no dropout: its logits on an example
  are the same at every step. So it runs once, over the labeled training
  examples and the unlabeled text, and its logits are cached with the
  features (write_teacher_features) under a recipe naming the features'
  inputs and the teacher checkpoint's digest (weights_digest), so a
  changed teacher or data file is labelled anew, never reused stale.
- The loss (DistillationLoss), per example i of the global batch of size G:
    soft_i = T^2 * KL(softmax(t_i / T) || softmax(z_i / T))
             (regression: (z_i - t_i)^2, the teacher's score)
    hard_i = the gold-label cross-entropy (squared error), times
             label_weight_i: 1 labeled, 0 unlabeled
    loss = soft_loss_weight * sum_i soft_i / G
           + hard_loss_weight * sum_i hard_i / G

Defines no flags.

Shapes: B = batch size (per replica), C = num_labels (1 for regression).
"""

import dataclasses
import hashlib
import json
import os
import typing

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import classifier
from bert_distill import classifier_data
from bert_distill import classifier_metrics
from bert_distill import cli
from bert_distill import example_codec
from bert_distill import file_io
from bert_distill import losses
from bert_distill import progress_log
from bert_distill import records
from bert_distill import tfrecord
import modeling

TRAIN_FILE = "task_distillation_train.tf_record"
TERM_NAMES = ("loss", "soft_loss", "hard_loss")
# The order the labeled and unlabeled examples are written in: one fixed
# shuffle, so the training pipeline's bounded shuffle buffer mixes the two
# even when the unlabeled text is many times the buffer.
_WRITE_ORDER_SEED = 0


class Teacher(typing.NamedTuple):
  """The teacher as the flags name it."""
  config: modeling.BertConfig
  config_file: str  # the file config was read from
  checkpoint: str  # a prefix or a folder
  precision: str   # a key of modeling.COMPUTE_DTYPES


@dataclasses.dataclass(frozen=True)
class DistillationLoss:
  """The task distillation loss (module doc) with its settings."""
  temperature: float
  soft_loss_weight: float
  hard_loss_weight: float
  is_regression: bool
  term_names = TERM_NAMES

  def soft_per_example(self, logits, teacher_logits):
    """[B]: T^2 KL(teacher || student), or the squared error to the
    teacher's score for regression."""
    if self.is_regression:
      return tf.square(logits[:, 0] - teacher_logits[:, 0])
    return losses.class_kl_divergence(logits, teacher_logits, self.temperature)

  def __call__(self, logits, features, global_batch_size):
    """{"loss", "soft_loss", "hard_loss"} of a batch: each sum over the
    examples divided by the global batch size, so the replicas' terms add up
    to the batch's means.

    Args:
      logits: [B, C] float32 student logits.
      features: a parsed batch of records.task_distillation_feature_spec.
      global_batch_size: G.
    """
    real = tf.cast(features[records.IS_REAL_EXAMPLE], tf.float32)  # [B]
    soft = tf.reduce_sum(real * self.soft_per_example(
        logits, features[records.TEACHER_LOGITS])) / float(global_batch_size)
    hard = tf.reduce_sum(
        features[records.LABEL_WEIGHT] *
        classifier.per_example_loss(logits, features, self.is_regression)
    ) / float(global_batch_size)
    return {"loss": (self.soft_loss_weight * soft +
                     self.hard_loss_weight * hard),
            "soft_loss": soft, "hard_loss": hard}


# ----------------------------------------------------------------------------
# The teacher.

def _teacher_folder(checkpoint):
  return (checkpoint if tf.io.gfile.isdir(checkpoint) else
          os.path.dirname(checkpoint))


def check_teacher_labels(checkpoint, task):
  """Where the teacher's folder says which labels it was fine-tuned on
  (run_classifier.py's train.tf_record.json), they must be the task's, in
  the task's order.

  Raises:
    cli.StageError: one line naming both label sets.
  """
  recipe_path = os.path.join(_teacher_folder(checkpoint),
                             "train.tf_record.json")
  if not tf.io.gfile.exists(recipe_path):
    return
  with tf.io.gfile.GFile(recipe_path) as f:
    labels = json.load(f).get("labels")
  if labels is not None and list(labels) != list(task.labels):
    raise cli.StageError(
        f"--teacher_checkpoint {checkpoint}: the teacher was fine-tuned on "
        f"the labels ({', '.join(labels) or 'regression'}) but task "
        f"{task.name} has ({', '.join(task.labels) or 'regression'}); give "
        f"a teacher fine-tuned on this task")


def build_teacher(strategy, config, task, checkpoint, precision):
  """The frozen teacher classifier under the strategy's scope, every
  variable loaded (checkpoints.load_checkpoint, strict), pooling as its
  config records (a teacher fine-tuned with --pooling=mean pools so).

  Raises:
    cli.StageError: one line: no checkpoint there, or variables missing or
      mis-shaped (a head of another label count says so).
  """
  check_teacher_labels(checkpoint, task)
  with strategy.scope():
    teacher = classifier.BertClassifier(
        config, task.num_labels, modeling.COMPUTE_DTYPES[precision], seed=0,
        pooling=classifier.pooling_of(config))
  try:
    checkpoints.load_checkpoint(teacher.variables_by_name(), checkpoint,
                                whole_encoder=True)
  except ValueError as e:
    hint = (f"a teacher fine-tuned on the task's {task.num_labels} label(s)?"
            if classifier.OUTPUT_WEIGHTS in str(e) else
            "does it match --teacher_config?")
    raise cli.StageError(f"--teacher_checkpoint {e} ({hint})") from None
  return teacher


def weights_digest(checkpoint):
  """{"path", "sha256"} naming the teacher's weights: the resolved
  checkpoint and the sha256 of its index (which holds every tensor's
  CRC32C, so other weights give another digest); for a checkpoint that is
  a file or a folder of files instead, of those files.

  Raises:
    cli.StageError: nothing readable there.
  """
  try:
    path = checkpoints.resolve_checkpoint(checkpoint)
  except ValueError as e:
    raise cli.StageError(f"--teacher_checkpoint {e}") from None
  if tf.io.gfile.exists(path + ".index"):
    files = [path + ".index"]
  elif tf.io.gfile.isdir(path):
    files = sorted(os.path.join(path, name)
                   for name in tf.io.gfile.listdir(path)
                   if not tf.io.gfile.isdir(os.path.join(path, name)))
  else:
    files = [path]
  digest = hashlib.sha256()
  for name in files:
    digest.update(os.path.basename(name).encode() + b"\0")
    digest.update(classifier_data.file_digest(name).encode())
  return {"path": path, "sha256": digest.hexdigest()}


# ----------------------------------------------------------------------------
# The training records with the teacher's logits.

def read_recipe(path):
  """The recipe (JSON) beside a records file, or None without one."""
  recipe_path = path + ".json"
  if not (tf.io.gfile.exists(path) and tf.io.gfile.exists(recipe_path)):
    return None
  with tf.io.gfile.GFile(recipe_path) as f:
    return json.load(f)


def write_order(num_labeled, num_unlabeled):
  """[(index, is_labeled)] of the combined file: the labeled and unlabeled
  examples in one fixed shuffle (_WRITE_ORDER_SEED)."""
  rng = np.random.default_rng(_WRITE_ORDER_SEED)
  order = rng.permutation(num_labeled + num_unlabeled)
  return [(int(i), True) if i < num_labeled else (int(i) - num_labeled, False)
          for i in order]


def write_teacher_features(path, recipe, task, max_seq_length, tokenizer,
                           labeled, unlabeled, labeled_logits,
                           unlabeled_logits):
  """Writes the training records of task distillation to `path`, then the
  recipe beside it (both through file_io.atomic_output).

  Args:
    path: the records file.
    recipe: what they were made from (read_recipe reads it back).
    task, max_seq_length, tokenizer: as for classifier_data's features.
    labeled, unlabeled: [InputExample] (unlabeled may be empty).
    labeled_logits, unlabeled_logits: float32 [N, C] the teacher's logits of
      each, in the same order.

  Returns:
    path.
  """
  progress = progress_log.Progress("task distillation records",
                                   total=len(labeled) + len(unlabeled),
                                   unit="examples", interval=10.0)
  with file_io.atomic_output(path) as tmp_path:
    with tfrecord.TFRecordWriter(tmp_path) as writer:
      for index, is_labeled in write_order(len(labeled), len(unlabeled)):
        example = (labeled if is_labeled else unlabeled)[index]
        logits = (labeled_logits if is_labeled else unlabeled_logits)[index]
        features = classifier_data.convert_single_example(
            example, task, max_seq_length, tokenizer)
        features[records.TEACHER_LOGITS] = [float(v) for v in logits]
        features[records.LABEL_WEIGHT] = [1.0 if is_labeled else 0.0]
        writer.write(example_codec.serialize_example(features))
        progress.update()
  progress.log(final=True)
  with file_io.atomic_output(path + ".json") as tmp_path:
    with tf.io.gfile.GFile(tmp_path, "w") as f:
      f.write(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
  return path


def log_teacher_quality(task, logits, labels):
  """Logs the teacher's metrics on the labeled training examples: a teacher
  that does not fit its own training data teaches little."""
  predictions = classifier.predictions_of(logits, task.is_regression)
  metrics = classifier_metrics.task_metrics(task.metrics,
                                                       predictions, labels)
  logging.info("The teacher on the %d labeled training examples: %s",
               len(labels), ", ".join(f"{name} {value:.4f}"
                                      for name, value in metrics.items()))
