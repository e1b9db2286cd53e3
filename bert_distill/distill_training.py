"""Stage V's student, teacher, loop and checkpoints, as distill.py runs them.

loss_config makes the run's losses.LossConfig (the flags over a --preset's
values) and resolve_layers fits it to the two models; build_student makes
the student, its AdamWeightDecay optimizer and (for float16) its loss
scale; make_online_teacher the frozen teacher and the projections of
--teacher_config runs; make_train_loop and make_eval_step the compiled
per-replica steps (losses.py defines every term); train runs them through
training.py's loop (checkpoints every --save_checkpoints_steps, TensorBoard
summaries). Defines no flags: distill.py passes their values in.

Shapes: B = batch size (per replica), L = max_seq_length,
P = max_predictions_per_seq, k = truncation_factor, V = vocab_size.
"""

import dataclasses
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import distribution
from bert_distill import file_io
from bert_distill import interrupts
from bert_distill import label_settings
from bert_distill import losses
from bert_distill import model_config
import modeling
import optimization
from bert_distill import records
from bert_distill import training

# The pretraining heads' variables (masked LM, next sentence): what an
# encoder-only checkpoint lacks, and what --trainable heads trains.
HEADS_PREFIX = "cls/"

# What each paper trained with (docs/online_distillation.md gives the
# sources); a flag the user gives explicitly wins over its preset value.
PRESETS = {
    # DistilBERT (Sanh et al. 2019; transformers' research_projects/
    # distillation: --alpha_ce 5.0 --alpha_mlm 2.0 --alpha_cos 1.0,
    # --temperature 2.0).
    "distilbert": {"temperature": 2.0, "soft_loss_weight": 5.0,
                   "hard_mlm_loss_weight": 2.0,
                   "next_sentence_loss_weight": 0.0, "hidden_loss": "cosine",
                   "hidden_loss_weight": 1.0, "attention_loss_weight": 0.0,
                   "embedding_loss_weight": 0.0},
    # TinyBERT's general distillation (Jiao et al. 2020, section 3.1-3.3;
    # general_distill.py: loss = att_loss + rep_loss, rep_loss over the
    # embeddings and the uniformly mapped layers, no prediction layer).
    "tinybert_general": {"temperature": 1.0, "soft_loss_weight": 0.0,
                         "hard_mlm_loss_weight": 0.0,
                         "next_sentence_loss_weight": 0.0, "hidden_loss": "mse",
                         "hidden_loss_weight": 1.0, "attention_loss": "mse",
                         "attention_loss_weight": 1.0,
                         "embedding_loss_weight": 1.0},
    # MiniLM (Wang et al. 2020, section 3: L = L_AT + L_VR on the last
    # layer, nothing else).
    "minilm": {"temperature": 1.0, "soft_loss_weight": 0.0,
               "hard_mlm_loss_weight": 0.0, "next_sentence_loss_weight": 0.0,
               "hidden_loss_weight": 0.0,
               "attention_loss": "kl", "attention_loss_weight": 1.0,
               "embedding_loss_weight": 0.0},
}


def loss_config(values, given, preset=None):
  """The run's losses.LossConfig: a flag the user gave wins, then the
  preset's value, then the flag's default.

  Args:
    values: {LossConfig field: the flag's value} (given or default).
    given: the names of the flags given explicitly.
    preset: a name in PRESETS, or None.

  Returns:
    (the LossConfig, {field: value} of what the preset set, for the log).
  """
  applied = {name: value for name, value in PRESETS.get(preset, {}).items()
             if name not in given}
  return losses.LossConfig(**{**values, **applied}), applied


def check_something_to_learn(config):
  """Raises cli.StageError when every loss weight of the LossConfig is 0:
  training would run its steps and change nothing."""
  weights = [f.name for f in dataclasses.fields(config)
             if f.name.endswith("_weight")]
  if not any(getattr(config, name) for name in weights):
    flags_text = ", ".join(f"--{name}" for name in weights)
    raise cli.StageError(f"every loss weight is 0 ({flags_text}): nothing "
                         f"to learn")


