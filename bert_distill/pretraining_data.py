"""Google's pretraining instances, made a file at a time (stage III-b's algorithm).

Defines no flags: multifile_create_pretraining_data.py reads them and calls
make_records; tests import the pieces.

Legend: L = max_seq_length, P = max_predictions_per_seq; an instance is
[CLS] A [SEP] B [SEP] (A and B runs of whole sentences, as token ids), at most
L tokens, with at most P masked positions.

The contract: file i made with seed S holds exactly the examples, in the same
order, that Google's `create_pretraining_data.py` writes for that file alone
with --random_seed S+i. The algorithm is Google's, making the same sequence
of calls on a `random.Random(S+i)`:

  1. read the documents, tokenize every sentence, drop empty documents;
  2. shuffle the documents;
  3. dupe_factor passes over the documents; for each document, a target length
     (L - 3, or with probability short_seq_prob a random one from 2 up), then
     chunks of whole sentences up to that length, each split at a random
     point into A and B; half the time (always for a one-sentence chunk) B is
     taken from a random other document (10 tries) and the sentences of the
     chunk not used are put back; the pair is truncated to fit, a token at a
     time from the front or back of the longer side;
  4. the masked LM: candidates are all tokens but [CLS]/[SEP] (whole words
     with do_whole_word_mask), shuffled; about masked_lm_prob of the tokens
     (at most P) are predicted, each replaced by [MASK] 80% of the time, kept
     10%, and a random vocabulary word 10%;
  5. shuffle all instances of the file.

So the output is deterministic and independent of the number of workers.

Speed without changing a draw: each sentence is tokenized once and kept as
vocabulary ids (Google re-reads token strings on every pass and converts at
the end); pairs are truncated by moving two indices; an instance is encoded
to its tf.train.Example bytes as soon as it is made
(example_codec.PretrainingExampleEncoder) and framed by
tfrecord.write_tfrecords, without loading TensorFlow.

Files: input file i goes to `<output_dir>/<output_base_name>_<i>.tfrecord`,
under its final name only when complete, with `<output>.made_from.json`
beside it (the input's name, size and SHA-256, the vocabulary's, the
settings, the seed); make_records skips an output whose record matches,
makes again one whose input or settings changed, and removes outputs of
former inputs beyond the last one. Files are processed by worker processes,
one file per worker at a time (worker_pool.map_in_workers: a worker that
dies stops the stage naming its file).
"""

import dataclasses
import glob
import hashlib
import os
import re
import random
import time

from absl import flags
from absl import logging

from bert_distill import cli
from bert_distill import example_codec
from bert_distill import file_io
from bert_distill import progress_log
from bert_distill import records
from bert_distill import tfrecord
from bert_distill import worker_pool
import tokenization

# How many examples of the first file processed are logged, decoded.
NUM_LOGGED_EXAMPLES = 5


@dataclasses.dataclass(frozen=True)
class Settings:
  """What shapes the instances of every file (everything but the seed)."""
  vocab_file: str
  do_lower_case: bool
  max_seq_length: int
  max_predictions_per_seq: int
  dupe_factor: int
  masked_lm_prob: float
  short_seq_prob: float
  do_whole_word_mask: bool


# ---------------------------------------------------------------------------
# Inputs and outputs.


def find_input_files(input_dir):
  """The *.txt files of input_dir in sorted name order.

  Raises:
    cli.StageError: when there is none, or when split_text.py's record in
      input_dir says that its run was interrupted (some pieces are missing).
  """
  for manifest in glob.glob(os.path.join(glob.escape(input_dir),
                                         "*.made_from.json")):
    record = file_io.read_json(manifest)
    if isinstance(record, dict) and record.get("complete") is False:
      raise cli.StageError(
          f"--input_dir={input_dir}: split_text.py was interrupted while "
          f"writing these pieces (see {manifest}): run it again first")
  files = sorted(glob.glob(os.path.join(glob.escape(input_dir), "*.txt")))
  if not files:
    raise cli.StageError(f"--input_dir={input_dir}: holds no *.txt file")
  return files


