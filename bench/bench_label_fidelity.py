"""How much a bfloat16 teacher changes stage IV's labels and the student.

On the trained teacher of bench/bench_label_quality.py (its corpus, records
and teacher, built here the same way, or reused from its WORK_DIR):

  1. stage IV over the held-out records in full mode, once with
     --precision=float32 and once with --precision=mixed_bfloat16: the mean
     KL(float32 || bfloat16) over the whole vocabulary at every real masked
     position (and its 99th percentile and maximum), and how often the two
     agree on the most probable token;
  2. stage IV over the students' records with --label_flags (default: the
     pipeline's sampled N=32 k=20) in both precisions, and the same student
     (config, seed, steps) distilled from each, evaluated against the
     float32 held-out labels (--teacher_kl): the relative difference of
     their teacher_kl;
  3. stage IV's seconds per example in both precisions (its progress log,
     teacher loaded), as a by-product: a speed figure only on a CPU with
     bfloat16 units (the first line says whether this one has them).

The issue's goals: KL <= 0.01 nats, top-1 agreement >= 0.97, the bf16
student's teacher_kl within 2% of the float32 one's. bfloat16 rounds the
same way on every CPU (its matmuls accumulate in float32 with or without
AMX), so the fidelity figures hold for CPUs without bfloat16 units too.

  .venv/bin/python bench/bench_label_fidelity.py --quick    # ~20 min, 2 cores
  .venv/bin/python bench/bench_label_fidelity.py            # bench_label_quality's sizes

With --pipeline_dir, the same three measures on a run_pipeline.sh work
directory instead (`make demo`'s demo_output: the real all-MiniLM-L6-v2
teacher with the MLM head its stage T fitted, BERT's 30522-token
vocabulary): stage IV's and stage V's commands are the ones the pipeline
recorded in STAGES/IV.done, IV-held-out.done and V.done, rerun with only
--precision (stage IV), the inputs, the outputs and --seed changed. Every
student has the recorded stage V settings (its own --precision too) and
is evaluated against the float32 held-out labels; --seeds gives the seeds.

  .venv/bin/python bench/bench_label_fidelity.py --pipeline_dir=demo_output \
      --seeds=1,2,3 --work_dir=/tmp/label_fidelity_demo        # ~6 min

Prints the report and writes WORK_DIR/label_fidelity.{md,json}. Steps whose
output exists are skipped (the default WORK_DIR is bench_label_quality's, so
its teacher, records, float32 labels and students are reused).
"""

import argparse
import datetime
import json
import os
import shlex
import sys
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, ROOT]
import bench_label_quality as lq  # pylint: disable=wrong-import-position
import flops  # pylint: disable=wrong-import-position
from bert_distill import example_codec  # pylint: disable=wrong-import-position
from bert_distill import records  # pylint: disable=wrong-import-position
from bert_distill import tfrecord  # pylint: disable=wrong-import-position

BF16 = "--precision=mixed_bfloat16"


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir",
                      default=os.path.join(BENCH, "output", "label_quality"))
  parser.add_argument("--quick", action="store_true",
                      help="bench_label_quality's --quick sizes")
  parser.add_argument("--corpus_bytes", type=int, default=None)
  parser.add_argument("--teacher_steps", type=int, default=None)
  parser.add_argument("--student_steps", type=int, default=None)
  parser.add_argument("--teacher_dupe_factor", type=int, default=None)
  parser.add_argument("--seeds", default="1")
  parser.add_argument("--label_name", default="sampled N=32 k=20",
                      help="a bench_label_quality mode: the training labels")
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--max_predictions_per_seq", type=int, default=10)
  parser.add_argument("--split_number", type=int, default=5)
  parser.add_argument("--python", default=sys.executable)
  parser.add_argument("--pipeline_dir",
                      help="a run_pipeline.sh work directory (demo_output): "
                      "measure on its teacher, records and stage commands")
  args = parser.parse_args()
  if args.pipeline_dir:
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args
  sizes = ({"corpus_bytes": 1_000_000, "teacher_steps": 4000,
            "student_steps": 1500, "teacher_dupe_factor": 4} if args.quick else
           {"corpus_bytes": 2_500_000, "teacher_steps": 6000,
            "student_steps": 3000, "teacher_dupe_factor": 4})
  for name, value in sizes.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  args.seeds = [int(s) for s in args.seeds.split(",")]
  if args.label_name not in lq.MODES or lq.MODES[args.label_name][0] is None:
    parser.error(f"--label_name: not a labelled mode of bench_label_quality")
  return args


