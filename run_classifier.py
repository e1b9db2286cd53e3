"""Fine-tunes and scores a BERT checkpoint on a sentence (pair) classification
task, as Google's run_classifier.py does, in TF2.

Reads a task's TSV files from --data_dir (GLUE's layouts, or any TSV with
--task_name=tsv), turns them into features cached as TFRecords in
--output_dir, fine-tunes any checkpoint in Google's variable names (Google's
release, this project's teacher or student) with a classification head on
the pooled output (regression for STS-B), and writes checkpoints (Google's
names plus `output_weights` / `output_bias`), eval_results.txt, TensorBoard
summaries and, with --do_predict, test_results.tsv in GLUE's submission
layout. Rerunning the same command after a crash continues from the newest
checkpoint; finished feature files are reused.

With --teacher_checkpoint (a classifier fine-tuned on the task, e.g. this
script's own output folder) it distils the task instead: the student learns
the teacher's predictions (and with --hard_loss_weight the gold labels), also
on unlabeled task text (--unlabeled_file); see docs/downstream.md.

  python run_classifier.py --task_name=sst-2 --data_dir=glue/SST-2 \\
    --vocab_file=$BERT/vocab.txt --bert_config_file=$BERT/bert_config.json \\
    --init_checkpoint=$BERT/bert_model.ckpt --do_train --do_eval \\
    --output_dir=sst2_output
"""

import dataclasses
import os
import time

from absl import flags
from absl import logging

from bert_distill import checkpoints
from bert_distill import classifier
from bert_distill import classifier_data
from bert_distill import cli
from bert_distill import distill_training
from bert_distill import distribution
from bert_distill import file_io
from bert_distill import model_config
import modeling
import optimization
from bert_distill import provenance
from bert_distill import records
from bert_distill import task_distillation
import tokenization
from bert_distill import training
# After bert_distill, which sets TensorFlow's C++ log level before it loads.
import tensorflow as tf  # pylint: disable=g-bad-import-order

FLAGS = flags.FLAGS

flags.DEFINE_string("task_name", None,
                    "The task: " + ", ".join(classifier_data.TASK_NAMES) +
                    " (mnli is matched, mnli-mm mismatched; tsv reads "
                    "--text_a_column, --text_b_column, --label_column).")
flags.DEFINE_string("data_dir", None,
                    "The task's folder: train.tsv, dev.tsv (MNLI: "
                    "dev_matched.tsv / dev_mismatched.tsv), test.tsv.")
flags.DEFINE_string("bert_config_file", None,
                    "The model's bert_config.json (or HF config.json): its "
                    "architecture. Default: the config beside "
                    "--init_checkpoint (with as many layers as "
                    "--init_layer_map names).")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary the model was trained with; its size "
                    "must be the config's vocab_size. Default: the vocab.txt "
                    "beside --init_checkpoint.")
flags.DEFINE_bool("do_lower_case", True,
                  "Lower-case and strip accents: True for uncased models.")
flags.DEFINE_string("init_checkpoint", None,
                    "Initial weights in Google's names (e.g. bert_model.ckpt "
                    "or a distilled student's folder) or an HF folder "
                    "(config.json + model.safetensors), used only when "
                    "output_dir holds no checkpoint yet.")
flags.DEFINE_list("init_layer_map", None,
                  "With --init_checkpoint: encoder layer j starts from its "
                  "layer init_layer_map[j], e.g. 0,2,4 (a student made of "
                  "some of a teacher's layers).")
flags.DEFINE_enum("pooling", "cls", ["cls", "mean"],
                  "What the classifier head reads: cls, BERT's pooled "
                  "[CLS] output (Google's); mean, the mean of the last "
                  "hidden states over the real tokens (for models trained "
                  "with mean pooling, such as sentence-transformers'). "
                  "Recorded in output_dir/bert_config.json "
                  "(classifier_pooling) for export_model.py.")
flags.DEFINE_string("output_dir", None,
                    "Where features, checkpoints, summaries and results go; "
                    "rerunning with the same output_dir resumes.")
flags.DEFINE_integer("max_seq_length", 128,
                     "Tokens per example after WordPiece: longer ones are "
                     "truncated, shorter ones padded.")
