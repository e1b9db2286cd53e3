"""No silent wrong or stale result (issue 22): a checkpoint holding NaN is
named when it is loaded, stage IV never writes a label made of non-finite
logits, outputs made from other inputs are redone or refused, and the last
tracebacks are one line.

Stage runs go through preloaded_runner.py (one TensorFlow import shared by
the runs of a phase, all at once); tiny configs throughout.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import provenance
from bert_distill import records
from bert_distill import teacher_labels
from bert_distill import tensorflow_startup
import stage_runs
from conftest import ROOT
import distill_cases
import classifier_cases

TEACHER = os.path.join(ROOT, "extract_teacher_labels_truncated.py")
DISTILL = os.path.join(ROOT, "distill.py")
CLASSIFIER = os.path.join(ROOT, "run_classifier.py")
L, P = 32, 4


def write_checkpoint(prefix, config, seed, poison=None):
  """A Google checkpoint of config at prefix (and prefix.json, the config);
  with poison, that variable's first value is NaN."""
  weights = ref.random_google_weights(config, seed)
  if poison:
    weights[poison].reshape(-1)[0] = np.nan
  with open(prefix + ".json", "w") as f:
    json.dump(config, f)
  return ref.write_google_checkpoint(prefix, weights)


def teacher_args(checkpoint, input_file, output, *extra):
  return [TEACHER, f"--bert_config_file={checkpoint}.json",
          f"--init_checkpoint={checkpoint}", f"--input_file={input_file}",
          f"--max_seq_length={L}", f"--max_predictions_per_seq={P}",
          "--batch_size=8", "--truncation_factor=5", "--progress_interval=0",
          "--use_xla=false", output, *extra]


# ---------------------------------------------------------------------------
# NaN and infinity in checkpoints and logits.

POISONED = "bert/encoder/layer_1/attention/output/dense/kernel"


@pytest.fixture(scope="module")
def nan_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("nan")
  teacher = str(root / "teacher.ckpt")
  write_checkpoint(teacher, ref.TINY_CONFIG, 1, poison=POISONED)
  inputs = ref.write_records(root / "input.tfrecord",
                             ref.random_pretraining_examples(
                                 20, L, P, ref.TINY_CONFIG["vocab_size"]))
  student = str(root / "student.ckpt")
  write_checkpoint(student, distill_cases.CONFIG, 2, poison=POISONED)
  labelled = ref.write_records(
      root / "labelled.tfrecord",
      [distill_cases.random_example(np.random.default_rng(i))
       for i in range(16)])
  plain = ref.write_records(
      root / "plain.tfrecord",
      ref.random_pretraining_examples(16, distill_cases.SEQ, distill_cases.P,
                                      distill_cases.VOCAB, seed=3))
  distill = [DISTILL, f"--bert_config_file={student}.json",
             f"--output_dir={root}/out", "--do_train", "--num_train_steps=2",
             "--num_warmup_steps=1", "--use_xla=false",
             f"--max_seq_length={distill_cases.SEQ}",
             f"--max_predictions_per_seq={distill_cases.P}",
             "--train_batch_size=4"]
  toy = classifier_cases.write_toy_task(root / "toy", num_train=16,
                                           num_dev=8)
  vocab = classifier_cases.write_vocab(root / "vocab.txt")
  classifier_config = str(root / "classifier.ckpt")
  write_checkpoint(classifier_config, classifier_cases.TOY_CONFIG, 4,
                   poison=POISONED)
  jobs = {
      "top_k": teacher_args(teacher, inputs, f"--output_file={root}/top_k"),
      "sampled": teacher_args(teacher, inputs, f"--output_file={root}/sampled",
                              "--label_mode=sampled"),
      "init": distill + [f"--input_file={labelled}",
                         f"--truncation_factor={distill_cases.K}",
                         f"--init_checkpoint={student}"],
      "online_teacher": [a.replace("/out", "/online") for a in distill] + [
          f"--input_file={plain}", f"--teacher_config={student}.json",
          f"--teacher_checkpoint={student}"],
      "classifier": classifier_cases.command(
          toy, vocab, f"{classifier_config}.json", root / "classifier",
          "--do_train", f"--init_checkpoint={classifier_config}")[1:],
  }
  labelled_args = distill + [f"--input_file={labelled}",
                             f"--truncation_factor={distill_cases.K}"]
  jobs.update(
      p_over_l=stage_runs.replace_flag(
          stage_runs.replace_flag(labelled_args, "max_seq_length", 64),
          "max_predictions_per_seq", 100),
      p_mismatch=stage_runs.replace_flag(labelled_args,
                                         "max_predictions_per_seq", 10))
  return {"root": root, "labelled": labelled,
          "results": stage_runs.run_all(jobs, root / "logs")}


