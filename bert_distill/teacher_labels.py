"""Stage IV's work: the teacher run over pretraining records, labels written.

read_labelling_teacher_config checks what the flags ask for
(label_settings.from_flags the labels); plan_outputs pairs input files with
output files (and skips finished ones); TeacherLabeler is the compiled
forward pass, softmax and top-k (or the full distribution,
or the sampled draws) at the masked positions; write_teacher_labels reads a
file in length-sorted windows, labels each batch cut to its longest real
sequence and writes every record again with its labels, in input order.
Defines no flags: extract_teacher_labels_truncated.py passes their values in.

Shape legend: B = batch, S = sequence length (trimmed), L = max_seq_length,
P = max_predictions_per_seq, V = vocab size, K = truncation_factor.
"""

from concurrent import futures
import glob
import hashlib
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill import cli
from bert_distill import distribution
from bert_distill import example_codec
from bert_distill import file_io
from bert_distill import label_provenance
from bert_distill import label_settings
from bert_distill import model_config
from bert_distill import progress_log
from bert_distill import records
from bert_distill import tfrecord
import tokenization

def read_labelling_teacher_config(path, max_seq_length, truncation_factor,
                                  vocab_file=None):
  """Reads the teacher's BertConfig and checks L, k and the vocab against it."""
  try:
    config = model_config.read_config(path, max_seq_length, "teacher")
  except ValueError as e:
    raise cli.StageError(f"--bert_config_file {e}") from None
  if truncation_factor > config.vocab_size:
    raise cli.StageError(
        f"--truncation_factor {truncation_factor} exceeds the teacher's "
        f"vocab_size {config.vocab_size} ({path})")
  if vocab_file:
    if not tf.io.gfile.exists(vocab_file):
      raise cli.StageError(f"--vocab_file: {vocab_file} does not exist")
    try:
      vocab = tokenization.load_vocab(vocab_file)
    except ValueError as e:  # not UTF-8: names the file and the line
      raise cli.StageError(f"--vocab_file {e}") from None
    vocab_size = max(vocab.values(), default=-1) + 1  # its lines
    if vocab_size != config.vocab_size:
      raise cli.StageError(
          f"--vocab_file {vocab_file} has {vocab_size} tokens but "
          f"{path} says vocab_size {config.vocab_size}; give the teacher's "
          f"own vocab and config")
  return config


def plan_outputs(input_files, output_file, output_dir, sources=None):
  """Returns [(input files, output path)] still to do, in input order.

  With output_dir each input gets the output of the same base name there.
  An output that exists (complete: outputs only ever appear under their
  final name) is skipped when its record says it was made from its input as
  it is now and from `sources` (label_sources); otherwise it is removed, with
  the reason logged, and made again. sources None skips every existing
  output.
  """
  real_inputs = {}
  for path in input_files:
    real = os.path.realpath(path)
    if real in real_inputs:
      raise cli.StageError(f"--input_file names {path} twice (as "
                           f"{real_inputs[real]} too): its records would be "
                           f"labelled twice")
    real_inputs[real] = path
  if output_file:
    if tf.io.gfile.isdir(output_file):
      raise cli.StageError(f"--output_file {output_file} is a directory; "
                           f"give a file name (or use --output_dir)")
    if os.path.realpath(output_file) in real_inputs:
      raise cli.StageError(f"--output_file {output_file} is an input "
                           f"(--input_file); the labels would replace the "
                           f"records they are made from")
    return [(input_files, output_file)]
  try:
    tf.io.gfile.makedirs(output_dir)
  except (tf.errors.OpError, OSError) as e:
    raise cli.StageError(f"--output_dir {output_dir}: cannot create it "
                         f"({cli.error_line(e)})") from None
  plan, seen = [], {}
  for path in input_files:
    output = os.path.join(output_dir, os.path.basename(path))
    if os.path.abspath(output) == os.path.abspath(path):
      raise cli.StageError(f"--output_dir {output_dir} holds the input {path}; "
                           f"choose another directory")
    if output in seen:
      raise cli.StageError(f"inputs {seen[output]} and {path} share a base "
                           f"name; --output_dir needs distinct names")
    seen[output] = path
    if sources is None and tf.io.gfile.exists(output):
      logging.info("Skipping %s: %s is complete", path, output)
      continue
    if sources is not None:
      reason = label_provenance.why_not_complete(output, label_provenance.made_from([path], sources))
      if reason is None:
        logging.info("Skipping %s: %s is complete, made from it with this "
                     "teacher and these settings", path, output)
        continue
      if reason != "missing":
        logging.info("%s: %s; made again", output, reason)
        label_provenance.remove_output(output)
    plan.append(([path], output))
  return plan


