"""Stages V-VII: train a student BERT on a teacher's masked-LM outputs.

Reads teacher-label records (stage IV; or plain pretraining records with
--soft_loss_weight 0), trains the student described by its own
bert_config.json on one device, all GPUs of a machine, several machines
(tf.distribute with TF_CONFIG) or a TPU, and writes checkpoints in Google's
variable names (with global_step and the adam_m/adam_v slots), TensorBoard
summaries and output_dir/eval_results.txt. Rerunning the same command after a
crash continues from the newest complete checkpoint.

Online distillation (--teacher_config, --teacher_checkpoint): the teacher
runs frozen inside the training step on the same batch; its full masked-LM
distribution replaces stored labels, and DistilBERT's, TinyBERT's and
MiniLM's intermediate-layer losses can be added (--preset;
docs/online_distillation.md).

The loss terms and the evaluation metrics are defined in losses.py.

Shapes: B = batch size (per replica), L = max_seq_length,
P = max_predictions_per_seq, k = truncation_factor, V = vocab_size.
"""

import dataclasses
import os

from absl import flags
from absl import logging

from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import distill_input
from bert_distill import distill_training
from bert_distill import distribution
from bert_distill import file_io
from bert_distill import label_settings
from bert_distill import losses
from bert_distill import model_config
import optimization
from bert_distill import provenance
from bert_distill import records
from bert_distill import training
# After bert_distill, which sets TensorFlow's C++ log level before it loads.
import tensorflow as tf  # pylint: disable=g-bad-import-order

FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None,
                    "The student's bert_config.json (or HF config.json): its "
                    "architecture. Default: --init_checkpoint's config (the "
                    "file beside it), with as many layers as "
                    "--init_layer_map names.")
flags.DEFINE_string("input_file", None,
                    "Teacher-label records (stage IV), a comma list of globs. "
                    "Plain pretraining records need --soft_loss_weight 0.")
flags.DEFINE_string("output_dir", None,
                    "Where checkpoints, summaries and eval_results.txt go; "
                    "rerunning with the same output_dir resumes.")
flags.DEFINE_string("eval_input_file", None,
                    "Held-out records for --do_eval. When absent, evaluation "
                    "reads --input_file, as the original did.")
flags.DEFINE_string("init_checkpoint", None,
                    "Initial weights (e.g. the teacher's checkpoint; Google's "
                    "names or an HF folder with model.safetensors), used "
                    "only when output_dir holds no checkpoint yet. Heads and "
                    "pooler it lacks start at their initial values.")
flags.DEFINE_enum("trainable", "all", ["all", "heads"],
                  "What training updates. all: the whole model. heads: only "
                  "the cls/ heads (masked LM, next sentence), the encoder "
                  "and the embeddings frozen, bit for bit: stage T, fitting "
                  "an MLM head onto an encoder-only teacher given as "
                  "--init_checkpoint (e.g. a sentence-transformers model), so "
                  "that stage IV can label with it (docs/stages.md).")
flags.DEFINE_list("init_layer_map", None,
                  "With --init_checkpoint: student layer j starts from "
                  "checkpoint layer init_layer_map[j], e.g. 0,2,4,7,9,11.")
flags.DEFINE_integer("truncation_factor", None,
                     "k, the teacher probabilities (or sample slots) per "
                     "masked position. Read from the records; when given it "
                     "must match them. 0 means masked_lm_probs (the whole "
                     "distribution).")
flags.DEFINE_enum("label_mode", None, list(label_settings.LABEL_MODES),
                  "The teacher labels' mode. Read from the records (stage "
                  "IV's --label_mode); when given it must match them.")
flags.DEFINE_bool("tail_mass_loss", False,
                  "top_k labels: add the teacher's mass outside its top k "
                  "as one more 'all other tokens' class on both sides.")
flags.DEFINE_bool("require_full_eval_labels", False,
                  "Require evaluation records holding the teacher's whole "
                  "distribution (stage IV --label_mode full), so that "
                  "teacher_kl & co. are reported (they are whenever the "
                  "records hold it anyway).")
flags.DEFINE_alias("teacher_kl", "require_full_eval_labels")  # deprecated
flags.DEFINE_bool("do_train", False, "Train the student.")
flags.DEFINE_bool("do_eval", False, "Evaluate the newest checkpoint.")
flags.DEFINE_integer("max_seq_length", 128,
                     "L, the records' sequence length. Must match data "
                     "generation.")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "P, masked positions per sequence. Must match data "
                     "generation.")