@pytest.mark.parametrize("case,flag,checkpoint", [
    ("top_k", "--init_checkpoint", "teacher.ckpt"),
    ("sampled", "--init_checkpoint", "teacher.ckpt"),
    ("init", "--init_checkpoint", "student.ckpt"),
    ("online_teacher", "--teacher_checkpoint", "student.ckpt"),
    ("classifier", "--init_checkpoint", "classifier.ckpt")])
def test_a_checkpoint_holding_nan_is_named_when_it_is_loaded(
    nan_runs, case, flag, checkpoint):
  """Stage IV used to write NaN probabilities (top_k) or all-zero draws
  (sampled) and exit 0; training stopped later at "lower --learning_rate"."""
  root = nan_runs["root"]
  line = stage_runs.assert_one_line_error(
      nan_runs["results"][case], flag, f"{root}/{checkpoint}",
      "hold NaN or infinity", POISONED)
  assert "learning_rate" not in line
  if case in ("top_k", "sampled"):
    assert not [n for n in os.listdir(root) if n.startswith(case)]


def test_distill_names_p_over_l_and_the_p_the_records_hold(nan_runs):
  """They used to say "not a multiple of 20"-style text."""
  stage_runs.assert_one_line_error(
      nan_runs["results"]["p_over_l"], "max_predictions_per_seq=100",
      "max_seq_length=64", "must not exceed --max_seq_length")
  stage_runs.assert_one_line_error(
      nan_runs["results"]["p_mismatch"], nan_runs["labelled"],
      f"records hold P = {distill_cases.P} masked positions",
      f"set --max_predictions_per_seq={distill_cases.P}")


class _BrokenTeacher:
  """A model whose masked-LM logits overflow: finite weights can still make
  infinite logits (and softmax then makes NaN)."""

  def __call__(self, input_ids, input_mask, segment_ids, positions,
               training=False):
    batch, preds = positions.shape
    logits = tf.fill([batch, preds, 7], np.float32(3e38)) * 10.0  # inf
    return {"masked_lm_logits": logits}


@pytest.mark.parametrize("mode,k", [("top_k", 3), ("full", 0),
                                    ("sampled", 3)])
def test_stage_4_never_labels_from_nonfinite_logits(mode, k):
  labeler = teacher_labels.TeacherLabeler(
      _BrokenTeacher(), k, tf.distribute.get_strategy(), use_xla=False,
      label_mode=mode)
  batch = [np.ones([2, 8], np.int32), np.ones([2, 8], np.int32),
           np.zeros([2, 8], np.int32), np.ones([2, 2], np.int32)]
  if mode == "sampled":
    batch.append(np.full([2, 2, 4], 0.5, np.float32))
  with pytest.raises(teacher_labels.NonFiniteLogitsError, match="NaN"):
    labeler(batch)


# ---------------------------------------------------------------------------
# Stage IV: outputs made from other inputs, teacher or settings.


