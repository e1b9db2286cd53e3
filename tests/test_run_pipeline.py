"""run_pipeline.sh: stages II to III-b on a small dump, done markers, failures."""
import glob
import os
import signal
import subprocess
import sys
import time

import tensorflow as tf

from conftest import ROOT, VOCAB_FILE
from wiki_cases import EXPECTED_TEXT, write_dump

from bert_distill import classifier_data
from bert_distill import records

PIPELINE = os.path.join(ROOT, "run_pipeline.sh")


def pipeline_env():
  return dict(os.environ,
              PATH=os.path.dirname(sys.executable) + os.pathsep +
              os.environ["PATH"])


def run_pipeline_command(work_dir, *flags):
  return ["bash", PIPELINE, f"--work_dir={work_dir}",
          f"--python={sys.executable}", f"--vocab_file={VOCAB_FILE}",
          "--split_number=2", "--dupe_factor=2", "--max_seq_length=32",
          "--max_predictions_per_seq=5", "--num_workers=1", "--processes=1",
          *flags]


def run_pipeline(work_dir, *flags):
  return subprocess.run(run_pipeline_command(work_dir, *flags),
                        capture_output=True, text=True, timeout=240, cwd=ROOT,
                        env=pipeline_env())


def test_stages_two_and_three_run_then_skip_then_refuse_changed_settings(
    tmp_path):
  dump = tmp_path / "enwiki-test-pages-articles.xml.bz2"
  write_dump(dump)
  work = tmp_path / "work"
  result = run_pipeline(work, f"--dump={dump}", "--stages=II,III-a,III-b")
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

  assert (work / "wiki.txt").read_text() == EXPECTED_TEXT
  pieces = sorted(glob.glob(str(work / "text" / "text_*.txt")))
  assert [os.path.basename(p) for p in pieces] == ["text_0.txt", "text_1.txt"]
  # The pieces hold the articles, whole and in order.
  assert "".join(open(p).read().strip() + "\n\n" for p in pieces) == \
      EXPECTED_TEXT
  record_files = sorted(glob.glob(str(work / "records" / "*.tfrecord")))
  assert [os.path.basename(f) for f in record_files] == [
      "pretraining_data_0.tfrecord", "pretraining_data_1.tfrecord"]
  spec = records.pretraining_feature_spec(32, 5)
  num_examples = 0
  for raw in tf.data.TFRecordDataset(record_files):
    example = tf.io.parse_single_example(raw, spec)
    assert example["input_ids"].shape == (32,)
    num_examples += 1
  assert num_examples > 0
  assert sorted(os.listdir(work / "stages")) == [
      "II.done", "III-a.done", "III-b.done"]

  # A rerun skips every stage and leaves the outputs alone.
  mtime = os.path.getmtime(record_files[0])
  result = run_pipeline(work, f"--dump={dump}", "--stages=II,III-a,III-b")
  assert result.returncode == 0, result.stderr[-2000:]
  for stage in ("II", "III-a", "III-b"):
    assert f"stage {stage} " in result.stdout
  assert result.stdout.count("done before, skipped") == 3
  assert os.path.getmtime(record_files[0]) == mtime

  # Other settings for a finished stage: stop and say which stage.
  result = run_pipeline(work, f"--dump={dump}", "--stages=II,III-a,III-b",
                        "--split_number=3")
  assert result.returncode != 0
  assert "stage III-a" in result.stderr and "other settings" in result.stderr
  assert os.path.getmtime(record_files[0]) == mtime


def test_a_failing_stage_is_named_and_leaves_no_marker(tmp_path):
  work = tmp_path / "work"
  os.makedirs(work)
  (work / "wiki.txt").write_text(EXPECTED_TEXT)
  # max_predictions_per_seq > max_seq_length: stage III-b refuses it.
  result = run_pipeline(work, "--stages=III-a,III-b",
                        "--max_predictions_per_seq=64")
  assert result.returncode != 0
  assert "stage III-b (pretraining records) FAILED" in result.stderr
  assert os.path.exists(work / "stages" / "III-a.done")
  assert not os.path.exists(work / "stages" / "III-b.done")