def check_input_lengths(input_files, feature_spec, max_predictions_per_seq):
  """Checks the first record of each input against the lengths of the flags."""
  for path in input_files:
    try:
      first = records.check_record_lengths(path, feature_spec,
                                           max_predictions_per_seq)
    except ValueError as e:
      raise cli.StageError(str(e)) from None
    if first is None:
      logging.warning("%s holds no records: its labels file will be empty",
                      path)


class NonFiniteLogitsError(ValueError):
  """The teacher's logits hold NaN or infinity: no label may be made of them."""


class TeacherLabeler:
  """The teacher's softmax at the masked positions: top-k, whole or sampled.

  Calling it with a batch (input_ids, input_mask, segment_ids,
  masked_lm_positions), int32 [B, S] x 3 and [B, P], returns NumPy arrays:
  (probs [B, P, K] float32 descending, ids [B, P, K] int32) for top_k,
  (probs [B, P, V],) for full. For sampled the batch also holds uniforms
  float32 [B, P, N] (sample_uniforms) and the result is
  (ids [B, P, N] int32,): draw n is the token where the cumulative softmax
  at temperature T first exceeds uniform n (inverse-CDF sampling, on the
  device, so only the ids leave it); with head_k > 0 the result is
  (head probs [B, P, h], head ids [B, P, h], ids [B, P, N]), the draws made
  from the softmax without its h most probable tokens. B must be a multiple
  of the replica count. Logits holding NaN or infinity raise
  NonFiniteLogitsError instead: a broken teacher must not write NaN
  probabilities (top_k, full) or all-zero draws (sampled).
  """

  def __init__(self, model, truncation_factor, strategy, use_xla=True,
               label_mode=label_settings.TOP_K, temperature=1.0, head_k=0):
    self._model = model
    self._k = truncation_factor
    self._head_k = head_k
    self._mode = label_settings.mode_of(truncation_factor, label_mode)
    self._temperature = temperature
    self._strategy = strategy
    if use_xla and strategy.num_replicas_in_sync > 1:
      # XLA under MirroredStrategy is not verified here; one process per GPU
      # (--num_shards) keeps XLA and needs no cross-device work at all.
      logging.warning("%d replicas: running without XLA; for speed run one "
                      "process per GPU with --num_shards/--shard_index",
                      strategy.num_replicas_in_sync)
      use_xla = False
    # One compiled program per (B, S) shape; callers limit how many S occur.
    # The model and _labels have no tensor-dependent Python control flow, so
    # AutoGraph need not convert them (converting costs seconds of start-up).
    self._replica_step = tf.function(self._labels, jit_compile=use_xla,
                                     reduce_retracing=True, autograph=False)

  def _labels(self, input_ids, input_mask, segment_ids, masked_lm_positions,
              uniforms=None):
    logits = self._model(input_ids, input_mask, segment_ids,
                         masked_lm_positions,
                         training=False)["masked_lm_logits"]  # [B, P, V]
    # A bfloat16 teacher's logits carry 8 significant bits; the softmax over
    # V tokens, top-k and the cumulative sums of the draws need float32's.
    logits = tf.cast(logits, tf.float32)
    # [1], so that the replicas' flags concatenate as the labels do.
    finite = tf.reshape(tf.reduce_all(tf.math.is_finite(logits)), [1])
    return self._labels_of_logits(logits, uniforms) + (finite,)

  def _labels_of_logits(self, logits, uniforms):
    if self._mode == label_settings.SAMPLED:
      return self._draws(logits, uniforms)
    probs = tf.nn.softmax(logits, axis=-1)  # float32 over the full vocabulary
    if self._mode == label_settings.FULL:
      return (probs,)
    top = tf.math.top_k(probs, k=self._k, sorted=True)
    return top.values, top.indices  # [B, P, K] each

  def _draws(self, logits, uniforms):
    """Inverse-CDF draws: [B, P, V] logits, [B, P, N] uniforms -> [B, P, N]
    ids, after the exact head ([B, P, h] probs and ids) when head_k > 0."""
    vocab_size = logits.shape[-1]
    probs = tf.nn.softmax(logits / self._temperature, axis=-1)  # [B, P, V]
    head = ()
    if self._head_k:
      top = tf.math.top_k(probs, k=self._head_k, sorted=True)  # [B, P, h]
      head = (top.values, top.indices)
      # The draws come from the rest: the head's probabilities set to 0.
      for j in range(self._head_k):
        probs *= 1.0 - tf.one_hot(top.indices[..., j], vocab_size,
                                  dtype=probs.dtype)
    cdf = tf.reshape(tf.cumsum(probs, axis=-1), [-1, vocab_size])  # [B*P, V]
    num_samples = uniforms.shape[-1]
    # Scaled to the last cumulative value, so float32 rounding of the sum
    # cannot push a draw past the vocabulary.
    targets = tf.reshape(uniforms, [-1, num_samples]) * cdf[:, -1:]
    ids = tf.searchsorted(cdf, targets, side="right", out_type=tf.int32)
    ids = tf.minimum(ids, vocab_size - 1)  # [B*P, N]
    return head + (tf.reshape(ids, tf.shape(uniforms)),)

  def __call__(self, inputs):
    *labels, finite = self._run(inputs)
    if not finite.all():
      raise NonFiniteLogitsError("the teacher's logits hold NaN or infinity")
    return tuple(labels)

  def _run(self, inputs):
    inputs = [tf.convert_to_tensor(t) for t in inputs]
    replicas = self._strategy.num_replicas_in_sync
    if replicas == 1:
      return tuple(t.numpy() for t in self._replica_step(*inputs))
    per_replica = int(inputs[0].shape[0]) // replicas

    devices = self._strategy.extended.worker_devices

    def replica_slice(context):
      replica = context.replica_id_in_sync_group
      start = replica * per_replica
      with tf.device(devices[replica]):  # each replica's rows on its device
        return tuple(tf.identity(t[start:start + per_replica]) for t in inputs)

    outputs = self._strategy.run(
        self._replica_step,
        args=self._strategy.experimental_distribute_values_from_function(
            replica_slice))
    # Replica r holds rows [r * per_replica, (r + 1) * per_replica).
    return tuple(
        np.concatenate([t.numpy() for t in
                        self._strategy.experimental_local_results(output)])
        for output in outputs)


