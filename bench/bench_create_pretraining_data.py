"""Instances per second of multifile_create_pretraining_data.py vs Google's script.

On the same few MB of real English (bench/english_corpus.py), split into
--num_files pieces by split_text.py, with max_seq_length 128,
max_predictions_per_seq 20, dupe_factor 5:

  * Google: its create_pretraining_data.py (PyPI bert-tensorflow), single
    process, run on each file alone with seed S+i, one process per file as a
    user would run it. Timed without its start-up (TensorFlow import), which
    favours Google.
  * Ours: the whole command with --num_workers (default 2), start-up included.

Rounds alternate Google and ours so both see the same machine load; the
ratio of each round is reported. Every example of ours is checked equal to
Google's. Peak RSS: Google's process per file vs our largest worker.
Also reported: instances per CPU-second, which the load of other processes
on a shared machine does not change.

  .venv-bench/bin/python bench/bench_create_pretraining_data.py
"""

import argparse
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, ROOT)

import english_corpus  # pylint: disable=g-import-not-at-top,wrong-import-position
import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
import verify_against_google  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = dict(max_seq_length=128, max_predictions_per_seq=20, dupe_factor=5,
                masked_lm_prob=0.15, short_seq_prob=0.1, do_lower_case=True,
                do_whole_word_mask=False)


