"""Stage II: a MediaWiki dump through the real WikiExtractor and extract_jsons.py."""
import bz2
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from bert_distill import wikipedia_text
from stage_runs import assert_one_line_error
from wiki_cases import EXPECTED_TEXT, write_dump, write_wiki_file
from wiki_cases import LIGHTHOUSE, SITEINFO, page

EXTRACT_DIR = os.path.join(ROOT, "extract_wikipedia_for_bert")


def run(args, **kwargs):
  return subprocess.run(args, capture_output=True, text=True, timeout=120,
                        cwd=ROOT, **kwargs)


def test_real_wikiextractor_dump_to_text_file_exactly(tmp_path):
  dump = tmp_path / "enwiki-test-pages-articles.xml.bz2"
  write_dump(dump)
  env = dict(os.environ, PYTHON=sys.executable, PROCESSES="2")
  out = tmp_path / "extracted"
  text_file = tmp_path / "text" / "wiki.txt"
  result = run(["bash", os.path.join(EXTRACT_DIR, "extract.sh"), str(dump),
                str(out), str(text_file)], env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  # The options that suit BERT: JSON lines in bz2 files.
  wiki_files = wikipedia_text.find_wiki_files(str(out))
  assert all(f.endswith(".bz2") for f in wiki_files)
  titles = [json.loads(line)["title"]
            for f in wiki_files for line in bz2.open(f, "rt")]
  assert "Carrow Light" not in titles  # The redirect is gone.
  assert text_file.read_text(encoding="utf-8") == EXPECTED_TEXT
  assert not [p for p in os.listdir(tmp_path / "text") if ".tmp-" in p]

  # A second run finds the extraction done and leaves it alone.
  mtime = os.path.getmtime(wiki_files[0])
  result = run(["bash", os.path.join(EXTRACT_DIR, "extract.sh"), str(dump),
                str(out)], env=env)
  assert result.returncode == 0 and "skipped" in result.stdout
  assert os.path.getmtime(wiki_files[0]) == mtime

  # A dump rewritten since is not taken for the one extracted.
  os.utime(dump, (mtime - 100, mtime - 100))
  result = run(["bash", os.path.join(EXTRACT_DIR, "extract.sh"), str(dump),
                str(out)], env=env)
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      f"error: {out} was extracted from another dump or with other options "
      f"(see {out}/made_from.txt); delete it to extract again"]
  # Nor a folder an older extract.sh made, headings in its text.
  os.remove(out / "made_from.txt")
  result = run(["bash", os.path.join(EXTRACT_DIR, "extract.sh"), str(dump),
                str(out)], env=env)
  assert result.returncode == 1
  assert (len(result.stderr.splitlines()) == 1 and
          result.stderr.startswith(f"error: {out} has no made_from.txt"))


def extract_sh(dump, out, *text_file, python=sys.executable):
  """Runs extract.sh DUMP OUT [TEXT_FILE] with 2 WikiExtractor processes."""
  return run(["bash", os.path.join(EXTRACT_DIR, "extract.sh"), str(dump),
              str(out), *map(str, text_file)],
             env=dict(os.environ, PYTHON=str(python), PROCESSES="2"))


def test_template_cache_of_a_killed_run_or_another_dump_is_not_reused(
    tmp_path):
  dump, out, text_file = tmp_path / "b.xml.bz2", tmp_path / "x", tmp_path / "t"
  write_dump(dump)
  # What an interrupted run of WikiExtractor's template pass left under the
  # cache's name: a part of it. Before, reused, and Template:Convert's text
  # was gone: "Its tower is tall."
  (tmp_path / "x.templates").write_text("<page>\n   <title>Template:Ref")
  (tmp_path / "x.templates.partial").write_text("<page>\n")
  result = extract_sh(dump, out, text_file)
  assert result.returncode == 0, result.stderr[-3000:]
  assert text_file.read_text(encoding="utf-8") == EXPECTED_TEXT
  assert not (tmp_path / "x.templates.partial").exists()
  assert "Template:Convert" in (tmp_path / "x.templates").read_text()

  # Another dump, in the same OUT_FOLDER once the first is deleted (as
  # extract.sh's error says): its own templates, not the first dump's.
  other = tmp_path / "a.xml.bz2"
  with bz2.open(other, "wt", encoding="utf-8") as f:
    f.write(SITEINFO + page(10, "Carrow Point Light", LIGHTHOUSE) +
            "</mediawiki>\n")
  shutil.rmtree(out)
  assert extract_sh(other, out, text_file).returncode == 0
  assert "Its tower is tall." in text_file.read_text(encoding="utf-8")
  shutil.rmtree(out)
  result = extract_sh(dump, out, text_file)
  assert result.returncode == 0, result.stderr[-3000:]
  # Before: the other dump's cache, without Template:Convert.
  assert text_file.read_text(encoding="utf-8") == EXPECTED_TEXT


