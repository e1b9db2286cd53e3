"""Task distillation against fine-tuning alone, on the bundled movie reviews
(issue 20's protocol), as mean and spread over seeds of the dev accuracy.

Rows, each run with run_classifier.py as a user runs it:
  teacher                        the teacher fine-tuned on the labeled set
  student, fine-tuned alone      the student fine-tuned on the labeled set
  student, task-distilled        learning the fine-tuned teacher's
                                 predictions on the labeled set
  student, task-distilled +      ... and on the rest of train.tsv as
    unlabeled text               unlabeled text (--unlabeled_file)
repeated for every --student (e.g. the teacher's layers 0,2,4 as they are,
and after general distillation) and seed. Two settings of the protocol:
  (a) --num_labeled=1000: the first 1,000 training examples labeled, the
      other 9,175 as unlabeled text;
  (b) --num_labeled=0: the full training set labeled (no unlabeled row).
Each row also gives its share of the teacher's mean accuracy; the
task-distilled rows log the teacher's labelling pass (examples/s) next to
the training's, the measure behind caching the teacher's logits
(docs/downstream.md).

  python bench/bench_task_distillation.py \\
    --teacher_config=T/bert_config.json --teacher_checkpoint=T/bert_model.ckpt \\
    --vocab_file=T/vocab.txt \\
    --student=layers024:S/bert_config.json:S/ckpt \\
    --num_labeled=1000 --seeds=1,2,3 --work_dir=/tmp/task_distillation

A checkpoint may be empty (random initialisation), which with
--smoke_test makes a seconds-long run of every row on the tiny demo
configs: a check that the bench works, not a measurement.

--step_cost=TEACHER_CONFIG,STUDENT_CONFIG instead times, in one process, a
training step of the student on cached teacher logits (what
run_classifier.py does) against the same step with the teacher's forward
pass in it (the alternative: the teacher in the step), per batch of
--batch_size x --max_seq_length, after warm-up:

  python bench/bench_task_distillation.py --step_cost=T.json,S.json \
    --work_dir=/tmp/x
"""

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "run_classifier.py")
DEMO = os.path.join(ROOT, "data", "example_wiki")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir",
                      default=os.path.join(ROOT, "data", "movie_reviews"),
                      help="train.tsv and dev.tsv with sentence, label")
  parser.add_argument("--teacher_config")
  parser.add_argument("--teacher_checkpoint", default="",
                      help="the pretrained teacher (empty: random)")
  parser.add_argument("--vocab_file")
  parser.add_argument("--do_lower_case", default="true")
  parser.add_argument("--student", action="append", default=[],
                      help="NAME:CONFIG:CHECKPOINT (repeat; CHECKPOINT may be "
                      "empty)")
  parser.add_argument("--run_flags", default="",
                      help="more run_classifier.py flags of every run, "
                      "teacher included, e.g. --pooling=mean "
                      "--group_by_length")
  parser.add_argument("--student_flags", default="",
                      help="more run_classifier.py flags of the students' "
                      "runs, e.g. --init_layer_map=0,2,4")
  parser.add_argument("--num_labeled", type=int, default=1000,
                      help="labeled examples (the first of train.tsv); the "
                      "rest is unlabeled text. 0: all labeled")
  parser.add_argument("--max_unlabeled", type=int, default=0,
                      help="use at most this many unlabeled examples (0: all)")
  parser.add_argument("--max_dev", type=int, default=0,
                      help="score on at most this many dev examples (0: all)")
  parser.add_argument("--seeds", default="1,2,3")
  parser.add_argument("--epochs", type=float, default=3.0)
  parser.add_argument("--learning_rate", type=float, default=1e-4)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=2.0)
  parser.add_argument("--hard_loss_weight", type=float, default=0.5)
  parser.add_argument("--python", default=sys.executable)
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--step_cost", default="",
                      help="TEACHER_CONFIG,STUDENT_CONFIG: time the step on "
                      "cached logits against the teacher in the step")
  parser.add_argument("--step_cost_steps", type=int, default=20)
  parser.add_argument("--smoke_test", action="store_true",
                      help="tiny sizes on the demo configs (a check, not a "
                      "measurement)")
  args = parser.parse_args(argv)
  if args.smoke_test:
    args.teacher_config = args.teacher_config or os.path.join(
        DEMO, "teacher_bert_config.json")
    args.vocab_file = args.vocab_file or os.path.join(DEMO, "vocab.txt")
    args.student = args.student or [
        f"demo_student:{os.path.join(DEMO, 'student_bert_config.json')}:"]
    args.num_labeled, args.max_unlabeled, args.max_dev = 64, 64, 64
    args.seeds, args.epochs, args.max_seq_length = "1", 1.0, 32
    args.batch_size = 16
  if args.step_cost:
    return args
  if not (args.teacher_config and args.vocab_file and args.student):
    parser.error("give --teacher_config, --vocab_file and --student")
  return args


def read_rows(path):
  with open(path, encoding="utf-8") as f:
    return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_rows(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join("\t".join(row) + "\n" for row in rows))