def read_windows(path, feature_spec, window_size, max_records=0):
  """A tf.data pipeline over one file: parsed windows of examples, in order.

  Yields {name: [w, ...] tensor} with w = window_size (fewer at the end),
  parsed in parallel and prefetched while the teacher runs; only the first
  max_records records when that is > 0.
  """

  @tf.autograph.experimental.do_not_convert
  def parse(serialized):  # [w] strings
    return tf.io.parse_example(serialized, feature_spec)

  dataset = tf.data.TFRecordDataset(path, buffer_size=16 << 20)
  if max_records:
    dataset = dataset.take(max_records)
  dataset = dataset.batch(window_size)
  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  return distribution.prefetched(dataset, buffer_size=2)


def real_extents(input_mask, masked_lm_positions):
  """Columns each example needs: through its last real token and its last
  masked position.  [w, L], [w, P] -> [w]"""
  seq_length = input_mask.shape[1]
  last_real = seq_length - np.argmax(input_mask[:, ::-1] != 0, axis=1)
  last_real[~np.any(input_mask != 0, axis=1)] = 0
  return np.maximum(last_real, masked_lm_positions.max(axis=1) + 1)


def label_window(labeler, features, batch_size, length_multiple,
                 uniforms=None):
  """Runs the teacher over a window of examples, similar lengths together.

  The window is sorted by real length and cut into batches of batch_size;
  each batch is cut to its longest real sequence rounded up to
  length_multiple (0: never cut) and padded with empty rows to batch_size,
  so XLA sees few shapes. Padding columns add exactly nothing (masked
  attention weights are exp(-10000) = 0), so results equal full length.

  Args:
    labeler: a TeacherLabeler.
    features: {name: np.ndarray [w, ...]} parsed pretraining features.
    batch_size: B.
    length_multiple: see above.
    uniforms: sampled mode: float32 [w, P, N], each record's own uniforms.

  Returns:
    The labeler's outputs for the window in input order, each [w, P, ...].
  """
  inputs = [features[name].astype(np.int32) for name in (
      records.INPUT_IDS, records.INPUT_MASK, records.SEGMENT_IDS,
      records.MASKED_LM_POSITIONS)]
  if uniforms is not None:
    inputs.append(uniforms)
  count, seq_length = inputs[0].shape
  extents = real_extents(inputs[1], inputs[3])
  order = np.argsort(extents, kind="stable")
  outputs = None
  for start in range(0, count, batch_size):
    rows = order[start:start + batch_size]
    length = seq_length
    if length_multiple:
      length = min(seq_length,
                   -(-int(extents[rows].max()) // length_multiple) *
                   length_multiple)
    batch = [t[rows, :length] for t in inputs[:3]] + [t[rows] for t in
                                                      inputs[3:]]
    batch = [np.pad(t, [(0, batch_size - len(rows))] + [(0, 0)] * (t.ndim - 1))
             for t in batch]
    labels = labeler(batch)  # each [B, P, ...]
    if outputs is None:
      outputs = [np.empty((count,) + l.shape[1:], l.dtype) for l in labels]
    for output, label in zip(outputs, labels):
      output[rows] = label[:len(rows)]
  return outputs


class _RecordFile:
  """A tfrecord.TFRecordWriter whose failures (no such folder, disk full,
  ...) raise one-line StageErrors naming the output; a context manager that
  closes it."""

  def __init__(self, tmp_path, output_path):
    self._output_path = output_path
    self._writer = self._guarded(tfrecord.TFRecordWriter, tmp_path)

  def _guarded(self, function, *args):
    try:
      return function(*args)
    except (tf.errors.OpError, OSError) as e:
      raise cli.StageError(f"{self._output_path}: cannot write "
                           f"({cli.error_line(e)}); check the space and "
                           f"permissions there") from None

  def write(self, serialized):
    self._guarded(self._writer.write, serialized)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, traceback):
    if exc_type is None:
      self._guarded(self._writer.close)
      return
    try:  # already failing: the first error is the one to report
      self._writer.close()
    except (tf.errors.OpError, OSError):
      pass