def read_matching_teacher_config(path, max_seq_length, student_config):
  """The teacher's BertConfig; its vocabulary must be the student's."""
  try:
    config = model_config.read_config(path, max_seq_length, "teacher")
  except ValueError as e:
    raise cli.StageError(f"--teacher_config {e}") from None
  if config.vocab_size != student_config.vocab_size:
    raise cli.StageError(
        f"--teacher_config {path}: the teacher's vocab_size "
        f"{config.vocab_size} differs from the student's "
        f"{student_config.vocab_size}; both must use one vocabulary")
  return config


def resolve_layers(config, student_config, teacher_config, hidden_layer_map):
  """The LossConfig with its layer map and relation heads set for the two
  models, checked against them.

  hidden_layer_map: the flag's strings or None (uniform); config's
  relation_heads 0 stands for the teacher's head count.
  """
  if hidden_layer_map:
    layer_map = [int(layer) for layer in hidden_layer_map]
  else:
    layer_map = losses.uniform_layer_map(student_config.num_hidden_layers,
                                         teacher_config.num_hidden_layers)
  config = dataclasses.replace(
      config, hidden_layer_map=tuple(layer_map),
      relation_heads=(config.relation_heads or
                      teacher_config.num_attention_heads))
  try:
    losses.check_intermediate_options(student_config, teacher_config, config)
  except ValueError as e:
    raise cli.StageError(str(e)) from None
  return config


def build_teacher(strategy, config, checkpoint, precision, needs_mlm_head=True):
  """The frozen teacher under the strategy's scope, loaded.

  With a masked-LM head in the checkpoint (or needs_mlm_head), a
  BertPretrainingModel; without one, when no loss needs it (soft loss 0),
  the encoder alone (modeling.BertModel): an encoder-only teacher such as a
  sentence-transformers model. The pooler and the next-sentence head may be
  missing (no loss uses them).

  Raises:
    cli.StageError: the checkpoint is missing, lacks the masked-LM head a
      loss needs (names the remedy), or lacks or mis-shapes variables of the
      teacher's config (named).
  """
  try:
    has_head = any(name.startswith("cls/predictions/")
                   for name in checkpoints.checkpoint_shapes(checkpoint))
  except ValueError as e:
    raise cli.StageError(f"--teacher_checkpoint {e}") from None
  try:
    teacher = checkpoints.load_teacher(
        strategy, config, checkpoint, precision,
        mlm_head=has_head or needs_mlm_head)
  except checkpoints.MissingHeadError as e:
    raise cli.StageError(f"--teacher_checkpoint {e} (the soft loss needs the "
                         f"teacher's masked-LM distribution)") from None
  except checkpoints.NonFiniteError as e:
    raise cli.StageError(f"--teacher_checkpoint {e}") from None
  except ValueError as e:
    raise cli.StageError(
        f"--teacher_checkpoint {e} (does it match --teacher_config?)") from None
  return teacher


def build_projections(strategy, shapes, initializer_range, seed):
  """The learned projections of losses.projection_shapes, as variables named
  under losses.PROJECTION_PREFIX: kernels BERT's truncated normal, biases 0."""
  rng = np.random.default_rng([seed, 1])
  projections = {}
  with strategy.scope():
    for name, shape in sorted(shapes.items()):
      if name.endswith("/bias"):
        value = tf.zeros(shape)
      else:
        value = tf.random.stateless_truncated_normal(
            shape, seed=rng.integers(0, 2**31 - 1, size=2),
            stddev=initializer_range)
      projections[name] = tf.Variable(value, name=name)
  return projections


