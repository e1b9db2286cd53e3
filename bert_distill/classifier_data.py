"""Downstream tasks for run_classifier.py: TSV readers, features, records.

- Tasks: the GLUE TSV layouts (CoLA, SST-2, MRPC, STS-B, QQP, MNLI matched
  and mismatched, QNLI, RTE, WNLI) as Google's and GLUE's own readers read
  them, and a generic `tsv` task whose columns are named by the caller.
  `get_task` returns one; `TaskProcessor.get_examples` reads a split.
- Features: Google's convert_single_example rules ([CLS] a [SEP] b [SEP],
  _truncate_seq_pair, zero padding to max_seq_length).
- Records: the features cached as TFRecords (records.classifier_feature_spec)
  next to a small JSON of what they were made from, written atomically and
  reused by a rerun with the same inputs; the tf.data pipelines that read
  them.

Errors in the data raise ValueError with one line naming the file, the line
and the column or label at fault.

Shapes: B = batch size, L = max_seq_length.
"""

import dataclasses
import hashlib
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill import distribution
from bert_distill import example_codec
from bert_distill import file_io
from bert_distill import pretraining_data
from bert_distill import progress_log
from bert_distill import records
from bert_distill import tfrecord

EXAMPLE_INDEX = "example_index"  # added by the evaluation pipeline


@dataclasses.dataclass(frozen=True)
class InputExample:
  """One example: its id, one or two texts and its label (None in test)."""
  guid: str
  text_a: str
  text_b: "str | None" = None
  label: "str | None" = None


@dataclasses.dataclass(frozen=True)
class Columns:
  """Where a split's fields are: header names, or field numbers for files
  without a header row (CoLA's train and dev). `index` is the id GLUE's
  submission files use (the row number when absent)."""
  text_a: "str | int"
  text_b: "str | int | None" = None
  label: "str | int | None" = None
  index: "str | int | None" = None

  @property
  def has_header(self):
    return isinstance(self.text_a, str)


@dataclasses.dataclass(frozen=True)
class TaskProcessor:
  """A task's files, columns, labels and metrics.

  Attributes:
    name: the --task_name.
    labels: the label strings in class-index order (for `tsv`, those of the
      training file); () for a regression task.
    metrics: "accuracy", "f1_accuracy", "matthews" or "correlation" (the
      numbers GLUE reports for the task; see classifier_metrics.py).
    train, dev, test: (file name, Columns) of each split.
    submission_name: GLUE's name of the task's test predictions file.
  """
  name: str
  labels: tuple
  metrics: str
  train: tuple
  dev: tuple
  test: tuple
  submission_name: "str | None" = None

  @property
  def is_regression(self):
    return not self.labels

  @property
  def num_labels(self):
    return 1 if self.is_regression else len(self.labels)

  def split_file(self, data_dir, split):
    """The path of split ("train", "dev" or "test") in data_dir."""
    return os.path.join(data_dir, getattr(self, split)[0])

  def get_examples(self, data_dir, split, max_examples=None):
    """Reads a split's examples; labels are checked against self.labels.

    Raises:
      ValueError: the file is missing, lacks a column, a row has too few
        fields, or a label is not one of the task's (one line, names the
        file and line).
    """
    path = self.split_file(data_dir, split)
    columns = getattr(self, split)[1]
    examples = []
    for line_number, row in _rows(path, columns, self.name, split):
      fields = {name: _field(row, column, path, line_number, header=row.header)
                for name, column in dataclasses.asdict(columns).items()
                if column is not None}
      label = fields.get("label")
      if label is not None:
        _check_label(label, self, path, line_number)
      examples.append(InputExample(
          guid=fields.get("index", str(len(examples))),
          text_a=fields["text_a"], text_b=fields.get("text_b"), label=label))
      if max_examples and len(examples) >= max_examples:
        break
    if not examples:
      raise ValueError(f"{path}: holds no examples")
    return examples


def unlabeled_columns(task):
  """The header names an unlabeled file of the task holds: the training
  file's text columns (`sentence` for CoLA, whose files have no header)."""
  columns = task.train[1]
  return Columns(columns.text_a if columns.has_header else "sentence",
                 columns.text_b if columns.has_header else None)