def available_cores():
  """The cores this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def output_path(output_dir, output_base_name, index):
  """Where input file `index` is written."""
  return os.path.join(output_dir, f"{output_base_name}_{index}.tfrecord")


def load_tokenizer(vocab_file, do_lower_case):
  """Google's tokenizer for the vocabulary; StageError if it lacks a special
  token or is not UTF-8 text."""
  try:
    tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
  except ValueError as e:  # not UTF-8: names the file and the line
    raise cli.StageError(f"--vocab_file {e}") from None
  missing = [t for t in ("[CLS]", "[SEP]", "[MASK]", "[UNK]")
             if t not in tokenizer.vocab]
  if missing:
    raise cli.StageError(f"--vocab_file={vocab_file}: lacks the special "
                         f"tokens {', '.join(missing)}")
  return tokenizer


# ---------------------------------------------------------------------------
# Reading and tokenizing.


def read_documents(path, tokenizer, digest=None):
  """Reads a text file into documents: lists of sentences of token ids.

  As Google's reader (tf.gfile's readline): lines split on "\\n" only, every
  "\\r" dropped (even inside a line), stripped; a blank line starts a new
  document; lines without tokens are dropped, then empty documents.
  Undecodable bytes become U+FFFD, which the tokenizer drops. `digest`, a
  hashlib object, is fed every byte read.

  Returns:
    A list of documents, each a list of sentences, each a list of token ids.
  """
  documents = [[]]
  with open(path, "rb") as reader:
    for raw_line in reader:
      if digest is not None:
        digest.update(raw_line)
      line = raw_line.replace(b"\r", b"").decode("utf-8", "replace").strip()
      if not line:
        documents.append([])
        continue
      tokens = tokenizer.tokenize(line)
      if tokens:
        documents[-1].append(tokenizer.convert_tokens_to_ids(tokens))
  return [document for document in documents if document]


# ---------------------------------------------------------------------------
# Draws. random.Random's randint and shuffle spend most of their time in
# argument handling; these make exactly the same getrandbits calls (CPython's
# _randbelow: k = n.bit_length(), draw k bits until below n), which
# `check_draws_match` proves on this interpreter before any file is made.


def rand_below(getrandbits, n):
  """random.Random._randbelow(n) from the same generator."""
  k = n.bit_length()
  r = getrandbits(k)
  while r >= n:
    r = getrandbits(k)
  return r


def shuffle(getrandbits, items):
  """random.Random.shuffle(items) from the same generator, in place."""
  bit_lengths = _BIT_LENGTHS if len(items) < len(_BIT_LENGTHS) else None
  for i in range(len(items) - 1, 0, -1):
    # Draw j below n = i + 1 with k = n.bit_length() bits.
    k = bit_lengths[i + 1] if bit_lengths else (i + 1).bit_length()
    j = getrandbits(k)
    while j > i:
      j = getrandbits(k)
    items[i], items[j] = items[j], items[i]


# n.bit_length() for the short lists shuffled per instance.
_BIT_LENGTHS = [n.bit_length() for n in range(1025)]


def check_draws_match():
  """Returns True when rand_below/shuffle equal random.Random's own draws."""
  for seed in range(3):
    ours, theirs = random.Random(seed), random.Random(seed)
    for n in (1, 2, 3, 7, 8, 100, 30522, 2**40 + 3):
      if (n + rand_below(ours.getrandbits, n) !=
          theirs.randint(n, 2 * n - 1)):
        return False
      a, b = list(range(n % 300)), list(range(n % 300))
      shuffle(ours.getrandbits, a)
      theirs.shuffle(b)
      if a != b or ours.random() != theirs.random():
        return False
  return True