def test_a_file_that_is_not_a_mediawiki_dump_fails_in_one_line(tmp_path):
  dump, out, text_file = tmp_path / "g.xml.bz2", tmp_path / "x", tmp_path / "t"
  dump.write_bytes(bz2.compress(b"hello not xml\n"))
  # Before: a warning, status 0 and an OUT_FOLDER that the rerun skipped.
  for _ in range(2):
    result = extract_sh(dump, out, text_file)
    assert_one_line_error(result, f"{dump} holds no article")
    assert result.returncode == 1
    assert not out.exists() and not text_file.exists()


@pytest.mark.parametrize("case", ["empty", "truncated", "not_bz2"])
def test_a_broken_dump_is_one_line_naming_the_cause_and_the_log(tmp_path,
                                                                 case):
  dump, out = tmp_path / "d.xml.bz2", tmp_path / "x"
  write_dump(dump)
  data = {"empty": b"", "truncated": dump.read_bytes()[:300],
          "not_bz2": b"<mediawiki>plain text named .bz2</mediawiki>\n"}[case]
  dump.write_bytes(data)
  result = extract_sh(dump, out)
  # Before: WikiExtractor's 20-line traceback, then the error line.
  line = assert_one_line_error(result, str(dump))
  assert result.returncode == 1
  assert not out.exists() and not (tmp_path / "x.templates").exists()
  if case == "empty":
    assert line == f"error: dump {dump} is empty"
  else:
    log = tmp_path / "x.partial" / "wikiextractor.log"
    cause = {"truncated": "EOFError: Compressed file ended",
             "not_bz2": "OSError: Invalid data stream"}[case]
    assert line.startswith(f"error: WikiExtractor failed on {dump}: {cause}")
    assert line.endswith(f"(its log: {log})")
    assert "Traceback" in log.read_text()


def test_a_python_without_wikiextractor_is_one_line_saying_how_to_fix(
    tmp_path):
  dump = tmp_path / "d.xml.bz2"
  write_dump(dump)
  # A python whose site-packages are not read: the venv not activated.
  python = tmp_path / "python"
  python.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
  python.chmod(0o755)
  result = extract_sh(dump, tmp_path / "x", python=python)
  # Before: a ModuleNotFoundError traceback.
  assert_one_line_error(result, f"PYTHON={python}", "no wikiextractor",
                        "activate")
  result = extract_sh(dump, tmp_path / "x", python=tmp_path / "nothing")
  assert_one_line_error(result, f"PYTHON={tmp_path / 'nothing'}")


def make_folder(root):
  """AA/wiki_00 (plain), AA/wiki_01.bz2, AB/wiki_00 with a malformed line,
  plus files that are not WikiExtractor outputs."""
  write_wiki_file(f"{root}/AB/wiki_00", [("C", "Third article here.")],
                  extra_lines=['{"title": "broken", "text": "no end'])
  write_wiki_file(f"{root}/AA/wiki_01.bz2",
                  [("B", "Second article. It has two sentences.")],
                  compress=True)
  write_wiki_file(f"{root}/AA/wiki_00",
                  [("A", "A\nFirst article, the first line was its title."),
                   ("Empty", "\n\n")])
  (root / "AA" / "notes.txt").write_text("not a wiki file\n")