flags.DEFINE_bool("do_train", False, "Fine-tune on train.tsv.")
flags.DEFINE_bool("do_eval", False, "Score the model on the dev file.")
flags.DEFINE_bool("do_predict", False,
                  "Predict test.tsv into output_dir/test_results.tsv.")
flags.DEFINE_integer("train_batch_size", 32,
                     "Global batch size, split across all replicas.")
flags.DEFINE_integer("eval_batch_size", 8, "Global evaluation batch size.")
flags.DEFINE_integer("predict_batch_size", 8, "Global prediction batch size.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate of "
                   "AdamWeightDecay.")
flags.DEFINE_float("num_train_epochs", 3.0, "Passes over the training set.")
flags.DEFINE_float("warmup_proportion", 0.1,
                   "Fraction of the training steps with linear learning-rate "
                   "warmup (then linear decay to 0).")
flags.DEFINE_integer("save_checkpoints_steps", 1000,
                     "Write a checkpoint every this many steps (and at the "
                     "end).")
flags.DEFINE_integer("keep_checkpoint_max", 5,
                     "How many of the newest checkpoints to keep.")
flags.DEFINE_integer("iterations_per_loop", 100,
                     "Steps inside one tf.function call; progress and "
                     "summaries follow each call.")
flags.DEFINE_bool("group_by_length", False,
                  "Train on batches of examples of similar lengths (each "
                  "chunk of 50 shuffled batches sorted by length, its batches "
                  "in random order, as transformers' group_by_length): with "
                  "each batch cut after its longest example, fewer padded "
                  "positions are computed (about 2x faster on short texts).")
flags.DEFINE_integer("max_train_examples", None,
                     "Read only the first this many examples of train.tsv "
                     "(a quick run on a subset).")
flags.DEFINE_string("text_a_column", None,
                    "--task_name tsv: header name of the first text.")
flags.DEFINE_string("text_b_column", None,
                    "--task_name tsv: header name of the second text, for "
                    "sentence-pair tasks.")
flags.DEFINE_string("label_column", None,
                    "--task_name tsv: header name of the label; the labels "
                    "are the values found in train.tsv.")
flags.DEFINE_enum("distribution_strategy", None,
                  ["one_device", "mirrored", "multi_worker_mirrored", "tpu"],
                  "How to spread training: one_device; mirrored (all GPUs of "
                  "this machine); multi_worker_mirrored (machines named by "
                  "TF_CONFIG); tpu (--tpu). Default: mirrored when GPUs are "
                  "present, else one_device.")
flags.DEFINE_string("tpu", None,
                    "With --distribution_strategy tpu: the TPU name or "
                    "grpc:// address ('local' for a TPU VM).")
flags.DEFINE_enum("precision", "float32",
                  ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Compute dtype of the model; variables, the loss and the "
                  "optimizer stay float32.")
flags.DEFINE_integer("seed", 12345,
                     "Seed of the head's initialisation, dropout and the "
                     "data order; the same seed gives the same run.")

flags.DEFINE_bool("continue_despite_changes", False,
                  "Resume --output_dir's checkpoint although the training "
                  "data or settings differ from those it was trained with "
                  "(its made_from.json); without it such a rerun is refused.")

# Task distillation: the student learns a fine-tuned teacher's predictions.
flags.DEFINE_string("teacher_checkpoint", None,
                    "A teacher fine-tuned on this task (run_classifier.py's "
                    "output folder, or a checkpoint prefix): Google's names "
                    "plus output_weights / output_bias for the task's labels. "
                    "With it training distils the task: the teacher labels "
                    "the training (and --unlabeled_file) examples once, "
                    "cached with the features; its variables are never "
                    "saved with the student.")
flags.DEFINE_string("teacher_config", None,
                    "The teacher's bert_config.json (its vocab_size must be "
                    "the student's; its pooling is the teacher's). Default: "
                    "the one beside --teacher_checkpoint.")
flags.DEFINE_enum("teacher_precision", None,
                  ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Compute dtype of the teacher's labelling pass. Default: "
                  "--precision.")
flags.DEFINE_float("temperature", 1.0,
                   "Distillation temperature T: the soft loss is T^2 times "
                   "the KL of the teacher's and the student's class "
                   "distributions softmax(logits / T) (not used for "
                   "regression).")
flags.DEFINE_float("soft_loss_weight", 1.0,
                   "Weight of the loss against the teacher's predictions "
                   "(regression: the squared error to its score).")