class InstanceMaker:
  """Makes a file's pretraining instances, encoded, with Google's draws.

  Instances are token-id sequences: [CLS] A [SEP] B [SEP] (masked), with the
  masked positions, their original ids and whether B is a random next.
  """

  def __init__(self, settings, vocab, encoder, fast_draws=True):
    self.settings = settings
    self.max_num_tokens = settings.max_seq_length - 3
    self.cls_id = vocab["[CLS]"]
    self.sep_id = vocab["[SEP]"]
    self.mask_id = vocab["[MASK]"]
    # Google draws random replacements from the vocabulary's tokens in file
    # order, then converts them to ids.
    self.vocab_word_ids = [vocab[word] for word in vocab.keys()]
    self.continues_word = None
    if settings.do_whole_word_mask:
      max_id = max(vocab.values())
      self.continues_word = [False] * (max_id + 1)
      for word, index in vocab.items():
        self.continues_word[index] = word.startswith("##")
    self.encoder = encoder
    self.fast_draws = fast_draws

  def make_file_instances(self, documents, rng, progress=None):
    """Google's create_training_instances after reading: returns encoded examples.

    Args:
      documents: the file's documents (lists of sentences of token ids); they
        are shuffled in place.
      rng: the file's random.Random(seed).
      progress: a progress_log.Progress over documents, or None.
    Returns:
      The serialized tf.train.Examples, in output order.
    """
    self.shuffle(rng, documents)
    examples = []
    for _ in range(self.settings.dupe_factor):
      for document_index in range(len(documents)):
        self.document_instances(documents, document_index, rng, examples)
        if progress:
          progress.update()
    self.shuffle(rng, examples)
    return examples

  def randint(self, rng, low, high):
    """rng.randint(low, high), through rand_below when fast_draws."""
    if self.fast_draws:
      return low + rand_below(rng.getrandbits, high - low + 1)
    return rng.randint(low, high)

  def shuffle(self, rng, items):
    """rng.shuffle(items), through the module's shuffle when fast_draws."""
    if self.fast_draws:
      shuffle(rng.getrandbits, items)
    else:
      rng.shuffle(items)

  def document_instances(self, documents, document_index, rng, out):
    """Appends the encoded instances of one document to `out`."""
    document = documents[document_index]
    max_num_tokens = self.max_num_tokens
    random_draw = rng.random
    target_seq_length = max_num_tokens
    if random_draw() < self.settings.short_seq_prob:
      target_seq_length = self.randint(rng, 2, max_num_tokens)

    chunk = []
    chunk_length = 0
    i = 0
    while i < len(document):
      chunk.append(document[i])
      chunk_length += len(document[i])
      if i == len(document) - 1 or chunk_length >= target_seq_length:
        a_end = 1
        if len(chunk) >= 2:
          a_end = self.randint(rng, 1, len(chunk) - 1)
        tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
        tokens_b = []
        if len(chunk) == 1 or random_draw() < 0.5:
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          for _ in range(10):
            random_index = self.randint(rng, 0, len(documents) - 1)
            if random_index != document_index:
              break
          random_document = documents[random_index]
          start = self.randint(rng, 0, len(random_document) - 1)
          for sentence in random_document[start:]:
            tokens_b += sentence
            if len(tokens_b) >= target_b_length:
              break
          # The sentences of the chunk not used go back for the next chunk.
          i -= len(chunk) - a_end
        else:
          is_random_next = False
          for sentence in chunk[a_end:]:
            tokens_b += sentence
        tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b,
                                               max_num_tokens, random_draw)
        out.append(self.masked_instance(tokens_a, tokens_b, is_random_next,
                                        rng))
        chunk = []
        chunk_length = 0
      i += 1

  def masked_instance(self, tokens_a, tokens_b, is_random_next, rng):
    """Masks [CLS] A [SEP] B [SEP] as Google does; returns the encoded example."""
    tokens = [self.cls_id, *tokens_a, self.sep_id, *tokens_b, self.sep_id]
    len_a = len(tokens_a)
    num_tokens = len(tokens)
    num_to_predict = min(
        self.settings.max_predictions_per_seq,
        max(1, int(round(num_tokens * self.settings.masked_lm_prob))))
    if self.continues_word is None:
      candidates = list(range(1, len_a + 1))
      candidates += range(len_a + 2, num_tokens - 1)
      self.shuffle(rng, candidates)
      positions = candidates[:num_to_predict]
    else:
      positions = self.whole_word_positions(tokens, len_a, num_to_predict, rng)

    labels = {}
    random_draw = rng.random
    vocab_word_ids = self.vocab_word_ids
    for index in positions:
      label = tokens[index]
      labels[index] = label
      if random_draw() < 0.8:
        tokens[index] = self.mask_id
      elif random_draw() >= 0.5:
        tokens[index] = vocab_word_ids[
            self.randint(rng, 0, len(vocab_word_ids) - 1)]
    masked_positions = sorted(labels)
    return self.encoder.encode(tokens, len_a, masked_positions,
                               [labels[p] for p in masked_positions],
                               is_random_next)

  def whole_word_positions(self, tokens, len_a, num_to_predict, rng):
    """Positions to mask, whole words at a time, in the order they are masked.

    A "##" token joins the word before it, even across [SEP], as in Google's
    version. A word that would overshoot num_to_predict is skipped.
    """
    continues_word = self.continues_word
    words = []
    for index in range(1, len(tokens) - 1):
      if index == len_a + 1:
        continue
      if words and continues_word[tokens[index]]:
        words[-1].append(index)
      else:
        words.append([index])
    self.shuffle(rng, words)
    positions = []
    for word in words:
      if len(positions) >= num_to_predict:
        break
      if len(positions) + len(word) > num_to_predict:
        continue
      positions += word
    return positions


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, random_draw):
  """Google's truncate_seq_pair: drops a token at a time from the longer side,
  from the front or the back by a coin flip, until the pair fits.

  Moves indices instead of deleting list items; returns the two kept slices.
  """
  a_start, a_end = 0, len(tokens_a)
  b_start, b_end = 0, len(tokens_b)
  while (a_end - a_start) + (b_end - b_start) > max_num_tokens:
    if a_end - a_start > b_end - b_start:
      if random_draw() < 0.5:
        a_start += 1
      else:
        a_end -= 1
    else:
      if random_draw() < 0.5:
        b_start += 1
      else:
        b_end -= 1
  return tokens_a[a_start:a_end], tokens_b[b_start:b_end]