# ---------------------------------------------------------------------------
# The sampled mode's draws: a counter-based generator, so a record's draws do
# not depend on batching, sorting or sharding.


def _splitmix64(x):
  """SplitMix64's finaliser on a uint64 array: a counter-based generator
  (each output a function of its input alone)."""
  with np.errstate(over="ignore"):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def sample_key(seed, file_name):
  """The 64-bit key of one input file's draws: its base name and the seed
  (so shards, output folders and reruns agree)."""
  digest = hashlib.sha256(
      f"{int(seed)}:{os.path.basename(file_name)}".encode()).digest()
  return int.from_bytes(digest[:8], "little")


def sample_uniforms(key, record_indices, max_predictions_per_seq, num_samples):
  """The uniforms in [0, 1) behind the draws of some records of a file.

  Element [r, p, n] is a function of (key, record_indices[r], p, n) alone:
  the same whatever batch, window or shard the record falls into.

  Args:
    key: sample_key of the file.
    record_indices: int [w], the records' indices within their file.
    max_predictions_per_seq: P.
    num_samples: N.

  Returns:
    float32 [w, P, N], each below 1.
  """
  records_ = np.asarray(record_indices, np.uint64)[:, None, None]
  positions = np.arange(max_predictions_per_seq, dtype=np.uint64)[None, :, None]
  draws = np.arange(num_samples, dtype=np.uint64)[None, None, :]
  with np.errstate(over="ignore"):
    state = _splitmix64(np.uint64(key) ^ _splitmix64(records_))
    state = _splitmix64(state ^ ((positions << np.uint64(32)) | draws))
  uniforms = (state >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
  return uniforms  # 24 random bits: exact in float32, at most 1 - 2^-24


def compact_samples(sampled_ids, k):
  """The distinct ids of each row of draws, most frequent first, in k slots.

  Ties in count go to the id drawn first: the draws are independent, so
  among ids drawn equally often that is a uniformly random one, and the k
  kept after an overflow are not biased towards any part of the
  vocabulary. Rows with more than k distinct ids keep the k most frequent
  (the reader renormalises by the kept counts).

  Args:
    sampled_ids: int [R, N], N draws per row, in draw order.
    k: slots per row.

  Returns:
    (ids int64 [R, k], counts int64 [R, k], dropped int64 [R]: draws not
    kept), padded with id 0 and count 0.
  """
  rows, n = sampled_ids.shape
  draws = sampled_ids.astype(np.int64)
  order = np.argsort(draws, axis=1, kind="stable")  # [R, N]
  ordered = np.take_along_axis(draws, order, axis=1)
  starts = np.ones((rows, n), bool)
  starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
  # Run r of a row: its id, count and first draw, placed at index r.
  run_index = np.cumsum(starts, axis=1) - 1  # [R, N]
  row_index = np.repeat(np.arange(rows), n).reshape(rows, n)
  counts = np.zeros((rows, n), np.int64)
  np.add.at(counts, (row_index, run_index), 1)
  run_ids = np.zeros((rows, n), np.int64)
  run_ids[row_index[starts], run_index[starts]] = ordered[starts]
  first_draw = np.full((rows, n), n, np.int64)  # empty runs: last
  # The stable sort puts each id's earliest draw first in its run.
  first_draw[row_index[starts], run_index[starts]] = order[starts]
  rank = np.lexsort((first_draw, -counts), axis=1)  # most frequent first
  counts = np.take_along_axis(counts, rank, axis=1)
  run_ids = np.take_along_axis(run_ids, rank, axis=1)
  if n < k:
    counts = np.pad(counts, [(0, 0), (0, k - n)])
    run_ids = np.pad(run_ids, [(0, 0), (0, k - n)])
  dropped = n - counts[:, :k].sum(axis=1)
  return run_ids[:, :k], counts[:, :k], dropped



class SampleStats:
  """Counts of the sampled mode: how often k slots were too few."""

  def __init__(self):
    self.positions = 0      # real masked positions labelled
    self.kept = 0           # distinct ids kept, summed over them
    self.overflowed = 0     # positions that drew more than k distinct ids
    self.dropped = 0.0      # mass dropped there (draws not kept / N), summed

  def add(self, counts, dropped, real, num_samples):
    """counts int [R, k], dropped int [R], real bool [R] (weight > 0)."""
    self.positions += int(real.sum())
    self.kept += int((counts[real] > 0).sum())
    self.overflowed += int((dropped[real] > 0).sum())
    self.dropped += float(dropped[real].sum()) / num_samples

  def summary(self, k):
    if not self.positions:
      return "sampled: no masked positions"
    return (f"sampled: {self.kept / self.positions:.2f} distinct ids kept "
            f"per masked position; {self.overflowed} of {self.positions} "
            f"positions "
            f"({100.0 * self.overflowed / self.positions:.1f}%) drew more than "
            f"k = {k} distinct ids and kept the {k} most frequent, "
            f"renormalised, dropping {100.0 * self.dropped / self.positions:.2f}"
            f"% of all draws' mass")


def sampled_labels(labeler, features, batch_size, length_multiple, settings,
                   key, first_record, stats):
  """One window's sampled labels: [w, P*k] ids and counts, [w, 1] N and T,
  then [w, P*h] head probs and ids when settings.head_k > 0.

  Padding positions (masked_lm_weights 0) hold id 0 and count 0 (and head
  probability 0).
  """
  weights = features[records.MASKED_LM_WEIGHTS]  # [w, P]
  count, preds = weights.shape
  uniforms = sample_uniforms(
      key, np.arange(first_record, first_record + count), preds,
      settings.num_samples)  # [w, P, N]
  *head, draws = label_window(labeler, features, batch_size,
                              length_multiple, uniforms)  # [w, P, N]
  ids, counts, dropped = compact_samples(
      draws.reshape(count * preds, -1), settings.k)  # [w*P, k] x 2, [w*P]
  real = weights.reshape(-1) > 0
  ids[~real] = 0
  counts[~real] = 0
  stats.add(counts, dropped, real, settings.num_samples)
  labels = (ids.reshape(count, -1), counts.reshape(count, -1),
            np.full((count, 1), settings.num_samples, np.int64),
            np.full((count, 1), settings.temperature, np.float32))
  if head:
    head_probs, head_ids = head  # [w, P, h] each
    head_probs[weights == 0] = 0.0
    head_ids[weights == 0] = 0
    labels += (head_probs.reshape(count, -1), head_ids.reshape(count, -1))
  return labels


def write_teacher_labels(labeler, input_files, output_path, feature_spec,
                         truncation_factor, batch_size, length_multiple,
                         sort_batches, bounds, progress_interval=30.0,
                         settings=None, seed=0, max_records=0,
                         sources=None):
  """Labels every record of `input_files`, in order, into `output_path`.

  Reads windows of sort_batches * batch_size records (one batch in full
  mode, whose labels are large), checks every record's values against
  `bounds` (records.value_bounds of the teacher), labels each window with
  label_window and writes it in input order. Encoding and writing a window
  run on a second thread while the teacher computes the next. The output
  appears under its final name only when complete.

  settings: a label_settings.LabelSettings; None means top_k with
  truncation_factor (full when it is 0). seed: of the sampled draws.
  max_records: > 0 labels only the first max_records records of each file.
  sources: label_sources of the run; given, `<output>.made_from.json`
  records them and the inputs' identity once the output is complete.

  Raises:
    cli.StageError: a record is unreadable or out of range (names the file
      and the record), or the output cannot be written (names it).

  Returns:
    The number of records written.
  """
  if settings is None:
    settings = label_settings.LabelSettings(
        label_settings.mode_of(truncation_factor), truncation_factor)
  mode = settings.mode
  label_names = settings.feature_names()
  encoder = example_codec.ExampleBatchEncoder(records.PRETRAINING_FEATURES +
                                        label_names)
  window_size = batch_size * (1 if mode == label_settings.FULL else
                              sort_batches)
  stats = SampleStats()
  try:  # each file read once, and so checked, before any output is opened
    counts = [tfrecord.count_records([path], check_data=True)
              for path in input_files]
  except ValueError as e:
    raise cli.StageError(str(e)) from None
  total = sum(min(c, max_records) if max_records else c for c in counts)
  file_io.remove_stale_temporaries(glob.escape(output_path))
  file_io.remove_stale_temporaries(glob.escape(file_io.made_from_path(output_path)))
  if sources is not None:
    record = label_provenance.made_from(input_files, sources)
    # Never an old record beside a new output: without one, a rerun redoes it.
    if tf.io.gfile.exists(file_io.made_from_path(output_path)):
      tf.io.gfile.remove(file_io.made_from_path(output_path))
  progress = progress_log.Progress(
      f"teacher labels -> {output_path}", total=total, unit="records",
      interval=progress_interval)

  def write(writer, features, labels):
    for name, values in zip(label_names, labels):
      features[name] = values.reshape(values.shape[0], -1)  # [w, P*K]
    for serialized in encoder.encode(features):
      writer.write(serialized)

  with file_io.atomic_output(output_path) as tmp_path, \
       _RecordFile(tmp_path, output_path) as writer, \
       futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = None
    for path in input_files:
      windows = iter(read_windows(path, feature_spec, window_size,
                                  max_records))
      first_record = 0
      while True:
        try:
          features = {name: t.numpy() for name, t in next(windows).items()}
        except StopIteration:
          break
        except tf.errors.OpError as e:
          raise cli.StageError(
              f"{path}: bad record ({cli.error_line(e)}); check "
              f"--max_seq_length and --max_predictions_per_seq") from None
        check_window_values(path, first_record, features, bounds)
        try:
          if mode == label_settings.SAMPLED:
            labels = sampled_labels(labeler, features, batch_size,
                                    length_multiple, settings,
                                    sample_key(seed, path),
                                    first_record, stats)
          else:
            labels = label_window(labeler, features, batch_size,
                                  length_multiple)
        except NonFiniteLogitsError as e:
          raise NonFiniteLogitsError(
              f"{e} at {path} records {first_record}.."
              f"{first_record + len(features[records.INPUT_IDS]) - 1}; "
              f"nothing of {output_path} written") from None
        first_record += len(features[records.INPUT_IDS])
        if pending is not None:
          pending.result()
        if progress.done == 0:
          _log_first_example(features, labels)
        pending = pool.submit(write, writer, features, labels)
        progress.update(len(features[records.INPUT_IDS]))
    if pending is not None:
      pending.result()
  if sources is not None:
    label_provenance.write_made_from(output_path, record)
  progress.log(final=True)
  if mode == label_settings.SAMPLED:
    logging.info("%s: %s", output_path, stats.summary(settings.k))
  return progress.done


def check_window_values(path, first_record, features, bounds):
  """Raises StageError unless every record of a window has ids, segment ids
  and masked positions in range (records.invalid_records): on a GPU or under
  XLA an index beyond a table silently reads zeros or a clamped row."""
  bad = records.invalid_records(features, bounds)
  if bad:
    row, reason = next(iter(bad.items()))
    raise cli.StageError(
        f"{path}: record {first_record + row}: {reason} (the teacher's "
        f"config and the flags); were the records made with the teacher's "
        f"vocab and these --max_seq_length/--max_predictions_per_seq?")


def _log_first_example(features, labels):
  """Logs the first example's masked positions and the teacher's choices."""
  positions = features[records.MASKED_LM_POSITIONS][0]
  logging.info("First example: input_ids %s ...",
               features[records.INPUT_IDS][0][:16].tolist())
  for p in range(min(3, len(positions))):
    if len(labels) >= 4:  # sampled
      k = labels[0].shape[1] // len(positions)
      logging.info("  position %d: sampled ids %s counts %s", positions[p],
                   labels[0][0, p * k:p * k + 5].tolist(),
                   labels[1][0, p * k:p * k + 5].tolist())
    elif len(labels) == 2:
      logging.info("  position %d: top ids %s probs %s", positions[p],
                   labels[1][0, p, :5].tolist(),
                   [round(float(x), 4) for x in labels[0][0, p, :5]])
    else:
      logging.info("  position %d: most probable id %d (p=%.4f)", positions[p],
                   int(np.argmax(labels[0][0, p])), float(np.max(labels[0][0, p])))