flags.DEFINE_float("hard_loss_weight", 0.0,
                   "Weight of the gold-label loss (cross-entropy; squared "
                   "error for regression), which only the labeled examples "
                   "have.")
flags.DEFINE_string("unlabeled_file", None,
                    "Unlabeled task text for task distillation: a TSV whose "
                    "header holds the task's text columns (sentence, or the "
                    "pair's two; others are ignored). The teacher labels it "
                    "and the student learns it with the soft loss alone; an "
                    "epoch covers the labeled and the unlabeled examples, "
                    "shuffled together.")

flags.mark_flags_as_required(["task_name", "data_dir", "output_dir"])
flags.register_validator(
    "init_layer_map",
    lambda v: v is None or all(s.strip().isdigit() for s in v),
    "--init_layer_map must be a comma list of layer numbers, e.g. 0,2,4")
flags.register_multi_flags_validator(
    ["init_layer_map", "init_checkpoint"],
    lambda f: not f["init_layer_map"] or f["init_checkpoint"],
    "--init_layer_map needs --init_checkpoint")
for _name in ("max_seq_length", "train_batch_size", "eval_batch_size",
              "predict_batch_size", "save_checkpoints_steps",
              "keep_checkpoint_max", "iterations_per_loop"):
  flags.register_validator(_name, lambda v: v > 0, f"--{_name} must be > 0")
flags.register_validator("max_seq_length", lambda v: v >= 3,
                         "--max_seq_length must be >= 3 ([CLS] a [SEP])")
flags.register_validator("max_train_examples", lambda v: v is None or v > 0,
                         "--max_train_examples must be > 0")
flags.register_validator("learning_rate", lambda v: v > 0,
                         "--learning_rate must be > 0")
flags.register_validator("num_train_epochs", lambda v: v > 0,
                         "--num_train_epochs must be > 0")
flags.register_validator("warmup_proportion", lambda v: 0 <= v <= 1,
                         "--warmup_proportion must be in [0, 1]")
flags.register_multi_flags_validator(
    ["do_train", "do_eval", "do_predict"], lambda f: any(f.values()),
    "give at least one of --do_train, --do_eval, --do_predict")
flags.register_validator("temperature", lambda v: v > 0,
                         "--temperature must be > 0")
for _name in ("soft_loss_weight", "hard_loss_weight"):
  flags.register_validator(_name, lambda v: v >= 0, f"--{_name} must be >= 0")
flags.register_multi_flags_validator(
    ["teacher_config", "teacher_checkpoint"],
    lambda f: not f["teacher_config"] or f["teacher_checkpoint"],
    "--teacher_config is the config of --teacher_checkpoint: give both")
flags.register_multi_flags_validator(
    ["teacher_checkpoint", "do_train"],
    lambda f: not f["teacher_checkpoint"] or f["do_train"],
    "--teacher_checkpoint distils the task in training: give --do_train")
flags.register_multi_flags_validator(
    ["teacher_checkpoint", "soft_loss_weight", "hard_loss_weight"],
    lambda f: not f["teacher_checkpoint"] or (f["soft_loss_weight"] +
                                              f["hard_loss_weight"] > 0),
    "--soft_loss_weight and --hard_loss_weight are both 0: nothing to learn")
# Task distillation's settings without a teacher would be ignored silently.
_DISTILLATION_FLAGS = ("teacher_precision", "temperature", "soft_loss_weight",
                       "hard_loss_weight", "unlabeled_file")
flags.register_multi_flags_validator(
    ["teacher_checkpoint", *_DISTILLATION_FLAGS],
    lambda f: bool(f["teacher_checkpoint"]) or not any(
        FLAGS[name].present for name in _DISTILLATION_FLAGS),
    f"--{', --'.join(_DISTILLATION_FLAGS)} are task distillation's: give "
    f"--teacher_checkpoint")
flags.register_multi_flags_validator(
    ["distribution_strategy", "tpu"],
    lambda f: (f["distribution_strategy"] == "tpu") == bool(f["tpu"]),
    "--tpu and --distribution_strategy tpu go together")


def load_task(task_name, data_dir, text_a_column, text_b_column,
              label_column):
  """The task of --task_name (tsv: with its columns and training labels)."""
  try:
    return classifier_data.get_task(task_name, data_dir, text_a_column,
                                    text_b_column, label_column)
  except ValueError as e:
    raise cli.StageError(str(e)) from None