# ---------------------------------------------------------------------------
# One file, in a worker.


def describe_example(serialized, tokenizer):
  """The lines Google logs for an example: tokens, then every feature."""
  features = example_codec.decode_example_lists(serialized)
  num_tokens = sum(features[records.INPUT_MASK])
  tokens = tokenizer.convert_ids_to_tokens(
      features[records.INPUT_IDS][:num_tokens])
  lines = ["*** Example ***",
           "tokens: " + " ".join(map(tokenization.printable_text, tokens))]
  for name in records.PRETRAINING_FEATURES:
    lines.append(f"{name}: {' '.join(map(str, features[name]))}")
  num_masked = int(sum(features[records.MASKED_LM_WEIGHTS]))
  labels = tokenizer.convert_ids_to_tokens(
      features[records.MASKED_LM_IDS][:num_masked])
  lines.append("masked_lm_labels: " + " ".join(labels))
  return lines


_WORKER = {}


def init_worker(settings, verbosity):
  """Loads the tokenizer once per worker process and routes its logging."""
  if not flags.FLAGS.is_parsed():  # A spawned worker: no command line.
    flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(verbosity)
  tokenizer = load_tokenizer(settings.vocab_file, settings.do_lower_case)
  encoder = example_codec.PretrainingExampleEncoder(
      settings.max_seq_length, settings.max_predictions_per_seq,
      max(tokenizer.vocab.values()) + 1)
  _WORKER.update(
      settings=settings, tokenizer=tokenizer,
      maker=InstanceMaker(settings, tokenizer.vocab, encoder,
                          fast_draws=check_draws_match()))


def process_file(job):
  """Makes the records of one input file; returns its counts.

  Args:
    job: (input path, output path, seed, number of examples to log, the
      record of what the output is made from, but the input's identity).
  Returns:
    (input path, documents, instances, seconds); documents is 0 for a file
    without text, for which nothing is written.
  """
  input_path, final_path, seed, num_logged, made_from = job
  start = time.monotonic()
  tokenizer, maker = _WORKER["tokenizer"], _WORKER["maker"]
  name = os.path.basename(input_path)
  digest = hashlib.sha256()
  documents = read_documents(input_path, tokenizer, digest)
  if not documents:
    logging.warning("%s holds no text: skipped, %s not written", input_path,
                    final_path)
    return input_path, 0, 0, time.monotonic() - start
  num_tokens = sum(len(s) for document in documents for s in document)
  logging.info("%s: %d documents, %d tokens read in %.1f s", name,
               len(documents), num_tokens, time.monotonic() - start)
  warn_of_long_lines(input_path, documents, maker.settings.max_seq_length)
  warn_of_unknown_tokens(input_path, documents, tokenizer, num_tokens)
  progress = progress_log.Progress(
      f"{name} passes", total=len(documents) * maker.settings.dupe_factor,
      unit="documents")
  examples = maker.make_file_instances(documents, random.Random(seed),
                                       progress)
  for example in examples[:num_logged]:
    for line in describe_example(example, tokenizer):
      logging.info("%s", line)
  made_from = dict(made_from, input=file_io.file_identity(input_path, digest),
                   documents=len(documents), instances=len(examples))
  try:
    with file_io.atomic_output(final_path) as tmp_path:
      tfrecord.write_tfrecords(tmp_path, examples)
    made_from["output_size"] = os.path.getsize(final_path)
    file_io.write_json(file_io.made_from_path(final_path), made_from)
  except OSError as e:
    raise cli.StageError(f"cannot write {final_path}: "
                         f"{e.strerror or e}") from None
  seconds = time.monotonic() - start
  logging.info("%s -> %s: %d documents, %d instances, %.1f instances/s",
               name, os.path.basename(final_path), len(documents),
               len(examples), len(examples) / max(seconds, 1e-9))
  return input_path, len(documents), len(examples), seconds


