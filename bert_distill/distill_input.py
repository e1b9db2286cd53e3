"""Stage V's input: the records distill.py reads, checked, parsed and batched.

feature_spec/records_spec say which features a file of each label mode holds
(records.py defines them); check_inputs reads the settings a teacher-label
file records and checks them against the flags; make_dataset and
distributed_dataset turn files into (per-replica) batches of dense features,
with the sparse top-k labels scattered to [B, P, V] only where the loss needs
them; --skip_corrupt_records goes through scan_for_skipping and
RecordExclusions. Defines no flags: distill.py passes their values in.

Shapes: B = batch size (per replica), L = max_seq_length,
P = max_predictions_per_seq, k = truncation_factor, V = vocab_size.
"""

import dataclasses

from absl import logging
import tensorflow as tf

from bert_distill import cli
from bert_distill import losses
from bert_distill import records

_SHUFFLE_BUFFER = 1000


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


def count_batches(files, batch_size, limit, exclusions=None):
  """Whole batches of `batch_size` in `files`, counting up to `limit`.

  Raises:
    tf.errors.DataLossError: a file is truncated or corrupt, as tf.data
      raises it (the callers name the bad record with input_error).
  """
  if exclusions is not None:
    return min(exclusions.kept(files) // batch_size, limit)
  try:
    count = records.count_records(files, limit * batch_size)
  except ValueError as e:
    raise tf.errors.DataLossError(None, None, str(e)) from None
  return count // batch_size


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