def read_model_files(vocab_file, do_lower_case, config_file, max_seq_length,
                     init_checkpoint):
  """(tokenizer, BertConfig), checked against each other and the checkpoint:
  one vocabulary size for the vocab file, the config and the checkpoint's
  word embeddings."""
  if not tf.io.gfile.exists(vocab_file):
    raise cli.StageError(f"--vocab_file {vocab_file}: no such file")
  try:
    tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
  except ValueError as e:  # not UTF-8: names the file and the line
    raise cli.StageError(f"--vocab_file {e}") from None
  try:
    config = model_config.read_config(config_file, max_seq_length, "model")
  except ValueError as e:
    raise cli.StageError(f"--bert_config_file {e}") from None
  if config.vocab_size != len(tokenizer.vocab):
    raise cli.StageError(
        f"--bert_config_file {config_file} has vocab_size {config.vocab_size} "
        f"but --vocab_file {vocab_file} holds {len(tokenizer.vocab)} tokens; "
        f"give the vocabulary the model was trained with")
  if init_checkpoint:
    try:
      rows = classifier.checkpoint_vocab_size(init_checkpoint)
    except ValueError as e:
      raise cli.StageError(f"--init_checkpoint {e}") from None
    if rows is not None and rows != len(tokenizer.vocab):
      raise cli.StageError(
          f"--init_checkpoint {init_checkpoint} has word embeddings for "
          f"{rows} tokens but --vocab_file {vocab_file} holds "
          f"{len(tokenizer.vocab)}; give the checkpoint's own vocabulary")
  return tokenizer, config


def model_files(bert_config_file, vocab_file, init_checkpoint,
                init_layer_map):
  """(config file, vocab file, layer map as ints, layers): the flags, or
  the files beside --init_checkpoint; layers is len(layer map) when the
  config comes from the checkpoint (None: the config's own)."""
  config_file = checkpoints.companion_file(
      bert_config_file, init_checkpoint, "config", "--bert_config_file",
      "--init_checkpoint")
  vocab_file = checkpoints.companion_file(
      vocab_file, init_checkpoint, "vocab", "--vocab_file",
      "--init_checkpoint")
  layer_map = [int(layer) for layer in init_layer_map or []] or None
  layers = len(layer_map) if layer_map and not bert_config_file else None
  return config_file, vocab_file, layer_map, layers


def with_layers(config, layers, layer_map, pooling):
  """The config with `layers` encoder layers (None: as it is) and the
  pooling recorded; the layer map checked against it."""
  if layers:
    config = dataclasses.replace(config, num_hidden_layers=layers)
  if layer_map and len(layer_map) != config.num_hidden_layers:
    raise cli.StageError(
        f"--init_layer_map names {len(layer_map)} layers but the model has "
        f"num_hidden_layers {config.num_hidden_layers}")
  extra = {k: v for k, v in config.extra.items()
           if k != classifier.POOLING_KEY}
  if pooling != "cls":
    extra[classifier.POOLING_KEY] = pooling
  return dataclasses.replace(config, extra=extra)


def read_examples(task, data_dir, splits, max_train_examples):
  """{split: [InputExample]} of each split wanted, all read (and checked)
  before anything is written."""
  try:
    return {split: task.get_examples(
        data_dir, split, max_train_examples if split == "train" else None)
            for split in splits}
  except ValueError as e:
    raise cli.StageError(str(e)) from None


def read_unlabeled_examples(task, path):
  """The examples of --unlabeled_file (one-line errors)."""
  try:
    return classifier_data.read_unlabeled_examples(task, path)
  except ValueError as e:
    raise cli.StageError(f"--unlabeled_file {e}") from None


