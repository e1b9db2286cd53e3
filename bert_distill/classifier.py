"""BERT with a classification head, fine-tuned as Google's run_classifier.py.

The head is one dense layer on the pooled output (or, with pooling "mean",
on the mean of the last hidden states over the input mask, for models
trained that way such as sentence-transformers'), stored as Google stores it:
`output_weights` [num_labels, H] (truncated normal, stddev 0.02) and
`output_bias` [num_labels] (zeros), with dropout (BERT's hidden_dropout_prob)
on the pooled output in training. Classification takes the softmax
cross-entropy; regression (num_labels 1, STS-B) the squared error of the
single output.

With a teacher (task_distillation.py) the loss is TrainSettings'
distillation_loss instead; the model and checkpoints are the same.

Checkpoints hold Google's `bert/...` names, the head, the adam_m / adam_v
slots and global_step, as Google's fine-tuned checkpoints do (the
pretraining heads `cls/...` are neither trained nor saved).

Shapes: B = batch size (per replica), L = max_seq_length, H = hidden size,
C = num_labels.
"""

import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import classifier_data
from bert_distill import classifier_metrics
import modeling
import optimization
from bert_distill import file_io
from bert_distill import progress_log
from bert_distill import records
from bert_distill import training

OUTPUT_WEIGHTS = "output_weights"
OUTPUT_BIAS = "output_bias"
HEAD_NAMES = (OUTPUT_WEIGHTS, OUTPUT_BIAS)
# What a checkpoint that initialises fine-tuning may lack: the head, and the
# pooler (not every converted or distilled checkpoint has one).
MAY_BE_INITIALIZED = HEAD_NAMES + ("bert/pooler/dense/kernel",
                                   "bert/pooler/dense/bias")
POOLINGS = ("cls", "mean")
# The bert_config.json key that records a mean-pooling classifier (absent:
# Google's pooled [CLS] output), so that export_model.py serves it alike.
POOLING_KEY = "classifier_pooling"


def pooling_of(config):
  """The pooling a fine-tuned model's config records ("cls" when none)."""
  pooling = config.extra.get(POOLING_KEY, "cls")
  if pooling not in POOLINGS:
    raise ValueError(f"{POOLING_KEY} {pooling!r} is not one of "
                     f"{', '.join(POOLINGS)}")
  return pooling


def mean_pool(sequence_output, input_mask):
  """The mean of [B, L, H] over the real tokens of int [B, L] input_mask ->
  float32 [B, H]."""
  mask = tf.cast(input_mask, tf.float32)[:, :, tf.newaxis]  # [B, L, 1]
  total = tf.reduce_sum(tf.cast(sequence_output, tf.float32) * mask, axis=1)
  return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)  # [B, H]


class BertClassifier(tf.Module):
  """BERT's encoder and pooler (modeling.BertModel) plus the classification
  head."""

  def __init__(self, config, num_labels, compute_dtype=tf.float32, seed=None,
               pooling="cls"):
    """pooling: "cls", BERT's pooler (tanh(dense(first token))); "mean", the
    mean of the last hidden states over the input mask."""
    super().__init__(name="bert_classifier")
    self.config = config
    self.num_labels = num_labels
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    self.pooling = pooling
    self.bert = modeling.BertModel(config, compute_dtype, seed=seed)
    rng = np.random.default_rng(None if seed is None else seed + 1)
    self.output_weights = tf.Variable(
        tf.random.stateless_truncated_normal(
            [num_labels, config.hidden_size], seed=rng.integers(0, 2**31, 2),
            stddev=0.02), name=OUTPUT_WEIGHTS)
    self.output_bias = tf.Variable(tf.zeros([num_labels]), name=OUTPUT_BIAS)

  def variables_by_name(self):
    """{Google name: variable} of what is trained and saved: `bert/...` and
    the head."""
    variables = self.bert.variables_by_name()
    variables[OUTPUT_WEIGHTS] = self.output_weights
    variables[OUTPUT_BIAS] = self.output_bias
    return variables

  def __call__(self, input_ids, input_mask, segment_ids, training=False):
    """Returns {"logits": float32 [B, C], "pooled_output": [B, H] (what the
    head reads: the pooler's or the mean), "sequence_output": [B, L, H]}."""
    outputs = self.bert(input_ids, input_mask, segment_ids, training=training)
    if self.pooling == "mean":
      outputs["pooled_output"] = mean_pool(outputs["sequence_output"],
                                           input_mask)
    pooled = tf.cast(outputs["pooled_output"], tf.float32)  # [B, H]
    if training and self.config.hidden_dropout_prob > 0:
      pooled = tf.nn.dropout(pooled, rate=self.config.hidden_dropout_prob)
    logits = tf.nn.bias_add(
        tf.matmul(pooled, self.output_weights, transpose_b=True),
        self.output_bias)  # [B, C]
    return {"logits": logits, "pooled_output": outputs["pooled_output"],
            "sequence_output": outputs["sequence_output"]}


