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
import math
import os
import time

from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

import checkpoints
import cli
import losses
import modeling
import optimization
import records

FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None,
                    "The student's bert_config.json: its architecture.")
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
                    "Initial weights (e.g. the teacher's checkpoint), used "
                    "only when output_dir holds no checkpoint yet.")
flags.DEFINE_list("init_layer_map", None,
                  "With --init_checkpoint: student layer j starts from "
                  "checkpoint layer init_layer_map[j], e.g. 0,2,4,7,9,11.")
flags.DEFINE_integer("truncation_factor", None,
                     "k, the teacher probabilities (or sample slots) per "
                     "masked position. Read from the records; when given it "
                     "must match them. 0 means masked_lm_probs (the whole "
                     "distribution).")
flags.DEFINE_enum("label_mode", None, ["top_k", "full", "sampled"],
                  "The teacher labels' mode. Read from the records (stage "
                  "IV's --label_mode); when given it must match them.")
flags.DEFINE_bool("tail_mass_loss", False,
                  "top_k labels: add the teacher's mass outside its top k "
                  "as one more 'all other tokens' class on both sides.")
flags.DEFINE_bool("teacher_kl", False,
                  "Require evaluation records holding the teacher's whole "
                  "distribution (stage IV --label_mode full) and report "
                  "teacher_kl & co. (reported whenever they do anyway).")
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
flags.DEFINE_integer("num_train_steps", 100000, "Training steps in total.")
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
                    "The teacher's bert_config.json. With --teacher_checkpoint "
                    "the teacher runs frozen inside the training step and its "
                    "full masked-LM distribution replaces stored labels (the "
                    "records may be plain pretraining records).")
flags.DEFINE_string("teacher_checkpoint", None,
                    "The teacher's weights under Google's names (a prefix or "
                    "a directory); never written into the student's "
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

flags.mark_flags_as_required(["bert_config_file", "input_file", "output_dir"])
for _name in ("max_seq_length", "max_predictions_per_seq", "train_batch_size",
              "eval_batch_size", "num_train_steps", "save_checkpoints_steps",
              "keep_checkpoint_max", "iterations_per_loop", "max_eval_steps"):
  flags.register_validator(_name, lambda v: v > 0, f"--{_name} must be > 0")
flags.register_validator("num_warmup_steps", lambda v: v >= 0,
                         "--num_warmup_steps must be >= 0")
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
    lambda f: bool(f["teacher_config"]) == bool(f["teacher_checkpoint"]),
    "--teacher_config and --teacher_checkpoint go together")
flags.register_multi_flags_validator(
    ["teacher_config", "preset", "hidden_loss_weight", "attention_loss_weight",
     "embedding_loss_weight"],
    lambda f: f["teacher_config"] or not (
        f["preset"] or f["hidden_loss_weight"] or f["attention_loss_weight"] or
        f["embedding_loss_weight"]),
    "--preset and the intermediate-layer losses (--hidden_loss_weight, "
    "--attention_loss_weight, --embedding_loss_weight) need the teacher in "
    "the loop: give --teacher_config and --teacher_checkpoint")
flags.register_validator(
    "init_layer_map",
    lambda v: v is None or all(s.strip().isdigit() for s in v),
    "--init_layer_map must be a comma list of layer numbers, e.g. 0,2,4")
flags.register_multi_flags_validator(
    ["do_train", "do_eval"], lambda f: f["do_train"] or f["do_eval"],
    "give --do_train and/or --do_eval")
flags.register_multi_flags_validator(
    ["init_layer_map", "init_checkpoint"],
    lambda f: not f["init_layer_map"] or f["init_checkpoint"],
    "--init_layer_map needs --init_checkpoint")
flags.register_multi_flags_validator(
    ["distribution_strategy", "tpu"],
    lambda f: (f["distribution_strategy"] == "tpu") == bool(f["tpu"]),
    "--tpu and --distribution_strategy tpu go together")

_SHUFFLE_BUFFER = 1000


# ----------------------------------------------------------------------------
# Input.

def feature_spec(max_seq_length, max_predictions_per_seq, truncation_factor,
                 vocab_size, with_teacher_labels, label_mode=records.TOP_K,
                 head_k=0):
  """The records.py parse spec of the records this run reads."""
  if with_teacher_labels:
    return records.teacher_label_feature_spec(
        max_seq_length, max_predictions_per_seq, truncation_factor,
        vocab_size, label_mode, head_k)
  return records.pretraining_feature_spec(max_seq_length,
                                          max_predictions_per_seq)


