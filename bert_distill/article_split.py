"""Splits a text file of articles into pieces of whole articles (stage III-a).

Defines no flags: split_text.py reads them and calls split_file; tests
import the pieces. An article is a run of non-blank lines; a blank line (only
whitespace) separates two. The file is streamed a line at a time (a long
line in chunks of _CHUNK_BYTES), twice: count_articles, then split_articles
copies the articles into pieces balanced by bytes; split_file adds the
manifest `<name_base>.made_from.json` and the rerun rules (split_text.py's
docstring states the contract).
"""

import glob
import os
import re

from absl import logging

from bert_distill import cli
from bert_distill import file_io

# Longer lines are read in chunks of this size, so memory stays bounded even
# for a file without newlines.
_CHUNK_BYTES = 1 << 20


def read_chunks(reader):
  """Yields (chunk, is_blank_line) for the lines of a binary file.

  A chunk is a whole line, or a piece of a line longer than _CHUNK_BYTES. A
  blank line is a whole line holding only whitespace: it separates articles.
  """
  at_line_start = True
  while True:
    chunk = reader.readline(_CHUNK_BYTES)
    if not chunk:
      return
    whole_line = at_line_start and (chunk.endswith(b"\n") or
                                    len(chunk) < _CHUNK_BYTES)
    yield chunk, whole_line and not chunk.strip()
    at_line_start = chunk.endswith(b"\n")


def count_articles(path):
  """Returns (number of articles, bytes of their lines) in a text file."""
  articles = 0
  article_bytes = 0
  in_article = False
  with open(path, "rb") as reader:
    for chunk, blank in read_chunks(reader):
      if blank:
        in_article = False
        continue
      article_bytes += len(chunk)
      if not in_article:
        articles += 1
        in_article = True
  return articles, article_bytes


class PieceWriter:
  """Writes articles into numbered pieces, each under a temporary name.

  An article is written as it streams in. When it ends, `end_article` may
  decide it belongs to the next piece after all: it is then cut off the
  current piece (truncate) and copied again from the input. That happens at
  most once per piece, so the input is read about twice in all.
  """

  def __init__(self, path_of_piece, rereader):
    self.path_of_piece = path_of_piece
    self.rereader = rereader
    self.index = -1
    self.piece_articles = 0
    self.sizes = []
    self.out = None
    self.tmp_path = None
    self.next_piece()

  def next_piece(self):
    """Closes the current piece under its final name and opens the next."""
    self.close()
    self.index += 1
    self.tmp_path = file_io.temporary_path(self.path_of_piece(self.index))
    self.out = open(self.tmp_path, "wb")
    self.piece_articles = 0

  def start_article(self):
    """Writes the separator before a new article; returns where it starts."""
    mark = self.out.tell()
    if self.piece_articles:
      self.out.write(b"\n")
    self.piece_articles += 1
    return mark

  def write(self, chunk):
    self.out.write(chunk)

  def end_article(self, ended_without_newline):
    if ended_without_newline:
      self.out.write(b"\n")

  def move_article_to_next_piece(self, mark, input_start, input_end):
    """Cuts the last article off this piece and copies it into the next."""
    self.out.seek(mark)
    self.out.truncate()
    self.next_piece()
    self.start_article()
    self.rereader.seek(input_start)
    left = input_end - input_start
    last = b""
    while left:
      block = self.rereader.read(min(left, _CHUNK_BYTES))
      self.out.write(block)
      left -= len(block)
      last = block
    self.end_article(not last.endswith(b"\n"))

  def close(self):
    """Renames the open piece to its final name."""
    if self.out is None:
      return
    self.sizes.append(self.out.tell())
    self.out.close()
    os.replace(self.tmp_path, self.path_of_piece(self.index))
    self.out = None

  def discard(self):
    """Removes the half-written piece after a failure."""
    if self.out is not None:
      try:
        self.out.close()  # Fails again on a full disk, flushing its buffer.
      except OSError:
        pass
      finally:
        os.remove(self.tmp_path)
        self.out = None


def split_articles(read_file, num_articles, article_bytes, num_pieces,
                   path_of_piece):
  """Copies the articles of read_file into num_pieces balanced pieces.

  Piece k should end near target_k = (k + 1) * article_bytes / num_pieces.
  Before an article starts, a new piece begins when the current one has
  reached its target or when each remaining article must open a piece of its
  own; after an article ends, it moves to the next piece if more of it lies
  past the target than before it. No piece is ever left empty.

  Returns:
    The byte size of each piece written.
  """
  last_piece = num_pieces - 1
  done = 0  # Bytes of the articles before the current one.
  started = 0  # Articles started so far.
  with open(read_file, "rb") as reader, open(read_file, "rb") as rereader:
    pieces = PieceWriter(path_of_piece, rereader)

    def target():
      """Where the current piece should end, in article bytes."""
      return (pieces.index + 1) * article_bytes / num_pieces

    try:
      position = 0
      article = None  # [input start, bytes so far, output mark, first in piece]
      last_chunk = b""
      for chunk, blank in read_chunks(reader):
        if blank and article:
          _end_article(pieces, article, done, last_chunk, target(),
                       pieces.index < last_piece)
          done += article[1]
          article = None
        elif not blank:
          if article is None:
            left = num_articles - started
            if (pieces.piece_articles and pieces.index < last_piece and
                (done >= target() or left <= last_piece - pieces.index)):
              pieces.next_piece()
            started += 1
            first = pieces.piece_articles == 0
            article = [position, 0, pieces.start_article(), first]
          pieces.write(chunk)
          article[1] += len(chunk)
          last_chunk = chunk
        position += len(chunk)
      if article:
        _end_article(pieces, article, done, last_chunk, target(),
                     pieces.index < last_piece)
      pieces.close()
    except BaseException as e:
      pieces.discard()
      if isinstance(e, OSError) and not e.filename:
        # A write error (a full disk) does not say which file.
        raise cli.StageError(file_io.describe_os_error(
            e, path_of_piece(pieces.index))) from None
      raise
  return pieces.sizes