def make_online_teacher(strategy, student_config, teacher_config, checkpoint,
                        precision, config, seed, soft_labels=True):
  """The OnlineTeacher: the loaded frozen teacher and the projections the
  LossConfig needs between the two widths. soft_labels: whether a loss needs
  the teacher's masked-LM distribution (the soft loss).

  Raises:
    cli.StageError: the checkpoint is missing, lacks the masked-LM head a
      loss needs, or lacks or mis-shapes variables of the teacher's config.
  """
  model = build_teacher(strategy, teacher_config, checkpoint, precision,
                        needs_mlm_head=soft_labels)
  shapes = losses.projection_shapes(student_config.hidden_size,
                                    teacher_config.hidden_size, config)
  projections = build_projections(strategy, shapes,
                                  student_config.initializer_range, seed)
  logging.info("Teacher %s in the loop (%d layers, hidden %d); "
               "intermediate losses %s; projections %s", checkpoint,
               teacher_config.num_hidden_layers, teacher_config.hidden_size,
               config, {n: v.shape.as_list() for n, v in projections.items()})
  return OnlineTeacher(model, config, projections, soft_labels)


class OnlineTeacher:
  """The teacher in the training step: its frozen model, the LossConfig of
  the intermediate losses and the student's projections (trained with it).
  Its labels are always label_settings.FULL.

  soft_labels: the training step needs the teacher's masked-LM distribution
  (soft loss on); otherwise its head and the V-way softmax are not run in
  training. has_mlm_head: the model has one (evaluation then still reports
  agreement and teacher_kl).
  """

  def __init__(self, model, config, projections, soft_labels=True):
    self.model = model
    self.config = config
    self.projections = projections
    self.soft_labels = soft_labels
    self.has_mlm_head = isinstance(model, modeling.BertPretrainingModel)
    self.has_intermediate_losses = config.has_intermediate_losses

  def label(self, features, distribution=None):
    """Runs the teacher (inference mode, no gradient) on a parsed batch.

    distribution: compute the teacher's masked-LM distribution; default
    soft_labels (training), evaluation passes has_mlm_head.

    Returns (features with the teacher's full masked-LM distribution as
    FullLabels [B, P, V], in place of any stored labels, when distribution
    is on, else without labels; the teacher's outputs).
    """
    if distribution is None:
      distribution = self.soft_labels
    args = [features[records.INPUT_IDS], features[records.INPUT_MASK],
            features[records.SEGMENT_IDS]]
    if distribution:
      outputs = self.model(*args, features[records.MASKED_LM_POSITIONS],
                           training=False,
                           intermediates=self.has_intermediate_losses)
    else:  # the encoder alone: no head, no [B, P, V] logits
      encoder = self.model.bert if self.has_mlm_head else self.model
      outputs = encoder(*args, training=False,
                        intermediates=self.has_intermediate_losses)
    outputs = tf.nest.map_structure(tf.stop_gradient, outputs)
    features = {name: value for name, value in features.items()
                if name != label_settings.TEACHER_LABELS}
    if distribution:
      features[label_settings.TEACHER_LABELS] = label_settings.FullLabels(
          tf.nn.softmax(outputs["masked_lm_logits"], axis=-1))  # [B, P, V]
    return features, outputs

  def intermediate_losses(self, student_outputs, teacher_outputs, input_mask,
                          totals):
    """losses.intermediate_losses with the global denominators `totals`."""
    return losses.intermediate_losses(
        student_outputs, teacher_outputs, input_mask, self.config,
        self.projections, **totals)


def global_token_totals(input_mask):
  """{"token_total", "pair_total"}: real tokens and real (query, key) pairs
  summed over all replicas. Call in replica context."""
  lengths = tf.reduce_sum(tf.cast(input_mask, tf.float32), axis=1)  # [B]
  context = tf.distribute.get_replica_context()
  return {"token_total": context.all_reduce(tf.distribute.ReduceOp.SUM,
                                            tf.reduce_sum(lengths)),
          "pair_total": context.all_reduce(tf.distribute.ReduceOp.SUM,
                                           tf.reduce_sum(tf.square(lengths)))}


def model_outputs(model, features, training, intermediates=False):
  """The student's ([B, P, V] MLM logits, [B, 2] next-sentence logits), and
  with intermediates=True its whole output dict as a third item."""
  outputs = model(features[records.INPUT_IDS], features[records.INPUT_MASK],
                  features[records.SEGMENT_IDS],
                  features[records.MASKED_LM_POSITIONS], training=training,
                  intermediates=intermediates)
  logits = outputs["masked_lm_logits"], outputs["next_sentence_logits"]
  return (*logits, outputs) if intermediates else logits