def parse_batch(serialized, spec, max_predictions_per_seq):
  """Parses a [B] batch of serialized records into model-ready tensors.

  Ids become int32 ([B, L], [B, P]), next_sentence_labels [B], and the teacher
  labels [B, P*k] become teacher_probs / teacher_ids [B, P, k] (or
  teacher_probs [B, P, V] for the full distribution; sampled counts c become
  teacher_sample_weights c / sum c, with the ids as teacher_ids, and an
  exact head h of sampled labels comes first: weights
  [h_1..h_m, (1 - sum h) c / sum c], ids [head ids, sampled ids]).
  """
  parsed = tf.io.parse_example(serialized, spec)
  features = {}
  for name, value in parsed.items():
    if name in (records.NUM_SAMPLES, records.SAMPLE_TEMPERATURE):
      continue  # Checked once, before training.
    if name in (records.SAMPLED_HEAD_PROBS, records.SAMPLED_HEAD_IDS):
      # [B, P * h] -> [B, P, h], joined with the draws below.
      features[name] = tf.reshape(
          tf.cast(value, tf.float32 if value.dtype == tf.float32 else
                  tf.int32),
          [-1, max_predictions_per_seq,
           value.shape[-1] // max_predictions_per_seq])
      continue
    if name == records.SAMPLED_COUNTS:
      name = losses.TEACHER_SAMPLE_WEIGHTS
      value = tf.cast(value, tf.float32)
    if value.dtype == tf.int64:
      value = tf.cast(value, tf.int32)
    if name == records.NEXT_SENTENCE_LABELS:
      value = tf.reshape(value, [-1])  # [B]
    if name in (records.TRUNCATED_PROBS, records.FULL_PROBS):
      name = losses.TEACHER_PROBS
    elif name in (records.TOP_K_INDICES, records.SAMPLED_IDS):
      name = losses.TEACHER_IDS
    if name in (losses.TEACHER_PROBS, losses.TEACHER_IDS,
                losses.TEACHER_SAMPLE_WEIGHTS):
      # [B, P * k] -> [B, P, k]
      value = tf.reshape(value, [-1, max_predictions_per_seq,
                                 value.shape[-1] // max_predictions_per_seq])
    features[name] = value
  if losses.TEACHER_SAMPLE_WEIGHTS in features:
    counts = features[losses.TEACHER_SAMPLE_WEIGHTS]  # [B, P, k]
    kept = tf.reduce_sum(counts, axis=-1, keepdims=True)
    weights = counts / tf.maximum(kept, 1.0)  # [B, P, k]
    if records.SAMPLED_HEAD_PROBS in features:
      head = features.pop(records.SAMPLED_HEAD_PROBS)  # [B, P, h]
      head_ids = features.pop(records.SAMPLED_HEAD_IDS)
      tail_mass = tf.maximum(1.0 - tf.reduce_sum(head, -1, keepdims=True), 0.0)
      weights = tf.concat([head, tail_mass * weights], axis=-1)  # [B, P, h+k]
      features[losses.TEACHER_IDS] = tf.concat(
          [head_ids, features[losses.TEACHER_IDS]], axis=-1)
    features[losses.TEACHER_SAMPLE_WEIGHTS] = weights
  return features


def make_dataset(files, spec, batch_size, max_predictions_per_seq, *,
                 is_training, seed=0, num_shards=1, shard_index=0,
                 skip_examples=0, bounds=None, exclusions=None):
  """A tf.data pipeline of parsed batches.

  Training: files shuffled (seeded) every epoch, read interleaved in
  parallel, examples shuffled in a buffer, repeated forever. The order is a
  function of the seed alone; each input pipeline (worker) then takes every
  num_shards-th example, so N workers together see exactly the batches one
  worker with the global batch would, and `skip_examples` (this pipeline's
  examples already trained on) resumes the order where a crash left it.

  Evaluation reads the files in order and repeats them too (callers take a
  counted number of batches, so no worker runs out before the others).

  bounds: records.value_bounds; a batch holding a value out of range fails
  with InvalidArgumentError (on a GPU it would be read silently as zeros).
  exclusions: a RecordExclusions (--skip_corrupt_records): the records it
  names are left out of each file before anything else, so the order is
  that of files holding only the other records.

  Returns:
    A dataset of parse_batch dicts with `batch_size` examples each.
  """
  read_file = (exclusions.reader() if exclusions is not None
               else tf.data.TFRecordDataset)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if is_training:
    dataset = dataset.shuffle(len(files), seed=seed,
                              reshuffle_each_iteration=True)
  dataset = dataset.repeat()
  dataset = dataset.interleave(
      read_file, cycle_length=min(len(files), 8),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if is_training:
    dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed)
  if num_shards > 1:
    dataset = dataset.shard(num_shards, shard_index)
  if skip_examples:
    dataset = dataset.skip(skip_examples)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  dataset = dataset.map(
      lambda serialized: check_values(
          parse_batch(serialized, spec, max_predictions_per_seq), bounds),
      num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)


def check_values(features, bounds):
  """Returns parse_batch's features, after an assertion that every value of
  records.value_bounds lies in range and every weighted masked position
  within its record's real tokens (the rule of records.invalid_records,
  which names the record when the host looks for it). bounds None: no check.
  """
  if bounds is None:
    return features
  names = {records.TOP_K_INDICES: losses.TEACHER_IDS}
  checks = []
  for name, (limit, _) in bounds.items():
    values = features.get(names.get(name, name))
    if values is not None and values.dtype.is_integer:
      checks.append(tf.reduce_all((values >= 0) & (values < limit)))
  lengths = tf.reduce_sum(tf.cast(features[records.INPUT_MASK] != 0, tf.int32),
                          axis=1, keepdims=True)  # [B, 1]
  checks.append(tf.reduce_all(
      (features[records.MASKED_LM_POSITIONS] < lengths) |
      (features[records.MASKED_LM_WEIGHTS] <= 0)))
  with tf.control_dependencies([tf.debugging.Assert(
      tf.reduce_all(checks), ["a record holds values out of range"])]):
    return {name: tf.identity(value) for name, value in features.items()}


@dataclasses.dataclass
class FileScan:
  """What one full read of a record file found (scan_file).

  readable: how many records can be read before the first corrupt or
    truncated one (all of them when `tail` is None).
  bad: {record number: reason} of readable records out of range.
  tail: why the bytes after `readable` records cannot be read, or None.
  """
  path: str
  readable: int
  bad: dict
  tail: str = None

  def first_problem(self):
    """'record N: reason' of the first bad record, or None."""
    first = min(self.bad, default=None)
    if self.tail is not None and (first is None or first > self.readable):
      return f"record {self.readable}: {self.tail}"
    return None if first is None else f"record {first}: {self.bad[first]}"


def scan_file(path, spec, bounds, batch_size=1024):
  """Reads every record of `path` once; returns a FileScan.

  Checks the framing (TFRecord lengths and CRCs), that every record parses
  with `spec`, and records.invalid_records(bounds). TensorFlow's reader
  cannot step over a corrupt record, so a file's records after the first
  corrupt or truncated one are lost to every reader; `tail` says so.
  """
  size = tf.io.gfile.stat(path).length
  readable, consumed, bad = 0, 0, {}
  batches = tf.data.TFRecordDataset(path).ignore_errors().batch(batch_size)
  for serialized in batches:
    lengths = tf.strings.length(serialized).numpy()
    consumed += int(lengths.sum()) + 16 * len(lengths)  # TFRecord framing
    for row, reason in _invalid_rows(serialized, spec, bounds).items():
      bad[readable + row] = reason
    readable += len(lengths)
  tail = None
  if consumed < size:
    try:
      for _ in tf.data.TFRecordDataset(path).skip(readable).take(1):
        pass
      why = "unreadable"
    except tf.errors.OpError as e:
      why = cli.error_line(e)
    tail = (f"{why} ({size - consumed} bytes from byte {consumed} to the "
            f"end cannot be read)")
  return FileScan(path, readable, bad, tail)


def _invalid_rows(serialized, spec, bounds):
  """{row: reason} of a [b] batch of serialized records that do not parse
  with `spec` or hold values out of range."""
  try:
    parsed = tf.io.parse_example(serialized, spec)
  except tf.errors.InvalidArgumentError:
    reasons = {}
    for row in range(len(serialized)):  # one by one, to name the bad ones
      try:
        one = tf.io.parse_example(serialized[row:row + 1], spec)
      except tf.errors.InvalidArgumentError as e:
        reasons[row] = f"does not parse ({cli.error_line(e)})"
        continue
      found = records.invalid_records({n: v.numpy() for n, v in one.items()},
                                      bounds)
      if found:
        reasons[row] = next(iter(found.values()))
    return reasons
  return records.invalid_records({n: v.numpy() for n, v in parsed.items()},
                                 bounds)


class RecordExclusions:
  """The records --skip_corrupt_records leaves out, from a FileScan of every
  input file: the unreadable end of a file and the rows out of range."""

  def __init__(self, scans):
    self.scans = {scan.path: scan for scan in scans}

  def skipped(self, files):
    """How many readable records of `files` are left out."""
    return sum(len(self.scans[path].bad) for path in files)

  def kept(self, files):
    """How many records of `files` remain."""
    return sum(self.scans[path].readable - len(self.scans[path].bad)
               for path in files)

  def reader(self):
    """A function path -> dataset of that file's records without the left
    out ones (for Dataset.interleave); call it where the dataset is built,
    it creates the lookup tables."""
    paths = list(self.scans)
    readable = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            paths, tf.constant([self.scans[p].readable for p in paths],
                               tf.int64)), default_value=-1)
    bad_keys = [f"{p}#{i}" for p in paths for i in self.scans[p].bad]
    bad = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            bad_keys or ["#"], tf.ones([max(len(bad_keys), 1)], tf.int64)),
        default_value=0)

    def read_file(path):
      dataset = tf.data.TFRecordDataset(path).take(readable.lookup(path))
      dataset = dataset.enumerate().filter(
          lambda index, record: bad.lookup(tf.strings.join(
              [path, tf.strings.as_string(index)], "#")) == 0)
      return dataset.map(lambda index, record: record)
    return read_file