@pytest.fixture(scope="module")
def provenance_runs(tmp_path_factory):
  """Phase 1 labels one input into several folders with teacher 1; phase 2
  reruns each with one thing changed (and once with nothing changed)."""
  root = tmp_path_factory.mktemp("provenance")
  one, two = str(root / "one.ckpt"), str(root / "two.ckpt")
  write_checkpoint(one, ref.TINY_CONFIG, 1)
  write_checkpoint(two, ref.TINY_CONFIG, 2)
  (root / "in_place").mkdir()
  replaced = str(root / "in_place" / "teacher.ckpt")
  write_checkpoint(replaced, ref.TINY_CONFIG, 1)
  inputs = root / "inputs"
  inputs.mkdir()
  v = ref.TINY_CONFIG["vocab_size"]
  source = ref.write_records(inputs / "records_0.tfrecord",
                             ref.random_pretraining_examples(20, L, P, v))
  ref.write_records(root / "other.tfrecord",
                    ref.random_pretraining_examples(20, L, P, v, seed=9))

  def label(checkpoint, folder, *extra):
    return teacher_args(checkpoint, source, f"--output_dir={root / folder}",
                        *extra)
  first = {name: label(replaced if name == "in_place" else one, name)
           for name in ("same", "teacher", "mode", "in_place", "input")}
  first.update(clean_two=label(two, "clean_two"),
               clean_sampled=label(one, "clean_sampled",
                                   "--label_mode=sampled"))
  results = {"first": stage_runs.run_all(first, root / "logs1")}
  stamps = {name: os.stat(root / name / "records_0.tfrecord").st_mtime_ns
            for name in ("same", "input")}
  for suffix in (".index", ".data-00000-of-00001"):  # replaced in place
    with open(two + suffix, "rb") as f, open(replaced + suffix, "wb") as g:
      g.write(f.read())
  second = {"same": label(one, "same"), "teacher": label(two, "teacher"),
            "mode": label(one, "mode", "--label_mode=sampled"),
            "in_place": label(replaced, "in_place")}
  results["second"] = stage_runs.run_all(second, root / "logs2")
  # The input rewritten with other records, same name.
  os.replace(root / "other.tfrecord", source)
  results["third"] = stage_runs.run_all(
      {"input": label(one, "input"), "clean_other": label(one, "clean_other")},
      root / "logs3")
  return {"root": root, "stamps": stamps, **results}


def labels_of(root, folder):
  return (root / folder / "records_0.tfrecord").read_bytes()


def test_stage_4_skips_an_output_made_as_now(provenance_runs):
  root = provenance_runs["root"]
  rerun = provenance_runs["second"]["same"]
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "is complete, made from it with this teacher" in rerun.stderr
  assert (os.stat(root / "same" / "records_0.tfrecord").st_mtime_ns ==
          provenance_runs["stamps"]["same"])
  record = json.loads((root / "same" /
                       "records_0.tfrecord.made_from.json").read_text())
  assert record["inputs"][0]["name"] == "records_0.tfrecord"
  assert [f["name"] for f in record["teacher"]["init_checkpoint"]] == [
      "one.ckpt.index", "one.ckpt.data-00000-of-00001"]
  assert record["settings"]["label_mode"] == "top_k"


@pytest.mark.parametrize("folder,clean,why", [
    ("teacher", "clean_two", "made by another teacher (--init_checkpoint)"),
    ("in_place", "clean_two", "made by another teacher (--init_checkpoint)"),
    ("mode", "clean_sampled", "made with other settings: --label_mode"),
])
def test_stage_4_redoes_an_output_of_another_teacher_or_mode(
    provenance_runs, folder, clean, why):
  """It used to say "is complete, skipped", exit 0 and keep the old labels."""
  root = provenance_runs["root"]
  rerun = provenance_runs["second"][folder]
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert why in rerun.stderr, rerun.stderr[-3000:]
  assert labels_of(root, folder) == labels_of(root, clean)


def test_stage_4_redoes_an_output_whose_input_was_rewritten(provenance_runs):
  root = provenance_runs["root"]
  rerun = provenance_runs["third"]["input"]
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "made from another content of records_0.tfrecord" in rerun.stderr
  assert labels_of(root, "input") == labels_of(root, "clean_other")