def test_cli_reads_plain_and_bz2_in_sorted_order_and_warns(tmp_path):
  make_folder(tmp_path / "in")
  out = tmp_path / "out.txt"
  result = run([sys.executable, os.path.join(EXTRACT_DIR, "extract_jsons.py"),
                f"--folder={tmp_path / 'in'}", f"--write_file={out}",
                "--num_workers=2"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert out.read_text() == ("First article, the first line was its title.\n\n"
                             "Second article.\nIt has two sentences.\n\n"
                             "Third article here.\n\n")
  warnings = [l for l in result.stderr.splitlines() if "malformed JSON" in l]
  assert any(f"{tmp_path / 'in' / 'AB' / 'wiki_00'}:2:" in l for l in warnings)
  assert "3 articles" in result.stderr


def test_parallel_output_equals_serial_output(tmp_path):
  for i in range(5):
    # Named without .bz2 even when compressed: the content decides.
    write_wiki_file(str(tmp_path / f"A{i}" / "wiki_00"),
                    [(f"T{i}{j}", f"Article {i}.{j} starts. Dr. Who ends it.")
                     for j in range(3)], compress=bool(i % 2))
  files = wikipedia_text.find_wiki_files(str(tmp_path))
  serial = list(wikipedia_text.converted_files(files, 1))
  parallel = list(wikipedia_text.converted_files(files, 2))
  assert parallel == serial
  assert serial[3][0].startswith("Article 3.0 starts.\nDr. Who ends it.\n\n")


def test_cli_missing_folder_is_one_line_error(tmp_path):
  result = run([sys.executable, os.path.join(EXTRACT_DIR, "extract_jsons.py"),
                f"--folder={tmp_path / 'nothing'}",
                f"--write_file={tmp_path / 'out.txt'}"])
  assert_one_line_error(result, "--folder")
  assert not os.path.exists(tmp_path / "out.txt")


def test_malformed_json_lines_are_skipped_with_file_and_line(tmp_path):
  path = str(tmp_path / "wiki_00")
  write_wiki_file(path, [("Good", "A good article.")], extra_lines=[
      "{not json", '{"title": "no text"}', "[1, 2]",
      json.dumps({"title": "Late", "text": "Still read."})])
  converted = wikipedia_text.convert_file(path)
  assert converted.text == "A good article.\n\nStill read.\n\n"
  assert converted.num_articles == 2 and converted.num_skipped == 3
  assert [w.split(": ")[0] for w in converted.warnings] == [
      f"{path}:2", f"{path}:3", f"{path}:4"]


@pytest.mark.parametrize("compress", [False, True])
def test_text_that_is_not_utf8_is_replaced_with_a_warning(tmp_path, compress):
  path = tmp_path / "in" / "AA" / "wiki_00"
  good = json.dumps({"title": "G", "text": "Caf\u00e9 \ufffd kept."},
                    ensure_ascii=False).encode()
  bad = b'{"title": "L", "text": "Caf\xe9 and \xff\xfe."}'
  data = b"\n".join([good, bad, bad, good]) + b"\n"
  (tmp_path / "in" / "AA").mkdir(parents=True)
  path.write_bytes(bz2.compress(data) if compress else data)
  converted = wikipedia_text.convert_file(str(path))
  # The file's own U+FFFD are kept and not counted.
  assert converted.text.count("\ufffd") == 2 + 6
  assert converted.num_replaced == 6 and converted.num_skipped == 0
  # Before: replaced without a word.
  warnings = converted.warnings
  assert warnings == [f"{path}:2: not UTF-8: 6 characters replaced by "
                      f"U+FFFD, on 2 of its lines (the first here)"]

  out = tmp_path / "out.txt"
  result = run([sys.executable, os.path.join(EXTRACT_DIR, "extract_jsons.py"),
                f"--folder={tmp_path / 'in'}", f"--write_file={out}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert warnings[0] in result.stderr
  assert "6 characters not UTF-8 replaced by U+FFFD" in result.stderr
  assert "malformed JSON" not in result.stderr


def test_corrupt_bz2_file_is_a_stage_error_naming_it(tmp_path):
  path = tmp_path / "wiki_00.bz2"
  path.write_bytes(b"BZh91AY&SY not really bz2")
  with pytest.raises(wikipedia_text.cli.StageError, match="wiki_00.bz2"):
    wikipedia_text.convert_file(str(path))


def test_find_wiki_files_sorts_by_folder_then_number(tmp_path):
  for rel in ["AB/wiki_00", "AA/wiki_10", "AA/wiki_02.bz2", "AA/other",
              "AA/wiki_00.txt", "B/wiki_00"]:
    os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
    (tmp_path / rel).write_text("")
  found = [os.path.relpath(f, tmp_path)
           for f in wikipedia_text.find_wiki_files(str(tmp_path))]
  assert found == ["AA/wiki_02.bz2", "AA/wiki_10", "AB/wiki_00", "B/wiki_00"]


@pytest.mark.parametrize("text, title, expected", [
    # WikiExtractor 3: the text starts with the first sentence, keep it.
    ("Anarchism is a political philosophy.", "Anarchism",
     ["Anarchism is a political philosophy."]),
    # Older versions: the title is the first line, drop it.
    ("Anarchism\nIt is a political philosophy.", "Anarchism",
     ["It is a political philosophy."]),
    ("Washington, D.C.\nIt is a city.", "Washington, D.C.",
     ["It is a city."]),
    # The title elsewhere is text.
    ("It was founded.\nAnarchism\nIt grew.", "Anarchism",
     ["It was founded.", "Anarchism", "It grew."]),
])
def test_title_removed_only_where_text_starts_with_it(text, title, expected):
  assert wikipedia_text.article_sentences(title, text) == expected


def test_every_line_of_the_text_is_kept_however_short():
  """WikiExtractor, run by extract.sh, writes no heading: every line is a
  paragraph, even one that looks like a heading."""
  text = ("Returns the current ABC cache token.\n\nBiology.\nSeals eat fish.\n"
          "It forms dense forests that shelter fish.")
  assert wikipedia_text.article_sentences("Kelp", text) == [
      "Returns the current ABC cache token.", "Biology.", "Seals eat fish.",
      "It forms dense forests that shelter fish."]


@pytest.mark.parametrize("paragraph, expected", [
    ("Dr. Smith of the U.S. Navy arrived, e.g. by boat. He stayed.",
     ["Dr. Smith of the U.S. Navy arrived, e.g. by boat.", "He stayed."]),
    ("The rate rose 3.5 percent. Mr. Lee said so, i.e. he agreed.",
     ["The rate rose 3.5 percent.", "Mr. Lee said so, i.e. he agreed."]),
    ("Is it true? Yes! It is.", ["Is it true?", "Yes!", "It is."]),
    ('He said, "Go home." She left.', ['He said, "Go home."', "She left."]),
    ("No final stop", ["No final stop"]),
])
def test_sentence_splitting_keeps_abbreviations_and_decimals(paragraph,
                                                             expected):
  assert wikipedia_text.split_sentences(paragraph) == expected


@pytest.mark.parametrize("paragraph", [
    "The mill closed in 1903. Its pond was drained. A school stands there.",
    "He left (see the end. The next) for home. She stayed.",
    "They sold nuts, etc. The shop closed. It was approx. Ten men came.",
    'He said "go home. Now" and left. It ended. Then what? Nothing!',
    "Mr. Smith arrived at 5 p.m. The bus left. In the U.S. Army he served.",
    "The rate was 3.5 percent. Dr. Lee agreed, e.g. in 1990. Prof. Kay did not.",
    "1. The first item. 2. The second item. 3. The last.",
    "It has (i) one part. (ii) Another part follows. The end.",
    "See the option --verbose. It prints more. The end.",
    "Born in St. Louis, he moved to Washington, D.C. He died there.",
    "It was the end\u2026 The next began. \u201cGo. Now,\u201d he said. She went.",
])
def test_fast_splitting_equals_pysbd_on_the_whole_paragraph(paragraph):
  assert wikipedia_text.split_sentences(paragraph) == \
      wikipedia_text.pysbd_sentences(paragraph)


def test_sure_breaks_skip_abbreviations_brackets_and_quotes():
  _, abbreviations = wikipedia_text._pysbd()  # pylint: disable=protected-access
  text = "Alpha beta. Gamma etc. Delta (eta. Theta) iota. Kappa"
  breaks = wikipedia_text.sure_breaks(text, abbreviations)
  assert [text[b:b + 5] for b in breaks] == ["Gamma", "Kappa"]


# The templates the bundled dump defines, as WikiExtractor expands them.
EXAMPLE_TEMPLATES = {"convert": "{1} {2}", "circa": "around {1}",
                     "lang": "{2}", "nowrap": "{1}"}


def _expand_template(match):
  parts = match.group(1).split("|")
  form = EXAMPLE_TEMPLATES.get(parts[0].strip().lower())
  if form is None:
    return ""
  return re.sub(r"\{(\d)\}", lambda n: parts[int(n.group(1))], form)


def source_paragraphs(wikitext):
  """The prose paragraphs of an article's wikitext, markup stripped, and its
  list items: a reference reading of the markup, independent of
  WikiExtractor. Headings, lists, tables, templates, references, files and
  categories are not prose."""
  text = re.sub(r"<ref[^>]*/>", "", wikitext)
  text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
  expanded = None
  while expanded != text:
    expanded, text = text, re.sub(r"\{\{([^{}]*)\}\}", _expand_template, text)
  text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)
  paragraphs, list_items = [], []
  for line in text.split("\n"):
    if re.match(r"\[\[(Category|File):", line):
      continue
    line = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", line.strip())
    if line[:1] in ("*", "#"):
      list_items.append(line.lstrip("*# "))
    elif line and line[0] not in "=:;|!{}":
      paragraphs.append(line)
  return paragraphs, list_items


def words(text):
  return " ".join(re.findall(r"\w+", text))


def test_bundled_dump_keeps_every_sentence_and_no_heading_list_or_reference(
    tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "data", "example_wiki"))
  import example_dump  # pylint: disable=g-import-not-at-top
  out, text_file = tmp_path / "extracted", tmp_path / "wiki.txt"
  result = run(["bash", os.path.join(EXTRACT_DIR, "extract.sh"),
                os.path.join(ROOT, "data", "example_wiki",
                             "enwiki-example-pages-articles.xml.bz2"),
                str(out), str(text_file)],
               env=dict(os.environ, PYTHON=sys.executable, PROCESSES="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  sentences = {}
  for path in wikipedia_text.find_wiki_files(str(out)):
    with wikipedia_text.open_wiki_file(path) as f:
      for line in f:
        article = json.loads(line)
        sentences[article["title"]] = wikipedia_text.article_sentences(
            article["title"], article["text"])
  text = text_file.read_text(encoding="utf-8")
  assert text == "".join("\n".join(s) + "\n\n" for s in sentences.values()
                         if s)
  num_paragraphs = 0
  headings = set()
  for title, wikitext, ns, redirect in example_dump.build_pages(
      example_dump.SEED, example_dump.NUM_GENERATED):
    headings.update(re.findall(r"^=+ *(.*?) *=+ *$", wikitext, re.M))
    if ns != 0 or redirect:
      continue
    article_words = words(" ".join(sentences.get(title, [])))
    paragraphs, list_items = source_paragraphs(wikitext)
    for paragraph in paragraphs:
      assert words(paragraph) in article_words, (title, paragraph)
      num_paragraphs += 1
    for item in list_items:
      assert words(item) not in map(words, sentences.get(title, [])), item
  assert num_paragraphs > 2000
  # 4,718 sentences, as many as the dump's prose holds (the heading guess
  # this replaced dropped none of them; it did drop the test dump's).
  lines = text.splitlines()
  assert sum(1 for line in lines if line) == 4718
  assert not headings & {line.rstrip(".!?") for line in lines}
  for markup in ("Regional Studies", "cite book", "Reflist", "Infobox",
                 "Category:", "{{", "}}", "[[", "<ref"):
    assert markup not in text, markup


# A killed WikiExtractor process stops the extraction instead of hanging it.
_WRAPPER_CHILD = """
import multiprocessing, os, signal, sys, time
sys.path.insert(0, {extract_dir!r})
import wikiextractor_without_headings as wrapper
os.register_at_fork(before=wrapper.remember_the_forking_process,
                    after_in_child=wrapper.die_with_the_parent)
{watch}
child = multiprocessing.get_context("fork").Process(target=time.sleep,
                                                    args=(60,))
child.start()
print(child.pid, flush=True)
{then}
"""


def _run_wrapper_child(watch, then):
  code = _WRAPPER_CHILD.format(extract_dir=EXTRACT_DIR, watch=watch,
                               then=then)
  return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _gone(pid, seconds=10):
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    try:
      with open(f"/proc/{pid}/stat") as f:
        if f.read().split(") ")[1].startswith("Z"):
          return True  # a zombie: dead, not yet reaped
    except FileNotFoundError:
      return True
    time.sleep(0.05)
  return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl")
def test_wikiextractor_children_die_with_a_killed_main_process():
  process = _run_wrapper_child(
      watch="", then="os.kill(os.getpid(), signal.SIGKILL)")
  child = int(process.stdout.readline())
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert _gone(child), "the worker outlived its killed parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="waitid")
def test_a_killed_wikiextractor_worker_stops_the_extraction_in_one_line():
  process = _run_wrapper_child(
      watch="wrapper.stop_when_a_child_dies(0.05)",
      then="time.sleep(60); print('still running')")
  child = int(process.stdout.readline())
  os.kill(child, signal.SIGKILL)
  stdout, stderr = process.communicate(timeout=30)
  assert process.returncode == 1
  assert "still running" not in stdout
  assert stderr.strip() == (f"error: WikiExtractor's process {child} was "
                            f"killed by signal 9: extraction stopped (its "
                            f"output is incomplete; rerun to redo it)")