def scan_for_skipping(spec_of_file, bounds):
  """--skip_corrupt_records: scans every file of {path: parse spec} (logging
  progress), logs what will be left out, file by file, and returns the
  RecordExclusions."""
  files = sorted(spec_of_file)
  progress = cli.Progress("--skip_corrupt_records: reading the inputs once",
                          total=len(files), unit="files")
  scans = []
  for path in files:
    scans.append(scan_file(path, spec_of_file[path], bounds))
    progress.update(1)
  progress.log(final=True)
  for scan in scans:
    for index in sorted(scan.bad)[:10]:
      logging.warning("Skipping %s record %d: %s", scan.path, index,
                      scan.bad[index])
    if len(scan.bad) > 10:
      logging.warning("Skipping %d more records of %s", len(scan.bad) - 10,
                      scan.path)
    if scan.tail:
      logging.warning("Skipping the end of %s from record %d: %s",
                      scan.path, scan.readable, scan.tail)
  exclusions = RecordExclusions(scans)
  logging.warning(
      "--skip_corrupt_records: %d records out of range left out, %d of %d "
      "files end unreadably; %d records remain", exclusions.skipped(files),
      sum(1 for scan in scans if scan.tail), len(files),
      exclusions.kept(files))
  return exclusions


def input_error(error, files, spec, bounds, flag):
  """The cli.StageError for a tf.data error while reading `files`.

  Reads the files once more, in order, to name the first bad record; when
  none is bad the error was not the data's and is raised again.
  """
  logging.warning("Reading %s once more to find the bad record (%s)", flag,
                  cli.error_line(error))
  for path in files:
    problem = scan_file(path, spec, bounds).first_problem()
    if problem:
      return cli.StageError(
          f"{path}: {problem}; fix or remove the file ({flag}), or rerun "
          f"with --skip_corrupt_records to leave such records out")
  raise error


def check_input_files(files, spec, max_predictions_per_seq, vocab_size):
  """Checks the first record of every file: lengths and token ids.

  Raises:
    cli.StageError: one line naming the file, the feature and the mismatch.
  """
  id_features = (records.INPUT_IDS, records.MASKED_LM_IDS,
                 records.TOP_K_INDICES, records.SAMPLED_IDS,
                 records.SAMPLED_HEAD_IDS)
  for path in files:
    try:
      example = records.check_record_lengths(path, spec,
                                             max_predictions_per_seq)
    except ValueError as e:
      raise cli.StageError(str(e)) from None
    if example is None:
      raise cli.StageError(f"{path}: holds no records")
    for name in id_features:
      if name in example and len(example[name]) and (
          example[name].max() >= vocab_size):
        raise cli.StageError(
            f"{path}: '{name}' holds token id {example[name].max()} but the "
            f"student's vocab_size is {vocab_size} (--bert_config_file); the "
            f"records were made with another vocabulary")


def label_settings_of_files(files, max_predictions_per_seq, flag):
  """The records.LabelSettings every file's first record shares, or None
  when they hold no teacher labels.

  Raises:
    cli.StageError: a file is empty or unreadable, or two files hold
      labels of different modes, k, N or T (names both).
  """
  found = first = None
  for path in files:
    try:
      example = records.read_first_example(path)
      if example is None:
        raise ValueError(f"{path}: holds no records")
      settings = records.label_settings(example, max_predictions_per_seq,
                                        path)
    except ValueError as e:
      raise cli.StageError(str(e)) from None
    if first is None:
      found, first = settings, path
    elif settings != found:
      raise cli.StageError(
          f"{flag}: {path} holds {describe(settings)} but {first} holds "
          f"{describe(found)}; give files of one label mode")
  return found


def describe(settings):
  """A LabelSettings (or None) in words."""
  return f"{settings.describe()} labels" if settings else "no teacher labels"


def check_label_settings(settings, path, label_mode, temperature,
                         tail_mass_loss, soft_loss_weight):
  """Checks the training records' labels against the flags that use them.

  Raises:
    cli.StageError: --label_mode disagrees with the records, sampled labels
      drawn at another --temperature, --tail_mass_loss without top_k
      labels, or a soft loss without any labels.
  """
  if settings is None:
    if soft_loss_weight > 0 or label_mode:
      raise cli.StageError(
          f"{path}: records hold no teacher labels (stage IV's output has "
          f"them); for plain pretraining give --soft_loss_weight 0")
    return
  if label_mode and label_mode != settings.mode:
    raise cli.StageError(f"--label_mode {label_mode}: {path} holds "
                         f"{describe(settings)}")
  if (settings.mode == records.SAMPLED and soft_loss_weight > 0 and
      temperature != settings.temperature):
    raise cli.StageError(
        f"--temperature {temperature:g}: {path} holds labels sampled at "
        f"temperature {settings.temperature:g} (stage IV's "
        f"--sample_temperature); distil at {settings.temperature:g}")
  if tail_mass_loss and settings.mode != records.TOP_K:
    raise cli.StageError(f"--tail_mass_loss needs top_k labels; {path} holds "
                         f"{describe(settings)}")


def records_spec(settings, truncation_factor, max_seq_length,
                 max_predictions_per_seq, vocab_size):
  """The parse spec of records holding `settings` (None: no labels).

  A --truncation_factor given builds the spec from it instead, so a
  mismatch is reported by records.check_record_lengths (with the k found).
  """
  if settings is None:
    return feature_spec(max_seq_length, max_predictions_per_seq, 0,
                        vocab_size, with_teacher_labels=False)
  mode, k = settings.mode, settings.k
  if truncation_factor is not None:
    k = truncation_factor
    if mode != records.SAMPLED:
      mode = records.label_mode_of(k)
  return feature_spec(max_seq_length, max_predictions_per_seq, k, vocab_size,
                      with_teacher_labels=True, label_mode=mode,
                      head_k=settings.head_k)


# ----------------------------------------------------------------------------
# Distribution.