def teacher_labelled_features(strategy, task, teacher, feature_files, examples,
                              output_dir, tokenizer, max_seq_length,
                              batch_size):
  """(path, example count) of the training records with the teacher's
  logits, labelled now unless an earlier run labelled the same features
  with the same teacher (task_distillation.read_recipe).

  Args:
    teacher: a task_distillation.Teacher.
    feature_files, examples: {"labeled", "unlabeled"} -> the feature file
      (None without unlabeled text) and the [InputExample] of each.
  """
  path = os.path.join(output_dir, task_distillation.TRAIN_FILE)
  recipe = {
      "features": {kind: feature_files[kind] and
                   task_distillation.read_recipe(feature_files[kind])
                   for kind in ("labeled", "unlabeled")},
      "teacher": task_distillation.weights_digest(teacher.checkpoint),
      "teacher_config": teacher.config.to_dict(),
      "teacher_precision": teacher.precision,
  }
  count = sum(len(e) for e in examples.values())
  if task_distillation.read_recipe(path) == recipe:
    logging.info("Reusing %s: the teacher's logits of %d examples", path,
                 count)
    return path, count
  model = task_distillation.build_teacher(
      strategy, teacher.config, task, teacher.checkpoint,
      teacher.precision)
  spec = records.classifier_feature_spec(max_seq_length, task.is_regression)
  started = time.monotonic()
  logits = {kind: predict(strategy, model, task, feature_files[kind], spec,
                          len(examples[kind]), batch_size)[0]
            if examples[kind] else None for kind in ("labeled", "unlabeled")}
  seconds = time.monotonic() - started
  logging.info("The teacher labelled %d examples in %.1f s (%.1f examples/s, "
               "once for all epochs)", count, seconds, count / seconds)
  task_distillation.log_teacher_quality(
      task, logits["labeled"],
      classifier_data.labels_array(examples["labeled"], task))
  task_distillation.write_teacher_features(
      path, recipe, task, max_seq_length, tokenizer, examples["labeled"],
      examples["unlabeled"], logits["labeled"], logits["unlabeled"])
  return path, count


def distributed_train_dataset(strategy, path, spec, global_batch_size, seed,
                              num_examples, steps_done, group_by_length):
  """classifier_data.train_dataset for every input pipeline, per-replica
  batches; each pipeline skips the examples it fed the steps_done steps."""
  return distribution.distributed_dataset(
      strategy, lambda batch_size, num_shards, shard_index, skip: (
          classifier_data.train_dataset(
              path, spec, batch_size, seed, num_examples, num_shards,
              shard_index, skip, group_by_length,
              trim=trims_padding(strategy))), global_batch_size, steps_done)


def trims_padding(strategy):
  """Whether batches are cut to their longest example: everywhere but on
  TPUs, which compile a program per shape."""
  return not isinstance(strategy, tf.distribute.TPUStrategy)


def predict(strategy, model, task, path, spec, num_examples, batch_size):
  """(logits [num_examples, C] in file order, summed loss) of a feature file."""
  dataset = distribution.distributed_dataset(
      strategy, lambda per_replica, num_shards, shard_index, _: (
          classifier_data.eval_dataset(
              path, spec, per_replica, num_examples, batch_size, num_shards,
              shard_index, trim=trims_padding(strategy))), batch_size)
  return classifier.predict_logits(strategy, model, dataset, num_examples,
                                   task.is_regression)


def build_model(strategy, config, num_labels, schedule, precision, seed):
  """The classifier, its optimizer and (float16) loss scale, built under the
  strategy's scope; its pooling is the one the config records."""
  with strategy.scope():
    model = classifier.BertClassifier(
        config, num_labels, modeling.COMPUTE_DTYPES[precision], seed=seed,
        pooling=classifier.pooling_of(config))
    optimizer = optimization.AdamWeightDecay(learning_rate=schedule)
    optimizer.build(model.variables_by_name())
    loss_scale = optimization.loss_scale_for(precision)
  return model, optimizer, loss_scale


# What a checkpoint of --output_dir is made from (provenance.py): the
# settings that change the fine-tuned weights (the files: training_record).
RECORDED_SETTINGS = (
    "task_name", "do_lower_case", "max_seq_length", "train_batch_size",
    "learning_rate", "num_train_epochs", "warmup_proportion",
    "max_train_examples", "text_a_column", "text_b_column", "label_column",
    "precision", "seed", "teacher_precision", "temperature",
    "soft_loss_weight", "hard_loss_weight", "group_by_length")


