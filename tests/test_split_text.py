"""split_text.py: whole articles only, in order, balanced, streaming."""
import os
import random
import subprocess
import sys

import pytest

from conftest import ROOT
from bert_distill import article_split
from stage_runs import assert_one_line_error

SCRIPT = os.path.join(ROOT, "split_text.py")


def parse_articles(data):
  """Independent reader: the articles of a text, each a tuple of lines.

  Lines are split on b"\\n" only and a line holding only whitespace is a
  blank line, as the splitter defines them.
  """
  articles, current = [], []
  lines = data.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  for line in lines:
    if line.strip():
      current.append(line)
    elif current:
      articles.append(tuple(current))
      current = []
  if current:
    articles.append(tuple(current))
  return articles


def random_text(rng, num_articles):
  """A text with random article layouts: blank runs, CRLF, spaces, no final newline."""
  words = [b"alpha", b"beta", "\u00e9t\u00e9".encode(), "\u4e2d".encode(),
           b"x" * 50, b"\t tab", b"\xff\xfe bad bytes"]
  parts = []
  for _ in range(rng.randint(0, 2)):
    parts.append(rng.choice([b"\n", b"  \n", b"\r\n"]))
  for a in range(num_articles):
    size = rng.choice([1, 1, 2, 5, 20, 200])
    for _ in range(rng.randint(1, size)):
      line = b" ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
      parts.append(line + rng.choice([b"\n", b"\n", b"\r\n"]))
    if a < num_articles - 1:
      for _ in range(rng.randint(1, 3)):
        parts.append(rng.choice([b"\n", b"\n", b" \t\n", b"\r\n"]))
  text = b"".join(parts)
  if rng.random() < 0.3 and text.endswith(b"\n") and num_articles:
    text = text.rstrip(b"\r\n")  # Last line without a newline.
  elif rng.random() < 0.3:
    text += b"\n\n"
  return text


def split(tmp_path, data, split_number):
  """Runs the splitter in-process; returns the pieces' bytes."""
  src = tmp_path / "in.txt"
  src.write_bytes(data)
  out = tmp_path / "out"
  out.mkdir(exist_ok=True)
  for old in out.iterdir():
    old.unlink()
  num_articles, article_bytes = article_split.count_articles(str(src))
  num_pieces = min(split_number, num_articles)
  article_split.split_articles(str(src), num_articles, article_bytes,
                               num_pieces, lambda i: str(out / f"p_{i}.txt"))
  names = sorted(os.listdir(out), key=lambda n: int(n[2:-4]))
  assert names == [f"p_{i}.txt" for i in range(num_pieces)]
  return [(out / n).read_bytes() for n in names]


@pytest.mark.parametrize("seed", range(40))
def test_random_layouts_keep_every_article_once_in_order(tmp_path, seed):
  rng = random.Random(seed)
  num_articles = rng.choice([1, 2, 3, 7, 30, 120])
  data = random_text(rng, num_articles)
  split_number = rng.choice([1, 2, 3, 5, 8, 50, 200])
  pieces = split(tmp_path, data, split_number)

  articles = parse_articles(data)
  assert len(articles) == num_articles
  assert len(pieces) == min(split_number, num_articles)
  joined = []
  for piece in pieces:
    assert piece.endswith(b"\n")
    lines = piece[:-1].split(b"\n")
    assert lines[0].strip() and lines[-1].strip(), "blank line at a piece edge"
    # Articles inside a piece are separated by exactly one empty line.
    assert b"\n\n\n" not in piece
    joined.extend(parse_articles(piece))
  assert joined == articles
  # Nothing but the separators is added or lost.
  assert sum(len(p) for p in pieces) == (
      sum(len(line) + 1 for art in articles for line in art) +
      len(articles) - len(pieces))


@pytest.mark.parametrize("seed", range(10))
def test_pieces_are_balanced_by_bytes(tmp_path, seed):
  rng = random.Random(seed)
  articles = [b"".join(b"w" * rng.randint(10, 300) + b"\n"
                       for _ in range(rng.randint(1, 6)))
              for _ in range(rng.randint(200, 400))]
  data = b"\n".join(articles)
  split_number = rng.randint(2, 9)
  pieces = split(tmp_path, data, split_number)
  total = sum(len(a) for a in articles)
  largest = max(len(a) for a in articles)
  done = 0
  for k, piece in enumerate(pieces[:-1]):
    done += sum(len(b"\n".join(a)) + 1 for a in parse_articles(piece))
    target = (k + 1) * total / split_number
    # Each cut is at the article boundary nearest its target.
    assert abs(done - target) <= largest / 2 + 1