def create_strategy(name, tpu=None):
  """The tf.distribute strategy called `name` (None: mirrored on GPUs).

  Call it before any other TensorFlow op: MultiWorkerMirroredStrategy must
  configure the runtime before it starts.
  """
  gpus = tf.config.list_physical_devices("GPU")
  if name is None:
    name = "mirrored" if gpus else "one_device"
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker_mirrored":
    if "TF_CONFIG" not in os.environ:
      raise cli.StageError("--distribution_strategy multi_worker_mirrored "
                           "needs the TF_CONFIG environment variable (see "
                           "launch_multiworker.sh)")
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
  """Whether this process writes checkpoints, summaries and results."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and (
      not has_chief)


def check_workers_agree(strategy, step, output_dir):
  """Raises cli.StageError unless every worker starts from the same step
  (they disagree when --output_dir is not one directory all workers see)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return
  gather = tf.function(lambda: strategy.gather(
      strategy.run(lambda: tf.constant([step], tf.int64)), axis=0))
  steps = gather().numpy()
  if steps.min() != steps.max():
    raise cli.StageError(
        f"the workers start from different steps ({sorted(set(steps))}): "
        f"--output_dir {output_dir} must be one directory every worker sees")


def distributed_dataset(strategy, files, spec, global_batch_size,
                        max_predictions_per_seq, is_training, seed,
                        steps_done=0, bounds=None, exclusions=None):
  """make_dataset for every input pipeline of `strategy`, per-replica batches.

  steps_done: global steps already trained; each pipeline skips the examples
  it fed them. bounds, exclusions: as make_dataset's.
  """
  def dataset_fn(context):
    batch_size = context.get_per_replica_batch_size(global_batch_size)
    skip = steps_done * global_batch_size // context.num_input_pipelines
    if skip:
      logging.info("Input pipeline %d: skipping the %d examples it fed the "
                   "first %d steps", context.input_pipeline_id, skip,
                   steps_done)
    return make_dataset(
        files, spec, batch_size, max_predictions_per_seq,
        is_training=is_training, seed=seed,
        num_shards=context.num_input_pipelines,
        shard_index=context.input_pipeline_id, skip_examples=skip,
        bounds=bounds, exclusions=exclusions)
  return strategy.distribute_datasets_from_function(dataset_fn)


# ----------------------------------------------------------------------------
# Online distillation: the teacher in the loop.

# What each paper trained with (docs/online_distillation.md gives the
# sources); a flag the user gives explicitly wins over its preset value.
PRESETS = {
    # DistilBERT (Sanh et al. 2019; transformers' research_projects/
    # distillation: --alpha_ce 5.0 --alpha_mlm 2.0 --alpha_cos 1.0,
    # --temperature 2.0).
    "distilbert": {"temperature": 2.0, "soft_loss_weight": 5.0,
                   "hard_mlm_loss_weight": 2.0, "hidden_loss": "cosine",
                   "hidden_loss_weight": 1.0, "attention_loss_weight": 0.0,
                   "embedding_loss_weight": 0.0},
    # TinyBERT's general distillation (Jiao et al. 2020, section 3.1-3.3;
    # general_distill.py: loss = att_loss + rep_loss, rep_loss over the
    # embeddings and the uniformly mapped layers, no prediction layer).
    "tinybert_general": {"temperature": 1.0, "soft_loss_weight": 0.0,
                         "hard_mlm_loss_weight": 0.0, "hidden_loss": "mse",
                         "hidden_loss_weight": 1.0, "attention_loss": "mse",
                         "attention_loss_weight": 1.0,
                         "embedding_loss_weight": 1.0},
    # MiniLM (Wang et al. 2020, section 3: L = L_AT + L_VR on the last
    # layer, nothing else).
    "minilm": {"temperature": 1.0, "soft_loss_weight": 0.0,
               "hard_mlm_loss_weight": 0.0, "hidden_loss_weight": 0.0,
               "attention_loss": "kl", "attention_loss_weight": 1.0,
               "embedding_loss_weight": 0.0},
}


def apply_preset(flag_values, preset):
  """Sets `preset`'s values on the flags the user did not give.

  Returns {flag: value} of what the preset set (for the log).
  """
  applied = {}
  for name, value in PRESETS.get(preset, {}).items():
    if not flag_values[name].present:
      setattr(flag_values, name, value)
      applied[name] = value
  return applied


def read_teacher_config(path, max_seq_length, student_config):
  """The teacher's BertConfig; its vocabulary must be the student's."""
  try:
    config = modeling.read_config(path, max_seq_length, "teacher")
  except ValueError as e:
    raise cli.StageError(f"--teacher_config {e}") from None
  if config.vocab_size != student_config.vocab_size:
    raise cli.StageError(
        f"--teacher_config {path}: the teacher's vocab_size "
        f"{config.vocab_size} differs from the student's "
        f"{student_config.vocab_size}; both must use one vocabulary")
  return config


def intermediate_options(student_config, teacher_config, *, hidden_layer_map,
                         relation_heads, **weights_and_losses):
  """The options of losses.intermediate_losses, checked against the models.

  hidden_layer_map: the flag's strings or None (uniform); relation_heads: 0
  for the teacher's head count; weights_and_losses: the *_loss_weight and
  *_loss flags.
  """
  if hidden_layer_map:
    layer_map = [int(layer) for layer in hidden_layer_map]
  else:
    layer_map = losses.uniform_layer_map(student_config.num_hidden_layers,
                                         teacher_config.num_hidden_layers)
  options = {**weights_and_losses, "hidden_layer_map": layer_map,
             "relation_heads": (relation_heads or
                                teacher_config.num_attention_heads)}
  try:
    losses.check_intermediate_options(student_config, teacher_config, options)
  except ValueError as e:
    raise cli.StageError(str(e)) from None
  return options


def build_teacher(strategy, config, checkpoint, precision):
  """The frozen teacher under the strategy's scope, every variable loaded.

  Raises:
    cli.StageError: the checkpoint is missing, or lacks or mis-shapes
      variables of the teacher's config (named).
  """
  with strategy.scope():
    # Zeros, not random values: the strict load below sets every variable.
    teacher = modeling.BertPretrainingModel(
        config, compute_dtype=_COMPUTE_DTYPES[precision], name="teacher",
        seed=0, trainable=False, initialize=False)
  try:
    checkpoints.load_checkpoint(teacher, checkpoint)
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
                        precision, options, seed):
  """The OnlineTeacher: the loaded frozen teacher and the projections the
  options need between the two widths."""
  model = build_teacher(strategy, teacher_config, checkpoint, precision)
  shapes = losses.projection_shapes(student_config.hidden_size,
                                    teacher_config.hidden_size, options)
  projections = build_projections(strategy, shapes,
                                  student_config.initializer_range, seed)
  logging.info("Teacher %s in the loop (%d layers, hidden %d); "
               "intermediate losses %s; projections %s", checkpoint,
               teacher_config.num_hidden_layers, teacher_config.hidden_size,
               options, {n: v.shape.as_list() for n, v in projections.items()})
  return OnlineTeacher(model, options, projections)