def _end_article(pieces, article, done, last_chunk, target, may_move):
  """Ends an article, moving it to the next piece if it lies mostly past target."""
  input_start, size, mark, first_in_piece = article
  pieces.end_article(not last_chunk.endswith(b"\n"))
  if (may_move and not first_in_piece and done < target < done + size and
      target - done < done + size - target):
    # The article's lines are contiguous in the input: start + their size.
    pieces.move_article_to_next_piece(mark, input_start, input_start + size)


def manifest_path(folder, name_base):
  """Where split_text.py records the pieces it wrote and their input."""
  return os.path.join(folder, f"{name_base}.made_from.json")


def piece_pattern(name_base):
  """The names of the pieces: `<name_base>_<N>.txt`."""
  return re.compile(re.escape(name_base) + r"_\d+\.txt")


def check_read_file_is_no_output(read_file, folder, name_base):
  """Raises cli.StageError when read_file is a file that split_file removes
  or replaces before it has read it: a piece of a former run, the manifest,
  or a temporary of either.

  Files are compared by identity (os.path.samefile), so another path to one
  of them (through `..`, a link) is caught too.
  """
  if not os.path.isdir(folder):
    return
  manifest = os.path.basename(manifest_path(folder, name_base))
  # What remove_stale_temporaries removes: <name_base>_*.tmp-* and the
  # manifest's temporaries.
  temporary = re.compile(re.escape(name_base) + r"_.*\.tmp-.*|" +
                         re.escape(manifest) + r"\.tmp-.*")
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if ((piece_pattern(name_base).fullmatch(name) or name == manifest or
         temporary.fullmatch(name)) and os.path.exists(path) and
        os.path.samefile(read_file, path)):
      raise cli.StageError(
          f"--read_file={read_file} is {path}, which split_text.py removes "
          f"before it writes the pieces of --name_base={name_base} in "
          f"--folder={folder}: copy it out of the folder first, or give "
          f"another --folder or --name_base")


def remove_former_pieces(folder, name_base):
  """Removes the pieces a former run wrote (its manifest lists them).

  Raises:
    cli.StageError: for a `<name_base>_<N>.txt` that no manifest lists: it
      was not written by this script, and stage III-b would read it.
  """
  manifest = file_io.read_json(manifest_path(folder, name_base)) or {}
  pieces = manifest.get("pieces", []) if isinstance(manifest, dict) else None
  if not (isinstance(pieces, list) and
          all(isinstance(name, str) for name in pieces)):
    # Not as this script writes it (edited by hand?): which pieces are its
    # own is unknown, so none is removed.
    raise cli.StageError(
        f"{manifest_path(folder, name_base)}: damaged, its \"pieces\" is not "
        f"a list of file names: delete it, and the {name_base}_<N>.txt "
        f"pieces beside it if split_text.py wrote them")
  ours = set(pieces)
  for name in sorted(os.listdir(folder)):
    if not piece_pattern(name_base).fullmatch(name):
      continue
    path = os.path.join(folder, name)
    if name not in ours:
      raise cli.StageError(
          f"{path}: not written by split_text.py (no "
          f"{manifest_path(folder, name_base)} lists it), and stage III-b "
          f"would read it with the new pieces: delete it or give another "
          f"--folder or --name_base")
    os.remove(path)
  logging.info("Removed %d pieces of a former run", len(ours))


def split_file(read_file, split_number, folder, name_base):
  """Counts the articles of read_file, then writes the pieces into folder."""
  check_read_file_is_no_output(read_file, folder, name_base)
  num_articles, article_bytes = count_articles(read_file)
  if num_articles == 0:
    raise cli.StageError(f"--read_file={read_file}: holds no article "
                         f"(only blank lines or nothing)")
  num_pieces = split_number
  if num_articles < num_pieces:
    logging.warning("%s holds %d articles, fewer than --split_number=%d: "
                    "writing %d files, one article each", read_file,
                    num_articles, num_pieces, num_articles)
    num_pieces = num_articles
  os.makedirs(folder, exist_ok=True)

  def path_of_piece(index):
    return os.path.join(folder, f"{name_base}_{index}.txt")

  names = [os.path.basename(path_of_piece(i)) for i in range(num_pieces)]
  file_io.remove_stale_temporaries(
      os.path.join(glob.escape(folder), glob.escape(name_base)) + "_*")
  file_io.remove_stale_temporaries(
      glob.escape(manifest_path(folder, name_base)))
  remove_former_pieces(folder, name_base)
  made_from = {"read_file": file_io.file_identity(read_file),
               "split_number": split_number, "pieces": names}
  # Listed before they are written, so that a killed run's pieces are known.
  file_io.write_json(manifest_path(folder, name_base),
                 dict(made_from, complete=False))
  logging.info("Splitting %s: %d articles, %d bytes, into %d pieces",
               read_file, num_articles, article_bytes, num_pieces)
  sizes = split_articles(read_file, num_articles, article_bytes,
                         num_pieces, path_of_piece)
  for index, size in enumerate(sizes):
    logging.info("  %s: %d bytes", path_of_piece(index), size)
  file_io.write_json(manifest_path(folder, name_base),
                 dict(made_from, complete=True, sizes=sizes))