def per_example_loss(logits, features, is_regression):
  """Cross-entropy (or squared error for regression) of each example,
  zero for padding examples.  [B]"""
  real = tf.cast(features[records.IS_REAL_EXAMPLE], tf.float32)
  if is_regression:
    loss = tf.square(logits[:, 0] - features[records.LABEL_VALUES])
  else:
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=features[records.LABEL_IDS], logits=logits)
  return loss * real


# ----------------------------------------------------------------------------
# Checkpoints.

def checkpoint_vocab_size(checkpoint):
  """Rows of the checkpoint's bert/embeddings/word_embeddings (None when it
  has none).

  Raises:
    ValueError: nothing readable at that path.
  """
  shapes = checkpoints.checkpoint_shapes(checkpoint)
  shape = shapes.get("bert/embeddings/word_embeddings")
  return shape[0] if shape else None


def initialize_from(model, init_checkpoint, layer_map=None):
  """Loads `bert/...` (and a head of the same shape) from init_checkpoint,
  encoder layer j from its layer layer_map[j] when a map is given.

  The head, and the pooler, may be missing or of another shape (a
  pretraining checkpoint, a head for another task): they keep their
  initial values with a warning. Anything else missing is an error.

  Raises:
    ValueError: one line: not a checkpoint, or encoder variables missing or
      mis-shaped.
  """
  result = checkpoints.load_checkpoint(model.variables_by_name(), init_checkpoint,
                                       layer_map=layer_map, allow_partial=True)
  missing = [n for n in result["initialized"] if n not in MAY_BE_INITIALIZED]
  if missing:
    raise ValueError(
        f"{init_checkpoint}: {len(missing)} encoder variables missing or "
        f"mis-shaped (not a checkpoint of --bert_config_file's "
        f"architecture?): {', '.join(missing[:5])}")
  for name in result["initialized"]:
    logging.warning("%s has no %s of shape %s: initialized (as Google's "
                    "run_classifier.py does for a new head)", init_checkpoint,
                    name, model.variables_by_name()[name].shape.as_list())
  return result


# ----------------------------------------------------------------------------
# Training.

@dataclasses.dataclass
class TrainSettings(training.LoopSettings):
  """What fine-tuning's loop needs from the flags. With distillation_loss
  (task distillation) the loss is its terms instead of the gold labels'."""
  is_regression: bool
  loss_scale: "optimization.DynamicLossScale | None" = None
  distillation_loss: "task_distillation.DistillationLoss | None" = None

  @property
  def term_names(self):
    return (self.distillation_loss.term_names if self.distillation_loss
            else ("loss",))

  def loss_terms(self, logits, features):
    """{term: scalar} of a replica's batch, each divided by the global batch
    size ("loss" the one trained)."""
    if self.distillation_loss:
      return self.distillation_loss(logits, features, self.global_batch_size)
    return {"loss": tf.reduce_sum(per_example_loss(
        logits, features, self.is_regression)) / float(self.global_batch_size)}