def test_huge_article_never_leaves_an_empty_piece(tmp_path):
  data = b"a\n\n" + b"big line\n" * 1000 + b"\nb\n\nc\n"
  pieces = split(tmp_path, data, 3)
  assert [len(parse_articles(p)) for p in pieces] == [1, 1, 2]
  pieces = split(tmp_path, data, 4)
  assert [parse_articles(p)[0][0] for p in pieces] == [b"a", b"big line", b"b",
                                                        b"c"]


def run_script(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True,
                        text=True, cwd=ROOT, timeout=60)


def test_bad_input_is_a_one_line_error(tmp_path):
  missing = str(tmp_path / "missing.txt")
  assert_one_line_error(
      run_script(f"--read_file={missing}", f"--folder={tmp_path}/o"),
      "missing.txt")
  src = tmp_path / "in.txt"
  src.write_text("a\n\nb\n")
  assert_one_line_error(
      run_script(f"--read_file={src}", "--split_number=0",
                 f"--folder={tmp_path}/o"), "--split_number")
  assert_one_line_error(run_script(f"--read_file={src}"), "--folder")
  assert_one_line_error(
      run_script(f"--read_file={src}", f"--folder={src}/sub"), "in.txt")
  blank = tmp_path / "blank.txt"
  blank.write_text("\n  \n\n")
  assert_one_line_error(
      run_script(f"--read_file={blank}", f"--folder={tmp_path}/o"),
      "no article")


def test_bad_name_base_folder_or_manifest_is_a_one_line_error(tmp_path):
  src = tmp_path / "in.txt"
  src.write_text("a\n\nb\n")
  out = tmp_path / "o"
  # Before: hidden files _0.txt and .made_from.json.
  assert_one_line_error(
      run_script(f"--read_file={src}", f"--folder={out}", "--name_base="),
      "--name_base")
  # Before: "o/a/b.made_from.json.tmp-<pid>: No such file or directory".
  assert_one_line_error(
      run_script(f"--read_file={src}", f"--folder={out}", "--name_base=a/b"),
      "--name_base=a/b")
  assert not out.exists()
  # Before: "in.txt: File exists".
  assert_one_line_error(
      run_script(f"--read_file={src}", f"--folder={src}"),
      f"--folder={src}", "not a folder")
  # Before: a TypeError traceback.
  out.mkdir()
  (out / "text.made_from.json").write_text('{"pieces": 5}\n')
  assert_one_line_error(
      run_script(f"--read_file={src}", f"--folder={out}"),
      out / "text.made_from.json")


def test_fewer_articles_than_pieces_warns_and_writes_fewer_files(tmp_path):
  src = tmp_path / "in.txt"
  src.write_text("a\n\nb\nb2\n")
  folder = tmp_path / "new" / "folder"
  result = run_script(f"--read_file={src}", "--split_number=5",
                      f"--folder={folder}", "--name_base=wiki")
  assert result.returncode == 0, result.stderr
  assert "fewer than --split_number=5" in result.stderr
  assert sorted(os.listdir(folder)) == ["wiki.made_from.json", "wiki_0.txt",
                                        "wiki_1.txt"]
  assert (folder / "wiki_1.txt").read_text() == "b\nb2\n"


# Runs the script and reports its own peak RSS (VmHWM) when it exits: a
# child's ru_maxrss would start from the peak of this (large) test process.
_MEASURED_RUN = """
import atexit, runpy, sys
def report_peak():
  for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
      sys.stderr.write("VmHWM %s\\n" % line.split()[1])
atexit.register(report_peak)
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def peak_rss_mb(*args):
  """Runs the script; returns its own peak RSS in MB."""
  result = subprocess.run([sys.executable, "-c", _MEASURED_RUN, SCRIPT, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
  assert result.returncode == 0, result.stderr
  return int(result.stderr.split("VmHWM ")[-1].split()[0]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                    reason="needs Linux /proc for the peak RSS")
def test_memory_stays_constant_on_a_larger_file(tmp_path):
  small = tmp_path / "small.txt"
  small.write_bytes(b"one line\n\nanother\n")
  line = b"a sentence of about a hundred bytes, repeated to make a file " \
         b"large enough to show growth.\n"
  article = line * 40
  big = tmp_path / "big.txt"
  with open(big, "wb") as f:
    for i in range(6000):  # About 24 MB.
      f.write(article + b"\n")
  base = peak_rss_mb(f"--read_file={small}", f"--folder={tmp_path}/s",
                     "--split_number=2")
  peak = peak_rss_mb(f"--read_file={big}", f"--folder={tmp_path}/b",
                     "--split_number=7")
  assert peak - base < 8, (base, peak)
  assert peak < 100
  sizes = [os.path.getsize(tmp_path / "b" / f"text_{i}.txt") for i in range(7)]
  assert max(sizes) - min(sizes) <= len(article) + 1