class OnlineTeacher:
  """The teacher in the training step: its frozen model, the intermediate
  losses' options and the student's projections (trained with it)."""

  def __init__(self, model, options, projections):
    self.model = model
    self.options = options
    self.projections = projections
    self.has_intermediate_losses = any(
        options[f"{name}_weight"] for name in losses.INTERMEDIATE_TERMS)

  def label(self, features):
    """Runs the teacher (inference mode, no gradient) on a parsed batch.

    Returns (features with teacher_probs [B, P, V], its full masked-LM
    distribution, in place of any stored labels; the teacher's outputs).
    """
    outputs = self.model(
        features[records.INPUT_IDS], features[records.INPUT_MASK],
        features[records.SEGMENT_IDS], features[records.MASKED_LM_POSITIONS],
        training=False, intermediates=self.has_intermediate_losses)
    outputs = tf.nest.map_structure(tf.stop_gradient, outputs)
    features = {name: value for name, value in features.items()
                if name not in (losses.TEACHER_PROBS, losses.TEACHER_IDS)}
    features[losses.TEACHER_PROBS] = tf.nn.softmax(
        outputs["masked_lm_logits"], axis=-1)  # [B, P, V]
    return features, outputs

  def intermediate_losses(self, student_outputs, teacher_outputs, input_mask,
                          totals):
    """losses.intermediate_losses with the global denominators `totals`."""
    return losses.intermediate_losses(
        student_outputs, teacher_outputs, input_mask, self.options,
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


# ----------------------------------------------------------------------------
# Training and evaluation.

def model_outputs(model, features, training, intermediates=False):
  """The student's ([B, P, V] MLM logits, [B, 2] next-sentence logits), and
  with intermediates=True its whole output dict as a third item."""
  outputs = model(features[records.INPUT_IDS], features[records.INPUT_MASK],
                  features[records.SEGMENT_IDS],
                  features[records.MASKED_LM_POSITIONS], training=training,
                  intermediates=intermediates)
  logits = outputs["masked_lm_logits"], outputs["next_sentence_logits"]
  return (*logits, outputs) if intermediates else logits


class DynamicLossScale:
  """The loss scale of float16 training.

  The loss is multiplied by `scale` before the backward pass and the
  gradients divided by it after. A step whose gradients overflow (on any
  replica) leaves the weights and Adam slots as they are and halves the
  scale; after `period` clean steps the scale doubles.
  """

  def __init__(self, initial=2.0**15, period=2000):
    on_first = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.scale = tf.Variable(initial, trainable=False, aggregation=on_first)
    self.clean_steps = tf.Variable(0, trainable=False, aggregation=on_first)
    self.period = period

  def unscale(self, grads):
    """Returns ([gradients] / scale, overflowed), zeros if any overflowed.

    Call in replica context: the overflow check is summed over replicas, so
    `overflowed` (a scalar bool) is the same on every replica.
    """
    # None: a variable no loss term reaches (the masked-LM head when only
    # intermediate-layer losses train); it stays None.
    grads = [None if g is None else tf.convert_to_tensor(g) / self.scale
             for g in grads]
    overflows = tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g),
                                                tf.float32))
                          for g in grads if g is not None])
    overflows = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, overflows)
    clean = overflows == 0
    grow = clean & (self.clean_steps + 1 >= self.period)
    self.scale.assign(tf.where(clean, tf.where(grow, 2.0, 1.0), 0.5) *
                      self.scale)
    self.clean_steps.assign(tf.where(clean & ~grow, self.clean_steps + 1, 0))
    return [None if g is None else tf.where(clean, g, tf.zeros_like(g))
            for g in grads], ~clean


def make_train_loop(strategy, model, optimizer, global_batch_size,
                    loss_options, use_xla, loss_scale=None, teacher=None):
  """Returns train_loop(iterator, num_steps) -> (steps_run, mean terms).

  One call runs up to num_steps training steps inside a single tf.function,
  and stops early after a step whose loss or gradients' global norm is not
  finite (steps_run then counts that step, and its terms are returned
  instead of the means).
  loss_options: keyword arguments of compute_losses (weights, temperature).
  loss_scale: a DynamicLossScale for float16, else None.
  teacher: an OnlineTeacher, or None for the stored labels. Its model runs
    in the same step, before the tape; the projections train with the
    student, and the intermediate terms join the loss.
  """
  variables = model.variables_by_name()
  intermediate = teacher is not None and teacher.has_intermediate_losses
  if teacher is not None:
    variables.update(teacher.projections)
  names = sorted(variables)
  var_list = [variables[name] for name in names]

  def loss_and_gradients(features, weight_total, scale, token_totals):
    teacher_outputs = None
    if teacher is not None:
      features, teacher_outputs = teacher.label(features)
    with tf.GradientTape() as tape:
      mlm_logits, nsp_logits, *student_outputs = model_outputs(
          model, features, training=True, intermediates=intermediate)
      terms = losses.compute_losses(mlm_logits, nsp_logits, features,
                                    weight_total=weight_total,
                                    example_total=float(global_batch_size),
                                    **loss_options)
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
    overflowed = None
    if loss_scale:
      grads, overflowed = loss_scale.unscale(grads)
    global_norm = optimizer.apply_gradients(dict(zip(names, grads)),
                                            skip_update=overflowed)
    return terms, global_norm

  @tf.function
  def train_loop(iterator, num_steps):
    terms = {name: tf.constant(0.0) for name in
             ("loss", "soft_loss", "hard_mlm_loss", "next_sentence_loss",
              "global_norm") + (losses.INTERMEDIATE_TERMS if intermediate
                                else ())}
    steps_run = tf.constant(0)
    for _ in tf.range(num_steps):
      replica_terms, global_norm = strategy.run(replica_step,
                                                args=(next(iterator),))
      step_terms = {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value,
                                          axis=None)
                    for name, value in replica_terms.items()}
      step_terms["global_norm"] = strategy.reduce(
          tf.distribute.ReduceOp.MEAN, global_norm, axis=None)
      steps_run += 1
      # A NaN global norm poisons the weights while the loss of that step
      # may still be finite: either ends the loop.
      if not (tf.math.is_finite(step_terms["loss"]) &
              tf.math.is_finite(step_terms["global_norm"])):
        terms = step_terms
        break
      terms = {name: terms[name] + step_terms[name] for name in terms}
    if tf.math.is_finite(terms["loss"]) & tf.math.is_finite(
        terms["global_norm"]):
      terms = {name: value / tf.cast(steps_run, tf.float32)
               for name, value in terms.items()}
    return steps_run, terms

  return train_loop


def make_eval_step(strategy, model, loss_options, teacher=None):
  """Returns eval_step(iterator) -> evaluation_sums of one global batch.

  With an OnlineTeacher its full distribution is the batch's teacher label,
  so every full-distribution metric is computed online.
  """
  @tf.autograph.experimental.do_not_convert
  def replica_step(features):
    if teacher is not None:
      features, _ = teacher.label(features)
    mlm_logits, nsp_logits = model_outputs(model, features, training=False)
    return losses.evaluation_sums(mlm_logits, nsp_logits, features,
                                  **loss_options)

  @tf.function
  def eval_step(iterator):
    sums = strategy.run(replica_step, args=(next(iterator),))
    return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in sums.items()}
  return eval_step