def read_unlabeled_examples(task, path):
  """Reads unlabeled task text: a TSV with a header holding the task's text
  columns (unlabeled_columns); other columns are ignored. Labels are None.

  Raises:
    ValueError: one line naming the file (and line): missing, a column not
      in the header, a row with too few fields, or no examples.
  """
  columns = unlabeled_columns(task)
  examples = []
  for line_number, row in _rows(path, columns, task.name, "unlabeled"):
    examples.append(InputExample(
        guid=f"unlabeled-{len(examples)}",
        text_a=_field(row, columns.text_a, path, line_number, row.header),
        text_b=(None if columns.text_b is None else
                _field(row, columns.text_b, path, line_number, row.header))))
  if not examples:
    raise ValueError(f"{path}: holds no examples")
  return examples


class _Row(list):
  """A row's fields, with the file's header names (None without header)."""
  header = None


def _rows(path, columns, task_name, split):
  """Yields (line number, _Row) of the TSV at path, after its header.

  GLUE's files are tab-separated without quoting: fields never hold a tab,
  so the lines are split on tabs as they are (a quote is a character).
  """
  if not tf.io.gfile.exists(path):
    raise ValueError(f"{path}: no such file (the {split} file of task "
                     f"{task_name})")
  header = None
  with tf.io.gfile.GFile(path, "rb") as f:
    for line_number, raw_line in enumerate(f, start=1):
      try:
        line = raw_line.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}: line {line_number}: not UTF-8 text (byte "
                         f"{e.start} of the line)") from None
      if line_number == 1:
        line = line.lstrip("\ufeff")  # MRPC's files start with a BOM
        if columns.has_header:
          header = line.split("\t")
          _check_header(header, columns, path)
          continue
      if not line.strip():
        continue
      row = _Row(line.split("\t"))
      row.header = header
      yield line_number, row


def _check_header(header, columns, path):
  for name, column in dataclasses.asdict(columns).items():
    if column is None or name == "index":
      continue
    if column not in header:
      raise ValueError(f"{path}: no column '{column}' in the header (it has "
                       f"{', '.join(repr(h) for h in header)})")


def _field(row, column, path, line_number, header):
  """The value of `column` (a header name or field number) in a row."""
  if isinstance(column, str):
    if column not in header:  # only the optional index column gets here
      return str(line_number - 2)
    number = header.index(column)
  else:
    number = column
  if number >= len(row):
    raise ValueError(f"{path}: line {line_number} has {len(row)} field(s); "
                     f"column {column!r} is field {number + 1}")
  return row[number]


def _check_label(label, task, path, line_number):
  if task.is_regression:
    try:
      float(label)
    except ValueError:
      raise ValueError(f"{path}: line {line_number}: label {label!r} is not "
                       f"a number (task {task.name} is a regression)") from None
  elif label not in task.labels:
    seen = ("the training file's" if task.name == "tsv" else
            f"task {task.name}'s")
    raise ValueError(f"{path}: line {line_number}: label {label!r} is not "
                     f"among {seen} labels ({', '.join(task.labels)})")


# The GLUE tasks. Files with a header row are read by column name (so test
# files, which lack the label column, and files with extra columns read the
# same way); CoLA's train and dev files have no header.
def _glue(name, labels, metrics, train, dev, test, dev_file="dev.tsv",
          test_file="test.tsv", submission_name=None):
  return TaskProcessor(name=name, labels=labels, metrics=metrics,
                       train=("train.tsv", train), dev=(dev_file, dev),
                       test=(test_file, test),
                       submission_name=submission_name)


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_MNLI_LABELS = ("contradiction", "entailment", "neutral")  # Google's order
_MNLI = Columns("sentence1", "sentence2", "gold_label")
_MNLI_TEST = Columns("sentence1", "sentence2", index="index")
_PAIR = Columns("sentence1", "sentence2", "label")
_PAIR_TEST = Columns("sentence1", "sentence2", index="index")
_SENTENCE = Columns("sentence", label="label")
_SENTENCE_TEST = Columns("sentence", index="index")

