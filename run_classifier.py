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

  python run_classifier.py --task_name=sst-2 --data_dir=glue/SST-2 \\
    --vocab_file=$BERT/vocab.txt --bert_config_file=$BERT/bert_config.json \\
    --init_checkpoint=$BERT/bert_model.ckpt --do_train --do_eval \\
    --output_dir=sst2_output
"""

import os

from absl import flags
from absl import logging

from bert_distill import classifier
from bert_distill import classifier_data
from bert_distill import cli
from bert_distill import distribution
import modeling
import optimization
from bert_distill import provenance
from bert_distill import records
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
                    "The model's bert_config.json: its architecture.")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary the model was trained with; its size "
                    "must be the config's vocab_size.")
flags.DEFINE_bool("do_lower_case", True,
                  "Lower-case and strip accents: True for uncased models.")
flags.DEFINE_string("init_checkpoint", None,
                    "Initial weights in Google's names (e.g. bert_model.ckpt "
                    "or a distilled student's folder), used only when "
                    "output_dir holds no checkpoint yet.")
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

flags.mark_flags_as_required(["task_name", "data_dir", "bert_config_file",
                              "vocab_file", "output_dir"])
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
  tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
  try:
    config = modeling.read_config(config_file, max_seq_length, "model")
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


def read_examples(task, data_dir, splits, max_train_examples):
  """{split: [InputExample]} of each split wanted, all read (and checked)
  before anything is written."""
  try:
    return {split: task.get_examples(
        data_dir, split, max_train_examples if split == "train" else None)
            for split in splits}
  except ValueError as e:
    raise cli.StageError(str(e)) from None


def check_batch_sizes(replicas, **batch_sizes):
  """Each global batch size must split evenly across the replicas."""
  for flag, size in batch_sizes.items():
    if size % replicas:
      raise cli.StageError(f"--{flag} {size} does not split evenly across "
                           f"{replicas} replicas")


def distributed_train_dataset(strategy, path, spec, global_batch_size, seed,
                              num_examples, steps_done):
  """classifier_data.train_dataset for every input pipeline, per-replica
  batches; each pipeline skips the examples it fed the steps_done steps."""
  def dataset_fn(context):
    return classifier_data.train_dataset(
        path, spec, context.get_per_replica_batch_size(global_batch_size),
        seed, num_examples, num_shards=context.num_input_pipelines,
        shard_index=context.input_pipeline_id,
        skip_examples=(steps_done * global_batch_size //
                       context.num_input_pipelines))
  return strategy.distribute_datasets_from_function(dataset_fn)


def predict(strategy, model, task, path, spec, num_examples, batch_size):
  """(logits [num_examples, C] in file order, summed loss) of a feature file."""
  def dataset_fn(context):
    return classifier_data.eval_dataset(
        path, spec, context.get_per_replica_batch_size(batch_size),
        num_examples, batch_size, num_shards=context.num_input_pipelines,
        shard_index=context.input_pipeline_id)
  dataset = strategy.distribute_datasets_from_function(dataset_fn)
  return classifier.predict_logits(strategy, model, dataset, num_examples,
                                   task.is_regression)


def build_model(strategy, config, num_labels, schedule, precision, seed):
  """The classifier, its optimizer and (float16) loss scale, built under the
  strategy's scope."""
  with strategy.scope():
    model = classifier.BertClassifier(
        config, num_labels, modeling.COMPUTE_DTYPES[precision], seed=seed)
    optimizer = optimization.AdamWeightDecay(learning_rate=schedule)
    optimizer.build(model.variables_by_name())
    loss_scale = (optimization.DynamicLossScale()
                  if precision == "mixed_float16" else None)
  return model, optimizer, loss_scale


# What a checkpoint of --output_dir is made from (provenance.py): the
# settings that change the fine-tuned weights (the files: training_record).
RECORDED_SETTINGS = (
    "task_name", "do_lower_case", "max_seq_length", "train_batch_size",
    "learning_rate", "num_train_epochs", "warmup_proportion",
    "max_train_examples", "text_a_column", "text_b_column", "label_column",
    "precision", "seed")


