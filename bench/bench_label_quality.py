"""Which teacher labels make the student closest to its teacher: every mode.

One command runs the project's own stages on a few MB of real English
(bench/english_corpus.py) tokenized with BERT's uncased vocabulary:

  1. the corpus, split into text files (split_text.py), the last held out;
  2. the vocabulary: the tokens of BERT's uncased vocabulary the corpus uses
     (data/example_wiki/make_demo_vocab.py: it tokenizes the corpus exactly
     as the full vocabulary does, with a smaller softmax, as the demo does);
  3. pretraining records (multifile_create_pretraining_data.py): the
     teacher's (--teacher_dupe_factor passes), the students' (one pass,
     another seed) and the held-out file's;
  4. a teacher pretrained on its records (distill.py, hard labels only, as
     run_demo.sh makes its teacher); its own held-out MLM accuracy is
     reported;
  5. stage IV over the students' records in every label mode, and over the
     held-out records in full mode;
  6. the same student (config, init, seed, steps, learning rate, batch)
     distilled from each, with two seeds, evaluated on the held-out file
     with --teacher_kl.

It prints (and writes to WORK_DIR/label_quality.md and .json) a table of
held-out teacher_kl, teacher_top1_agreement, masked_lm_accuracy,
student_ece (means over the seeds, with the range between them), label
bytes per example (labelled file size minus the pretraining file's, per
record), stage IV seconds per example (from its progress log, teacher
already loaded) and stage V examples/s (median of its step log lines).

  .venv/bin/python bench/bench_label_quality.py            # ~60 min, 2 cores
  .venv/bin/python bench/bench_label_quality.py --quick    # ~15 min

Every step is skipped when its output exists, so a rerun after a crash goes
on where it stopped (delete WORK_DIR to start over). The stages run from a
copy of the scripts taken at the start (WORK_DIR/code), so editing the tree
during a run cannot change it (AutoGraph reads a function's source when it
traces it).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, ROOT]
import english_corpus  # pylint: disable=wrong-import-position
import flops  # pylint: disable=wrong-import-position
from bert_distill import records  # pylint: disable=wrong-import-position

TEACHER_CONFIG = {
    "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0, "hidden_size": 128,
    "initializer_range": 0.02, "intermediate_size": 512,
    "max_position_embeddings": 128, "num_attention_heads": 2,
    "num_hidden_layers": 2, "type_vocab_size": 2}
STUDENT_CONFIG = dict(TEACHER_CONFIG, hidden_size=64, intermediate_size=256)

# name: (stage IV flags or None for the pretraining records, stage V flags).
# Several students may share one labelled set (the records' folder name is
# the first element of the stage IV tuple).
MODES = {
    "hard labels only": (None, ["--soft_loss_weight=0",
                                "--hard_mlm_loss_weight=1"]),
    "top_k k=10": (("top_k_10", ["--label_mode=top_k",
                                 "--truncation_factor=10"]), []),
    "top_k k=10 + tail mass": (("top_k_10", ["--label_mode=top_k",
                                             "--truncation_factor=10"]),
                               ["--tail_mass_loss"]),
    "sampled N=16 k=16": (("sampled_16_16", ["--label_mode=sampled",
                                             "--num_samples=16",
                                             "--truncation_factor=16"]), []),
    "full": (("full", ["--label_mode=full"]), []),
    "top 4 exact + sampled N=16 k=10": (("head_4_sampled_16_10", [
        "--label_mode=sampled", "--exact_top_k=4", "--num_samples=16",
        "--truncation_factor=10"]), []),
    "top 2 exact + sampled N=24 k=14": (("head_2_sampled_24_14", [
        "--label_mode=sampled", "--exact_top_k=2", "--num_samples=24",
        "--truncation_factor=14"]), []),
    "sampled N=8 k=8": (("sampled_8_8", ["--label_mode=sampled",
                                         "--num_samples=8",
                                         "--truncation_factor=8"]), []),
    "sampled N=32 k=20": (("sampled_32_20", ["--label_mode=sampled",
                                             "--num_samples=32",
                                             "--truncation_factor=20"]), []),
    "sampled N=64 k=20": (("sampled_64_20", ["--label_mode=sampled",
                                             "--num_samples=64",
                                             "--truncation_factor=20"]), []),
}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir",
                      default=os.path.join(BENCH, "output", "label_quality"))
  parser.add_argument("--quick", action="store_true",
                      help="1 MB corpus, shorter teacher and students")
  parser.add_argument("--corpus_bytes", type=int, default=None)
  parser.add_argument("--teacher_steps", type=int, default=None)
  parser.add_argument("--student_steps", type=int, default=None)
  parser.add_argument("--teacher_dupe_factor", type=int, default=None)
  parser.add_argument("--seeds", default="1,2")
  parser.add_argument("--modes", default=",".join(MODES),
                      help="comma list of the modes to run (names as above)")
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--max_predictions_per_seq", type=int, default=10)
  parser.add_argument("--split_number", type=int, default=5,
                      help="text files; the last is held out")
  parser.add_argument("--python", default=sys.executable)
  args = parser.parse_args()
  quick = {"corpus_bytes": 1_000_000, "teacher_steps": 4000,
           "student_steps": 1500, "teacher_dupe_factor": 4}
  full = {"corpus_bytes": 2_500_000, "teacher_steps": 6000,
          "student_steps": 3000, "teacher_dupe_factor": 4}
  for name, value in (quick if args.quick else full).items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  args.seeds = [int(s) for s in args.seeds.split(",")]
  args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  for mode in args.modes:
    if mode not in MODES:
      parser.error(f"unknown mode '{mode}' (known: {', '.join(MODES)})")
  return args


def log(message):
  print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def snapshot_code(work):
  """Copies the project's scripts, modules and bert_distill/ to
  WORK_DIR/code; returns it."""
  code = os.path.join(work, "code")
  shutil.rmtree(code, ignore_errors=True)
  for name in os.listdir(ROOT):
    if name.endswith(".py"):
      os.makedirs(code, exist_ok=True)
      shutil.copy(os.path.join(ROOT, name), code)
  shutil.copytree(os.path.join(ROOT, "bert_distill"),
                  os.path.join(code, "bert_distill"),
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copytree(os.path.join(ROOT, "data", "example_wiki"),
                  os.path.join(code, "data", "example_wiki"),
                  ignore=shutil.ignore_patterns("*.bz2"))
  return code


def run(args, script, flags, log_path):
  """Runs one of the project's scripts (from the copy); returns its wall
  seconds."""
  command = [args.python, os.path.join(args.code, script)] + flags
  log(" ".join(command[1:])[:300])
  started = time.monotonic()
  with open(log_path, "w") as log_file:
    result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT,
                            cwd=args.code, env={**os.environ,
                                           "TF_CPP_MIN_LOG_LEVEL": "2"})
  if result.returncode:
    tail = open(log_path).read()[-2000:]
    sys.exit(f"{script} failed (see {log_path}):\n{tail}")
  return time.monotonic() - started


def records_files(folder):
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.endswith(".tfrecord"))


def prepare_text(args, work):
  """Corpus, split, subset vocabulary. Returns (train dir, held-out dir, vocab)."""
  text = os.path.join(work, "english.txt")
  if not os.path.exists(text):
    english_corpus.build_corpus(text + ".tmp", args.corpus_bytes)
    os.replace(text + ".tmp", text)
  train_dir = os.path.join(work, "text", "train")
  held_dir = os.path.join(work, "text", "held_out")
  if not os.path.isdir(held_dir):
    split = os.path.join(work, "text", "split")
    run(args, "split_text.py", [f"--read_file={text}",
                                f"--split_number={args.split_number}",
                                f"--folder={split}", "--name_base=text"],
        os.path.join(work, "logs", "split.log"))
    os.makedirs(train_dir, exist_ok=True)
    pieces = sorted((n for n in os.listdir(split) if n.endswith(".txt")),
                    key=lambda n: int(re.findall(r"\d+", n)[-1]))
    for name in pieces[:-1]:
      os.replace(os.path.join(split, name), os.path.join(train_dir, name))
    os.makedirs(held_dir + ".tmp", exist_ok=True)
    os.replace(os.path.join(split, pieces[-1]),
               os.path.join(held_dir + ".tmp", pieces[-1]))
    os.replace(held_dir + ".tmp", held_dir)
  vocab = os.path.join(work, "vocab.txt")
  if not os.path.exists(vocab):
    run(args, "data/example_wiki/make_demo_vocab.py",
        [f"--text_file={text}",
         f"--vocab_file={os.path.join(ROOT, 'data', 'bert_uncased_vocab.txt')}",
         f"--output={vocab}.tmp"], os.path.join(work, "logs", "vocab.log"))
    os.replace(vocab + ".tmp", vocab)
  return train_dir, held_dir, vocab


def make_records(args, work, name, text_dir, vocab, dupe_factor, seed):
  folder = os.path.join(work, "records", name)
  if not os.path.isdir(folder):
    run(args, "multifile_create_pretraining_data.py",
        [f"--input_dir={text_dir}", f"--output_dir={folder}.tmp",
         "--output_base_name=records", f"--vocab_file={vocab}",
         f"--max_seq_length={args.max_seq_length}",
         f"--max_predictions_per_seq={args.max_predictions_per_seq}",
         f"--dupe_factor={dupe_factor}", f"--random_seed={seed}",
         "--num_workers=2"], os.path.join(work, "logs", f"records_{name}.log"))
    os.replace(folder + ".tmp", folder)
  return folder


def shape_flags(args):
  return [f"--max_seq_length={args.max_seq_length}",
          f"--max_predictions_per_seq={args.max_predictions_per_seq}"]


def read_results(path):
  with open(path) as f:
    return {k: float(v) for k, v in (line.strip().split(" = ")
                                     for line in f if " = " in line)}


def train_teacher(args, work, config_path, records_dir, held_records):
  out = os.path.join(work, "teacher")
  if not os.path.exists(os.path.join(out, "eval_results.txt")):
    run(args, "distill.py",
        ["--do_train", "--do_eval", f"--bert_config_file={config_path}",
         f"--input_file={records_dir}/*.tfrecord",
         f"--eval_input_file={held_records}/*.tfrecord",
         f"--output_dir={out}", "--soft_loss_weight=0",
         "--hard_mlm_loss_weight=1", "--train_batch_size=32",
         "--eval_batch_size=32", "--learning_rate=2e-3",
         f"--num_train_steps={args.teacher_steps}",
         f"--num_warmup_steps={args.teacher_steps // 10}",
         f"--save_checkpoints_steps={args.teacher_steps}",
         "--iterations_per_loop=100", "--max_eval_steps=100"]
        + shape_flags(args), os.path.join(work, "logs", "teacher.log"))
  return out, read_results(os.path.join(out, "eval_results.txt"))


_RATE = re.compile(r"([\d.]+) records/s")
_EXAMPLES = re.compile(r"([\d.]+) examples/s")


def label(args, work, teacher, config_path, vocab, records_dir, name, flags):
  """Stage IV into labels/name; returns seconds per example (from the log)."""
  folder = os.path.join(work, "labels", name)
  log_path = os.path.join(work, "logs", f"labels_{name}.log")
  if not os.path.isdir(folder):
    run(args, "extract_teacher_labels_truncated.py",
        [f"--bert_config_file={config_path}", f"--init_checkpoint={teacher}",
         f"--vocab_file={vocab}", f"--input_file={records_dir}/*.tfrecord",
         f"--output_dir={folder}.tmp", "--batch_size=64",
         "--progress_interval=0"] + flags + shape_flags(args), log_path)
    os.replace(folder + ".tmp", folder)
  rates = [float(r) for line in open(log_path) if "done" in line
           for r in _RATE.findall(line)]
  overflow = [line.split("sampled: ", 1)[1].strip() for line in open(log_path)
              if "drew more than k" in line]
  return (1.0 / statistics.mean(rates) if rates else float("nan"),
          overflow[-1] if overflow else "")


def label_bytes(labelled_dir, records_dir, examples):
  size = lambda folder: sum(os.path.getsize(p) for p in records_files(folder))
  return (size(labelled_dir) - size(records_dir)) / examples


def train_student(args, work, name, seed, input_dir, held_full, extra):
  slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
  out = os.path.join(work, "students", f"{slug}_seed{seed}")
  log_path = os.path.join(work, "logs", f"student_{slug}_seed{seed}.log")
  if not os.path.exists(os.path.join(out, "eval_results.txt")):
    steps = args.student_steps
    run(args, "distill.py",
        ["--do_train", "--do_eval",
         f"--bert_config_file={os.path.join(work, 'student_config.json')}",
         f"--input_file={input_dir}/*.tfrecord",
         f"--eval_input_file={held_full}/*.tfrecord", "--teacher_kl",
         f"--output_dir={out}", "--train_batch_size=32",
         "--eval_batch_size=32", "--learning_rate=2e-3",
         f"--num_train_steps={steps}", f"--num_warmup_steps={steps // 10}",
         f"--save_checkpoints_steps={steps}", "--iterations_per_loop=50",
         "--max_eval_steps=200", f"--seed={seed}"] + extra + shape_flags(args),
        log_path)
  rates = [float(r) for line in open(log_path) if "step " in line
           for r in _EXAMPLES.findall(line)]
  return read_results(os.path.join(out, "eval_results.txt")), (
      statistics.median(rates[1:] or rates) if rates else float("nan"))


def spread(values):
  return max(values) - min(values) if len(values) > 1 else 0.0


def main():
  args = parse_args()
  print(flops.cpu_line(), flush=True)
  work = args.work_dir = os.path.abspath(args.work_dir)
  os.makedirs(os.path.join(work, "logs"), exist_ok=True)
  args.code = snapshot_code(work)
  started = time.monotonic()
  load_before = os.getloadavg()
  for name, config in (("teacher", TEACHER_CONFIG),
                       ("student", STUDENT_CONFIG)):
    path = os.path.join(work, f"{name}_config.json")
    if not os.path.exists(path):
      train_dir, held_dir, vocab = prepare_text(args, work)
      vocab_size = sum(1 for _ in open(vocab))
      with open(path, "w") as f:
        json.dump(dict(config, vocab_size=vocab_size), f, indent=2)
  train_dir, held_dir, vocab = prepare_text(args, work)
  vocab_size = sum(1 for _ in open(vocab))
  teacher_config = os.path.join(work, "teacher_config.json")
  teacher_records = make_records(args, work, "teacher", train_dir, vocab,
                                 args.teacher_dupe_factor, 1000)
  student_records = make_records(args, work, "student", train_dir, vocab, 1,
                                 2000)
  held_records = make_records(args, work, "held_out", held_dir, vocab, 1, 3000)
  teacher, teacher_results = train_teacher(args, work, teacher_config,
                                           teacher_records, held_records)
  log(f"teacher: held-out masked_lm_accuracy "
      f"{teacher_results['masked_lm_accuracy']:.4f}")
  held_full = os.path.join(work, "labels", "held_out_full")
  if not os.path.isdir(held_full):
    label(args, work, teacher, teacher_config, vocab, held_records,
          "held_out_full", ["--label_mode=full"])
  examples = records.count_records(records_files(student_records))
  held_examples = records.count_records(records_files(held_records))

  rows = []
  for name in args.modes:
    stage_iv, stage_v_flags = MODES[name]
    if stage_iv is None:
      input_dir, bytes_per_example, seconds, overflow = (student_records, 0.0,
                                                         0.0, "")
    else:
      folder_name, flags = stage_iv
      seconds, overflow = label(args, work, teacher, teacher_config, vocab,
                                student_records, folder_name, flags)
      input_dir = os.path.join(work, "labels", folder_name)
      bytes_per_example = label_bytes(input_dir, student_records, examples)
    per_seed, rates = [], []
    for seed in args.seeds:
      results, rate = train_student(args, work, name, seed, input_dir,
                                    held_full, stage_v_flags)
      per_seed.append(results)
      rates.append(rate)
      log(f"{name} seed {seed}: teacher_kl {results['teacher_kl']:.4f}, "
          f"agreement {results['teacher_top1_agreement']:.4f}, "
          f"mlm accuracy {results['masked_lm_accuracy']:.4f}, "
          f"ece {results['student_ece']:.4f}")
    row = {"mode": name, "bytes_per_example": bytes_per_example,
           "stage_iv_seconds_per_example": seconds,
           "stage_v_examples_per_second": statistics.mean(rates),
           "overflow": overflow, "seeds": per_seed}
    for metric in ("teacher_kl", "teacher_top1_agreement",
                   "masked_lm_accuracy", "student_ece",
                   "teacher_cross_entropy"):
      values = [r[metric] for r in per_seed]
      row[metric] = statistics.mean(values)
      row[metric + "_range"] = spread(values)
    rows.append(row)

    write_report(args, work, started, load_before, vocab_size, examples,
                 held_examples, teacher_results, rows)


def write_report(args, work, started, load_before, vocab_size, examples,
                 held_examples, teacher_results, rows):
  """Prints the table so far and writes it to WORK_DIR/label_quality.*."""
  teacher_entropy = rows[-1]["seeds"][-1].get("teacher_entropy", float("nan"))
  header = {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
      "machine": f"{platform.node()}: {flops.cpu_line()}, no GPU",
      "load_average_before": [round(x, 2) for x in load_before],
      "load_average_after": [round(x, 2) for x in os.getloadavg()],
      "command": "bench/bench_label_quality.py " + " ".join(sys.argv[1:]),
      "corpus_bytes": args.corpus_bytes, "vocab_size": vocab_size,
      "student_examples": examples, "held_out_examples": held_examples,
      "teacher_steps": args.teacher_steps,
      "student_steps": args.student_steps, "seeds": args.seeds,
      "teacher_held_out_mlm_accuracy": teacher_results["masked_lm_accuracy"],
      "teacher_held_out_entropy": teacher_entropy,
      "minutes": (time.monotonic() - started) / 60,
  }
  table = format_table(header, rows)
  print(table, flush=True)
  with open(os.path.join(work, "label_quality.md"), "w") as f:
    f.write(table)
  with open(os.path.join(work, "label_quality.json"), "w") as f:
    json.dump({"header": header, "rows": rows}, f, indent=2)


def format_table(header, rows):
  lines = [
      f"bench_label_quality: {header['date']}, {header['machine']}, load "
      f"average {header['load_average_before']} before, "
      f"{header['load_average_after']} after; {header['minutes']:.1f} min",
      f"command: {header['command']}",
      f"corpus {header['corpus_bytes']} bytes, vocabulary "
      f"{header['vocab_size']} (BERT uncased, used subset), "
      f"{header['student_examples']} training / "
      f"{header['held_out_examples']} held-out examples; teacher "
      f"{header['teacher_steps']} steps, held-out MLM accuracy "
      f"{header['teacher_held_out_mlm_accuracy']:.4f}, entropy "
      f"{header['teacher_held_out_entropy']:.3f} nats; students "
      f"{header['student_steps']} steps, seeds {header['seeds']} "
      f"(value = mean, ± = range between seeds)",
      "",
      "| student trained on | teacher_kl | top-1 agreement | MLM accuracy | "
      "student_ece | label bytes / example | stage IV s / example | "
      "stage V examples/s |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    cells = [row["mode"]]
    for metric in ("teacher_kl", "teacher_top1_agreement",
                   "masked_lm_accuracy", "student_ece"):
      cells.append(f"{row[metric]:.3f} ± {row[metric + '_range']:.3f}")
    cells.append(f"{row['bytes_per_example']:,.0f}")
    cells.append(f"{row['stage_iv_seconds_per_example'] * 1000:.2f} ms"
                 if row["stage_iv_seconds_per_example"] else "-")
    cells.append(f"{row['stage_v_examples_per_second']:.0f}")
    lines.append("| " + " | ".join(cells) + " |")
  overflows = [f"  {row['mode']}: {row['overflow']}" for row in rows
               if row["overflow"]]
  if overflows:
    lines += ["", "stage IV's sampling report:"] + overflows
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