flags.DEFINE_integer("train_batch_size", 32,
                     "Global batch size, split across all replicas.")
flags.DEFINE_integer("eval_batch_size", 8, "Global evaluation batch size.")
flags.DEFINE_float("learning_rate", 5e-5,
                   "Peak learning rate of AdamWeightDecay (never rescaled "
                   "for the number of replicas).")
flags.DEFINE_integer("num_train_steps", 100000,
                     "Training steps in total. 0: write the student as "
                     "--init_checkpoint and --init_layer_map make it "
                     "(output_dir/model.ckpt-0 and bert_config.json), "
                     "untrained; no --input_file needed.")
flags.DEFINE_integer("num_warmup_steps", 10000,
                     "Steps of linear learning-rate warmup.")
flags.DEFINE_integer("save_checkpoints_steps", 1000,
                     "Write a checkpoint every this many steps (and at the "
                     "end).")
flags.DEFINE_integer("keep_checkpoint_max", 5,
                     "How many of the newest checkpoints to keep.")
flags.DEFINE_integer("iterations_per_loop", 100,
                     "Steps run inside one tf.function call; a log line and "
                     "the summaries follow each call (the original's TPU "
                     "default was 1000; on a CPU take ~10).")
flags.DEFINE_integer("max_eval_steps", 100, "Maximum evaluation batches.")
flags.DEFINE_float("temperature", 1.0,
                   "Distillation temperature T: teacher probabilities become "
                   "p^(1/T) renormalised, the student's log-softmax uses "
                   "logits/T, and the soft loss is scaled by T^2.")
flags.DEFINE_float("soft_loss_weight", 1.0,
                   "Weight of the distillation cross-entropy against the "
                   "teacher's probabilities. 0 = plain BERT pretraining.")
flags.DEFINE_float("hard_mlm_loss_weight", 0.0,
                   "Weight of the masked-LM cross-entropy on the true "
                   "masked_lm_ids.")
flags.DEFINE_float("next_sentence_loss_weight", 1.0,
                   "Weight of the next-sentence cross-entropy (BERT's and "
                   "the original's 1; the presets' papers train without "
                   "it: 0).")
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
                  "Compute dtype of the student; variables, the loss and the "
                  "optimizer stay float32.")
flags.DEFINE_enum("use_xla", "auto", ["auto", "true", "false"],
                  "XLA-compile the forward and backward pass. auto: on with "
                  "GPUs or a TPU, off on CPUs (where it measured slower).")
flags.DEFINE_bool("skip_corrupt_records", False,
                  "Read every training and evaluation file once before "
                  "training and leave out the records that cannot be read "
                  "or used (corrupt or truncated bytes: the rest of that "
                  "file; ids, segment ids or masked positions out of "
                  "range), logging each file and the count. Without it such "
                  "a record stops the run with an error naming the file and "
                  "the record. The first record of every file is always "
                  "checked strictly (it checks the flags).")
flags.DEFINE_integer("seed", 12345,
                     "Seed of the student's initialisation and the data "
                     "order; the same seed gives the same run.")

# Online distillation: the teacher in the loop (docs/online_distillation.md).
flags.DEFINE_string("teacher_config", None,
                    "The teacher's bert_config.json (or HF config.json). "
                    "Default: the config beside --teacher_checkpoint.")
flags.DEFINE_string("teacher_checkpoint", None,
                    "The teacher's weights: Google's names (a prefix or a "
                    "directory) or an HF folder (model.safetensors). The "
                    "teacher runs frozen inside the training step and its "
                    "full masked-LM distribution replaces stored labels (the "
                    "records may be plain pretraining records); with "
                    "--soft_loss_weight 0 it needs no masked-LM head (an "
                    "encoder-only model). Never written into the student's "
                    "checkpoints.")