def prepare_data(args):
  """work_dir/data: train.tsv (the labeled examples), dev.tsv, and
  unlabeled.tsv (the rest of train.tsv's sentences; None when all are
  labeled)."""
  folder = os.path.join(args.work_dir, "data")
  os.makedirs(folder, exist_ok=True)
  train = read_rows(os.path.join(args.data_dir, "train.tsv"))
  header, rows = train[0], train[1:]
  labeled = rows[:args.num_labeled] if args.num_labeled else rows
  write_rows(os.path.join(folder, "train.tsv"), [header] + labeled)
  dev = read_rows(os.path.join(args.data_dir, "dev.tsv"))
  write_rows(os.path.join(folder, "dev.tsv"),
             dev[:args.max_dev + 1] if args.max_dev else dev)
  unlabeled = rows[len(labeled):]
  if args.max_unlabeled:
    unlabeled = unlabeled[:args.max_unlabeled]
  if not unlabeled:
    return folder, None, len(labeled), 0
  sentence = header.index("sentence")
  unlabeled_path = os.path.join(folder, "unlabeled.tsv")
  write_rows(unlabeled_path, [["sentence"]] + [[r[sentence]]
                                               for r in unlabeled])
  return folder, unlabeled_path, len(labeled), len(unlabeled)


def run_classifier(args, data_dir, config, checkpoint, output_dir, seed,
                   extra):
  """Runs run_classifier.py (train + eval) to its end; returns
  (eval_accuracy, seconds, the log)."""
  argv = [args.python, SCRIPT, "--task_name=sst-2", f"--data_dir={data_dir}",
          f"--vocab_file={args.vocab_file}",
          f"--do_lower_case={args.do_lower_case}",
          f"--bert_config_file={config}", f"--output_dir={output_dir}",
          f"--max_seq_length={args.max_seq_length}",
          f"--train_batch_size={args.batch_size}", "--eval_batch_size=64",
          f"--learning_rate={args.learning_rate}",
          f"--num_train_epochs={args.epochs}", f"--seed={seed}",
          "--save_checkpoints_steps=100000", "--iterations_per_loop=50",
          "--do_train", "--do_eval", *args.run_flags.split(), *extra]
  if checkpoint:
    argv.append(f"--init_checkpoint={checkpoint}")
  started = time.monotonic()
  result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  seconds = time.monotonic() - started
  if result.returncode:
    sys.exit(f"error: {' '.join(argv)} failed:\n{result.stderr[-3000:]}")
  results = dict(line.split(" = ") for line in open(
      os.path.join(output_dir, "eval_results.txt")).read().splitlines())
  return float(results["eval_accuracy"]), seconds, result.stderr


def rates(log):
  """(teacher labelling examples/s, mean training examples/s) of a log."""
  labelled = re.search(r"teacher labelled \d+ examples in [\d.]+ s "
                       r"\(([\d.]+) examples/s", log)
  training = [float(x) for x in re.findall(r"([\d.]+) examples/s \(", log)]
  return (float(labelled.group(1)) if labelled else None,
          statistics.mean(training) if training else None)


def summary(values):
  mean = statistics.mean(values)
  spread = statistics.stdev(values) if len(values) > 1 else 0.0
  return mean, spread