def full_labels(folder, vocab_size):
  """(probs [n, V] float32, ids of the real masked positions) of a folder of
  full-mode records, in file order."""
  rows = []
  for path in lq.records_files(folder):
    for raw in tfrecord.read_tfrecords(path):
      example = example_codec.decode_example(raw)
      probs = example[records.FULL_PROBS].reshape(-1, vocab_size)
      real = example[records.MASKED_LM_WEIGHTS] > 0
      rows.append(probs[real])
  return np.concatenate(rows)


def compare(reference, other):
  """KL(reference || other) per position and top-1 agreement."""
  tiny = np.finfo(np.float32).tiny
  kl = np.sum(reference * (np.log(np.maximum(reference, tiny)) -
                           np.log(np.maximum(other, tiny))), axis=-1)
  agree = reference.argmax(-1) == other.argmax(-1)
  return {"positions": int(len(kl)), "kl_mean": float(kl.mean()),
          "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(kl.max()),
          "top1_agreement": float(agree.mean()),
          "max_abs_prob_difference": float(np.abs(reference - other).max())}


def start(args):
  """Prints the CPU line and makes WORK_DIR/logs; returns (cpu line, the
  start time, the load averages before)."""
  cpu = flops.cpu_line()
  print(cpu, flush=True)
  args.work_dir = os.path.abspath(args.work_dir)
  os.makedirs(os.path.join(args.work_dir, "logs"), exist_ok=True)
  return cpu, time.monotonic(), os.getloadavg()


def run_facts(cpu, started, load_before):
  """The report's entries about the run itself."""
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
      "cpu": cpu, "command": "bench/bench_label_fidelity.py " +
      " ".join(sys.argv[1:]),
      "load_average_before": [round(x, 2) for x in load_before],
      "load_average_after": [round(x, 2) for x in os.getloadavg()],
      "minutes": (time.monotonic() - started) / 60,
  }


def header_lines(report):
  return [
      f"bench_label_fidelity: {report['date']}; {report['cpu']}; load "
      f"{report['load_average_before']} before, "
      f"{report['load_average_after']} after; {report['minutes']:.1f} min",
      f"command: {report['command']}"]


def fidelity_line(fidelity):
  return (
      f"held-out labels, {fidelity['positions']} masked positions, "
      f"mixed_bfloat16 against float32: mean KL {fidelity['kl_mean']:.2e} "
      f"nats (p99 {fidelity['kl_p99']:.2e}, max {fidelity['kl_max']:.2e}; "
      f"goal <= 0.01), top-1 agreement {fidelity['top1_agreement']:.4f} "
      f"(goal >= 0.97), max |p - p'| "
      f"{fidelity['max_abs_prob_difference']:.2e}")


def write_report(work, report, lines):
  """Prints the report's lines and writes WORK_DIR/label_fidelity.{md,json}."""
  text = "\n".join(lines) + "\n"
  print(text, flush=True)
  with open(os.path.join(work, "label_fidelity.md"), "w") as f:
    f.write(text)
  with open(os.path.join(work, "label_fidelity.json"), "w") as f:
    json.dump(report, f, indent=2)


def recorded_command(pipeline_dir, stage):
  """(script name, flags) of the command run_pipeline.sh recorded for a
  stage (the last line of STAGES/<stage>.done)."""
  path = os.path.join(pipeline_dir, "stages", f"{stage}.done")
  if not os.path.exists(path):
    sys.exit(f"{path} does not exist: run the pipeline (make demo) first")
  with open(path) as f:
    words = shlex.split(f.read().splitlines()[-1])
  script = next(w for w in words if w.endswith(".py"))
  return os.path.basename(script), words[words.index(script) + 1:]


def with_flags(flags, **values):
  """flags with each --name=... of `values` replaced (or added)."""
  names = {f"--{name}" for name in values}
  kept = [f for f in flags if f.split("=", 1)[0] not in names]
  return kept + [f"--{name}={value}" for name, value in values.items()]


def flag_value(flags, name):
  for flag in flags:
    if flag.startswith(f"--{name}="):
      return flag.split("=", 1)[1]
  return None