def make_train_loop(strategy, model, optimizer, global_batch_size,
                    loss_config, use_xla, loss_scale=None, teacher=None,
                    trainable="all"):
  """Returns train_loop(iterator, num_steps) -> (steps_run, mean terms,
  stopped), as training.make_loop runs it.

  One call runs up to num_steps training steps inside a single tf.function,
  and stops early after a step whose loss or gradients' global norm is not
  finite (steps_run then counts that step, and its terms are returned
  instead of the means), or after a step during which a stop was requested
  (stopped).
  loss_config: a losses.LossConfig.
  loss_scale: a DynamicLossScale for float16, else None.
  teacher: an OnlineTeacher, or None for the stored labels. Its model runs
    in the same step, before the tape; the projections train with the
    student, and the intermediate terms join the loss.
  trainable: "all", or "heads": only the heads get gradients (the tape then
    never reaches into the encoder) and updates (trained_names).
  """
  variables = model.variables_by_name()
  intermediate = teacher is not None and teacher.has_intermediate_losses
  if teacher is not None:
    variables.update(teacher.projections)
  names = trained_names(variables, trainable)
  var_list = [variables[name] for name in names]

  def loss_and_gradients(features, weight_total, scale, token_totals):
    teacher_outputs = None
    if teacher is not None:
      features, teacher_outputs = teacher.label(features)
    with tf.GradientTape() as tape:
      mlm_logits, nsp_logits, *student_outputs = model_outputs(
          model, features, training=True, intermediates=intermediate)
      terms = losses.compute_losses(mlm_logits, nsp_logits, features,
                                    loss_config, weight_total=weight_total,
                                    example_total=float(global_batch_size))
      if intermediate:
        intermediate_terms = teacher.intermediate_losses(
            student_outputs[0], teacher_outputs,
            features[records.INPUT_MASK], token_totals)
        terms["loss"] += intermediate_terms.pop("intermediate_loss")
        terms.update(intermediate_terms)
      scaled_loss = terms["loss"] * scale
    return terms, tape.gradient(scaled_loss, var_list)

  if use_xla:
    # The model and the loss are plain Python over tensors: AutoGraph need
    # not convert them (converting costs seconds of start-up).
    loss_and_gradients = tf.function(loss_and_gradients, jit_compile=True,
                                     autograph=False)

  @tf.autograph.experimental.do_not_convert
  def replica_step(features):
    # Every replica divides by the global sums, so the replicas' losses and
    # gradients add up to exactly those of one replica with the whole batch.
    context = tf.distribute.get_replica_context()
    weight_total = context.all_reduce(
        tf.distribute.ReduceOp.SUM,
        tf.reduce_sum(features[records.MASKED_LM_WEIGHTS]))
    weight_total += losses.WEIGHT_EPSILON
    scale = loss_scale.scale if loss_scale else tf.constant(1.0)
    token_totals = (global_token_totals(features[records.INPUT_MASK])
                    if intermediate else {})
    terms, grads = loss_and_gradients(features, weight_total, scale,
                                      token_totals)
    global_norm = optimization.apply_scaled_gradients(optimizer, names, grads,
                                                      loss_scale)
    return terms, global_norm

  return training.make_loop(
      strategy, replica_step,
      ("loss", "soft_loss", "hard_mlm_loss", "next_sentence_loss") +
      (losses.INTERMEDIATE_TERMS if intermediate else ()))


def make_eval_step(strategy, model, loss_config, teacher=None):
  """Returns eval_step(iterator) -> evaluation_sums of one global batch.

  With an OnlineTeacher its full distribution is the batch's teacher label,
  so every full-distribution metric is computed online.
  """
  @tf.autograph.experimental.do_not_convert
  def replica_step(features):
    if teacher is not None:
      features, _ = teacher.label(features, teacher.has_mlm_head)
    mlm_logits, nsp_logits = model_outputs(model, features, training=False)
    return losses.evaluation_sums(mlm_logits, nsp_logits, features,
                                  loss_config)

  @tf.function
  def eval_step(iterator):
    return distribution.sum_over_replicas(strategy, replica_step,
                                          (next(iterator),))
  return eval_step