def step_cost(args):
  """Seconds per training step: the student on cached teacher logits, the
  teacher's forward pass alone, and the student with the teacher's forward
  pass in its input (the teacher in the step)."""
  sys.path.insert(0, ROOT)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bert_distill import classifier  # pylint: disable=g-import-not-at-top
  from bert_distill import records  # pylint: disable=g-import-not-at-top
  from bert_distill import task_distillation  # pylint: disable=g-import-not-at-top
  from bert_distill import model_config  # pylint: disable=g-import-not-at-top
  import optimization  # pylint: disable=g-import-not-at-top

  teacher_path, student_path = args.step_cost.split(",")
  teacher_config = model_config.read_config(teacher_path)
  student_config = model_config.read_config(student_path)
  batch, length = args.batch_size, args.max_seq_length
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  rng = np.random.default_rng(0)
  features = {
      records.INPUT_IDS: rng.integers(0, student_config.vocab_size,
                                      (batch, length)).astype(np.int32),
      records.INPUT_MASK: np.ones((batch, length), np.int32),
      records.SEGMENT_IDS: np.zeros((batch, length), np.int32),
      records.LABEL_IDS: rng.integers(0, 2, batch).astype(np.int32),
      records.IS_REAL_EXAMPLE: np.ones(batch, np.int32),
      records.LABEL_WEIGHT: np.ones(batch, np.float32),
      records.TEACHER_LOGITS: rng.normal(size=(batch, 2)).astype(np.float32),
  }
  with strategy.scope():
    teacher = classifier.BertClassifier(teacher_config, 2, seed=0)
    student = classifier.BertClassifier(student_config, 2, seed=1)
    optimizer = optimization.AdamWeightDecay(learning_rate=1e-4)
    optimizer.build(student.variables_by_name())
  settings = classifier.TrainSettings(
      num_train_steps=1, iterations_per_loop=1, save_checkpoints_steps=1,
      keep_checkpoint_max=1, global_batch_size=batch, output_dir="",
      chief=True, is_regression=False,
      distillation_loss=task_distillation.DistillationLoss(2.0, 1.0, 0.5,
                                                           False))
  train_loop = classifier.make_train_loop(strategy, student, optimizer,
                                          settings)
  cached = tf.data.Dataset.from_tensors(features).repeat()

  def with_teacher(batch_features):
    logits = teacher(batch_features[records.INPUT_IDS],
                     batch_features[records.INPUT_MASK],
                     batch_features[records.SEGMENT_IDS])["logits"]
    return {**batch_features, records.TEACHER_LOGITS: logits}
  in_step = cached.map(with_teacher)
  forward = tf.function(lambda f: with_teacher(f)[records.TEACHER_LOGITS])

  def seconds_per_step(run_steps):
    run_steps(2)  # trace and warm up
    best = float("inf")
    for _ in range(3):
      started = time.perf_counter()
      run_steps(args.step_cost_steps)
      best = min(best, (time.perf_counter() - started) /
                 args.step_cost_steps)
    return best

  def loop_over(dataset):
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    return lambda n: train_loop(iterator, tf.constant(n))[0].numpy()

  def forwards(n):
    for _ in range(n):
      forward(features).numpy()

  costs = {"student step, cached teacher logits": seconds_per_step(
               loop_over(cached)),
           "teacher forward pass alone": seconds_per_step(forwards),
           "student step, teacher in the step": seconds_per_step(
               loop_over(in_step))}
  print(f"batch {batch} x {length} tokens, teacher {teacher_path}, student "
        f"{student_path}, {os.cpu_count()} CPUs (best of 3 x "
        f"{args.step_cost_steps} steps)")
  base = costs["student step, cached teacher logits"]
  for name, seconds in costs.items():
    print(f"| {name} | {seconds * 1000:.1f} ms | {seconds / base:.2f}x |")


def main(argv=None):
  args = parse_args(argv)
  if args.step_cost:
    step_cost(args)
    return
  data_dir, unlabeled, num_labeled, num_unlabeled = prepare_data(args)
  seeds = [int(s) for s in args.seeds.split(",")]
  student_flags = args.student_flags.split()
  print(f"movie reviews: {num_labeled} labeled, {num_unlabeled} unlabeled; "
        f"seeds {seeds}; {args.epochs:g} epochs, lr {args.learning_rate:g}, "
        f"batch {args.batch_size}, seq {args.max_seq_length}, T "
        f"{args.temperature:g}, hard loss weight {args.hard_loss_weight:g}",
        flush=True)
  scores, timings = {}, []
  for seed in seeds:
    teacher_dir = os.path.join(args.work_dir, f"teacher-{seed}")
    accuracy, seconds, _ = run_classifier(
        args, data_dir, args.teacher_config, args.teacher_checkpoint,
        teacher_dir, seed, [])
    scores.setdefault("teacher", []).append(accuracy)
    print(f"seed {seed}: teacher {accuracy:.4f} ({seconds:.0f} s)",
          flush=True)
    distill = [f"--teacher_checkpoint={teacher_dir}",
               f"--teacher_config={os.path.join(teacher_dir, 'bert_config.json')}",
               f"--temperature={args.temperature}",
               f"--hard_loss_weight={args.hard_loss_weight}"]
    for student in args.student:
      name, config, checkpoint = student.split(":", 2)
      runs = {"fine-tuned alone": [],
              "task-distilled": distill}
      if unlabeled:
        runs["task-distilled + unlabeled text"] = distill + [
            f"--unlabeled_file={unlabeled}"]
      for row, extra in runs.items():
        output_dir = os.path.join(
            args.work_dir, f"{name}-{row.replace(' ', '_')}-{seed}")
        accuracy, seconds, log = run_classifier(
            args, data_dir, config, checkpoint, output_dir, seed,
            student_flags + extra)
        scores.setdefault(f"{name}, {row}", []).append(accuracy)
        labelling, training = rates(log)
        if labelling:
          timings.append((f"{name}, {row}", labelling, training))
        print(f"seed {seed}: {name}, {row} {accuracy:.4f} ({seconds:.0f} s)",
              flush=True)
  teacher_mean = statistics.mean(scores["teacher"])
  print("\n| row | dev accuracy, mean ± std | of the teacher's |")
  print("|---|---|---|")
  for row, values in scores.items():
    mean, spread = summary(values)
    print(f"| {row} | {mean:.4f} ± {spread:.4f} (n={len(values)}) | "
          f"{mean / teacher_mean:.1%} |")
  if timings:
    print("\n| run | teacher labelling examples/s | training examples/s |")
    print("|---|---|---|")
    for row, labelling, training in timings:
      print(f"| {row} | {labelling:.0f} | {training:.0f} |")


if __name__ == "__main__":
  main()
