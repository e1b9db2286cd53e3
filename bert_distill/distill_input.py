"""Stage V's input: the records distill.py reads, checked, parsed and batched.

check_inputs reads the label settings the files' first records hold
(label_settings.py), checks them against the flags and returns them: the
run's label mode, decided once; make_dataset and distributed_dataset turn
files into (per-replica) batches of dense features, the teacher's labels as
the value of their mode; --skip_corrupt_records goes through
scan_for_skipping and RecordExclusions. Defines no flags: distill.py passes
their values in.

Shapes: B = batch size (per replica), L = max_seq_length,
P = max_predictions_per_seq, k = truncation_factor, V = vocab_size.
"""

import dataclasses
import re

from absl import logging
import tensorflow as tf

from bert_distill import cli
from bert_distill import distribution
from bert_distill import label_settings
from bert_distill import progress_log
from bert_distill import records
from bert_distill import tfrecord

_SHUFFLE_BUFFER = 1000


def parse_batch(serialized, settings, max_seq_length, max_predictions_per_seq):
  """Parses a [B] batch of serialized records into model-ready tensors.

  Ids become int32 ([B, L], [B, P]), next_sentence_labels [B], and the
  teacher's labels (settings: a LabelSettings, or None for records without
  them) the value of their mode under label_settings.TEACHER_LABELS
  (label_settings.parse_labels).
  """
  parsed = tf.io.parse_example(serialized, label_settings.feature_spec(
      settings, max_seq_length, max_predictions_per_seq))
  features = {}
  for name in records.PRETRAINING_FEATURES:
    value = parsed[name]
    if value.dtype == tf.int64:
      value = tf.cast(value, tf.int32)
    if name == records.NEXT_SENTENCE_LABELS:
      value = tf.reshape(value, [-1])  # [B]
    features[name] = value
  if settings is not None:
    features[label_settings.TEACHER_LABELS] = label_settings.parse_labels(
        parsed, settings, max_predictions_per_seq)
  return features


def make_dataset(files, settings, batch_size, max_seq_length,
                 max_predictions_per_seq, *, is_training, seed=0,
                 num_shards=1, shard_index=0, skip_examples=0, bounds=None,
                 exclusions=None):
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

  settings: the files' LabelSettings (None: no teacher labels).

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
          parse_batch(serialized, settings, max_seq_length,
                      max_predictions_per_seq), bounds),
      num_parallel_calls=tf.data.AUTOTUNE)
  return distribution.prefetched(dataset)


def distributed_records_dataset(strategy, files, settings, global_batch_size,
                                max_seq_length, max_predictions_per_seq,
                                is_training, seed, steps_done=0, bounds=None,
                                exclusions=None):
  """make_dataset for every input pipeline of `strategy`, per-replica batches
  (distribution.distributed_dataset). steps_done: global steps already
  trained; settings, bounds, exclusions: as make_dataset's."""
  def make(batch_size, num_shards, shard_index, skip):
    return make_dataset(
        files, settings, batch_size, max_seq_length, max_predictions_per_seq,
        is_training=is_training, seed=seed, num_shards=num_shards,
        shard_index=shard_index, skip_examples=skip, bounds=bounds,
        exclusions=exclusions)
  return distribution.distributed_dataset(strategy, make, global_batch_size,
                                          steps_done)


def check_values(features, bounds):
  """Returns parse_batch's features, after an assertion that every value of
  records.value_bounds lies in range and every weighted masked position
  within its record's real tokens (the rule of records.invalid_records,
  which names the record when the host looks for it). bounds None: no check.
  """
  if bounds is None:
    return features
  checks = []
  for name, (limit, _) in bounds.items():
    values = features.get(name)
    if values is not None and values.dtype.is_integer:
      checks.append(tf.reduce_all((values >= 0) & (values < limit)))
  labels = features.get(label_settings.TEACHER_LABELS)
  if labels is not None and labels.mode != label_settings.FULL:
    limit, _ = bounds[records.TOP_K_INDICES]  # the vocabulary
    checks.append(tf.reduce_all((labels.ids >= 0) & (labels.ids < limit)))
  lengths = tf.reduce_sum(tf.cast(features[records.INPUT_MASK] != 0, tf.int32),
                          axis=1, keepdims=True)  # [B, 1]
  checks.append(tf.reduce_all(
      (features[records.MASKED_LM_POSITIONS] < lengths) |
      (features[records.MASKED_LM_WEIGHTS] <= 0)))
  with tf.control_dependencies([tf.debugging.Assert(
      tf.reduce_all(checks), ["a record holds values out of range"])]):
    return tf.nest.map_structure(tf.identity, features)


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
      # TensorFlow's message quotes its own (C++ status) text around the
      # reason: "truncated record at 4548' failed with Read less bytes...".
      framing = re.search(r"(truncated|corrupted) record at (\d+)", str(e))
      why = (f"{framing.group(1)} record at byte {framing.group(2)}"
             if framing else cli.error_line(e))
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
  progress = progress_log.Progress(
      "--skip_corrupt_records: reading the inputs once", total=len(files),
      unit="files")
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