def trained_names(variables_by_name, trainable):
  """The sorted names training updates: all of them, or with trainable
  "heads" those under HEADS_PREFIX (stage T: the encoder stays frozen)."""
  if trainable == "heads":
    return sorted(n for n in variables_by_name if n.startswith(HEADS_PREFIX))
  return sorted(variables_by_name)


@dataclasses.dataclass
class TrainSettings(training.LoopSettings):
  """What stage V's loop needs from the flags."""
  loss_config: losses.LossConfig
  use_xla: bool
  loss_scale: "optimization.DynamicLossScale | None" = None
  teacher: "OnlineTeacher | None" = None
  trainable: str = "all"


def describe_terms(terms):
  """The loss terms of train's log line."""
  text = (f"loss {terms['loss']:.4f} (soft {terms['soft_loss']:.4f}, hard mlm "
          f"{terms['hard_mlm_loss']:.4f}, next sentence "
          f"{terms['next_sentence_loss']:.4f})")
  if "hidden_loss" in terms:
    text += (f", intermediate losses: embedding {terms['embedding_loss']:.4f}"
             f", hidden {terms['hidden_loss']:.4f}, attention "
             f"{terms['attention_loss']:.4f}")
  return text


def train(strategy, model, optimizer, schedule, dataset, start_step, settings):
  """Trains from start_step to settings.num_train_steps (training.train);
  returns the step.

  Raises:
    cli.StageError: as training.train.
  """
  train_loop = make_train_loop(strategy, model, optimizer,
                               settings.global_batch_size,
                               settings.loss_config, settings.use_xla,
                               settings.loss_scale, settings.teacher,
                               settings.trainable)
  projections = settings.teacher.projections if settings.teacher else None
  return training.train(
      train_loop, dataset, start_step, settings, schedule,
      training.saved_variables(model, optimizer, projections), describe_terms)


def evaluate(strategy, model, dataset, num_batches, loss_config,
             teacher=None):
  """Runs num_batches evaluation batches -> evaluation_metrics."""
  eval_step = make_eval_step(strategy, model, loss_config, teacher)
  iterator = iter(dataset)
  sums = None
  for _ in range(num_batches):
    batch_sums = {name: value.numpy().astype(np.float64)
                  for name, value in eval_step(iterator).items()}
    interrupts.check()
    sums = batch_sums if sums is None else {
        name: sums[name] + batch_sums[name] for name in sums}
  return losses.evaluation_metrics(sums, loss_config)


EVALUATION_RECORD = "eval_results.made_from.json"


def holds_evaluation(output_dir, record):
  """Whether output_dir/eval_results.txt is the evaluation `record`
  describes (distill.evaluation_record: the step, the evaluation files'
  content, the settings), by the record written beside it: a rerun with
  other evaluation files or settings evaluates again."""
  results = os.path.join(output_dir, "eval_results.txt")
  # Missing or unreadable (None): evaluate again, which rewrites it.
  recorded = file_io.read_json(os.path.join(output_dir, EVALUATION_RECORD))
  return (tf.io.gfile.exists(results) and
          recorded == json.loads(json.dumps(record)))


def forget_evaluation(output_dir):
  """Removes the record of the evaluation in output_dir before another is
  written, so that no crash can leave a record beside results it does not
  describe."""
  path = os.path.join(output_dir, EVALUATION_RECORD)
  if tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def write_evaluation_record(output_dir, record):
  """Writes the record of the evaluation just written to eval_results.txt
  (after it, and after forget_evaluation removed the former record)."""
  path = os.path.join(output_dir, EVALUATION_RECORD)
  try:
    file_io.write_json(path, record)
  except (tf.errors.OpError, OSError) as e:
    raise cli.StageError(f"{path}: cannot write ({cli.error_line(e)})") from None


def read_student_config(path, max_seq_length):
  """The student's BertConfig, checked against --max_seq_length."""
  try:
    return model_config.read_config(path, max_seq_length, "student")
  except ValueError as e:
    raise cli.StageError(f"--bert_config_file {e}") from None


