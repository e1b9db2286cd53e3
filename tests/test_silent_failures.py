"""No silent wrong or stale result (issue 22): a checkpoint holding NaN is
named when it is loaded, stage IV never writes a label made of non-finite
logits, outputs made from other inputs are redone or refused, and the last
tracebacks are one line.

Stage runs go through preloaded_runner.py (one TensorFlow import shared by
the runs of a phase, all at once); tiny configs throughout.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from bert_distill import records
from bert_distill import teacher_labels
import stage_runs
from conftest import ROOT
import test_distill
import test_run_classifier

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
          "--nouse_xla", output, *extra]


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
  write_checkpoint(student, test_distill.CONFIG, 2, poison=POISONED)
  labelled = ref.write_records(
      root / "labelled.tfrecord",
      [test_distill.random_example(np.random.default_rng(i))
       for i in range(16)])
  plain = ref.write_records(
      root / "plain.tfrecord",
      ref.random_pretraining_examples(16, test_distill.SEQ, test_distill.P,
                                      test_distill.VOCAB, seed=3))
  distill = [DISTILL, f"--bert_config_file={student}.json",
             f"--output_dir={root}/out", "--do_train", "--num_train_steps=2",
             "--num_warmup_steps=1", "--use_xla=false",
             f"--max_seq_length={test_distill.SEQ}",
             f"--max_predictions_per_seq={test_distill.P}",
             "--train_batch_size=4"]
  toy = test_run_classifier.write_toy_task(root / "toy", num_train=16,
                                           num_dev=8)
  vocab = test_run_classifier.write_vocab(root / "vocab.txt")
  classifier_config = str(root / "classifier.ckpt")
  write_checkpoint(classifier_config, test_run_classifier.TOY_CONFIG, 4,
                   poison=POISONED)
  jobs = {
      "top_k": teacher_args(teacher, inputs, f"--output_file={root}/top_k"),
      "sampled": teacher_args(teacher, inputs, f"--output_file={root}/sampled",
                              "--label_mode=sampled"),
      "init": distill + [f"--input_file={labelled}",
                         f"--truncation_factor={test_distill.K}",
                         f"--init_checkpoint={student}"],
      "online_teacher": [a.replace("/out", "/online") for a in distill] + [
          f"--input_file={plain}", f"--teacher_config={student}.json",
          f"--teacher_checkpoint={student}"],
      "classifier": test_run_classifier.command(
          toy, vocab, f"{classifier_config}.json", root / "classifier",
          "--do_train", f"--init_checkpoint={classifier_config}")[1:],
  }
  return {"root": root, "results": stage_runs.run_all(jobs, root / "logs")}


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
         "--teacher_batch_size=4", "--label_flags=--nouse_xla"],
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
