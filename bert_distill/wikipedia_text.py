"""WikiExtractor's JSON articles to BERT's text format (stage II, second half).

Defines no flags: extract_wikipedia_for_bert/extract_jsons.py reads them and
calls find_wiki_files, check_write_file and write_text_file; tests and
benches import the pieces. Its docstring states what the text holds; here:
an article's lines are paragraphs (WikiExtractor run with section headings
left out), each split into sentences by split_sentences, which equals
pysbd's English rules on the whole paragraph (pysbd_sentences) and cuts at
sure breaks first to be several times faster.
"""

import bz2
import glob
import json
import os
import re
import typing

from absl import logging

from bert_distill import cli
from bert_distill import file_io
from bert_distill import progress_log
from bert_distill import worker_pool

# WikiExtractor names its outputs wiki_00, wiki_01, ... and adds .bz2 with -c.
WIKI_FILE_PATTERN = re.compile(r"^wiki_\d+(\.bz2)?$")

# A sure sentence break: a word of two or more lower-case letters, '.', '!'
# or '?', spaces, a capital. Initials, "e.g.", "U.S.", "3.5" and "Dr." never
# match; abbreviations such as "approx." or "etc." are checked against
# pysbd's own list in `sure_breaks`.
SURE_BREAK = re.compile(r"(?<=[a-z][a-z][.!?]) +(?=[A-Z])")
PREVIOUS_WORD = re.compile(r"([A-Za-z]+)[.!?]$")
SENTENCE_END = re.compile(r"[.!?]")
# pysbd reads list items ("1. ", "(ii) ", "* ") and command-line options
# across the whole paragraph: such paragraphs go to pysbd whole.
LIST_LIKE = re.compile(r"(?:^|\s)(?:\(?\d{1,3}[.)]|\(?[ivxIVX]{1,5}\)|\*|--\w)")

_segmenter = None
_abbreviations = None


def _pysbd():
  """pysbd's English segmenter and abbreviations, built once per process."""
  global _segmenter, _abbreviations
  if _segmenter is None:
    import pysbd  # pylint: disable=g-import-not-at-top
    from pysbd.lang import english  # pylint: disable=g-import-not-at-top
    _segmenter = pysbd.Segmenter(language="en", clean=False)
    _abbreviations = frozenset(
        a.lower() for a in english.English.Abbreviation.ABBREVIATIONS)
  return _segmenter, _abbreviations


def sure_breaks(paragraph, abbreviations):
  """Offsets where a sentence surely ends: after a plain lower-case word and
  '.', '!' or '?', before a capital, outside brackets and quotes, the word
  not an abbreviation. pysbd breaks there too; cutting the paragraph there
  first lets most pieces skip pysbd (see split_sentences)."""
  breaks = []
  for match in SURE_BREAK.finditer(paragraph):
    before = paragraph[:match.start()]
    word = PREVIOUS_WORD.search(before[-40:])
    if word is None or word.group(1).lower() in abbreviations:
      continue
    if (before.count("(") != before.count(")") or
        before.count("[") != before.count("]") or
        before.count('"') % 2 or
        before.count("\u201c") != before.count("\u201d")):
      continue
    breaks.append(match.end())
  return breaks


def split_sentences(paragraph):
  """Splits one paragraph into its sentences, stripped, none empty.

  pysbd's English rules keep abbreviations (Dr., U.S., e.g., i.e.), initials
  and decimals (3.5) inside their sentence. pysbd runs at about 0.2 MB/s, so
  the paragraph is first cut at the breaks that are sure (`sure_breaks`); a
  piece with no '.', '!' or '?' before its end is one sentence as it is, and
  only the other pieces go through pysbd. The result equals pysbd's on the
  whole paragraph (tests/test_extract_wikipedia.py checks it on the bundled
  corpus), several times faster.
  """
  segmenter, abbreviations = _pysbd()
  if LIST_LIKE.search(paragraph):
    return pysbd_sentences(paragraph)
  starts = [0] + sure_breaks(paragraph, abbreviations)
  ends = starts[1:] + [len(paragraph)]
  sentences = []
  for start, end in zip(starts, ends):
    piece = paragraph[start:end].strip()
    if SENTENCE_END.search(piece[:-1]):
      sentences.extend(s.strip() for s in segmenter.segment(piece))
    else:
      sentences.append(piece)
  return [s for s in sentences if s]


