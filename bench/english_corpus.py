"""A few MB of real English, built offline and deterministically, for benches.

`build_corpus(path, target_bytes)` writes the project's text format (one
sentence per line, a blank line between documents) from text found on any
machine with this Python: Python's own documentation topics (pydoc_data), the
docstrings of the standard library, then the licenses and copyright files
under /usr/share. Sources are read in sorted order, so the same machine gives
the same bytes. `corpus_lines(corpus_file, corpus_bytes)` gives the
tokenization benches their text: a given file's lines, or a new corpus's.
Run as a script to write a file:

  python bench/english_corpus.py /tmp/english.txt 4000000
"""

import ast
import glob
import hashlib
import os
import re
import sys
import sysconfig
import tempfile

# A sentence ends at . ! or ? followed by whitespace and an upper-case letter,
# a quote or an opening bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z])")
_LETTER = re.compile(r"[A-Za-z]")
# Longer sources (some copyright files run to megabytes) are cut into
# documents of at most this many lines, about a Wikipedia article's length.
MAX_DOCUMENT_LINES = 100


def _pydoc_topics():
  """Yields the text of each topic of Python's interactive help."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  for name in sorted(topics.topics):
    yield topics.topics[name]


def _stdlib_docstrings():
  """Yields, per standard-library module, its docstrings joined by blank lines."""
  stdlib = sysconfig.get_paths()["stdlib"]
  for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"),
                               recursive=True)):
    if "site-packages" in path:
      continue
    try:
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
      continue
    docstrings = []
    for node in ast.walk(tree):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                           ast.AsyncFunctionDef)):
        docstring = ast.get_docstring(node)
        if docstring:
          docstrings.append(docstring)
    if docstrings:
      yield "\n\n".join(docstrings)


def _share_texts():
  """Yields the license texts and package copyright files under /usr/share."""
  paths = sorted(glob.glob("/usr/share/common-licenses/*"))
  paths += sorted(glob.glob("/usr/share/doc/*/copyright"))
  for path in paths:
    if os.path.isfile(path):
      with open(path, encoding="utf-8", errors="replace") as f:
        yield f.read()


def document_sentences(text):
  """Splits a document into sentence-ish lines.

  Paragraphs (separated by blank lines) are joined into one line each, then
  split after sentence ends. Lines with fewer than 8 letters or that look like
  code (interactive prompts, indentation-only markup) are dropped.
  """
  sentences = []
  for paragraph in re.split(r"\n\s*\n", text):
    if ">>>" in paragraph or "::" in paragraph:
      continue
    line = " ".join(paragraph.split())
    for sentence in _SENTENCE_END.split(line):
      if len(_LETTER.findall(sentence)) >= 8:
        sentences.append(sentence)
  return sentences


def build_corpus(path, target_bytes):
  """Writes about `target_bytes` of English to `path`; returns bytes written.

  Each source text that holds at least two sentences gives one or more
  documents of up to MAX_DOCUMENT_LINES lines (identical texts are kept once).
  Stops after the document that reaches target_bytes, or when the sources run
  out (then fewer bytes are written).
  """
  seen = set()
  written = 0
  with open(path, "w", encoding="utf-8") as out:
    for source in (_pydoc_topics, _stdlib_docstrings, _share_texts):
      for text in source():
        sentences = document_sentences(text)
        digest = hashlib.sha1("\n".join(sentences).encode()).digest()
        if len(sentences) < 2 or digest in seen:
          continue
        seen.add(digest)
        for document in _cut(sentences, MAX_DOCUMENT_LINES):
          block = ("\n" if written else "") + "\n".join(document) + "\n"
          out.write(block)
          written += len(block.encode("utf-8"))
          if written >= target_bytes:
            return written
  return written


def corpus_lines(corpus_file, corpus_bytes):
  """The non-empty lines of corpus_file; when it is empty ("") of a corpus of
  about corpus_bytes built into a new temporary directory. Returns (the
  file's path, its lines)."""
  if not corpus_file:
    corpus_file = os.path.join(tempfile.mkdtemp(), "english.txt")
    build_corpus(corpus_file, corpus_bytes)
  with open(corpus_file, encoding="utf-8") as f:
    return corpus_file, [line for line in f.read().splitlines()
                         if line.strip()]


def _cut(sentences, max_lines):
  """Cuts a list of sentences into pieces of at most max_lines, none of one
  line only (a last single line joins the piece before)."""
  pieces = [sentences[i:i + max_lines]
            for i in range(0, len(sentences), max_lines)]
  if len(pieces) > 1 and len(pieces[-1]) < 2:
    last = pieces.pop()
    pieces[-1] += last
  return pieces


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit("usage: english_corpus.py OUTPUT_PATH TARGET_BYTES")
  print(build_corpus(sys.argv[1], int(sys.argv[2])), "bytes written")