def parse_layer_map(layer_map, config):
  """--init_layer_map as ints, one per student layer."""
  if not layer_map:
    return None
  layers = [int(layer) for layer in layer_map]
  if len(layers) != config.num_hidden_layers:
    raise cli.StageError(
        f"--init_layer_map names {len(layers)} layers but the student has "
        f"num_hidden_layers {config.num_hidden_layers}")
  return layers


def use_xla(setting):
  """--use_xla as a bool: auto is on for GPUs and TPUs, off on CPUs (where
  bench/bench_distill.py measured XLA slower)."""
  if setting == "auto":
    return bool(tf.config.list_logical_devices("GPU") or
                tf.config.list_logical_devices("TPU"))
  return setting == "true"


def build_student(strategy, config, precision, seed, schedule,
                  extra_variables=None):
  """The student model, its optimizer and (float16) loss scale, built under
  the strategy's scope. extra_variables ({name: variable}, e.g. the online
  projections) are trained by the same optimizer."""
  with strategy.scope():
    model = modeling.BertPretrainingModel(
        config, compute_dtype=modeling.COMPUTE_DTYPES[precision], seed=seed)
    optimizer = optimization.AdamWeightDecay(learning_rate=schedule)
    optimizer.build({**model.variables_by_name(), **(extra_variables or {})})
    loss_scale = optimization.loss_scale_for(precision)
  return model, optimizer, loss_scale


def student_config_of(init_config, layer_map):
  """The student of an --init_checkpoint without --bert_config_file: its
  config, with as many layers as the layer map names."""
  if not layer_map:
    return init_config
  return dataclasses.replace(init_config, num_hidden_layers=len(layer_map))


def write_initial_student(config, init_checkpoint, layer_map, output_dir,
                          seed):
  """Writes the student as --init_checkpoint (through layer_map) makes it,
  untrained (--num_train_steps 0): output_dir/model.ckpt-0 with its
  bert_config.json (and the checkpoint's vocab.txt, when it has one).

  The checkpoint holds the model's variables without the heads the
  checkpoint lacked (cls/ left at initial values would be noise); it is a
  starting point (--init_checkpoint of run_classifier.py or distill.py),
  not a run to resume. Returns its prefix.

  Raises:
    cli.StageError: as restore_or_initialize, or output_dir already holds a
      checkpoint, or a write fails.
  """
  if checkpoints.latest_checkpoint(output_dir):
    raise cli.StageError(f"--output_dir {output_dir} already holds a "
                         f"checkpoint; --num_train_steps 0 writes a new "
                         f"student into an empty one")
  model = modeling.BertPretrainingModel(config, seed=seed)
  report = {"initialized": []}
  if init_checkpoint:
    try:
      report = checkpoints.load_checkpoint(
          model, init_checkpoint, layer_map=layer_map,
          optional=("cls/", "bert/pooler/"))
    except ValueError as e:
      raise cli.StageError(f"--init_checkpoint {e}") from None
  left_out = [name for name in report["initialized"]
              if name.startswith("cls/")]
  variables = {name: variable
               for name, variable in model.variables_by_name().items()
               if name not in left_out}
  training.prepare_output_dir(output_dir)
  try:
    prefix = checkpoints.save_checkpoint(variables, output_dir, 0)
  except ValueError as e:
    raise cli.StageError(str(e)) from None
  model_config.write_config(os.path.join(output_dir, "bert_config.json"), config)
  vocab = (checkpoints.file_beside(init_checkpoint, "vocab")
           if init_checkpoint else None)
  if vocab:
    tf.io.gfile.copy(vocab, os.path.join(output_dir, "vocab.txt"),
                     overwrite=True)
  logging.info("Wrote the untrained student %s (%d layers, layer map %s) "
               "with %d variables%s", prefix, config.num_hidden_layers,
               layer_map, len(variables),
               f"; left out {len(left_out)} head variables the checkpoint "
               f"lacks" if left_out else "")
  return prefix