def pysbd_sentences(paragraph):
  """pysbd alone on the whole paragraph: the reference of split_sentences."""
  segmenter, _ = _pysbd()
  return [s.strip() for s in segmenter.segment(paragraph) if s.strip()]


def article_sentences(title, text):
  """Returns the article's sentences in order, the title removed.

  `text` is WikiExtractor's, without section headings: every non-empty line
  is a paragraph.
  """
  lines = [line.strip() for line in text.split("\n")]
  lines = [line for line in lines if line]
  # Drop the title only where the text begins with it as a line of its own:
  # "Anarchism is a political philosophy ..." is a first sentence, not a title.
  if lines and title and lines[0] in (title.strip(), title.strip() + "."):
    lines = lines[1:]
  sentences = []
  for line in lines:
    sentences.extend(split_sentences(line))
  return sentences


def open_wiki_file(path, mode="rt"):
  """Opens a wiki_* file, decompressing it when it is bz2: as text ("rt",
  bytes not UTF-8 replaced by U+FFFD) or as bytes ("rb").

  The bz2 magic bytes decide, not the name, so a renamed file reads right.
  """
  with open(path, "rb") as f:
    compressed = f.read(3) == b"BZh"
  encoding = {"encoding": "utf-8", "errors": "replace"} if "t" in mode else {}
  if compressed:
    return bz2.open(path, mode, **encoding)
  return open(path, mode.replace("t", ""), **encoding)


class ConvertedFile(typing.NamedTuple):
  """What convert_file made of one wiki_* file."""
  text: str  # Its articles in BERT's format, each followed by a blank line.
  num_articles: int
  warnings: list  # Messages naming the file and a 1-based line number.
  num_skipped: int  # Malformed JSON lines, skipped.
  num_replaced: int  # Characters that were not UTF-8, replaced by U+FFFD.


def decode_line(raw):
  """A line of a wiki_* file as text, and how many of its characters were
  not UTF-8 and are now U+FFFD (the file's own U+FFFD not counted)."""
  try:
    return raw.decode("utf-8"), 0
  except UnicodeDecodeError:
    line = raw.decode("utf-8", errors="replace")
    return line, line.count("\ufffd") - raw.count("\ufffd".encode())


def convert_file(path):
  """Converts one wiki_* file into a ConvertedFile.

  A malformed JSON line is skipped with a warning naming the file and the
  line. Bytes that are not UTF-8 are replaced by U+FFFD, with one warning
  for the file that counts them, so text is never changed without a word.
  Raises cli.StageError for an unreadable file.
  """
  out = []
  num_articles = 0
  warnings = []
  num_replaced = replaced_lines = first_replaced = 0
  try:
    with open_wiki_file(path, "rb") as f:
      for line_number, raw in enumerate(f, start=1):
        if not raw.strip():
          continue
        line, replaced = decode_line(raw)
        if replaced:
          num_replaced += replaced
          replaced_lines += 1
          first_replaced = first_replaced or line_number
        try:
          article = json.loads(line)
          text = article["text"]
          title = article.get("title", "")
          if not isinstance(text, str) or not isinstance(title, str):
            raise TypeError("'text' and 'title' must be strings")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
          warnings.append(f"{path}:{line_number}: malformed JSON line skipped "
                          f"({type(e).__name__}: {e})")
          continue
        sentences = article_sentences(title, text)
        if sentences:
          out.append("\n".join(sentences))
          out.append("\n\n")
          num_articles += 1
  except (OSError, EOFError) as e:
    raise cli.StageError(f"cannot read {path}: {e}") from None
  num_skipped = len(warnings)
  if num_replaced:
    warnings.append(f"{path}:{first_replaced}: not UTF-8: {num_replaced} "
                    f"characters replaced by U+FFFD, on {replaced_lines} "
                    f"of its lines (the first here)")
  return ConvertedFile("".join(out), num_articles, warnings, num_skipped,
                       num_replaced)