def run_stage(args, script, flags, output, log_name, written=None):
  """bench_label_quality's run of one of the project's scripts (from
  args.code: the repository root, where the pipeline's relative paths
  point), unless `output` exists. With `written`, the script writes there
  and `written` becomes `output` when it succeeds."""
  if os.path.exists(output):
    return
  lq.run(args, script, flags,
         os.path.join(args.work_dir, "logs", log_name + ".log"))
  if written:
    os.replace(written, output)


def pipeline_main(args):
  """The measures on a pipeline work directory's teacher and records."""
  cpu, started, load_before = start(args)
  work = args.work_dir
  args.code = ROOT  # the pipeline's own scripts, run where it ran them
  label_script, label_flags = recorded_command(args.pipeline_dir, "IV")
  held_script, held_flags = recorded_command(args.pipeline_dir, "IV-held-out")
  student_script, student_flags = recorded_command(args.pipeline_dir, "V")
  with open(os.path.join(ROOT, flag_value(held_flags,
                                          "bert_config_file"))) as f:
    vocab_size = json.load(f)["vocab_size"]
  precisions = {"float32": "float32", "bf16": "mixed_bfloat16"}

  # 1. The held-out distributions in both precisions.
  def label(script, flags, tag, precision):
    """Reruns a recorded stage IV command into work/<tag> in `precision`;
    returns that folder."""
    folder = os.path.join(work, tag)
    run_stage(args, script,
              with_flags(flags, output_dir=folder + ".tmp",
                         precision=precision),
              folder, tag, written=folder + ".tmp")
    return folder

  held = {}
  for name, precision in precisions.items():
    held[name] = full_labels(
        label(held_script, held_flags, f"held_out_full_{name}", precision),
        vocab_size)
  fidelity = compare(held["float32"], held["bf16"])
  del held
  lq.log(f"labels: {fidelity}")

  # 2. Students from float32 and from bfloat16 training labels.
  held_float32 = os.path.join(work, "held_out_full_float32", "*.tfrecord")
  students = {}
  for name, precision in precisions.items():
    labels = label(label_script, label_flags, f"labels_{name}", precision)
    students[name] = []
    for seed in args.seeds:
      out = os.path.join(work, "students", f"{name}_labels_seed{seed}")
      results = os.path.join(out, "eval_results.txt")
      run_stage(args, student_script,
                with_flags(student_flags,
                           input_file=os.path.join(labels, "*.tfrecord"),
                           eval_input_file=held_float32, output_dir=out,
                           seed=seed),
                results, f"student_{name}_labels_seed{seed}")
      students[name].append(lq.read_results(results))
      lq.log(f"{name} labels, seed {seed}: teacher_kl "
             f"{students[name][-1]['teacher_kl']:.5f}")

  def mean(name, key):
    return float(np.mean([r[key] for r in students[name]]))
  kl32, kl16 = mean("float32", "teacher_kl"), mean("bf16", "teacher_kl")
  report = {
      **run_facts(cpu, started, load_before),
      "teacher": flag_value(label_flags, "init_checkpoint"),
      "vocab_size": vocab_size, "labels": fidelity,
      "training_labels": flag_value(label_flags, "label_mode"),
      "seeds": args.seeds, "students": students,
      "student_teacher_kl_float32_labels": kl32,
      "student_teacher_kl_bf16_labels": kl16,
      "student_teacher_kl_relative_difference": (kl16 - kl32) / kl32,
  }

  def per_seed(name, key, form):
    return ", ".join(form.format(r[key]) for r in students[name])
  lines = header_lines(report) + [
      f"teacher: {report['teacher']} ({args.pipeline_dir}'s), vocabulary "
      f"{vocab_size}; stage commands from {args.pipeline_dir}/stages",
      fidelity_line(fidelity),
      f"students (the recorded stage V, seeds {args.seeds}) from "
      f"{report['training_labels']} labels, held-out against float32 labels:",
  ]
  for name in precisions:
    lines.append(
        f"  {name:7s} labels: teacher_kl {per_seed(name, 'teacher_kl', '{:.5f}')}"
        f" (mean {mean(name, 'teacher_kl'):.5f}); top-1 agreement "
        f"{per_seed(name, 'teacher_top1_agreement', '{:.4f}')}; masked-LM "
        f"accuracy {per_seed(name, 'masked_lm_accuracy', '{:.4f}')}")
  lines.append(f"  bf16 labels against float32 labels: teacher_kl "
               f"{100 * (kl16 - kl32) / kl32:+.2f}% (goal within 2%)")
  write_report(work, report, lines)