def count_batches(files, batch_size, limit, exclusions=None):
  """Whole batches of `batch_size` in `files`, counting up to `limit`."""
  if exclusions is not None:
    return min(exclusions.kept(files) // batch_size, limit)
  dataset = tf.data.TFRecordDataset(files).take(limit * batch_size)
  count = dataset.reduce(np.int64(0), lambda n, _: n + 1)
  return int(count) // batch_size


def checkpoint_variables(model, optimizer, extra_variables=None):
  """{Google name: variable} of everything a checkpoint holds: the student,
  training-only variables (distill/..., never the teacher), the optimizer's
  slots of both and global_step."""
  return {**model.variables_by_name(), **(extra_variables or {}),
          **optimizer.checkpoint_variables()}


def restore_or_initialize(model, optimizer, output_dir, init_checkpoint,
                          layer_map, extra_variables=None):
  """Resumes from output_dir's newest checkpoint, else initialises.

  Returns the global step training continues from.

  A checkpoint that cannot be read in full (truncated) or holds NaN or
  infinity is passed over, with a warning, for the next older one.

  Raises:
    cli.StageError: output_dir holds another architecture's checkpoint, or
      no checkpoint of it can be used, or init_checkpoint is missing,
      mis-shaped or lacks a layer of layer_map.
  """
  variables = checkpoint_variables(model, optimizer, extra_variables)
  passed_over = []
  for prefix in checkpoints.complete_checkpoints(output_dir):
    try:
      checkpoints.restore_variables(variables, prefix)
    except checkpoints.CorruptCheckpointError as e:
      logging.warning("Passing over %s; trying an older checkpoint", e)
      passed_over.append(prefix)
      continue
    except ValueError as e:
      raise cli.StageError(
          f"--output_dir {output_dir} holds checkpoint {prefix} of another "
          f"architecture or run ({e}); use a new --output_dir") from None
    nonfinite = checkpoints.nonfinite_names(variables)
    if nonfinite:
      logging.warning("Passing over %s: %d variables hold NaN or infinity "
                      "(%s); trying an older checkpoint", prefix,
                      len(nonfinite), ", ".join(nonfinite[:3]))
      passed_over.append(prefix)
      continue
    step = int(optimizer.global_step.numpy())
    logging.info("Resuming from %s at step %d", prefix, step)
    return step
  if passed_over:
    raise cli.StageError(
        f"--output_dir {output_dir}: none of its checkpoints can be resumed "
        f"from ({', '.join(passed_over)}: truncated or not finite); move "
        f"them away to start anew")
  if init_checkpoint:
    try:
      checkpoints.load_checkpoint(model, init_checkpoint, layer_map=layer_map)
    except ValueError as e:
      raise cli.StageError(
          f"--init_checkpoint {init_checkpoint}: {e}") from None
    logging.info("Initialised from %s (layer map %s)", init_checkpoint,
                 layer_map)
  else:
    logging.info("Initialised the student at random (seed in --seed)")
  return 0


def save(model, optimizer, output_dir, keep, extra_variables=None):
  """Writes model + extra variables + optimizer slots at the current global
  step.

  Raises:
    cli.StageError: the weights are not finite (nothing is written), or the
      checkpoint cannot be written (names the file; nothing partial stays).
  """
  step = int(optimizer.global_step.numpy())
  variables = {**model.variables_by_name(), **(extra_variables or {}),
               **optimizer.slot_variables_by_name()}
  try:
    return checkpoints.save_checkpoint(variables, output_dir, step,
                                       max_to_keep=keep)
  except checkpoints.NonFiniteError as e:
    raise cli.StageError(
        f"{e} at step {step}; stopped, the newest finite checkpoint "
        f"({checkpoints.newest_finite_checkpoint(output_dir) or 'none'}) is "
        f"the last good one; lower --learning_rate") from None
  except checkpoints.CheckpointWriteError as e:
    raise cli.StageError(f"{e}; make room or fix --output_dir, then rerun to "
                         f"resume from the newest checkpoint") from None


def prepare_output_dir(output_dir):
  """Creates output_dir, checks that files can be written there, and removes
  what interrupted saves left (checkpoints.remove_stale_temporaries).

  Raises:
    cli.StageError: output_dir cannot be created or written.
  """
  probe = cli.temporary_path(os.path.join(output_dir, "write_test"))
  try:
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("")
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise cli.StageError(f"--output_dir {output_dir}: cannot write there "
                         f"({cli.error_line(e)})") from None
  checkpoints.remove_stale_temporaries(output_dir)


def write_scalars(writer, group, values, step):
  """Writes {name: float} as TensorBoard scalars `group/name` at `step`.

  Uses the scalar plugin's event format directly, so that training does not
  need the tensorboard package installed (only viewing does).
  """
  metadata = tf.compat.v1.SummaryMetadata(
      plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
          plugin_name="scalars"))
  with writer.as_default():
    for name, value in values.items():
      tf.summary.write(f"{group}/{name}", tf.constant(value, tf.float32),
                       step=step, metadata=metadata)
  writer.flush()


@dataclasses.dataclass
class TrainSettings:
  """What the training loop needs from the flags."""
  num_train_steps: int
  iterations_per_loop: int
  save_checkpoints_steps: int
  keep_checkpoint_max: int
  global_batch_size: int
  output_dir: str
  chief: bool
  loss_options: dict
  use_xla: bool
  loss_scale: "DynamicLossScale | None" = None
  teacher: "OnlineTeacher | None" = None