def find_wiki_files(folder):
  """Every wiki_* file under folder, sorted by path: AA/wiki_00 < AB/wiki_00.

  Raises cli.StageError when there is none, or for a wiki_* name that is not
  a readable file (a link to a missing file, a folder).
  """
  if not os.path.isdir(folder):
    raise cli.StageError(f"--folder {folder} is not a directory: give "
                         "WikiExtractor's output folder (its -o)")
  files = []
  for root, _, names in os.walk(folder):
    files.extend(os.path.join(root, n) for n in names
                 if WIKI_FILE_PATTERN.match(n))
  if not files:
    raise cli.StageError(f"--folder {folder} holds no wiki_* file: run "
                         f"WikiExtractor with -o {folder} first")
  for path in files:
    if os.path.islink(path) and not os.path.exists(path):
      raise cli.StageError(f"{path}: a link to {os.readlink(path)}, which "
                           f"does not exist")
    if os.path.isdir(path):
      raise cli.StageError(f"{path}: a folder, not a wiki file")
  return sorted(files, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def converted_files(files, num_workers):
  """Yields convert_file's result for every file, in the order of `files`.

  With more than one worker the files are converted in parallel, in forked
  processes (they share this small process: no TensorFlow is loaded for
  local paths, and they start at once); the results come in input order, so
  the output is deterministic. A worker that dies raises cli.StageError
  naming its file.
  """
  if min(num_workers, len(files)) <= 1:
    yield from map(convert_file, files)
    return
  for _, result in worker_pool.map_in_workers(convert_file, files, num_workers,
                                              name_of_job=str, context="fork",
                                              ordered=True):
    yield result


def check_write_file(write_file, folder, files):
  """Raises cli.StageError when --write_file cannot be written, or would be
  written over one of the wiki files (`files`, found under --folder) or
  among them."""
  if os.path.isdir(write_file):
    raise cli.StageError(f"--write_file={write_file} is a directory: give "
                         f"the text file to write")
  # Where the name leads now (through a link) and where the renamed output
  # lands (the link itself replaced): neither may be an input, nor lie in
  # --folder, whose next run would read the text as wiki files.
  targets = {os.path.realpath(write_file),
             os.path.join(os.path.realpath(os.path.dirname(write_file) or "."),
                          os.path.basename(write_file))}
  for path in files:
    if os.path.realpath(path) in targets:
      raise cli.StageError(f"--write_file={write_file} is the input file "
                           f"{path}: give a path outside --folder={folder}")
  real_folder = os.path.realpath(folder)
  for target in targets:
    if os.path.commonpath([real_folder, target]) == real_folder:
      raise cli.StageError(f"--write_file={write_file} lies inside "
                           f"--folder={folder}, among the wiki files it is "
                           f"made from: give a path outside it")
  out_dir = os.path.dirname(os.path.abspath(write_file))
  ancestor = out_dir
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise cli.StageError(f"--write_file={write_file}: {ancestor} is not a "
                         f"folder")
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise cli.StageError(f"--write_file={write_file}: cannot create "
                         f"{file_io.describe_os_error(e)}") from None
  if not os.access(out_dir, os.W_OK):
    raise cli.StageError(f"--write_file={write_file}: {out_dir} is not "
                         f"writable")


def write_text_file(files, write_file, num_workers, log_interval):
  """Converts the files and writes their text; returns the numbers of
  articles written, malformed JSON lines skipped and characters that were not
  UTF-8 (replaced by U+FFFD)."""
  num_skipped = num_replaced = 0
  file_io.remove_stale_temporaries(glob.escape(write_file))
  try:
    with file_io.atomic_output(write_file) as tmp_path, \
        open(tmp_path, "w", encoding="utf-8") as out:
      # Timed by input MB, the measure of the work still to do.
      sizes_mb = [os.path.getsize(f) / 1e6 for f in files]
      progress = progress_log.Progress("extract_jsons", total=sum(sizes_mb),
                                       unit="MB", interval=log_interval)
      num_articles = bytes_written = 0
      results = converted_files(files, num_workers)
      for done, (size_mb, converted) in enumerate(zip(sizes_mb, results), 1):
        for warning in converted.warnings:
          logging.warning("%s", warning)
        num_skipped += converted.num_skipped
        num_replaced += converted.num_replaced
        num_articles += converted.num_articles
        out.write(converted.text)
        bytes_written += len(converted.text.encode("utf-8"))
        progress.update(size_mb,
                        note=f"{done}/{len(files)} files, {num_articles} "
                             f"articles, {bytes_written / 1e6:.2f} MB of text")
  except OSError as e:
    # A full disk (or file size limit), a folder that vanished.
    raise cli.StageError(f"cannot write --write_file={write_file}: "
                         f"{e.strerror or e}") from None
  progress.log(final=True)
  return num_articles, num_skipped, num_replaced