# ---------------------------------------------------------------------------
# run_pipeline.sh: markers record every file a stage read.


def test_pipeline_notices_a_teacher_checkpoint_replaced_in_place(tmp_path):
  """IV used to say "done before, skipped" with the old teacher's labels."""
  work = tmp_path / "work"
  (work / "records").mkdir(parents=True)
  ref.write_records(work / "records" / "pretraining_data_0.tfrecord",
                    ref.random_pretraining_examples(
                        12, L, P, ref.TINY_CONFIG["vocab_size"]))
  teacher = tmp_path / "teacher"
  _, prefix, _ = ref.write_model_dir(str(teacher), ref.TINY_CONFIG, seed=1)
  env = dict(stage_runs.ENV, PATH=os.path.dirname(sys.executable) +
             os.pathsep + os.environ["PATH"])

  def pipeline():
    return subprocess.run(
        ["bash", os.path.join(ROOT, "run_pipeline.sh"), f"--work_dir={work}",
         f"--python={sys.executable}", "--stages=IV",
         f"--teacher_dir={teacher}", "--holdout_files=0",
         f"--max_seq_length={L}", f"--max_predictions_per_seq={P}",
         "--label_mode=top_k", "--truncation_factor=3",
         "--teacher_batch_size=4", "--label_flags=--use_xla=false"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)

  first = pipeline()
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
  again = pipeline()
  assert again.returncode == 0 and "done before, skipped" in again.stdout
  ref.write_google_checkpoint(prefix, ref.random_google_weights(
      ref.TINY_CONFIG, seed=2))
  replaced = pipeline()
  assert replaced.returncode != 0
  assert "stage IV" in replaced.stderr
  assert f"its input {prefix}." in replaced.stderr
  assert "was rewritten" in replaced.stderr


# ---------------------------------------------------------------------------
# Ctrl-C, TensorFlow's start-up lines.

INTERRUPTED_MAIN = """
import os, signal, sys, time
from absl import flags
from bert_distill import cli
from bert_distill import file_io

def main(argv):
  with file_io.atomic_output(sys.argv[1]) as tmp:
    open(tmp, "w").write("half")
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)

cli.run(main)
"""


def test_ctrl_c_is_one_line_exit_130_and_removes_the_temporary(tmp_path):
  """Every stage runs its main through cli.run: a KeyboardInterrupt used to
  end in a 40-line traceback."""
  script = tmp_path / "stage.py"
  script.write_text(INTERRUPTED_MAIN)
  final = tmp_path / "out.txt"
  result = subprocess.run([sys.executable, str(script), str(final)], cwd=ROOT,
                          env=dict(stage_runs.ENV, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 130, result.stderr
  stage_runs.assert_one_line_error(result, "interrupted; rerun to resume")
  assert os.listdir(tmp_path) == ["stage.py"]


# A TensorFlow stage's main (cli.run with stop_at_safe_points) in three
# situations, chosen by argv[2].
SAFE_POINT_MAIN = """
import os, signal, sys, time
from bert_distill import cli
from bert_distill import file_io
from bert_distill import progress_log

def swallowed():
  # What TensorFlow's C++ did with a KeyboardInterrupt raised in Python code
  # it called back: cleared it (or crashed).
  try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
  except BaseException:
    pass

def main(argv):
  case = sys.argv[2]
  with file_io.atomic_output(sys.argv[1]) as tmp:
    open(tmp, "w").write("all of it")
    if case == "swallowed":
      swallowed()
      print("ran on", file=sys.stderr, flush=True)
    elif case == "progress":
      swallowed()
      progress_log.Progress("batches", interval=1e9).update()
      print("not reached", file=sys.stderr, flush=True)
    elif case == "twice":
      os.kill(os.getpid(), signal.SIGINT)
      print("after the first", file=sys.stderr, flush=True)
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(30)

cli.run(main, stop_at_safe_points=True)
"""


@pytest.mark.parametrize("case,ran_on", [("swallowed", "ran on"),
                                         ("progress", None),
                                         ("twice", "after the first")])
def test_a_tensorflow_stage_takes_ctrl_c_at_a_safe_point_and_never_loses_it(
    tmp_path, case, ran_on):
  """A first Ctrl-C in a TensorFlow stage is noted, not raised inside
  TensorFlow's calls (interrupts.py); it is raised at the next progress
  line, else when main returns: never lost. A second one stops at once."""
  script = tmp_path / "stage.py"
  script.write_text(SAFE_POINT_MAIN)
  final = tmp_path / "out.txt"
  started = time.monotonic()
  result = subprocess.run([sys.executable, str(script), str(final), case],
                          cwd=ROOT, env=dict(stage_runs.ENV, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=60)
  assert time.monotonic() - started < 25  # "twice" did not sleep on
  assert result.returncode == 130, result.stderr
  stage_runs.assert_one_line_error(result, "interrupted; rerun to resume")
  assert "Ctrl-C again to stop at once" in result.stderr
  assert "not reached" not in result.stderr
  if ran_on:
    assert ran_on in result.stderr
  if case == "swallowed":  # complete before main returned: kept
    assert final.read_text() == "all of it"
  else:
    assert os.listdir(tmp_path) == ["stage.py"]


def test_a_stage_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path):
  """As a script's `stage &` starts it without job control: Python leaves an
  inherited SIG_IGN alone, and so does cli.run."""
  script = tmp_path / "stage.py"
  script.write_text(SAFE_POINT_MAIN)
  final = tmp_path / "out.txt"
  result = subprocess.run(
      [sys.executable, str(script), str(final), "swallowed"], cwd=ROOT,
      env=dict(stage_runs.ENV, PYTHONPATH=ROOT), capture_output=True,
      text=True, timeout=60,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
  assert result.returncode == 0, result.stderr
  assert final.read_text() == "all of it"


# A stage run as `python script.py ...` would, with a SIGINT sent to itself
# when TensorFlow's import reaches tensorflow.python.framework.ops.
CTRL_C_IN_THE_IMPORTS = """
import os, runpy, signal, sys
def interrupt(event, args):
  if event == "import" and args[0] == "tensorflow.python.framework.ops":
    os.kill(os.getpid(), signal.SIGINT)
sys.addaudithook(interrupt)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_ctrl_c_while_a_stage_imports_tensorflow_is_one_line(tmp_path):
  """It was a traceback of 20-40 lines through the imports: the first
  `import tensorflow` holds a SIGINT to its end (interrupts.held)."""
  teacher = str(tmp_path / "teacher.ckpt")
  write_checkpoint(teacher, ref.TINY_CONFIG, 1)
  source = ref.write_records(tmp_path / "records.tfrecord",
                             ref.random_pretraining_examples(
                                 8, L, P, ref.TINY_CONFIG["vocab_size"]))
  argv = teacher_args(teacher, source, f"--output_dir={tmp_path / 'out'}")
  result = subprocess.run([sys.executable, "-c", CTRL_C_IN_THE_IMPORTS] + argv,
                          cwd=ROOT, env=stage_runs.ENV, capture_output=True,
                          text=True, timeout=120)
  # Python ends an uncaught KeyboardInterrupt by SIGINT: 130 in a shell.
  assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
  assert result.stderr.splitlines() == [
      "error: interrupted; rerun to resume"], result.stderr[-3000:]
  assert not (tmp_path / "out").exists()


def test_ctrl_c_in_stage_4_is_one_line_and_the_rerun_equals_a_clean_run(
    tmp_path):
  teacher = str(tmp_path / "teacher.ckpt")
  write_checkpoint(teacher, ref.TINY_CONFIG, 1)
  # 1000 records: the labelling runs for over a second after its first
  # progress line, when the signal is sent. Before Ctrl-C waited for a safe
  # point, this test failed about one run in eight: the interrupt lost
  # inside TensorFlow's calls (all records labelled, exit 0) or a
  # segmentation fault in iterator_get_next.
  source = ref.write_records(tmp_path / "records.tfrecord",
                             ref.random_pretraining_examples(
                                 1000, L, P, ref.TINY_CONFIG["vocab_size"]))
  out = tmp_path / "out"
  argv = teacher_args(teacher, source, f"--output_dir={out}",
                      "--batch_size=2", "--sort_batches=1")
  log = tmp_path / "stage4.log"
  process = stage_runs.start([sys.executable] + argv, log)
  while process.poll() is None and "teacher labels ->" not in log.read_text():
    time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  process.wait(timeout=120)
  result = subprocess.CompletedProcess(argv, process.returncode, None,
                                       log.read_text())
  assert result.returncode == 130, result.stderr[-3000:]
  stage_runs.assert_one_line_error(result, "interrupted; rerun to resume")
  assert os.listdir(out) == []  # its temporary removed
  rerun = stage_runs.run([sys.executable] + argv)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  clean = stage_runs.run([sys.executable] + teacher_args(
      teacher, source, f"--output_file={tmp_path / 'clean'}",
      "--batch_size=2", "--sort_batches=1"))
  assert clean.returncode == 0, clean.stderr[-3000:]
  assert (out / "records.tfrecord").read_bytes() == (
      tmp_path / "clean").read_bytes()


def test_tensorflow_start_up_lines_are_hidden_unless_asked_for(tmp_path):
  env = {k: v for k, v in stage_runs.ENV.items()
         if k != "TF_CPP_MIN_LOG_LEVEL"}
  argv = [sys.executable, os.path.join(ROOT, "export_model.py"),
          f"--bert_config_file={tmp_path}/none.json",
          f"--checkpoint={tmp_path}/none", f"--export_dir={tmp_path}/e"]
  quiet = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
  assert "cpu_feature_guard" not in quiet.stderr
  stage_runs.assert_one_line_error(quiet, "none.json")
  loud = subprocess.run(argv, env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"),
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert "cpu_feature_guard" in loud.stderr


def test_no_cuda_driver_lines_before_a_stages_log():
  env = {k: v for k, v in stage_runs.ENV.items()
         if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run(
      [sys.executable, "-c", "import bert_distill, tensorflow as tf; "
       "print(tf.reduce_sum(tf.ones([3])).numpy())"],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout == "3.0\n"
  for noise in ("cuInit", "cudart_stub", "absl::InitializeLog", "I0000",
                "E0000"):
    assert noise not in result.stderr


def test_the_start_up_filter_keeps_every_other_line(capfd):
  with tensorflow_startup.filtered_stderr():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is "
             b"called are written to STDERR\n"
             b"E0000 00:00:17 1 cuda_platform.cc:52] failed call to cuInit: "
             b"INTERNAL: CUDA error\n"
             b"E0000 00:00:17 1 some_kernel.cc:7] a real error\n")
    print("from Python", file=sys.stderr)
  # pytest's sys.stderr is not file descriptor 2: the order may differ.
  assert sorted(capfd.readouterr().err.splitlines()) == [
      "E0000 00:00:17 1 some_kernel.cc:7] a real error", "from Python"]


def test_the_import_filter_hides_info_and_warning_lines_only(capfd):
  """TensorFlow's lines from before absl's initialisation ignore
  TF_CPP_MIN_LOG_LEVEL; the quiet import applies level 2 to them."""
  with tensorflow_startup.filtered_stderr(tensorflow_startup.QUIET):
    os.write(2, b"I0000 00:00:1796410782.945166   22935 port.cc:153] oneDNN "
             b"custom operations are on.\n"
             b"W0000 00:00:1796410782.9 7 cpu_feature_guard.cc:10] a warning\n"
             b"E0000 00:00:17 1 cuda_platform.cc:52] failed call to cuInit: "
             b"INTERNAL: CUDA error\n"
             b"E0000 00:00:1796410782.9 7 some_kernel.cc:7] a real error\n"
             b"I0000 is how this line starts, not absl\n")
  assert capfd.readouterr().err.splitlines() == [
      "E0000 00:00:1796410782.9 7 some_kernel.cc:7] a real error",
      "I0000 is how this line starts, not absl"]


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
  checkpoint = str(tmp_path / "model.ckpt")
  write_checkpoint(checkpoint, ref.TINY_CONFIG, 1)
  result = stage_runs.run([
      sys.executable, os.path.join(ROOT, "tests", "fault_injection.py"),
      "--file_size_limit=20000", os.path.join(ROOT, "export_model.py"),
      f"--checkpoint={checkpoint}", f"--bert_config_file={checkpoint}.json",
      f"--export_dir={tmp_path}/exported"])
  stage_runs.assert_one_line_error(result, f"{tmp_path}/exported: cannot write",
                                   "File too large")
  assert not [n for n in os.listdir(tmp_path) if n.startswith("exported")]


# ---------------------------------------------------------------------------
# Stage III-b: no text at all, a line longer than a sequence.


def test_stage_3b_on_a_folder_whose_only_file_is_empty_is_one_error(tmp_path):
  """It used to exit 0 with a warning and no output: stage IV found none."""
  from test_create_pretraining_data import run_script
  (tmp_path / "text").mkdir()
  (tmp_path / "text" / "only.txt").write_text("")
  result = run_script(tmp_path / "out", input_dir=tmp_path / "text")
  stage_runs.assert_one_line_error(result, "no input file holds text",
                                   "only.txt")


def test_stage_3b_warns_of_a_line_longer_than_a_sequence(tmp_path):
  from test_create_pretraining_data import run_script
  (tmp_path / "text").mkdir()
  words = " ".join(["the"] * 1000)
  (tmp_path / "text" / "long.txt").write_text(
      f"A first sentence.\n{words}\nA last sentence.\n")
  result = run_script(tmp_path / "out", "--max_seq_length=32",
                      input_dir=tmp_path / "text",
                      settings={"max_predictions_per_seq": 5})
  assert result.returncode == 0, result.stderr[-3000:]
  assert ("1 lines hold more tokens than a sequence (29 of --max_seq_length "
          "32; the longest 1000)") in result.stderr
  assert "dropping 971 tokens" in result.stderr


# ---------------------------------------------------------------------------
# distill.py and run_classifier.py: what a checkpoint was trained on, and one
# run per --output_dir.


def flip_labels(source, destination):
  """A copy of a toy task's folder with every train.tsv label flipped."""
  destination.mkdir()
  for name in os.listdir(source):
    text = (source / name).read_text()
    if name == "train.tsv":
      header, *rows = text.splitlines()
      text = "\n".join([header] + [
          row[:-1] + ("0" if row.endswith("1") else "1") for row in rows]) + "\n"
    (destination / name).write_text(text)


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("training_record")
  config = distill_cases.write_config(root / "student.json")
  train = ref.write_records(
      root / "train.tfrecord",
      [distill_cases.random_example(np.random.default_rng(i))
       for i in range(16)])
  other = ref.write_records(
      root / "other.tfrecord",
      [distill_cases.random_example(np.random.default_rng(100 + i))
       for i in range(16)])

  def distill(folder, input_file=train, *extra):
    return [DISTILL, f"--bert_config_file={config}",
            f"--input_file={input_file}", f"--output_dir={root / folder}",
            "--do_train", "--num_train_steps=2", "--num_warmup_steps=1",
            "--save_checkpoints_steps=1", "--use_xla=false",
            f"--max_seq_length={distill_cases.SEQ}",
            f"--max_predictions_per_seq={distill_cases.P}",
            f"--truncation_factor={distill_cases.K}", "--train_batch_size=4",
            "--learning_rate=1e-3", *extra]
  toy = root / "toy"
  classifier_cases.write_toy_task(toy, num_train=16, num_dev=8)
  flip_labels(toy, root / "flipped")
  vocab = classifier_cases.write_vocab(root / "vocab.txt")
  classifier_config = root / "classifier.json"
  classifier_config.write_text(json.dumps(classifier_cases.TOY_CONFIG))

  def classify(data_dir):
    return classifier_cases.command(
        data_dir, vocab, classifier_config, root / "classifier",
        "--do_train", "--num_train_epochs=1")[1:]

  # A lock held by a live process (this one), and one left by a dead one.
  for folder, pid in (("busy", os.getpid()), ("stale", dead_pid())):
    (root / folder).mkdir()
    (root / folder / "run.lock").write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(),
         "start": provenance._process_start(pid), "since": "then"}))
  first = stage_runs.run_all(
      {"distill": distill("distill"), "classifier": classify(toy),
       "busy": distill("busy")}, root / "logs1")
  # Each rerun in a copy of the trained folder: one run per folder.
  for folder in ("same", "learning_rate", "input", "continue"):
    shutil.copytree(root / "distill", root / folder)
  second = stage_runs.run_all(
      {"same": distill("same"),
       "learning_rate": stage_runs.replace_flag(distill("learning_rate"),
                                                "learning_rate", "1e-2"),
       "input": distill("input", other),
       "continue": distill("continue", other, "--num_train_steps=3",
                           "--continue_despite_changes"),
       "classifier": classify(root / "flipped")}, root / "logs2")
  # A process of its own: the lock is released at the interpreter's exit,
  # which preloaded_runner's forked children skip.
  stale = stage_runs.run([sys.executable] + distill("stale"))
  return {"root": root, "first": first, "second": second, "stale": stale}


def dead_pid():
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_a_rerun_with_the_same_inputs_resumes_or_finds_it_done(training_runs):
  for result in (training_runs["first"]["distill"],
                 training_runs["first"]["classifier"],
                 training_runs["second"]["same"]):
    assert result.returncode == 0, result.stderr[-3000:]
  assert "nothing to train" in training_runs["second"]["same"].stderr
  record = json.loads(
      (training_runs["root"] / "distill" / "made_from.json").read_text())
  assert record["inputs"]["input_file"][0]["name"] == "train.tfrecord"
  assert record["settings"]["learning_rate"] == 1e-3


@pytest.mark.parametrize("case,texts", [
    ("learning_rate", ["--learning_rate 0.001, now 0.01"]),
    ("input", ["--input_file (other.tfrecord)"]),
    ("classifier", ["--data_dir (train.tsv)"])])
def test_a_rerun_on_other_data_or_settings_is_refused(training_runs, case,
                                                      texts):
  """It used to say "nothing to train" and exit 0 with the old model."""
  stage_runs.assert_one_line_error(
      training_runs["second"][case], "holds a model trained on other inputs",
      "--continue_despite_changes", *texts)


def test_continue_despite_changes_trains_on(training_runs):
  result = training_runs["second"]["continue"]
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Continuing" in result.stderr
  record = json.loads(
      (training_runs["root"] / "continue" / "made_from.json").read_text())
  assert record["inputs"]["input_file"][0]["name"] == "other.tfrecord"


def test_one_run_per_output_dir_and_a_stale_lock_is_taken_over(training_runs):
  stage_runs.assert_one_line_error(
      training_runs["first"]["busy"], "is in use by another run",
      f"pid {os.getpid()}")
  assert not [n for n in os.listdir(training_runs["root"] / "busy")
              if n.startswith("model.ckpt")]
  stale = training_runs["stale"]
  assert stale.returncode == 0, stale.stderr[-3000:]
  assert "left by a run that is gone" in stale.stderr
  assert not os.path.exists(training_runs["root"] / "stale" / "run.lock")