def google_one_file(input_path, output_path, vocab_file, seed):
  """Runs Google's pipeline on one file in this process; prints JSON stats."""
  google, tokenization = verify_against_google.load_google()
  google.tf.logging.set_verbosity(google.tf.logging.ERROR)
  cpu = time.process_time()
  instances, seconds = verify_against_google.run_google(
      google, tokenization, input_path, output_path, vocab_file, seed,
      SETTINGS)
  print(json.dumps(dict(
      instances=instances, seconds=seconds,
      cpu_seconds=time.process_time() - cpu,
      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def run_google(inputs, output_dir, vocab_file, seed):
  """Google on every file, one process each; returns summed stats."""
  total = dict(instances=0, seconds=0.0, cpu_seconds=0.0, peak_rss_mb=0.0)
  for i, path in enumerate(inputs):
    out = subprocess.run(
        [sys.executable, __file__, "--google_file", path,
         "--google_output", os.path.join(output_dir, f"google_{i}.tfrecord"),
         "--vocab_file", vocab_file, "--seed", str(seed + i)],
        check=True, capture_output=True, text=True).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    for key in ("instances", "seconds", "cpu_seconds"):
      total[key] += stats[key]
    total["peak_rss_mb"] = max(total["peak_rss_mb"], stats["peak_rss_mb"])
  return total


def run_ours(python, input_dir, output_dir, vocab_file, seed, num_workers):
  """Our whole command; returns its stats (wall time includes start-up)."""
  for old in glob.glob(os.path.join(output_dir, "ours_*")):
    os.remove(old)
  command = verify_against_google.our_command(
      python, input_dir, output_dir, vocab_file, seed, SETTINGS, num_workers)
  start = time.perf_counter()
  proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  stderr = proc.stderr.read()
  _, status, usage = os.wait4(proc.pid, 0)
  seconds = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(stderr[-2000:])
  instances = int(re.search(r"Wrote (\d+) instances", stderr).group(1))
  main_mb, worker_mb = map(float, re.search(
      r"Peak RSS: (\d+) MB in this process, (\d+) MB in the largest",
      stderr).groups())
  return dict(instances=instances, seconds=seconds,
              cpu_seconds=usage.ru_utime + usage.ru_stime,
              peak_rss_mb=worker_mb if num_workers > 1 else main_mb,
              main_rss_mb=main_mb)


def check_identical(num_inputs, output_dir):
  """Compares every example of ours with Google's, in a subprocess (so this
  process stays small: a child's peak RSS starts from its parent's);
  returns the number of examples."""
  out = subprocess.run(
      [sys.executable, __file__, "--compare_dir", output_dir,
       "--num_inputs", str(num_inputs)],
      check=True, capture_output=True, text=True).stdout
  return int(out.strip().splitlines()[-1])


def compare_outputs(output_dir, num_inputs):
  """Prints the number of examples when ours equal Google's; else exits."""
  examples = 0
  for i in range(num_inputs):
    count, difference = verify_against_google.compare(
        os.path.join(output_dir, f"ours_{i}.tfrecord"),
        os.path.join(output_dir, f"google_{i}.tfrecord"), SETTINGS)
    if difference:
      raise SystemExit(f"NOT IDENTICAL: file {i}: {difference}")
    examples += count
  print(examples)


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--corpus_bytes", type=int, default=4_000_000)
  parser.add_argument("--num_files", type=int, default=4)
  parser.add_argument("--num_workers", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--seed", type=int, default=12345)
  parser.add_argument("--vocab_file", default=os.path.join(
      ROOT, "data", "bert_uncased_vocab.txt"))
  parser.add_argument("--python", default=verify_against_google.default_python(),
                      help="interpreter for our script")
  parser.add_argument("--work_dir", default=None)
  parser.add_argument("--google_file", help=argparse.SUPPRESS)
  parser.add_argument("--google_output", help=argparse.SUPPRESS)
  parser.add_argument("--compare_dir", help=argparse.SUPPRESS)
  parser.add_argument("--num_inputs", type=int, help=argparse.SUPPRESS)
  return parser.parse_args()


def main():
  args = parse_args()
  print(flops.cpu_line(), flush=True)
  if args.google_file:
    google_one_file(args.google_file, args.google_output, args.vocab_file,
                    args.seed)
    return
  if args.compare_dir:
    compare_outputs(args.compare_dir, args.num_inputs)
    return
  work = args.work_dir or tempfile.mkdtemp(prefix="bench_cpd_")
  corpus = os.path.join(work, "english.txt")
  input_dir = os.path.join(work, "input")
  output_dir = os.path.join(work, "output")
  os.makedirs(output_dir, exist_ok=True)
  if not os.path.exists(corpus):
    english_corpus.build_corpus(corpus, args.corpus_bytes)
  subprocess.run([args.python, os.path.join(ROOT, "split_text.py"),
                  f"--read_file={corpus}", f"--split_number={args.num_files}",
                  f"--folder={input_dir}", "--name_base=english"],
                 check=True, capture_output=True)
  inputs = sorted(glob.glob(os.path.join(input_dir, "*.txt")))
  print(f"corpus: {os.path.getsize(corpus)} bytes in {len(inputs)} files; "
        f"{os.cpu_count()} cores; load average "
        f"{os.getloadavg()[0]:.1f}; settings {SETTINGS}")

  ratios, cpu_ratios = [], []
  for round_index in range(args.rounds):
    order = ["google", "ours"] if round_index % 2 == 0 else ["ours", "google"]
    stats = {}
    for who in order:
      if who == "google":
        stats[who] = run_google(inputs, output_dir, args.vocab_file, args.seed)
      else:
        stats[who] = run_ours(args.python, input_dir, output_dir,
                              args.vocab_file, args.seed, args.num_workers)
    examples = check_identical(len(inputs), output_dir)
    google, ours = stats["google"], stats["ours"]
    rate = {k: v["instances"] / v["seconds"] for k, v in stats.items()}
    cpu_rate = {k: v["instances"] / v["cpu_seconds"] for k, v in stats.items()}
    ratios.append(rate["ours"] / rate["google"])
    cpu_ratios.append(cpu_rate["ours"] / cpu_rate["google"])
    print(f"round {round_index + 1}: {examples} examples identical; "
          f"Google {rate['google']:.0f} instances/s "
          f"({google['seconds']:.1f} s, {cpu_rate['google']:.0f}/CPU-s, "
          f"peak RSS {google['peak_rss_mb']:.0f} MB); "
          f"ours ({args.num_workers} workers) {rate['ours']:.0f} instances/s "
          f"({ours['seconds']:.1f} s incl. start-up, "
          f"{cpu_rate['ours']:.0f}/CPU-s, peak RSS {ours['peak_rss_mb']:.0f} "
          f"MB per worker, {ours['main_rss_mb']:.0f} MB main); "
          f"speed-up {ratios[-1]:.2f}x, per CPU-second {cpu_ratios[-1]:.2f}x; "
          f"load average {os.getloadavg()[0]:.1f}")
  print(f"speed-up over Google, median of {len(ratios)} rounds: "
        f"{sorted(ratios)[len(ratios) // 2]:.2f}x instances/s (range "
        f"{min(ratios):.2f}x to {max(ratios):.2f}x), "
        f"{sorted(cpu_ratios)[len(cpu_ratios) // 2]:.2f}x per CPU-second")


if __name__ == "__main__":
  main()