def train(strategy, model, optimizer, schedule, dataset, start_step, settings):
  """Trains from start_step to settings.num_train_steps; returns the step.

  Checkpoints every save_checkpoints_steps and at the end (chief only); a
  log line and summaries after every loop call.

  Raises:
    cli.StageError: the loss or the gradients' global norm became NaN or
      infinite (names the step and the newest finite checkpoint, the last
      good one; nothing is saved then), or a save failed.
  """
  train_loop = make_train_loop(strategy, model, optimizer,
                               settings.global_batch_size,
                               settings.loss_options, settings.use_xla,
                               settings.loss_scale, settings.teacher)
  writer = (tf.summary.create_file_writer(settings.output_dir)
            if settings.chief else tf.summary.create_noop_writer())
  iterator = iter(dataset)
  total, every = settings.num_train_steps, settings.save_checkpoints_steps
  step = start_step
  loop_start = time.monotonic()
  while step < total:
    next_save = min((step // every + 1) * every, total)
    num_steps = min(settings.iterations_per_loop, next_save - step)
    started = time.monotonic()
    steps_run, terms = train_loop(iterator, tf.constant(num_steps))
    terms = {name: float(value) for name, value in terms.items()}
    step += int(steps_run)
    if not (math.isfinite(terms["loss"]) and
            math.isfinite(terms["global_norm"])):
      what, value = (("loss", terms["loss"]) if not math.isfinite(
          terms["loss"]) else ("gradients' global norm", terms["global_norm"]))
      last_good = checkpoints.newest_finite_checkpoint(settings.output_dir)
      raise cli.StageError(
          f"the {what} became {value} at step {step}; stopped, the newest "
          f"finite checkpoint ({last_good or 'none'}) is the last good one; "
          f"check the records or lower --learning_rate")
    now = time.monotonic()
    examples_per_second = (int(steps_run) * settings.global_batch_size /
                           (now - started))
    learning_rate = float(schedule(step))
    left = (total - step) * (now - loop_start) / (step - start_step)
    logging.info(
        "step %d/%d: loss %.4f (soft %.4f, hard mlm %.4f, next sentence %.4f),"
        " lr %.3g, global norm %.3g, %.1f examples/s, time left %s", step,
        total, terms["loss"], terms["soft_loss"], terms["hard_mlm_loss"],
        terms["next_sentence_loss"], learning_rate, terms["global_norm"],
        examples_per_second, cli.format_seconds(left))
    if settings.teacher is not None and "hidden_loss" in terms:
      logging.info("step %d: intermediate losses: embedding %.4f, hidden "
                   "%.4f, attention %.4f", step, terms["embedding_loss"],
                   terms["hidden_loss"], terms["attention_loss"])
    write_scalars(writer, "train", {
        **terms, "learning_rate": learning_rate,
        "examples_per_second": examples_per_second}, step)
    if settings.chief and (step % every == 0 or step == total):
      save(model, optimizer, settings.output_dir, settings.keep_checkpoint_max,
           settings.teacher and settings.teacher.projections)
  return step


def evaluate(strategy, model, dataset, num_batches, loss_options,
             teacher=None):
  """Runs num_batches evaluation batches -> evaluation_metrics."""
  eval_step = make_eval_step(strategy, model, loss_options, teacher)
  iterator = iter(dataset)
  sums = None
  for _ in range(num_batches):
    batch_sums = {name: value.numpy().astype(np.float64)
                  for name, value in eval_step(iterator).items()}
    sums = batch_sums if sums is None else {
        name: sums[name] + batch_sums[name] for name in sums}
  return losses.evaluation_metrics(sums, loss_options["soft_loss_weight"],
                                   loss_options["hard_mlm_loss_weight"])


def write_eval_results(metrics, step, output_dir):
  """Writes output_dir/eval_results.txt (`key = value`) and summaries."""
  results = {**metrics, "global_step": step}
  path = os.path.join(output_dir, "eval_results.txt")
  try:
    with cli.atomic_output(path) as tmp_path:
      with tf.io.gfile.GFile(tmp_path, "w") as f:
        for key in sorted(results):
          f.write(f"{key} = {results[key]}\n")
  except (tf.errors.OpError, OSError) as e:
    raise cli.StageError(f"{path}: cannot write ({cli.error_line(e)})") from None
  writer = tf.summary.create_file_writer(os.path.join(output_dir, "eval"))
  write_scalars(writer, "eval", metrics, step)
  logging.info("Wrote %s: %s", path,
               ", ".join(f"{k} = {v:.4f}" for k, v in sorted(metrics.items())))


def evaluated_step(output_dir):
  """global_step of output_dir/eval_results.txt, or None."""
  path = os.path.join(output_dir, "eval_results.txt")
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      key, _, value = line.partition(" = ")
      if key == "global_step":
        return int(value)
  return None


# ----------------------------------------------------------------------------

def read_config(path, max_seq_length):
  """The student's BertConfig, checked against --max_seq_length."""
  try:
    return modeling.read_config(path, max_seq_length, "student")
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


def find_input_files(input_file, eval_input_file, do_eval):
  """(training files, evaluation files) from the flags' globs."""
  train_files = cli.expand_input_files(input_file)
  if not do_eval:
    return train_files, []
  if eval_input_file:
    return train_files, cli.expand_input_files(eval_input_file,
                                               "--eval_input_file")
  logging.warning("No --eval_input_file: evaluating on the training files "
                  "(as the original did); the metrics are not held-out")
  return train_files, train_files


@dataclasses.dataclass
class LabelFlags:
  """The flags about the teacher's labels (None: read from the records)."""
  truncation_factor: "int | None" = None
  label_mode: "str | None" = None
  temperature: float = 1.0
  tail_mass_loss: bool = False
  soft_loss_weight: float = 1.0
  teacher_kl: bool = False


def check_inputs(train_files, eval_files, config, max_seq_length,
                 max_predictions_per_seq, label_flags):
  """Checks the first record of every input file against the flags.

  The label mode, k, N and T come from the records (stage IV wrote them);
  the flags that name them must agree. Evaluation files may hold another
  mode than the training files (the pipeline labels its held-out file in
  full mode, for teacher_kl).

  Returns:
    (training parse spec, evaluation parse spec, training LabelSettings).
  """
  settings = label_settings_of_files(train_files, max_predictions_per_seq,
                                     "--input_file")
  check_label_settings(settings, train_files[0], label_flags.label_mode,
                       label_flags.temperature, label_flags.tail_mass_loss,
                       label_flags.soft_loss_weight)
  spec = records_spec(settings, label_flags.truncation_factor, max_seq_length,
                      max_predictions_per_seq, config.vocab_size)
  check_input_files(train_files, spec, max_predictions_per_seq,
                    config.vocab_size)
  if settings:
    logging.info("Training records hold %s", describe(settings))
  eval_spec = spec
  if eval_files and eval_files != train_files:
    eval_settings = label_settings_of_files(
        eval_files, max_predictions_per_seq, "--eval_input_file")
    eval_spec = records_spec(eval_settings, None, max_seq_length,
                             max_predictions_per_seq, config.vocab_size)
    check_input_files(eval_files, eval_spec, max_predictions_per_seq,
                      config.vocab_size)
    logging.info("Evaluation records hold %s", describe(eval_settings))
  else:
    eval_settings = settings
  if label_flags.teacher_kl and eval_files and (
      not eval_settings or eval_settings.mode != records.FULL):
    raise cli.StageError(
        f"--teacher_kl needs evaluation records with the teacher's whole "
        f"distribution (stage IV --label_mode full); {eval_files[0]} holds "
        f"{describe(eval_settings)}")
  return spec, eval_spec, settings


def check_online_inputs(train_files, eval_files, config, max_seq_length,
                        max_predictions_per_seq):
  """check_inputs with the teacher in the loop: its labels replace any the
  records hold, so every file is read (and checked) as pretraining records.
  Returns the parse spec."""
  spec = feature_spec(max_seq_length, max_predictions_per_seq, 0,
                      config.vocab_size, with_teacher_labels=False)
  for files in {tuple(train_files), tuple(eval_files)}:
    check_input_files(files, spec, max_predictions_per_seq, config.vocab_size)
  return spec


def check_batch_sizes(replicas, **batch_sizes):
  """Each global batch size must split evenly across the replicas."""
  for flag, size in batch_sizes.items():
    if size % replicas:
      raise cli.StageError(f"--{flag} {size} does not split evenly across "
                           f"{replicas} replicas")


def use_xla(setting):
  """--use_xla as a bool: auto is on for GPUs and TPUs, off on CPUs (where
  bench/bench_distill.py measured XLA slower)."""
  if setting == "auto":
    return bool(tf.config.list_logical_devices("GPU") or
                tf.config.list_logical_devices("TPU"))
  return setting == "true"


_COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16,
                   "mixed_bfloat16": tf.bfloat16}


def build_student(strategy, config, precision, seed, schedule,
                  extra_variables=None):
  """The student model, its optimizer and (float16) loss scale, built under
  the strategy's scope. extra_variables ({name: variable}, e.g. the online
  projections) are trained by the same optimizer."""
  with strategy.scope():
    model = modeling.BertPretrainingModel(
        config, compute_dtype=_COMPUTE_DTYPES[precision], seed=seed)
    optimizer = optimization.AdamWeightDecay(learning_rate=schedule)
    optimizer.build({**model.variables_by_name(), **(extra_variables or {})})
    loss_scale = DynamicLossScale() if precision == "mixed_float16" else None
  return model, optimizer, loss_scale


_INTERMEDIATE_FLAGS = ("embedding_loss_weight", "hidden_loss_weight",
                       "hidden_loss", "attention_loss_weight",
                       "attention_loss")


def main(_):
  config = read_config(FLAGS.bert_config_file, FLAGS.max_seq_length)
  layer_map = parse_layer_map(FLAGS.init_layer_map, config)
  online = bool(FLAGS.teacher_config)
  if online:
    if FLAGS.preset:
      logging.info("--preset %s sets %s", FLAGS.preset,
                   apply_preset(FLAGS, FLAGS.preset))
    teacher_config = read_teacher_config(FLAGS.teacher_config,
                                         FLAGS.max_seq_length, config)
    options = intermediate_options(
        config, teacher_config, hidden_layer_map=FLAGS.hidden_layer_map,
        relation_heads=FLAGS.relation_heads,
        **{name: FLAGS[name].value for name in _INTERMEDIATE_FLAGS})
  train_files, eval_files = find_input_files(
      FLAGS.input_file, FLAGS.eval_input_file, FLAGS.do_eval)
  strategy = create_strategy(FLAGS.distribution_strategy, FLAGS.tpu)
  if online:
    spec = eval_spec = check_online_inputs(
        train_files, eval_files, config, FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq)
  else:
    spec, eval_spec, _ = check_inputs(
        train_files, eval_files, config, FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq, LabelFlags(
            FLAGS.truncation_factor, FLAGS.label_mode, FLAGS.temperature,
            FLAGS.tail_mass_loss, FLAGS.soft_loss_weight, FLAGS.teacher_kl))
  check_batch_sizes(strategy.num_replicas_in_sync,
                    train_batch_size=FLAGS.train_batch_size,
                    eval_batch_size=FLAGS.eval_batch_size)
  bounds = records.value_bounds(config.vocab_size, config.type_vocab_size,
                                FLAGS.max_seq_length)
  exclusions = (scan_for_skipping(
      {**{path: eval_spec for path in eval_files},
       **{path: spec for path in train_files}}, bounds)
                if FLAGS.skip_corrupt_records else None)
  chief = is_chief(strategy)
  logging.info("%s with %d replica(s), global batch %d, precision %s",
               type(strategy).__name__, strategy.num_replicas_in_sync,
               FLAGS.train_batch_size, FLAGS.precision)

  tf.random.set_seed(FLAGS.seed)  # dropout
  schedule = optimization.LinearWarmupLinearDecay(
      FLAGS.learning_rate, FLAGS.num_train_steps, FLAGS.num_warmup_steps)
  teacher = None
  if online:
    teacher = make_online_teacher(
        strategy, config, teacher_config, FLAGS.teacher_checkpoint,
        FLAGS.teacher_precision or FLAGS.precision, options, FLAGS.seed)
  projections = teacher.projections if teacher else {}
  model, optimizer, loss_scale = build_student(strategy, config,
                                               FLAGS.precision, FLAGS.seed,
                                               schedule, projections)
  if chief and FLAGS.do_train:
    prepare_output_dir(FLAGS.output_dir)
  step = restore_or_initialize(model, optimizer, FLAGS.output_dir,
                               FLAGS.init_checkpoint, layer_map, projections)
  check_workers_agree(strategy, step, FLAGS.output_dir)
  if chief and not step:
    tf.io.gfile.makedirs(FLAGS.output_dir)
    config.to_json_file(os.path.join(FLAGS.output_dir, "bert_config.json"))

  loss_options = {"temperature": FLAGS.temperature,
                  "soft_loss_weight": FLAGS.soft_loss_weight,
                  "hard_mlm_loss_weight": FLAGS.hard_mlm_loss_weight,
                  "tail_mass_loss": FLAGS.tail_mass_loss}
  if FLAGS.do_train and step >= FLAGS.num_train_steps:
    logging.info("Already trained: %s is at step %d of --num_train_steps %d; "
                 "nothing to train", FLAGS.output_dir, step,
                 FLAGS.num_train_steps)
  elif FLAGS.do_train:
    dataset = distributed_dataset(
        strategy, train_files, spec, FLAGS.train_batch_size,
        FLAGS.max_predictions_per_seq, is_training=True, seed=FLAGS.seed,
        steps_done=step, bounds=bounds, exclusions=exclusions)
    try:
      step = train(strategy, model, optimizer, schedule, dataset, step,
                   TrainSettings(
                       num_train_steps=FLAGS.num_train_steps,
                       iterations_per_loop=FLAGS.iterations_per_loop,
                       save_checkpoints_steps=FLAGS.save_checkpoints_steps,
                       keep_checkpoint_max=FLAGS.keep_checkpoint_max,
                       global_batch_size=FLAGS.train_batch_size,
                       output_dir=FLAGS.output_dir, chief=chief,
                       loss_options=loss_options,
                       use_xla=use_xla(FLAGS.use_xla), loss_scale=loss_scale,
                       teacher=teacher))
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise input_error(e, train_files, spec, bounds, "--input_file") from None

  if FLAGS.do_eval:
    if not step and not FLAGS.init_checkpoint:
      logging.warning("Evaluating an untrained student: %s holds no "
                      "checkpoint and no --init_checkpoint was given",
                      FLAGS.output_dir)
    if evaluated_step(FLAGS.output_dir) == step:
      logging.info("%s already holds the evaluation of step %d",
                   os.path.join(FLAGS.output_dir, "eval_results.txt"), step)
      return
    try:
      num_batches = count_batches(eval_files, FLAGS.eval_batch_size,
                                  FLAGS.max_eval_steps, exclusions)
      if not num_batches:
        raise cli.StageError(f"the evaluation files hold fewer than "
                             f"--eval_batch_size {FLAGS.eval_batch_size} "
                             f"records")
      dataset = distributed_dataset(
          strategy, eval_files, eval_spec, FLAGS.eval_batch_size,
          FLAGS.max_predictions_per_seq, is_training=False, seed=FLAGS.seed,
          bounds=bounds, exclusions=exclusions)
      metrics = evaluate(strategy, model, dataset, num_batches, loss_options,
                         teacher)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise input_error(e, eval_files, eval_spec, bounds, "--eval_input_file"
                        if FLAGS.eval_input_file else "--input_file") from None
    if chief:
      write_eval_results(metrics, step, FLAGS.output_dir)


if __name__ == "__main__":
  cli.run(main)