def main():
  args = parse_args()
  if args.pipeline_dir:
    pipeline_main(args)
    return
  cpu, started, load_before = start(args)
  work = args.work_dir
  args.code = lq.snapshot_code(work)
  train_dir, held_dir, vocab = lq.prepare_text(args, work)
  vocab_size = sum(1 for _ in open(vocab))
  for name, config in (("teacher", lq.TEACHER_CONFIG),
                       ("student", lq.STUDENT_CONFIG)):
    path = os.path.join(work, f"{name}_config.json")
    if not os.path.exists(path):
      with open(path, "w") as f:
        json.dump(dict(config, vocab_size=vocab_size), f, indent=2)
  teacher_config = os.path.join(work, "teacher_config.json")
  teacher_records = lq.make_records(args, work, "teacher", train_dir, vocab,
                                    args.teacher_dupe_factor, 1000)
  student_records = lq.make_records(args, work, "student", train_dir, vocab,
                                    1, 2000)
  held_records = lq.make_records(args, work, "held_out", held_dir, vocab, 1,
                                 3000)
  teacher, teacher_results = lq.train_teacher(args, work, teacher_config,
                                              teacher_records, held_records)
  lq.log(f"teacher: held-out masked_lm_accuracy "
         f"{teacher_results['masked_lm_accuracy']:.4f}")

  # 1. The held-out distributions in both precisions.
  seconds = {}
  for suffix, extra in (("", []), ("_bf16", [BF16])):
    seconds["held_out_full" + suffix], _ = lq.label(
        args, work, teacher, teacher_config, vocab, held_records,
        "held_out_full" + suffix, ["--label_mode=full"] + extra)
  held = {suffix: full_labels(os.path.join(work, "labels",
                                           "held_out_full" + suffix),
                              vocab_size) for suffix in ("", "_bf16")}
  fidelity = compare(held[""], held["_bf16"])
  lq.log(f"labels: {fidelity}")

  # 2. Students from float32 and from bfloat16 training labels.
  folder, label_flags = lq.MODES[args.label_name][0]
  held_full = os.path.join(work, "labels", "held_out_full")
  students = {}
  for suffix, extra in (("", []), ("_bf16", [BF16])):
    seconds[folder + suffix], _ = lq.label(
        args, work, teacher, teacher_config, vocab, student_records,
        folder + suffix, label_flags + extra)
    name = args.label_name + (" bf16 labels" if suffix else "")
    students[suffix] = []
    for seed in args.seeds:
      results, _ = lq.train_student(args, work, name, seed,
                                    os.path.join(work, "labels",
                                                 folder + suffix),
                                    held_full, lq.MODES[args.label_name][1])
      students[suffix].append(results)
      lq.log(f"{name} seed {seed}: teacher_kl {results['teacher_kl']:.4f}")
  kl32 = float(np.mean([r["teacher_kl"] for r in students[""]]))
  kl16 = float(np.mean([r["teacher_kl"] for r in students["_bf16"]]))

  report = {
      **run_facts(cpu, started, load_before),
      "teacher_steps": args.teacher_steps,
      "teacher_held_out_mlm_accuracy": teacher_results["masked_lm_accuracy"],
      "vocab_size": vocab_size, "labels": fidelity,
      "training_labels": args.label_name, "student_steps": args.student_steps,
      "seeds": args.seeds, "student_teacher_kl_float32_labels": kl32,
      "student_teacher_kl_bf16_labels": kl16,
      "student_teacher_kl_relative_difference": (kl16 - kl32) / kl32,
      "stage_iv_seconds_per_example": seconds,
  }
  lines = header_lines(report) + [
      f"teacher: bench_label_quality's ({args.teacher_steps} steps, held-out "
      f"MLM accuracy {teacher_results['masked_lm_accuracy']:.4f}), vocabulary "
      f"{vocab_size}",
      fidelity_line(fidelity),
      f"students ({args.student_steps} steps, seeds {args.seeds}) from "
      f"{args.label_name} labels: held-out teacher_kl {kl32:.4f} (float32 "
      f"labels), {kl16:.4f} (bf16 labels): "
      f"{100 * (kl16 - kl32) / kl32:+.2f}% (goal within 2%)",
      "stage IV seconds per example (teacher loaded): " + ", ".join(
          f"{name} {value * 1000:.2f} ms" for name, value in seconds.items()),
  ]
  write_report(work, report, lines)


if __name__ == "__main__":
  main()