GLUE_TASKS = {
    "cola": _glue("cola", _BINARY, "matthews", Columns(3, label=1),
                  Columns(3, label=1), _SENTENCE_TEST,
                  submission_name="CoLA.tsv"),
    "sst-2": _glue("sst-2", _BINARY, "accuracy", _SENTENCE, _SENTENCE,
                   _SENTENCE_TEST, submission_name="SST-2.tsv"),
    "mrpc": _glue("mrpc", _BINARY, "f1_accuracy",
                  Columns("#1 String", "#2 String", "Quality"),
                  Columns("#1 String", "#2 String", "Quality"),
                  Columns("#1 String", "#2 String", index="index"),
                  submission_name="MRPC.tsv"),
    "sts-b": _glue("sts-b", (), "correlation",
                   Columns("sentence1", "sentence2", "score"),
                   Columns("sentence1", "sentence2", "score"), _PAIR_TEST,
                   submission_name="STS-B.tsv"),
    "qqp": _glue("qqp", _BINARY, "f1_accuracy",
                 Columns("question1", "question2", "is_duplicate"),
                 Columns("question1", "question2", "is_duplicate"),
                 Columns("question1", "question2", index="id"),
                 submission_name="QQP.tsv"),
    "mnli": _glue("mnli", _MNLI_LABELS, "accuracy", _MNLI, _MNLI, _MNLI_TEST,
                  dev_file="dev_matched.tsv", test_file="test_matched.tsv",
                  submission_name="MNLI-m.tsv"),
    "mnli-mm": _glue("mnli-mm", _MNLI_LABELS, "accuracy", _MNLI, _MNLI,
                     _MNLI_TEST, dev_file="dev_mismatched.tsv",
                     test_file="test_mismatched.tsv",
                     submission_name="MNLI-mm.tsv"),
    "qnli": _glue("qnli", _NLI, "accuracy",
                  Columns("question", "sentence", "label"),
                  Columns("question", "sentence", "label"),
                  Columns("question", "sentence", index="index"),
                  submission_name="QNLI.tsv"),
    "rte": _glue("rte", _NLI, "accuracy", _PAIR, _PAIR, _PAIR_TEST,
                 submission_name="RTE.tsv"),
    "wnli": _glue("wnli", _BINARY, "accuracy", _PAIR, _PAIR, _PAIR_TEST,
                  submission_name="WNLI.tsv"),
}
TASK_NAMES = tuple(GLUE_TASKS) + ("tsv",)


def get_task(task_name, data_dir=None, text_a_column=None,
             text_b_column=None, label_column=None):
  """The TaskProcessor of --task_name (case and hyphens as GLUE or not:
  "SST-2", "sst2", "sst-2" are one task).

  For "tsv" the columns are header names of train.tsv, dev.tsv and test.tsv
  (test.tsv may lack the label column) and the labels are the distinct
  values of train.tsv's label column, sorted (numerically when all are
  numbers).

  Raises:
    ValueError: unknown task, or (tsv) a column not given or not in
      train.tsv's header.
  """
  key = task_name.lower().replace("_", "-")
  aliases = {"sst2": "sst-2", "stsb": "sts-b", "mnlimm": "mnli-mm",
             "mnli-m": "mnli"}
  key = aliases.get(key.replace("-", ""), aliases.get(key, key))
  if key in GLUE_TASKS:
    return GLUE_TASKS[key]
  if key != "tsv":
    raise ValueError(f"--task_name {task_name!r} is not a task; use one of "
                     f"{', '.join(TASK_NAMES)}")
  if not text_a_column or not label_column:
    raise ValueError("--task_name tsv needs --text_a_column and "
                     "--label_column (header names of the TSV files)")
  columns = Columns(text_a_column, text_b_column, label_column)
  test_columns = Columns(text_a_column, text_b_column, index="index")
  task = TaskProcessor(name="tsv", labels=(), metrics="accuracy",
                       train=("train.tsv", columns), dev=("dev.tsv", columns),
                       test=("test.tsv", test_columns))
  return dataclasses.replace(task, labels=_labels_of_training_file(task,
                                                                   data_dir))


def _labels_of_training_file(task, data_dir):
  path = task.split_file(data_dir, "train")
  labels = set()
  for line_number, row in _rows(path, task.train[1], task.name, "train"):
    labels.add(_field(row, task.train[1].label, path, line_number, row.header))
  if not labels:
    raise ValueError(f"{path}: holds no examples")
  try:
    return tuple(sorted(labels, key=float))
  except ValueError:
    return tuple(sorted(labels))


# ----------------------------------------------------------------------------
# Features (Google's convert_single_example).