def check_input_files(files, settings, max_seq_length, max_predictions_per_seq,
                      vocab_size):
  """Checks the first record of every file (holding the labels of
  `settings`, None for none): lengths and token ids.

  Raises:
    cli.StageError: one line naming the file, the feature and the mismatch.
  """
  id_features = (records.INPUT_IDS, records.MASKED_LM_IDS,
                 records.TOP_K_INDICES, records.SAMPLED_IDS,
                 records.SAMPLED_HEAD_IDS)
  spec = label_settings.feature_spec(settings, max_seq_length,
                                    max_predictions_per_seq)
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


def count_batches(files, batch_size, limit, exclusions=None):
  """Whole batches of `batch_size` in `files`, counting up to `limit`.

  Raises:
    tf.errors.DataLossError: a file is truncated or corrupt, as tf.data
      raises it (the callers name the bad record with input_error).
  """
  if exclusions is not None:
    return min(exclusions.kept(files) // batch_size, limit)
  try:
    count = tfrecord.count_records(files, limit * batch_size)
  except ValueError as e:
    raise tf.errors.DataLossError(None, None, str(e)) from None
  return count // batch_size


def find_train_and_eval_files(input_file, eval_input_file, do_eval):
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


@dataclasses.dataclass(frozen=True)
class LabelFlags:
  """The flags about the teacher's labels (None: read from the records)."""
  truncation_factor: "int | None" = None
  label_mode: "str | None" = None
  temperature: float = 1.0
  tail_mass_loss: bool = False
  soft_loss_weight: float = 1.0
  require_full_eval_labels: bool = False


def check_inputs(train_files, eval_files, config, max_seq_length,
                 max_predictions_per_seq, label_flags):
  """Checks the first record of every input file against the flags.

  The label mode, k, N and T come from the records (stage IV wrote them);
  the flags that name them must agree. Evaluation files may hold another
  mode than the training files (the pipeline labels its held-out file in
  full mode, for teacher_kl).

  Returns:
    (training LabelSettings, evaluation LabelSettings), each None for
    records without teacher labels: the run's label modes, decided here.
  """
  found = label_settings.of_files(train_files, max_predictions_per_seq,
                                  "--input_file")
  label_settings.check_for_training(
      found, train_files[0], label_flags.label_mode, label_flags.temperature,
      label_flags.tail_mass_loss, label_flags.soft_loss_weight)
  settings = label_settings.expected(found, label_flags.truncation_factor,
                                     config.vocab_size)
  check_input_files(train_files, settings, max_seq_length,
                    max_predictions_per_seq, config.vocab_size)
  if settings:
    logging.info("Training records hold %s", label_settings.describe(settings))
  eval_settings = settings
  if eval_files and eval_files != train_files:
    eval_settings = label_settings.expected(
        label_settings.of_files(eval_files, max_predictions_per_seq,
                                "--eval_input_file"), None, config.vocab_size)
    check_input_files(eval_files, eval_settings, max_seq_length,
                      max_predictions_per_seq, config.vocab_size)
    logging.info("Evaluation records hold %s",
                 label_settings.describe(eval_settings))
  if label_flags.require_full_eval_labels and eval_files and (
      not eval_settings or eval_settings.mode != label_settings.FULL):
    raise cli.StageError(
        f"--require_full_eval_labels needs evaluation records with the "
        f"teacher's whole distribution (stage IV --label_mode full); "
        f"{eval_files[0]} holds {label_settings.describe(eval_settings)}")
  return settings, eval_settings


def check_online_inputs(train_files, eval_files, config, max_seq_length,
                        max_predictions_per_seq):
  """check_inputs with the teacher in the loop: its labels replace any the
  records hold, so every file is read (and checked) as pretraining records.
  """
  for files in {tuple(train_files), tuple(eval_files)}:
    check_input_files(files, None, max_seq_length, max_predictions_per_seq,
                      config.vocab_size)