def test_ctrl_c_stops_the_pipeline_with_its_stage_and_the_rerun_resumes(
    tmp_path):
  """Ctrl-C reaches the whole process group, the stage and its log's tee
  among them: the stage's own last line still reaches its log (tee -i), the
  pipeline says it was interrupted and how to go on, no marker is left for
  the stage, and the same command then finishes it."""
  work = tmp_path / "work"
  os.makedirs(work)
  # Enough text that stage III-b runs for seconds after its first line.
  (work / "wiki.txt").write_text(EXPECTED_TEXT * 300)
  command = run_pipeline_command(work, "--stages=III-a,III-b")
  with open(tmp_path / "stdout", "w") as out, \
       open(tmp_path / "stderr", "w") as err:
    process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT,
                               env=pipeline_env(), start_new_session=True)
  log = work / "logs" / "III-b.log"
  while process.poll() is None and not (
      log.exists() and "to make" in log.read_text()):
    time.sleep(0.05)
  os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
  assert process.wait(timeout=120) == 130
  stderr = (tmp_path / "stderr").read_text()
  assert ("stage III-b (pretraining records) interrupted (Ctrl-C); rerun "
          "the same command to resume") in stderr, stderr[-2000:]
  assert log.read_text().rstrip().endswith(
      "error: interrupted; rerun to resume"), log.read_text()[-2000:]
  assert sorted(os.listdir(work / "stages")) == ["III-a.done"]
  assert not glob.glob(str(work / "records" / "*.tmp-*"))
  result = run_pipeline(work, "--stages=III-a,III-b")
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(work / "stages")) == ["III-a.done", "III-b.done"]


def test_missing_inputs_and_unknown_flags_are_one_line_errors(tmp_path):
  result = run_pipeline(tmp_path / "w", "--stages=II")
  assert result.returncode != 0 and "stage II needs --dump" in result.stderr
  result = run_pipeline(tmp_path / "w", "--stages=V",
                        f"--student_config={tmp_path}/none.json")
  assert result.returncode != 0 and "stage V needs" in result.stderr
  config = tmp_path / "student.json"
  config.write_text("{}")
  result = run_pipeline(tmp_path / "w", "--stages=V",
                        f"--student_config={config}",
                        f"--teacher_labels_dir={tmp_path}/no_labels")
  assert result.returncode != 0
  assert "stage V needs teacher labels" in result.stderr
  result = run_pipeline(tmp_path / "w", "--no_such_flag=1")
  assert result.returncode != 0
  assert "unknown flag --no_such_flag" in result.stderr
  assert "Traceback" not in result.stderr


def test_unknown_or_no_stages_are_one_line_errors_before_any_work(tmp_path):
  """--stages=v used to print "finished (stages v)" and exit 0."""
  work = tmp_path / "w"
  stage_list = "give some of II, III-a, III-b, T, IV, V, G (comma-separated)"
  for stages, why in (("v", "unknown stage v"),
                      ("II,IIIb,iv", "unknown stages IIIb, iv"),
                      ("II III-a", "unknown stage II III-a"),
                      ("", "no stage given"), (",", "no stage given")):
    result = run_pipeline(work, f"--stages={stages}")
    assert result.returncode == 2, result.stdout
    assert result.stderr == (
        f"run_pipeline.sh: error: --stages={stages}: {why}; {stage_list}\n")
    assert result.stdout == "" and not work.exists()


WHOLE = ("random_seed", "teacher_pretrain_steps", "teacher_head_steps",
         "teacher_warmup_steps", "truncation_factor", "label_seed",
         "holdout_files", "shard_index", "num_train_steps",
         "num_warmup_steps", "heldout_examples")
COUNTS = ("processes", "split_number", "max_seq_length",
          "max_predictions_per_seq", "dupe_factor", "num_workers",
          "teacher_train_batch_size", "num_samples", "teacher_batch_size",
          "num_shards", "train_batch_size", "eval_batch_size",
          "save_checkpoints_steps", "iterations_per_loop", "max_eval_steps",
          "glue_max_seq_length")
POSITIVE = ("teacher_learning_rate", "learning_rate", "temperature")
WEIGHTS = ("soft_loss_weight", "hard_mlm_loss_weight")
FRACTIONS = ("masked_lm_prob", "short_seq_prob")