def training_record(task, config_file, vocab_file, teacher):
  """provenance's record of this run: the training data's source, the
  vocabulary and config files read (the flags' or those beside
  --init_checkpoint), --init_checkpoint, and the settings."""
  return {
      "inputs": {
          "data_dir": file_io.file_identity(
              task.split_file(FLAGS.data_dir, "train")),
          "vocab_file": file_io.file_identity(vocab_file),
          "bert_config_file": file_io.file_identity(config_file),
          "init_checkpoint": (provenance.checkpoint_identity(
              FLAGS.init_checkpoint) if FLAGS.init_checkpoint else None),
          "teacher_config": (file_io.file_identity(teacher.config_file)
                             if teacher else None),
          "teacher_checkpoint": (provenance.checkpoint_identity(
              FLAGS.teacher_checkpoint) if FLAGS.teacher_checkpoint
                                 else None),
          "unlabeled_file": (file_io.file_identity(FLAGS.unlabeled_file)
                             if FLAGS.unlabeled_file else None)},
      "settings": {name: FLAGS[name].value for name in RECORDED_SETTINGS}}


def main(_):
  training.require_a_model(
      FLAGS.output_dir, FLAGS.init_checkpoint, FLAGS.do_train,
      " and ".join(f"--{name}" for name in ("do_eval", "do_predict")
                   if FLAGS[name].value))
  task = load_task(FLAGS.task_name, FLAGS.data_dir, FLAGS.text_a_column,
                   FLAGS.text_b_column, FLAGS.label_column)
  config_file, vocab_file, layer_map, layers = model_files(
      FLAGS.bert_config_file, FLAGS.vocab_file, FLAGS.init_checkpoint,
      FLAGS.init_layer_map)
  tokenizer, config = read_model_files(
      vocab_file, FLAGS.do_lower_case, config_file, FLAGS.max_seq_length,
      FLAGS.init_checkpoint)
  config = with_layers(config, layers, layer_map, FLAGS.pooling)
  splits = [split for split, wanted in (("train", FLAGS.do_train),
                                        ("dev", FLAGS.do_eval),
                                        ("test", FLAGS.do_predict)) if wanted]
  examples = read_examples(task, FLAGS.data_dir, splits,
                           FLAGS.max_train_examples)
  teacher = None
  if FLAGS.teacher_checkpoint:
    teacher_config_file = checkpoints.companion_file(
        FLAGS.teacher_config, FLAGS.teacher_checkpoint, "config",
        "--teacher_config", "--teacher_checkpoint")
    teacher = task_distillation.Teacher(
        distill_training.read_matching_teacher_config(
            teacher_config_file, FLAGS.max_seq_length, config),
        teacher_config_file, FLAGS.teacher_checkpoint, FLAGS.teacher_precision or FLAGS.precision)
    task_distillation.check_teacher_labels(FLAGS.teacher_checkpoint, task)
    examples["unlabeled"] = (
        read_unlabeled_examples(task, FLAGS.unlabeled_file)
        if FLAGS.unlabeled_file else [])
  strategy = distribution.create_strategy(FLAGS.distribution_strategy,
                                          FLAGS.tpu)
  distribution.check_batch_sizes(strategy.num_replicas_in_sync,
                                 train_batch_size=FLAGS.train_batch_size,
                                 eval_batch_size=FLAGS.eval_batch_size,
                                 predict_batch_size=FLAGS.predict_batch_size)
  chief = distribution.is_chief(strategy)
  logging.info("Task %s (%s), %s with %d replica(s), precision %s",
               task.name, ", ".join(task.labels) or "regression",
               type(strategy).__name__, strategy.num_replicas_in_sync,
               FLAGS.precision)
  if chief and FLAGS.do_train:
    provenance.lock_output_dir(FLAGS.output_dir)
    training.prepare_output_dir(FLAGS.output_dir)
  feature_files = {split: classifier_data.feature_cache(
      examples[split], task, split, FLAGS.max_seq_length, tokenizer,
      vocab_file, FLAGS.data_dir, FLAGS.output_dir,
      FLAGS.max_train_examples if split == "train" else None)
                   for split in splits}
  spec = records.classifier_feature_spec(FLAGS.max_seq_length,
                                         task.is_regression)
  train_file, train_spec = feature_files.get("train"), spec
  num_train = len(examples.get("train", ()))
  distillation_loss = None
  if teacher:
    unlabeled_features = None
    if examples["unlabeled"]:
      unlabeled_features = classifier_data.feature_cache(
          examples["unlabeled"], task, "unlabeled", FLAGS.max_seq_length,
          tokenizer, vocab_file, FLAGS.data_dir, FLAGS.output_dir,
          data_file=FLAGS.unlabeled_file)
    train_file, num_train = teacher_labelled_features(
        strategy, task, teacher,
        {"labeled": train_file, "unlabeled": unlabeled_features},
        {"labeled": examples["train"], "unlabeled": examples["unlabeled"]},
        FLAGS.output_dir, tokenizer, FLAGS.max_seq_length,
        FLAGS.eval_batch_size)
    train_spec = records.task_distillation_feature_spec(
        FLAGS.max_seq_length, task.num_labels, task.is_regression)
    distillation_loss = task_distillation.DistillationLoss(
        FLAGS.temperature, FLAGS.soft_loss_weight, FLAGS.hard_loss_weight,
        task.is_regression)
    logging.info("Task distillation from %s: %d labeled + %d unlabeled "
                 "examples, soft loss weight %g (T = %g), hard %g",
                 FLAGS.teacher_checkpoint, len(examples["train"]),
                 len(examples["unlabeled"]), FLAGS.soft_loss_weight,
                 FLAGS.temperature, FLAGS.hard_loss_weight)

  num_train_steps = 1
  if FLAGS.do_train:
    num_train_steps = max(1, int(num_train / FLAGS.train_batch_size *
                                 FLAGS.num_train_epochs))
    logging.info("%d training examples, batch %d, %g epochs: %d steps",
                 num_train, FLAGS.train_batch_size, FLAGS.num_train_epochs,
                 num_train_steps)
  tf.random.set_seed(FLAGS.seed)  # dropout
  schedule = optimization.LinearWarmupLinearDecay(
      FLAGS.learning_rate, num_train_steps,
      int(num_train_steps * FLAGS.warmup_proportion))
  model, optimizer, loss_scale = build_model(
      strategy, config, task.num_labels, schedule, FLAGS.precision, FLAGS.seed)
  step = training.restore_or_initialize(
      model, optimizer, FLAGS.output_dir, FLAGS.init_checkpoint,
      lambda path: classifier.initialize_from(model, path, layer_map))
  if chief and FLAGS.do_train:
    provenance.check_training_record(
        FLAGS.output_dir, training_record(task, config_file, vocab_file, teacher),
        resumed=step > 0,
        continue_flag="continue_despite_changes",
        continue_anyway=FLAGS.continue_despite_changes)
  if chief and not step:
    model_config.write_config(
        os.path.join(FLAGS.output_dir, "bert_config.json"), config)

  if FLAGS.do_train and step >= num_train_steps:
    logging.info("Already trained: %s is at step %d of %d; nothing to train",
                 FLAGS.output_dir, step, num_train_steps)
  elif FLAGS.do_train:
    dataset = distributed_train_dataset(
        strategy, train_file, train_spec, FLAGS.train_batch_size,
        FLAGS.seed, num_train, step, FLAGS.group_by_length)
    step = classifier.train(
        strategy, model, optimizer, schedule, dataset, step,
        classifier.TrainSettings(
            num_train_steps=num_train_steps,
            iterations_per_loop=FLAGS.iterations_per_loop,
            save_checkpoints_steps=FLAGS.save_checkpoints_steps,
            keep_checkpoint_max=FLAGS.keep_checkpoint_max,
            global_batch_size=FLAGS.train_batch_size,
            output_dir=FLAGS.output_dir, chief=chief,
            is_regression=task.is_regression, loss_scale=loss_scale,
            distillation_loss=distillation_loss))

  if FLAGS.do_eval:
    dev = examples["dev"]
    logits, total_loss = predict(strategy, model, task, feature_files["dev"],
                                 spec, len(dev), FLAGS.eval_batch_size)
    results = classifier.evaluation_results(
        task, logits, total_loss, classifier_data.labels_array(dev, task))
    if chief:
      training.write_eval_results(results, step, FLAGS.output_dir)

  if FLAGS.do_predict:
    test = examples["test"]
    logits, _ = predict(strategy, model, task, feature_files["test"], spec,
                        len(test), FLAGS.predict_batch_size)
    if chief:
      classifier.write_test_results(task, test, logits, FLAGS.output_dir)


if __name__ == "__main__":
  cli.run(main, stop_at_safe_points=True)