def make_train_loop(strategy, model, optimizer, settings):
  """Returns train_loop(iterator, num_steps) -> (steps_run, {"loss",
  "global_norm"}, stopped), as training.make_loop runs it."""
  variables = model.variables_by_name()
  names = sorted(variables)
  var_list = [variables[name] for name in names]
  loss_scale = settings.loss_scale

  @tf.autograph.experimental.do_not_convert
  def replica_step(features):
    with tf.GradientTape() as tape:
      logits = model(features[records.INPUT_IDS], features[records.INPUT_MASK],
                     features[records.SEGMENT_IDS], training=True)["logits"]
      # Divided by the global batch: the replicas' losses add up to the mean.
      terms = settings.loss_terms(logits, features)
      loss = terms["loss"]
      scaled = loss * loss_scale.scale if loss_scale else loss
    grads = tape.gradient(scaled, var_list)
    global_norm = optimization.apply_scaled_gradients(optimizer, names, grads,
                                                      loss_scale)
    return terms, global_norm

  return training.make_loop(strategy, replica_step, settings.term_names)


def train(strategy, model, optimizer, schedule, dataset, start_step, settings):
  """Trains from start_step to settings.num_train_steps (training.train);
  returns the step.

  Raises:
    cli.StageError: as training.train.
  """
  train_loop = make_train_loop(strategy, model, optimizer, settings)
  return training.train(train_loop, dataset, start_step, settings, schedule,
                        training.saved_variables(model, optimizer),
                        lambda terms: ", ".join(
                            f"{name} {terms[name]:.4f}"
                            for name in settings.term_names))


# ----------------------------------------------------------------------------
# Evaluation and prediction.

def predict_logits(strategy, model, dataset, num_examples, is_regression):
  """Runs the model over an eval_dataset.

  Returns:
    (logits float32 [num_examples, C] in file order, summed loss of the
    real examples).
  """
  @tf.autograph.experimental.do_not_convert
  def replica_step(features):
    logits = model(features[records.INPUT_IDS], features[records.INPUT_MASK],
                   features[records.SEGMENT_IDS], training=False)["logits"]
    loss = tf.reduce_sum(per_example_loss(logits, features, is_regression))
    return features[classifier_data.EXAMPLE_INDEX], logits, loss

  # Trimmed batches come in as many lengths as max_seq_length has multiples
  # of TRIM_MULTIPLE: one trace with an unknown length serves them all.
  @tf.function(reduce_retracing=True)
  def step(batch):
    index, logits, loss = strategy.run(replica_step, args=(batch,))
    return (strategy.gather(index, axis=0), strategy.gather(logits, axis=0),
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None))

  all_logits = np.zeros([num_examples, model.num_labels], np.float32)
  total_loss = 0.0
  progress = progress_log.Progress("predicting", total=num_examples,
                                   unit="examples", interval=10.0)
  for batch in dataset:
    index, logits, loss = step(batch)
    index = index.numpy()
    real = index >= 0
    all_logits[index[real]] = logits.numpy()[real]
    total_loss += float(loss)
    progress.update(int(real.sum()))
  return all_logits, total_loss


def predictions_of(logits, is_regression):
  """Class indices (argmax) or regression scores.  [N]"""
  return logits[:, 0] if is_regression else np.argmax(logits, axis=-1)


def evaluation_results(task, logits, total_loss, labels):
  """{eval_<metric>: value} of the task's metrics, plus eval_loss."""
  metrics = classifier_metrics.task_metrics(
      task.metrics, predictions_of(logits, task.is_regression), labels)
  results = {f"eval_{name}": value for name, value in metrics.items()}
  results["eval_loss"] = total_loss / len(labels)
  return results


def write_test_results(task, examples, logits, output_dir):
  """Writes output_dir/test_results.tsv in GLUE's submission layout: a
  header `index<TAB>prediction`, then each test example's index and its
  predicted label (or score)."""
  path = os.path.join(output_dir, "test_results.tsv")
  predictions = predictions_of(logits, task.is_regression)
  with file_io.atomic_output(path) as tmp_path:
    with tf.io.gfile.GFile(tmp_path, "w") as f:
      f.write("index\tprediction\n")
      for example, prediction in zip(examples, predictions):
        value = (f"{prediction:.3f}" if task.is_regression else
                 task.labels[prediction])
        f.write(f"{example.guid}\t{value}\n")
  logging.info("Wrote %s (%d predictions)%s", path, len(examples),
               f"; GLUE's submission names it {task.submission_name}"
               if task.submission_name else "")
  return path