# A share of [UNK] tokens above which the vocabulary or the casing is most
# likely wrong: the bundled Wikipedia sample with BERT's uncased vocabulary
# has 0.00%, the same text without --do_lower_case 11%; the bundled movie
# reviews 0.0% and 8.8%.
UNKNOWN_SHARE_WARNING = 0.01


def warn_of_unknown_share(where, unknown, tokens):
  """Warns when `unknown` of `tokens` ([UNK] of all, in a file or a split)
  is UNKNOWN_SHARE_WARNING or more: text the model would see as [UNK], and
  a student would learn to predict. Stage III-b and run_classifier.py's
  features both warn so. Returns the share."""
  share = unknown / max(tokens, 1)
  if share >= UNKNOWN_SHARE_WARNING:
    logging.warning(
        "%s: %d of %d tokens (%.2g%%) are [UNK]: is --vocab_file the "
        "model's, and --do_lower_case right for it (an uncased vocab.txt "
        "needs it)?", where, unknown, tokens, 100 * share)
  return share


def warn_of_unknown_tokens(path, documents, tokenizer, num_tokens):
  """warn_of_unknown_share for a file's documents (num_tokens in all)."""
  unknown_id = tokenizer.vocab["[UNK]"]
  return warn_of_unknown_share(
      path, sum(s.count(unknown_id) for document in documents
                for s in document), num_tokens)


def warn_of_long_lines(path, documents, max_seq_length):
  """Warns of lines longer than a whole sequence: Google's algorithm takes a
  line as one sentence and truncates it into one instance, so what does not
  fit is lost (a file without sentence breaks loses nearly all of it).
  Returns the number of tokens beyond a sequence, summed over such lines."""
  fits = max_seq_length - 3  # [CLS] A [SEP] B [SEP]
  long_lines = [len(s) for document in documents for s in document
                if len(s) > fits]
  dropped = sum(long_lines) - fits * len(long_lines)
  if long_lines:
    logging.warning(
        "%s: %d lines hold more tokens than a sequence (%d of "
        "--max_seq_length %d; the longest %d): each is truncated into one "
        "instance, dropping %d tokens; split such lines into sentences",
        path, len(long_lines), fits, max_seq_length, max(long_lines), dropped)
  return dropped


def run_jobs(jobs, settings, num_workers):
  """Processes the jobs, in worker processes when more than one; yields results."""
  verbosity = logging.get_verbosity()
  if not jobs:
    return
  if num_workers == 1 or len(jobs) == 1:
    init_worker(settings, verbosity)
    yield from map(process_file, jobs)
    return
  # spawn: workers start clean on every platform, and never inherit locks or
  # threads of the parent.
  for _, result in worker_pool.map_in_workers(
      process_file, jobs, num_workers, name_of_job=lambda job: job[0],
      context="spawn", initializer=init_worker,
      initargs=(settings, verbosity)):
    yield result


# ---------------------------------------------------------------------------
# Every file: what to make (again), in how many workers.


def why_not_complete(final_path, made_from, input_path):
  """None when final_path is complete and made from input_path with the
  settings of `made_from`; otherwise the reason, in words."""
  if not os.path.exists(final_path):
    return "missing"
  record = file_io.read_json(file_io.made_from_path(final_path))
  if record is None:
    return f"no record of what it was made from ({file_io.made_from_path(final_path)})"
  if record.get("output_size") != os.path.getsize(final_path):
    return "its size differs from the one recorded when it was written"
  if not file_io.same_content(record.get("input", {}),
                          file_io.file_identity(input_path)):
    was = record.get("input", {}).get("name")
    return (f"made from {was}, not from {os.path.basename(input_path)} as it "
            f"is now" if was != os.path.basename(input_path) else
            f"made from another content of {was}")
  if not file_io.same_content(record.get("vocab", {}), made_from["vocab"]):
    return "made with another --vocab_file"
  for key in ("settings", "random_seed"):
    if record.get(key) != made_from[key]:
      changed = sorted(k for k in made_from[key] if record.get(key, {}).get(
          k) != made_from[key][k]) if key == "settings" else ["random_seed"]
      return "made with other settings: " + ", ".join(
          f"--{k}" for k in changed)
  return None