def truncate_seq_pair(tokens_a, tokens_b, max_length):
  """Truncates a pair in place to max_length tokens in total, one token at a
  time from the longer (Google's _truncate_seq_pair: a longer sequence
  holds less information per token)."""
  while len(tokens_a) + len(tokens_b) > max_length:
    longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    longer.pop()


@dataclasses.dataclass
class TextStats:
  """What a split's features lost: the text max_seq_length cut (Google's
  features truncate without a word, and a --max_seq_length too short for
  the task would drop text unseen) and the tokens the vocabulary does not
  hold ([UNK])."""
  examples: int = 0
  truncated: int = 0
  tokens: int = 0
  tokens_cut: int = 0
  unknown: int = 0

  def add(self, tokens, kept):
    """Counts an example: its text tokens (a list), and how many were kept."""
    self.examples += 1
    self.tokens += len(tokens)
    self.unknown += tokens.count("[UNK]")
    if kept < len(tokens):
      self.truncated += 1
      self.tokens_cut += len(tokens) - kept

  def log(self, split, max_seq_length):
    if self.truncated:
      logging.warning(
          "%s: %d of %d examples (%.2g%%) are longer than --max_seq_length "
          "%d and were truncated: %d of the split's %d text tokens (%.2g%%) "
          "are not in the features", split, self.truncated, self.examples,
          100 * self.truncated / self.examples, max_seq_length,
          self.tokens_cut, self.tokens, 100 * self.tokens_cut / self.tokens)
    pretraining_data.warn_of_unknown_share(split, self.unknown, self.tokens)


def convert_single_example(example, task, max_seq_length, tokenizer,
                           stats=None):
  """One InputExample -> {feature name: list} of a classifier record.

  [CLS] a [SEP] (segment 0), then b [SEP] (segment 1) for pairs, truncated
  to max_seq_length (pairs by truncate_seq_pair), zero-padded. The label is
  the class index in task.labels (or the float for regression; 0 in test
  files, which have none). A TextStats given counts what was lost.
  """
  tokens_a = tokenizer.tokenize(example.text_a)
  tokens_b = tokenizer.tokenize(example.text_b) if (
      example.text_b is not None) else None
  # Counted before truncation cuts the lists.
  text_tokens = ([*tokens_a, *(tokens_b or ())] if stats is not None
                 else None)
  if tokens_b is not None:
    truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)  # [CLS], 2x[SEP]
  else:
    tokens_a = tokens_a[:max_seq_length - 2]
  if stats is not None:
    stats.add(text_tokens, len(tokens_a) + len(tokens_b or ()))
  tokens = ["[CLS]", *tokens_a, "[SEP]"]
  segment_ids = [0] * len(tokens)
  if tokens_b is not None:
    tokens += [*tokens_b, "[SEP]"]
    segment_ids += [1] * (len(tokens_b) + 1)
  input_ids = tokenizer.convert_tokens_to_ids(tokens)
  padding = [0] * (max_seq_length - len(input_ids))
  features = {
      records.INPUT_IDS: list(input_ids) + padding,
      records.INPUT_MASK: [1] * len(input_ids) + padding,
      records.SEGMENT_IDS: segment_ids + padding,
  }
  if task.is_regression:
    features[records.LABEL_VALUES] = [float(example.label or 0.0)]
  else:
    features[records.LABEL_IDS] = [
        task.labels.index(example.label) if example.label is not None else 0]
  features[records.IS_REAL_EXAMPLE] = [1]
  return features