def test_numeric_settings_that_are_not_numbers_are_one_line_errors(tmp_path):
  """--teacher_pretrain_steps=abc used to stop with "abc: unbound variable"
  (1e3: "value too great for base"), --holdout_files=x only after stages
  II to T had run ("x: unbound variable"), --learning_rate=fast in
  distill.py, after stage IV."""
  work = tmp_path / "w"
  whole, count = "use a whole number, 0 or more", "use a whole number, 1 or more"
  cases = [(name, value, whole) for name in WHOLE
           for value in ("abc", "1e3", "-1", "2.0", "")]
  cases += [(name, value, count) for name in COUNTS
            for value in ("x", "0", "000", "1.5", "")]
  cases += [(name, value, "use a number above 0") for name in POSITIVE
            for value in ("fast", "0", "0.0e5", "-1e-4", "1e", "nan", "")]
  cases += [(name, value, "use a number, 0 or more") for name in WEIGHTS
            for value in ("x", "-1", "1,5", "inf")]
  cases += [(name, value, "use a number from 0 to 1") for name in FRACTIONS
            for value in ("x", "-0.1", "1.5", "2e-0")]
  for name, value, why in cases:
    result = run_pipeline(work, "--stages=V", f"--{name}={value}")
    assert result.returncode == 2, (name, value, result.stderr)
    assert result.stderr == f"run_pipeline.sh: error: --{name}={value}: {why}\n"
    assert result.stdout == "" and not work.exists()

  # Numbers in their other spellings pass (to the missing student config).
  result = run_pipeline(
      work, "--stages=V", "--student_config=none.json", "--precision=float32",
      "--teacher_pretrain_steps=007", "--holdout_files=0", "--num_shards=01",
      "--learning_rate=1e-4", "--teacher_learning_rate=.5",
      "--temperature=2.", "--soft_loss_weight=0", "--masked_lm_prob=1",
      "--short_seq_prob=1.0E-1")
  assert result.returncode == 1, result.stderr
  assert "stage V needs the student's config" in result.stderr


def test_choices_and_settings_that_conflict_are_one_line_errors(tmp_path):
  """--glue_task_distillation=yes used to be refused only after the G-teacher
  and G-student fine-tunes had run (--stages=V,G), both teacher step counts
  after stages II to III-b, a --precision that is not one only when a model
  stage was asked for, the others by the stage that reads them."""
  work = tmp_path / "w"
  cases = [
      (["--stages=V,G", "--glue_task=sst-2", "--glue_task_distillation=yes"],
       "--glue_task_distillation=yes: use true or false"),
      (["--do_lower_case=True"], "--do_lower_case=True: use true or false"),
      (["--do_whole_word_mask="], "--do_whole_word_mask=: use true or false"),
      (["--teacher_trainable=encoder"],
       "--teacher_trainable=encoder: use heads or all"),
      (["--label_mode=topk"],
       "--label_mode=topk: use sampled, top_k or full"),
      (["--stages=II", "--precision=bf16"],
       "--precision=bf16: use auto, float32, mixed_bfloat16 or "
       "mixed_float16"),
      (["--init_checkpoint=ckpt", "--init_layer_map=0-2"],
       "--init_layer_map=0-2: use layer numbers separated by commas, e.g. "
       "0,2,4"),
      (["--init_layer_map=0,2"],
       "--init_layer_map=0,2: needs --init_checkpoint (the weights it maps)"),
      (["--teacher_pretrain_steps=5", "--teacher_head_steps=10"],
       "--teacher_pretrain_steps=5 and --teacher_head_steps=10: give one of "
       "them, not both"),
      (["--num_shards=2", "--shard_index=2"],
       "--shard_index=2: use a number below --num_shards (2)"),
  ]
  for flags, error in cases:
    result = run_pipeline(work, *flags)
    assert result.returncode == 2, (flags, result.stderr)
    assert result.stderr == f"run_pipeline.sh: error: {error}\n"
    assert result.stdout == "" and not work.exists()