def remove_former_outputs(output_dir, output_base_name, num_inputs):
  """Removes this stage's outputs of input indices beyond the last one (an
  input file was removed since); StageError for such a file it did not make."""
  pattern = re.compile(re.escape(output_base_name) + r"_(\d+)\.tfrecord$")
  for name in sorted(os.listdir(output_dir)):
    match = pattern.match(name)
    if not match or int(match.group(1)) < num_inputs:
      continue
    path = os.path.join(output_dir, name)
    if file_io.read_json(file_io.made_from_path(path)) is None:
      raise cli.StageError(
          f"{path}: a record file beyond the {num_inputs} input files, with "
          f"no record of what it was made from: delete it (stage IV would "
          f"read it)")
    logging.info("Removing %s: its input is no longer in --input_dir", path)
    os.remove(file_io.made_from_path(path))
    os.remove(path)


def make_records(input_files, settings, output_dir, output_base_name,
                 random_seed, num_workers, num_shards=1, shard_index=0):
  """Writes the records of every input file whose output is not complete.

  input_files is the full sorted list; file i keeps index i (and seed
  random_seed + i) in any shard. With num_shards > 1 this run makes only its
  shard's files (cli.select_shard) and touches only their outputs and
  temporaries; shard 0 removes outputs beyond the last input.
  """
  os.makedirs(output_dir, exist_ok=True)
  indexed_inputs = cli.select_shard(list(enumerate(input_files)), num_shards,
                                    shard_index)
  if num_shards == 1:
    file_io.remove_stale_temporaries(
        os.path.join(glob.escape(output_dir), glob.escape(output_base_name)) +
        "_*.tfrecord*")
  else:
    for index, _ in indexed_inputs:
      final_path = output_path(output_dir, output_base_name, index)
      for path in (final_path, file_io.made_from_path(final_path)):
        file_io.remove_stale_temporaries(glob.escape(path))
  if shard_index == 0:
    remove_former_outputs(output_dir, output_base_name, len(input_files))
  recorded_settings = dataclasses.asdict(settings)
  del recorded_settings["vocab_file"]  # Its content counts, not its path.
  vocab = file_io.file_identity(settings.vocab_file)

  jobs = []
  for index, input_path in indexed_inputs:
    final_path = output_path(output_dir, output_base_name, index)
    made_from = {"settings": recorded_settings, "vocab": vocab,
                 "random_seed": random_seed + index}
    reason = why_not_complete(final_path, made_from, input_path)
    if reason is None:
      logging.info("%s: already complete, skipped", final_path)
      continue
    if reason != "missing":
      logging.info("%s: %s; made again", final_path, reason)
    # Never left for stage IV: the output of another input or settings.
    for stale in (file_io.made_from_path(final_path), final_path):
      if os.path.exists(stale):
        os.remove(stale)
    num_logged = NUM_LOGGED_EXAMPLES if not jobs else 0
    jobs.append((input_path, final_path, random_seed + index, num_logged,
                 made_from))
  # Largest files first, so no worker is left with a big one at the end.
  jobs.sort(key=lambda job: -os.path.getsize(job[0]))
  if num_shards > 1:
    logging.info("Shard %d of %d: %d of the %d input files", shard_index,
                 num_shards, len(indexed_inputs), len(input_files))
  logging.info("%d input files, %d to make, %d workers", len(indexed_inputs),
               len(jobs), min(num_workers, max(len(jobs), 1)))

  files = progress_log.Progress("files", total=len(jobs), unit="files",
                                interval=0.0)
  total_instances = made = 0
  for _, documents, instances, _ in run_jobs(jobs, settings, num_workers):
    total_instances += instances
    made += bool(documents)
    files.update()
  if jobs and not made and len(jobs) == len(input_files):
    # Nothing at all for stage IV: an error, not a warning it would miss.
    raise cli.StageError(
        f"no input file holds text ({_summarize_names(jobs)}): no record "
        f"file made; check --input_dir")
  logging.info("Wrote %d instances in %d files, %.1f instances/s",
               total_instances, len(jobs),
               total_instances / max(time.monotonic() - files.start, 1e-9))


def _summarize_names(jobs, limit=3):
  names = [os.path.basename(job[0]) for job in jobs]
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more