def file_digest(path):
  """The sha256 (hex) of a file's bytes."""
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def feature_cache(examples, task, split, max_seq_length, tokenizer,
                  vocab_file, data_dir, output_dir, max_examples=None,
                  data_file=None):
  """Returns output_dir/<split>.tf_record, the examples' features, writing it
  unless an earlier run wrote it from the same inputs.

  data_file is the file the examples were read from when it is not the
  split's own (the unlabeled file of task distillation).

  `<split>.tf_record.json` beside it names what the records were made from
  (task, labels, the data and vocabulary files' sha256, max_seq_length,
  casing, example count); it is written after the records, both through
  file_io.atomic_output, so a run killed while writing leaves no cache and a
  cache with another recipe is made anew.
  """
  path = os.path.join(output_dir, f"{split}.tf_record")
  data_file = data_file or task.split_file(data_dir, split)
  recipe = {
      "task": task.name, "labels": list(task.labels), "split": split,
      "data_file": data_file, "data_sha256": file_digest(data_file),
      "vocab_sha256": file_digest(vocab_file),
      "do_lower_case": tokenizer.do_lower_case,
      "max_seq_length": max_seq_length, "max_examples": max_examples,
      "num_examples": len(examples),
  }
  recipe_path = path + ".json"
  if tf.io.gfile.exists(path) and tf.io.gfile.exists(recipe_path):
    with tf.io.gfile.GFile(recipe_path) as f:
      if json.load(f) == recipe:
        logging.info("Reusing %s (%d examples)", path, len(examples))
        return path
    logging.info("%s was made from other inputs or settings: writing it anew",
                 path)
  tf.io.gfile.makedirs(output_dir)
  progress = progress_log.Progress(f"features of {split}", total=len(examples),
                                   unit="examples", interval=10.0)
  stats = TextStats()
  with file_io.atomic_output(path) as tmp_path:
    with tfrecord.TFRecordWriter(tmp_path) as writer:
      for index, example in enumerate(examples):
        features = convert_single_example(example, task, max_seq_length,
                                          tokenizer, stats)
        if index < 3:
          _log_example(example, features, tokenizer)
        writer.write(example_codec.serialize_example(features))
        progress.update()
  progress.log(final=True)
  stats.log(split, max_seq_length)
  with file_io.atomic_output(recipe_path) as tmp_path:
    with tf.io.gfile.GFile(tmp_path, "w") as f:
      f.write(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
  return path


def _log_example(example, features, tokenizer):
  length = sum(features[records.INPUT_MASK])
  tokens = tokenizer.convert_ids_to_tokens(features[records.INPUT_IDS][:length])
  logging.info("*** Example %s: %s | label %r -> %s", example.guid,
               " ".join(tokens), example.label,
               features.get(records.LABEL_IDS,
                            features.get(records.LABEL_VALUES)))


# ----------------------------------------------------------------------------
# Input pipelines.

def _parse(serialized, spec):
  """Parsed features: ids int32 [B, L] (or [L]), label [B] (or scalar)."""
  parsed = tf.io.parse_example(serialized, spec)
  features = {}
  for name, value in parsed.items():
    if value.dtype == tf.int64:
      value = tf.cast(value, tf.int32)
    if name in (records.LABEL_IDS, records.LABEL_VALUES,
                records.IS_REAL_EXAMPLE, records.LABEL_WEIGHT):
      value = tf.squeeze(value, -1)
    features[name] = value
  return features


# Sequence features: [B, L], real tokens first, then zero padding.
SEQUENCE_FEATURES = (records.INPUT_IDS, records.INPUT_MASK, records.SEGMENT_IDS)
# trim_padding rounds a batch's length up to a multiple of this: few
# distinct shapes (XLA and TPUs compile one program per shape).
TRIM_MULTIPLE = 8
# --group_by_length sorts chunks of this many batches by length (as
# transformers' LengthGroupedSampler sorts its mega-batches of 50).
GROUP_BATCHES = 50


def trim_padding(features, multiple=TRIM_MULTIPLE):
  """The batch with its sequence features cut after the last position any
  of its examples uses, rounded up to `multiple` (at most their length L).

  Padded positions are masked out of attention and no classifier output
  reads one (the [CLS] pooler reads position 0, mean pooling weighs by
  input_mask), so the model computes the same values on the shorter batch,
  at a cost proportional to its length.
  features: {name: [B, L] or [B, ...]}; the SEQUENCE_FEATURES become [B, L'].
  """
  mask = features[records.INPUT_MASK]  # [B, L]
  longest = tf.reduce_max(tf.reduce_sum(mask, axis=1))
  length = tf.clip_by_value((longest + multiple - 1) // multiple * multiple,
                            multiple, tf.shape(mask)[1])
  return {name: value[:, :length] if name in SEQUENCE_FEATURES else value
          for name, value in features.items()}


def _sorted_by_length(features):
  """A chunk of parsed examples {name: [K, ...]}, shortest first (ties in
  their order)."""
  lengths = tf.reduce_sum(features[records.INPUT_MASK], axis=1)  # [K]
  by_length = tf.argsort(lengths, stable=True)
  return {name: tf.gather(value, by_length)
          for name, value in features.items()}


def _length_grouped_batches(features, batch_size, seed, chunk_index):
  """A chunk of GROUP_BATCHES * batch_size parsed examples as GROUP_BATCHES
  batches of similar lengths: sorted by length, cut into batches, the
  batches in an order drawn from (seed, chunk_index)."""
  batch_order = tf.argsort(tf.random.stateless_uniform(
      [GROUP_BATCHES], seed=tf.stack([tf.cast(seed, tf.int64), chunk_index])))
  def regroup(value):
    value = tf.reshape(value, tf.concat(
        [[GROUP_BATCHES, batch_size], tf.shape(value)[1:]], axis=0))
    return tf.gather(value, batch_order)
  return tf.data.Dataset.from_tensor_slices(
      {name: regroup(value)
       for name, value in _sorted_by_length(features).items()})


def train_dataset(path, spec, batch_size, seed, num_examples, num_shards=1,
                  shard_index=0, skip_examples=0, group_by_length=False,
                  trim=True):
  """Batches of training features, reshuffled every epoch, repeated forever.

  The order is a function of the seed alone; each input pipeline takes
  every num_shards-th example and skips the `skip_examples` it fed before a
  restart, so a resumed run sees the batches an uninterrupted one would.
  group_by_length: batches of similar lengths (_length_grouped_batches),
    which trim_padding then makes short.
  trim: cut each batch's padding (trim_padding).
  """
  dataset = tf.data.TFRecordDataset(path)
  dataset = dataset.shuffle(min(num_examples, 10000), seed=seed,
                            reshuffle_each_iteration=True).repeat()
  if num_shards > 1:
    dataset = dataset.shard(num_shards, shard_index)
  if group_by_length:
    dataset = dataset.batch(batch_size * GROUP_BATCHES, drop_remainder=True)
    dataset = dataset.map(lambda s: _parse(s, spec),
                          num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.enumerate().flat_map(
        lambda i, features: _length_grouped_batches(features, batch_size,
                                                    seed, i))
    # Whole batches: every chunk becomes the same batches on a rerun.
    dataset = dataset.skip(skip_examples // batch_size)
  else:
    if skip_examples:
      dataset = dataset.skip(skip_examples)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda s: _parse(s, spec),
                          num_parallel_calls=tf.data.AUTOTUNE)
  if trim:
    dataset = dataset.map(trim_padding)
  return distribution.prefetched(dataset)


def eval_dataset(path, spec, batch_size, num_examples, global_batch_size,
                 num_shards=1, shard_index=0, trim=True):
  """The examples with their EXAMPLE_INDEX, padded with is_real_example 0
  examples (index -1) to whole global batches, so every replica runs the
  same number of full batches; pipelines shard them.

  With trim, each batch's padding is cut (trim_padding) and each chunk of
  GROUP_BATCHES batches is sorted by length first, so that a batch holds
  examples of similar lengths (on the movie reviews, half the positions of
  file-order batches); without it, batches hold the examples in file order.
  Either way EXAMPLE_INDEX says where each example's output belongs.
  """
  dataset = tf.data.TFRecordDataset(path).enumerate()
  dataset = dataset.map(lambda i, s: {**_parse(s, spec), EXAMPLE_INDEX: i})
  num_padding = -num_examples % global_batch_size
  if num_padding:
    padding = {name: tf.zeros(value.shape, value.dtype)
               for name, value in dataset.element_spec.items()}
    padding[EXAMPLE_INDEX] = tf.constant(-1, tf.int64)
    dataset = dataset.concatenate(
        tf.data.Dataset.from_tensors(padding).repeat(num_padding))
  if num_shards > 1:
    dataset = dataset.shard(num_shards, shard_index)
  if trim:
    dataset = dataset.batch(batch_size * GROUP_BATCHES).flat_map(
        lambda chunk: tf.data.Dataset.from_tensor_slices(
            _sorted_by_length(chunk)).batch(batch_size))
    dataset = dataset.map(trim_padding)
  else:
    dataset = dataset.batch(batch_size)
  return distribution.prefetched(dataset)


def labels_array(examples, task):
  """The examples' labels as the metrics take them: class indices (int64)
  or floats for regression. [num_examples]"""
  if task.is_regression:
    return np.array([float(e.label) for e in examples], np.float64)
  return np.array([task.labels.index(e.label) for e in examples], np.int64)