def training_record(task):
  """provenance's record of this run: the training data's source, the
  vocabulary, config and --init_checkpoint, and the settings."""
  return {
      "inputs": {
          "data_dir": provenance.file_identity(
              task.split_file(FLAGS.data_dir, "train")),
          "vocab_file": provenance.file_identity(FLAGS.vocab_file),
          "bert_config_file": provenance.file_identity(FLAGS.bert_config_file),
          "init_checkpoint": (provenance.checkpoint_identity(
              FLAGS.init_checkpoint) if FLAGS.init_checkpoint else None)},
      "settings": {name: FLAGS[name].value for name in RECORDED_SETTINGS}}


def main(_):
  task = load_task(FLAGS.task_name, FLAGS.data_dir, FLAGS.text_a_column,
                   FLAGS.text_b_column, FLAGS.label_column)
  tokenizer, config = read_model_files(
      FLAGS.vocab_file, FLAGS.do_lower_case, FLAGS.bert_config_file,
      FLAGS.max_seq_length, FLAGS.init_checkpoint)
  splits = [split for split, wanted in (("train", FLAGS.do_train),
                                        ("dev", FLAGS.do_eval),
                                        ("test", FLAGS.do_predict)) if wanted]
  examples = read_examples(task, FLAGS.data_dir, splits,
                           FLAGS.max_train_examples)
  strategy = distribution.create_strategy(FLAGS.distribution_strategy,
                                          FLAGS.tpu)
  check_batch_sizes(strategy.num_replicas_in_sync,
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
      FLAGS.vocab_file, FLAGS.data_dir, FLAGS.output_dir,
      FLAGS.max_train_examples if split == "train" else None)
                   for split in splits}
  spec = records.classifier_feature_spec(FLAGS.max_seq_length,
                                         task.is_regression)

  num_train_steps = 1
  if FLAGS.do_train:
    num_train_steps = max(1, int(len(examples["train"]) /
                                 FLAGS.train_batch_size *
                                 FLAGS.num_train_epochs))
    logging.info("%d training examples, batch %d, %g epochs: %d steps",
                 len(examples["train"]), FLAGS.train_batch_size,
                 FLAGS.num_train_epochs, num_train_steps)
  tf.random.set_seed(FLAGS.seed)  # dropout
  schedule = optimization.LinearWarmupLinearDecay(
      FLAGS.learning_rate, num_train_steps,
      int(num_train_steps * FLAGS.warmup_proportion))
  model, optimizer, loss_scale = build_model(
      strategy, config, task.num_labels, schedule, FLAGS.precision, FLAGS.seed)
  step = classifier.restore_or_initialize(model, optimizer, FLAGS.output_dir,
                                          FLAGS.init_checkpoint)
  if chief and FLAGS.do_train:
    provenance.check_training_record(
        FLAGS.output_dir, training_record(task), resumed=step > 0,
        continue_flag="continue_despite_changes",
        continue_anyway=FLAGS.continue_despite_changes)
  if chief and not step:
    config.to_json_file(os.path.join(FLAGS.output_dir, "bert_config.json"))

  if FLAGS.do_train and step >= num_train_steps:
    logging.info("Already trained: %s is at step %d of %d; nothing to train",
                 FLAGS.output_dir, step, num_train_steps)
  elif FLAGS.do_train:
    dataset = distributed_train_dataset(
        strategy, feature_files["train"], spec, FLAGS.train_batch_size,
        FLAGS.seed, len(examples["train"]), step)
    step = classifier.train(
        strategy, model, optimizer, schedule, dataset, step,
        classifier.TrainSettings(
            num_train_steps=num_train_steps,
            iterations_per_loop=FLAGS.iterations_per_loop,
            save_checkpoints_steps=FLAGS.save_checkpoints_steps,
            keep_checkpoint_max=FLAGS.keep_checkpoint_max,
            global_batch_size=FLAGS.train_batch_size,
            output_dir=FLAGS.output_dir, chief=chief,
            is_regression=task.is_regression, loss_scale=loss_scale))

  if FLAGS.do_eval:
    dev = examples["dev"]
    logits, total_loss = predict(strategy, model, task, feature_files["dev"],
                                 spec, len(dev), FLAGS.eval_batch_size)
    results = classifier.evaluation_results(
        task, logits, total_loss, classifier_data.labels_array(dev, task))
    if chief:
      classifier.write_eval_results(results, step, FLAGS.output_dir)

  if FLAGS.do_predict:
    test = examples["test"]
    logits, _ = predict(strategy, model, task, feature_files["test"], spec,
                        len(test), FLAGS.predict_batch_size)
    if chief:
      classifier.write_test_results(task, test, logits, FLAGS.output_dir)


if __name__ == "__main__":
  cli.run(main)