def test_glue_task_is_one_of_run_classifiers_tasks(tmp_path):
  """A misspelt --glue_task used to reach run_classifier.py after stage V."""
  work = tmp_path / "w"
  result = run_pipeline(work, "--stages=V,G", "--glue_task=sst3")
  assert result.returncode == 2 and not work.exists()
  prefix = "run_pipeline.sh: error: --glue_task=sst3: use "
  assert result.stderr.startswith(prefix)
  names = result.stderr[len(prefix):].split(" (run_classifier.py")[0]
  assert names.replace(" or ", ", ").split(", ") == list(
      classifier_data.TASK_NAMES)
  # Each, in the spellings run_classifier.py accepts, passes (to the
  # missing --glue_data_dir).
  for task in classifier_data.TASK_NAMES + ("SST2", "mnli_mm", "STS-B",
                                            "mnli-m", "Cola"):
    if task != "tsv":  # (tsv needs columns)
      classifier_data.get_task(task)  # run_classifier.py takes it
    result = run_pipeline(work, "--stages=G", f"--glue_task={task}",
                          "--precision=float32")
    assert result.returncode == 1, (task, result.stderr)
    assert "stage G needs --glue_data_dir" in result.stderr


def test_missing_inputs_stop_the_run_before_its_first_stage(tmp_path):
  """An input of a later stage that no earlier one makes used to be looked
  for only when that stage came: --stages=III-a,III-b with no vocabulary
  split the text first, a missing GLUE folder stopped the run after V."""
  work = tmp_path / "work"
  work.mkdir()
  (work / "wiki.txt").write_text(EXPECTED_TEXT)
  config = tmp_path / "config.json"
  config.write_text("{}")
  labels = tmp_path / "labels"
  labels.mkdir()
  (labels / "pretraining_data_0.tfrecord").write_bytes(b"")
  ckpt = tmp_path / "ckpt"
  cases = [
      (["--stages=III-a,III-b", f"--vocab_file={tmp_path}/none.txt"],
       "stage III-b needs the vocabulary (--vocab_file or --teacher_dir), "
       f"but {tmp_path}/none.txt does not exist"),
      (["--stages=III-a,T", "--teacher_pretrain_steps=5",
        f"--teacher_config={config}"],
       f"stage T needs pretraining records in {work}/records (stage III-b)"),
      (["--stages=III-a,IV", f"--teacher_config={config}",
        f"--teacher_checkpoint={ckpt}"],
       "stage IV needs the teacher's checkpoint (--teacher_checkpoint or "
       f"--teacher_dir), but neither {ckpt} nor {ckpt}.index exists"),
      (["--stages=III-a,V", f"--student_config={config}",
        f"--teacher_labels_dir={labels}", f"--init_checkpoint={ckpt}"],
       f"stage V needs --init_checkpoint, but neither {ckpt} nor "
       f"{ckpt}.index exists"),
      (["--stages=III-a,G", "--glue_task=sst-2",
        f"--glue_data_dir={tmp_path}/glue"],
       f"stage G needs the task's training file, but {tmp_path}/glue/"
       "train.tsv does not exist"),
  ]
  for flags, error in cases:
    result = run_pipeline(work, "--precision=float32", *flags)
    assert result.returncode == 1, (flags, result.stdout, result.stderr)
    assert result.stderr == f"run_pipeline.sh: error: {error}\n"
    assert sorted(os.listdir(work)) == ["wiki.txt"], flags

  result = run_pipeline(work, f"--python={tmp_path}/python")
  assert result.returncode == 2
  assert result.stderr == (f"run_pipeline.sh: error: --python={tmp_path}/"
                           "python: no such command\n")
  assert sorted(os.listdir(work)) == ["wiki.txt"]

  # Stage T takes the teacher's checkpoint as a prefix, as stage IV does
  # (it used to want a file of the prefix's name).
  (tmp_path / "ckpt.index").write_bytes(b"")
  result = run_pipeline(work, "--stages=T", "--precision=float32",
                        "--teacher_head_steps=5", f"--teacher_config={config}",
                        f"--teacher_checkpoint={ckpt}")
  assert result.returncode == 1
  assert result.stderr == ("run_pipeline.sh: error: stage T needs pretraining "
                           f"records in {work}/records (stage III-b)\n")
