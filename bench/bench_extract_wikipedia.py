"""Stage II speed: WikiExtractor on the example dump, then wikipedia_text.py's
conversion (sentence splitting) with 1 and 2 workers, interleaved rounds.

  .venv/bin/python bench/bench_extract_wikipedia.py --copies=12 --rounds=2

Input: the bundled example dump through the real WikiExtractor, its JSON
output copied --copies times into separate wiki_NN.bz2 files (so the workers
have files to share). Reports MB of text written per second, the ratio of 2
workers to 1 measured in the same run, and peak RSS of the main process and
of the largest worker.
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bert_distill import wikipedia_text  # pylint: disable=wrong-import-position
sys.path.insert(0, os.path.join(ROOT, "bench"))
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_integer("copies", 12, "Copies of the extracted example.")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds per worker count.")
DUMP = os.path.join(ROOT, "data", "example_wiki",
                    "enwiki-example-pages-articles.xml.bz2")


def run_wikiextractor(out_dir):
  """Runs WikiExtractor on the example dump; returns (seconds, XML bytes)."""
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "wikiextractor.WikiExtractor",
                  "--json", "--compress", "--discard_empty", "--quiet",
                  "--processes", "2", "--output", out_dir, DUMP], check=True)
  seconds = time.perf_counter() - start
  import bz2  # pylint: disable=g-import-not-at-top
  with bz2.open(DUMP, "rb") as f:
    xml_bytes = len(f.read())
  return seconds, xml_bytes


def convert_all(files, num_workers):
  """Converts every file; returns (seconds, text bytes)."""
  start = time.perf_counter()
  size = sum(len(text.encode("utf-8")) for text, _, _ in
             wikipedia_text.converted_files(files, num_workers))
  return time.perf_counter() - start, size


def compare_with_pysbd(files):
  """split_sentences against pysbd alone on every paragraph of the files:
  returns (paragraphs, MB, pysbd seconds, split_sentences seconds,
  paragraphs split differently)."""
  import json  # pylint: disable=g-import-not-at-top
  paragraphs = []
  for path in files:
    with wikipedia_text.open_wiki_file(path) as f:
      for line in f:
        paragraphs += [p for p in json.loads(line)["text"].split("\n")
                       if p.strip()]
  start = time.perf_counter()
  reference = [wikipedia_text.pysbd_sentences(p) for p in paragraphs]
  middle = time.perf_counter()
  fast = [wikipedia_text.split_sentences(p) for p in paragraphs]
  end = time.perf_counter()
  differ = sum(r != f for r, f in zip(reference, fast))
  size = sum(len(p.encode("utf-8")) for p in paragraphs) / 1e6
  return len(paragraphs), size, middle - start, end - middle, differ


def main(argv):
  del argv
  print(flops.cpu_line(), flush=True)
  work = tempfile.mkdtemp(prefix="bench_extract_")
  try:
    seconds, xml_bytes = run_wikiextractor(os.path.join(work, "x"))
    print(f"WikiExtractor, 2 processes: {xml_bytes / 1e6:.2f} MB of XML in "
          f"{seconds:.1f} s = {xml_bytes / 1e6 / seconds:.2f} MB/s "
          f"(process start-up and the template pass included)")
    source = wikipedia_text.find_wiki_files(os.path.join(work, "x"))[0]
    n, size, slow, fast, differ = compare_with_pysbd([source])
    print(f"sentence splitting of {n} paragraphs ({size:.2f} MB): pysbd "
          f"alone {size / slow:.3f} MB/s, split_sentences {size / fast:.3f} "
          f"MB/s, ratio {slow / fast:.2f}x, {differ} paragraphs split "
          f"differently")
    os.makedirs(os.path.join(work, "copies", "AA"))
    files = []
    for i in range(FLAGS.copies):
      files.append(os.path.join(work, "copies", "AA", f"wiki_{i:02d}.bz2"))
      shutil.copy(source, files[-1])
    rates = {1: [], 2: []}
    for _ in range(FLAGS.rounds):
      for workers in (1, 2):
        seconds, size = convert_all(files, workers)
        rates[workers].append(size / 1e6 / seconds)
        print(f"extract_jsons, {workers} worker(s): {size / 1e6:.2f} MB of "
              f"text in {seconds:.1f} s = {rates[workers][-1]:.3f} MB/s")
    best = {w: max(r) for w, r in rates.items()}
    print(f"best: 1 worker {best[1]:.3f} MB/s, 2 workers {best[2]:.3f} MB/s, "
          f"ratio {best[2] / best[1]:.2f}x")
    main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: main {main_mb:.0f} MB, largest child {child_mb:.0f} MB")
  finally:
    shutil.rmtree(work)


if __name__ == "__main__":
  app.run(main)