flags.DEFINE_enum("teacher_precision", None,
                  ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Compute dtype of the teacher. Default: --precision.")
flags.DEFINE_enum("preset", None, ["distilbert", "tinybert_general", "minilm"],
                  "Loss weights, temperature and losses of a published "
                  "method (table in docs/online_distillation.md); flags "
                  "given explicitly override it. Needs the teacher.")
flags.DEFINE_float("hidden_loss_weight", 0.0,
                   "Weight of the hidden-state loss (needs the teacher).")
flags.DEFINE_enum("hidden_loss", "mse", ["cosine", "mse"],
                  "cosine: DistilBERT's 1 - cos on the last hidden states of "
                  "real tokens; mse: TinyBERT's MSE summed over the layers "
                  "of --hidden_layer_map. Through a learned projection when "
                  "the widths differ.")
flags.DEFINE_list("hidden_layer_map", None,
                  "For hidden mse and attention mse: the teacher layer each "
                  "student layer 1..M learns from, counting the embedding "
                  "output as layer 0 and the output of encoder layer_i as "
                  "i + 1. Default uniform, TinyBERT's j*N/M: a 6-layer "
                  "student of a 12-layer teacher learns from 2,4,6,8,10,12.")
flags.DEFINE_float("attention_loss_weight", 0.0,
                   "Weight of the attention loss (needs the teacher).")
flags.DEFINE_enum("attention_loss", "kl", ["mse", "kl"],
                  "mse: TinyBERT's MSE of the pre-softmax scores of mapped "
                  "layers over real tokens (equal head counts); kl: MiniLM's "
                  "KL of the last layer's attention distributions plus the "
                  "value-relation KL, over --relation_heads relation heads "
                  "(any head counts and widths).")
flags.DEFINE_integer("relation_heads", 0,
                     "With --attention_loss kl: relation heads R, dividing "
                     "both hidden sizes (MiniLMv2 used 48 for base "
                     "teachers). 0: the teacher's num_attention_heads "
                     "(MiniLM's per-head attention KL).")
flags.DEFINE_float("embedding_loss_weight", 0.0,
                   "Weight of TinyBERT's MSE on the embedding output "
                   "(layer 0), through a learned projection when the widths "
                   "differ (needs the teacher).")

flags.DEFINE_bool("continue_despite_changes", False,
                  "Resume --output_dir's checkpoint although the inputs or "
                  "settings differ from those it was trained with (its "
                  "made_from.json); without it such a rerun is refused.")

flags.mark_flags_as_required(["output_dir"])
flags.register_multi_flags_validator(
    ["input_file", "num_train_steps"],
    lambda f: f["input_file"] or f["num_train_steps"] == 0,
    "give --input_file (only --num_train_steps 0 needs none)")
flags.register_validator("num_train_steps", lambda v: v >= 0,
                         "--num_train_steps must be >= 0")
for _name in ("max_seq_length", "max_predictions_per_seq", "train_batch_size",
              "eval_batch_size", "save_checkpoints_steps",
              "keep_checkpoint_max", "iterations_per_loop", "max_eval_steps"):
  flags.register_validator(_name, lambda v: v > 0, f"--{_name} must be > 0")
flags.register_validator("num_warmup_steps", lambda v: v >= 0,
                         "--num_warmup_steps must be >= 0")
flags.register_multi_flags_validator(
    ["max_predictions_per_seq", "max_seq_length"],
    lambda f: f["max_predictions_per_seq"] <= f["max_seq_length"],
    "--max_predictions_per_seq (P) must not exceed --max_seq_length (L): a "
    "sequence of L tokens has at most L masked positions")
flags.register_multi_flags_validator(
    ["num_warmup_steps", "num_train_steps"],
    lambda f: (f["num_warmup_steps"] <= f["num_train_steps"] or
               f["num_train_steps"] == 0),
    "--num_warmup_steps must not exceed --num_train_steps")
flags.register_validator("truncation_factor", lambda v: v is None or v >= 0,
                         "--truncation_factor must be >= 0 (0 = full "
                         "distribution)")
flags.register_validator("learning_rate", lambda v: v > 0,
                         "--learning_rate must be > 0")
flags.register_validator("temperature", lambda v: v > 0,
                         "--temperature must be > 0")
flags.register_validator("soft_loss_weight", lambda v: v >= 0,
                         "--soft_loss_weight must be >= 0")
flags.register_validator("hard_mlm_loss_weight", lambda v: v >= 0,
                         "--hard_mlm_loss_weight must be >= 0")
flags.register_validator("next_sentence_loss_weight", lambda v: v >= 0,
                         "--next_sentence_loss_weight must be >= 0")
for _name in ("hidden_loss_weight", "attention_loss_weight",
              "embedding_loss_weight", "relation_heads"):
  flags.register_validator(_name, lambda v: v >= 0, f"--{_name} must be >= 0")
flags.register_validator(
    "hidden_layer_map",
    lambda v: v is None or all(s.strip().isdigit() for s in v),
    "--hidden_layer_map must be a comma list of teacher layer numbers, e.g. "
    "2,4,6")
flags.register_multi_flags_validator(
    ["teacher_config", "teacher_checkpoint"],
    lambda f: f["teacher_checkpoint"] or not f["teacher_config"],
    "--teacher_config needs --teacher_checkpoint")
flags.register_multi_flags_validator(
    ["teacher_checkpoint", "preset", "hidden_loss_weight",
     "attention_loss_weight", "embedding_loss_weight"],
    lambda f: f["teacher_checkpoint"] or not (
        f["preset"] or f["hidden_loss_weight"] or f["attention_loss_weight"] or
        f["embedding_loss_weight"]),
    "--preset and the intermediate-layer losses (--hidden_loss_weight, "
    "--attention_loss_weight, --embedding_loss_weight) need the teacher in "
    "the loop: give --teacher_checkpoint")
flags.register_validator(
    "init_layer_map",
    lambda v: v is None or all(s.strip().isdigit() for s in v),
    "--init_layer_map must be a comma list of layer numbers, e.g. 0,2,4")
flags.register_multi_flags_validator(
    ["do_train", "do_eval", "num_train_steps"],
    lambda f: f["do_train"] or f["do_eval"] or f["num_train_steps"] == 0,
    "give --do_train and/or --do_eval")
flags.register_multi_flags_validator(
    ["do_eval", "num_train_steps"],
    lambda f: not (f["do_eval"] and f["num_train_steps"] == 0),
    "--num_train_steps 0 writes the untrained student and evaluates "
    "nothing: leave out --do_eval")
flags.register_multi_flags_validator(
    ["init_layer_map", "init_checkpoint"],
    lambda f: not f["init_layer_map"] or f["init_checkpoint"],
    "--init_layer_map needs --init_checkpoint")
flags.register_multi_flags_validator(
    ["trainable", "init_checkpoint", "teacher_config"],
    lambda f: f["trainable"] == "all" or (f["init_checkpoint"] and
                                          not f["teacher_config"]),
    "--trainable heads fits the heads of the model in --init_checkpoint: "
    "give --init_checkpoint, and no --teacher_config")
flags.register_multi_flags_validator(
    ["distribution_strategy", "tpu"],
    lambda f: (f["distribution_strategy"] == "tpu") == bool(f["tpu"]),
    "--tpu and --distribution_strategy tpu go together")


# The flags of losses.LossConfig's fields (the layer map is resolved apart).
_LOSS_FLAGS = [field.name for field in dataclasses.fields(losses.LossConfig)
               if field.name != "hidden_layer_map"]


def student_config():
  """The student's config and --init_layer_map as ints."""
  # --num_train_steps 0 reads no records: --max_seq_length does not apply.
  config = distill_training.read_student_config(
      checkpoints.companion_file(
          FLAGS.bert_config_file, FLAGS.init_checkpoint, "config",
          "--bert_config_file", "--init_checkpoint"),
      FLAGS.max_seq_length if FLAGS.num_train_steps else 1)
  if not FLAGS.bert_config_file:
    config = distill_training.student_config_of(
        config, [int(layer) for layer in FLAGS.init_layer_map or []])
  return config, distill_training.parse_layer_map(FLAGS.init_layer_map,
                                                  config)


# What a checkpoint of --output_dir is made from (provenance.py): the files
# read, and the settings that change the trained weights.
RECORDED_FILES = ("bert_config_file", "init_checkpoint", "teacher_config",
                  "teacher_checkpoint")
RECORDED_SETTINGS = (
    "init_layer_map", "truncation_factor", "label_mode", "tail_mass_loss",
    "max_seq_length", "max_predictions_per_seq", "train_batch_size",
    "learning_rate", "num_train_steps", "num_warmup_steps", "temperature",
    "soft_loss_weight", "hard_mlm_loss_weight", "next_sentence_loss_weight",
    "precision", "skip_corrupt_records", "seed", "teacher_precision",
    "preset", "hidden_loss_weight", "hidden_loss", "hidden_layer_map",
    "attention_loss_weight", "attention_loss", "relation_heads",
    "embedding_loss_weight")


def training_record(train_files):
  """provenance's record of this run: its training files and settings."""
  inputs = {"input_file": [file_io.file_identity(p) for p in train_files]}
  for name in RECORDED_FILES:
    path = FLAGS[name].value
    inputs[name] = (None if not path else
                    provenance.checkpoint_identity(path)
                    if name.endswith("checkpoint") else
                    file_io.file_identity(path))
  return {"inputs": inputs,
          "settings": {name: FLAGS[name].value for name in RECORDED_SETTINGS
                       if name in FLAGS}}


def evaluation_record(step, eval_files):
  """What an evaluation was of: the step, the evaluation files (their
  content), and the settings and files its metrics depend on."""
  record = training_record(eval_files)
  record["inputs"]["eval_input_file"] = record["inputs"].pop("input_file")
  record["settings"].update(
      {name: FLAGS[name].value for name in
       ("eval_batch_size", "max_eval_steps", "require_full_eval_labels")})
  return {"global_step": step, **record}


def main(_):
  if FLAGS.num_train_steps:
    training.require_a_model(FLAGS.output_dir, FLAGS.init_checkpoint,
                             FLAGS.do_train, "--do_eval")
  config, layer_map = student_config()
  if FLAGS.num_train_steps == 0:
    distill_training.write_initial_student(
        config, FLAGS.init_checkpoint, layer_map, FLAGS.output_dir, FLAGS.seed)
    return
  loss_config, preset_values = distill_training.loss_config(
      {name: FLAGS[name].value for name in _LOSS_FLAGS},
      {name for name in _LOSS_FLAGS if FLAGS[name].present}, FLAGS.preset)
  if FLAGS.preset:
    logging.info("--preset %s sets %s", FLAGS.preset, preset_values)
  if FLAGS.do_train:
    distill_training.check_something_to_learn(loss_config)
  online = bool(FLAGS.teacher_checkpoint)
  if online:
    teacher_config = distill_training.read_matching_teacher_config(
        checkpoints.companion_file(
            FLAGS.teacher_config, FLAGS.teacher_checkpoint, "config",
            "--teacher_config", "--teacher_checkpoint"), FLAGS.max_seq_length,
        config)
    loss_config = distill_training.resolve_layers(
        loss_config, config, teacher_config, FLAGS.hidden_layer_map)
  train_files, eval_files = distill_input.find_train_and_eval_files(
      FLAGS.input_file, FLAGS.eval_input_file, FLAGS.do_eval)
  strategy = distribution.create_strategy(FLAGS.distribution_strategy,
                                          FLAGS.tpu)
  if online:  # The records' labels, if any, are not read: the teacher's are.
    distill_input.check_online_inputs(
        train_files, eval_files, config, FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq)
    labels = eval_labels = None
  else:
    labels, eval_labels = distill_input.check_inputs(
        train_files, eval_files, config, FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq, distill_input.LabelFlags(
            FLAGS.truncation_factor, FLAGS.label_mode, loss_config.temperature,
            loss_config.tail_mass_loss, loss_config.soft_loss_weight,
            FLAGS.require_full_eval_labels))
  spec, eval_spec = (
      label_settings.feature_spec(settings, FLAGS.max_seq_length,
                                  FLAGS.max_predictions_per_seq)
      for settings in (labels, eval_labels))
  distribution.check_batch_sizes(strategy.num_replicas_in_sync,
                                 train_batch_size=FLAGS.train_batch_size,
                                 eval_batch_size=FLAGS.eval_batch_size)
  bounds = records.value_bounds(config.vocab_size, config.type_vocab_size,
                                FLAGS.max_seq_length)
  exclusions = (distill_input.scan_for_skipping(
      {**{path: eval_spec for path in eval_files},
       **{path: spec for path in train_files}}, bounds)
                if FLAGS.skip_corrupt_records else None)
  chief = distribution.is_chief(strategy)
  logging.info("%s with %d replica(s), global batch %d, precision %s",
               type(strategy).__name__, strategy.num_replicas_in_sync,
               FLAGS.train_batch_size, FLAGS.precision)

  tf.random.set_seed(FLAGS.seed)  # dropout
  schedule = optimization.LinearWarmupLinearDecay(
      FLAGS.learning_rate, FLAGS.num_train_steps, FLAGS.num_warmup_steps)
  teacher = None
  if online:
    teacher = distill_training.make_online_teacher(
        strategy, config, teacher_config, FLAGS.teacher_checkpoint,
        FLAGS.teacher_precision or FLAGS.precision, loss_config, FLAGS.seed,
        soft_labels=loss_config.soft_loss_weight > 0)
  projections = teacher.projections if teacher else {}
  model, optimizer, loss_scale = distill_training.build_student(
      strategy, config, FLAGS.precision, FLAGS.seed, schedule, projections)
  if chief and FLAGS.do_train:
    provenance.lock_output_dir(FLAGS.output_dir)
    training.prepare_output_dir(FLAGS.output_dir)
  step = training.restore_or_initialize(  # layer_map None: layer i from i
      model, optimizer, FLAGS.output_dir, FLAGS.init_checkpoint,
      # The student's heads and pooler train from their initial values when
      # the checkpoint has none (an encoder-only model).
      lambda path: checkpoints.load_checkpoint(
          model, path, layer_map=layer_map, optional=("cls/", "bert/pooler/")),
      projections)
  if chief and FLAGS.do_train:
    provenance.check_training_record(
        FLAGS.output_dir, training_record(train_files), resumed=step > 0,
        continue_flag="continue_despite_changes",
        continue_anyway=FLAGS.continue_despite_changes)
  distribution.check_workers_agree(strategy, step, FLAGS.output_dir)
  if chief and not step:
    tf.io.gfile.makedirs(FLAGS.output_dir)
    model_config.write_config(
        os.path.join(FLAGS.output_dir, "bert_config.json"), config)

  if FLAGS.do_train and step >= FLAGS.num_train_steps:
    logging.info("Already trained: %s is at step %d of --num_train_steps %d; "
                 "nothing to train", FLAGS.output_dir, step,
                 FLAGS.num_train_steps)
  elif FLAGS.do_train:
    dataset = distill_input.distributed_records_dataset(
        strategy, train_files, labels, FLAGS.train_batch_size,
        FLAGS.max_seq_length, FLAGS.max_predictions_per_seq,
        is_training=True, seed=FLAGS.seed,
        steps_done=step, bounds=bounds, exclusions=exclusions)
    try:
      step = distill_training.train(
          strategy, model, optimizer, schedule, dataset, step,
          distill_training.TrainSettings(
              num_train_steps=FLAGS.num_train_steps,
              iterations_per_loop=FLAGS.iterations_per_loop,
              save_checkpoints_steps=FLAGS.save_checkpoints_steps,
              keep_checkpoint_max=FLAGS.keep_checkpoint_max,
              global_batch_size=FLAGS.train_batch_size,
              output_dir=FLAGS.output_dir, chief=chief,
              loss_config=loss_config,
              use_xla=distill_training.use_xla(FLAGS.use_xla),
              loss_scale=loss_scale, teacher=teacher,
              trainable=FLAGS.trainable))
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise distill_input.input_error(e, train_files, spec, bounds,
                                      "--input_file") from None

  if FLAGS.do_eval:
    evaluation = evaluation_record(step, eval_files)
    if distill_training.holds_evaluation(FLAGS.output_dir, evaluation):
      logging.info("%s already holds the evaluation of step %d on these "
                   "files and settings",
                   os.path.join(FLAGS.output_dir, "eval_results.txt"), step)
      return
    try:
      num_batches = distill_input.count_batches(
          eval_files, FLAGS.eval_batch_size, FLAGS.max_eval_steps, exclusions)
      if not num_batches:
        raise cli.StageError(f"the evaluation files hold fewer than "
                             f"--eval_batch_size {FLAGS.eval_batch_size} "
                             f"records")
      dataset = distill_input.distributed_records_dataset(
          strategy, eval_files, eval_labels, FLAGS.eval_batch_size,
          FLAGS.max_seq_length, FLAGS.max_predictions_per_seq,
          is_training=False, seed=FLAGS.seed, bounds=bounds,
          exclusions=exclusions)
      metrics = distill_training.evaluate(strategy, model, dataset,
                                          num_batches, loss_config, teacher)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise distill_input.input_error(
          e, eval_files, eval_spec, bounds, "--eval_input_file"
          if FLAGS.eval_input_file else "--input_file") from None
    if chief:
      distill_training.forget_evaluation(FLAGS.output_dir)
      training.write_eval_results(metrics, step, FLAGS.output_dir)
      distill_training.write_evaluation_record(FLAGS.output_dir, evaluation)


if __name__ == "__main__":
  cli.run(main, stop_at_safe_points=True)
