"""Crash and rerun promises of stage IV (extract_teacher_labels_truncated.py),
stage V (distill.py) and their checkpoints, tried as a user meets them:
corrupt, truncated and out-of-range records, poisoned and truncated
checkpoints, a full disk (RLIMIT_FSIZE, as `ulimit -f`), unwritable paths,
and kill -9 at chosen moments (tests/fault_injection.py).

Each case asserts the exit status, the one `error:` line naming the file
(and the record), that nothing partial sits under a final name, and that the
rerun after the fix ends with the output of an uninterrupted run.

Every command line runs in its own process, forked after one shared
TensorFlow import (preloaded_runner.py), all of a phase at once.
"""
import json
import os
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from conftest import ROOT
from bert_distill import records
import stage_runs
from bert_reference import assert_same_checkpoints, checkpoint_values
from distill_cases import K, P, SEQ, random_example, write_config

TESTS = os.path.dirname(os.path.abspath(__file__))
DISTILL = os.path.join(ROOT, "distill.py")
TEACHER = os.path.join(ROOT, "extract_teacher_labels_truncated.py")
FAULT = os.path.join(TESTS, "fault_injection.py")


def assert_one_error(result, *texts):
  """Exit status 1 (an error, not a crash) and one `error:` line holding
  every text."""
  assert result.returncode == 1, result.stderr[-3000:]
  return stage_runs.assert_one_line_error(result, *texts)


def assert_ran(result):
  assert result.returncode == 0, result.stderr[-3000:]
  assert not stage_runs.error_lines(result.stderr)


def record_offsets(path):
  """[(start, length)] of every record of a TFRecord file, read with struct
  (a second reader, independent of TensorFlow's): a record is an 8-byte
  length, a 4-byte CRC, the data and a 4-byte CRC."""
  data = open(path, "rb").read()
  offsets, at = [], 0
  while at < len(data):
    (length,) = struct.unpack("<Q", data[at:at + 8])
    offsets.append((at, length))
    at += 16 + length
  assert at == len(data)
  return offsets


def flip_byte_in_record(src, dst, record):
  """Copies src with one byte in the middle of a record's data flipped."""
  data = bytearray(open(src, "rb").read())
  start, length = record_offsets(src)[record]
  data[start + 12 + length // 2] ^= 0xFF
  open(dst, "wb").write(bytes(data))


def cut_in_record(src, dst, record):
  """Copies src up to the middle of a record's data (a truncated file)."""
  start, length = record_offsets(src)[record]
  open(dst, "wb").write(open(src, "rb").read()[:start + 12 + length // 2])


def no_temporaries(directory):
  return [name for name in os.listdir(directory)
          if ".tmp-" in name or "tempstate" in name]


def eval_results(directory):
  text = open(os.path.join(directory, "eval_results.txt")).read()
  return {key: float(value) for key, value in
          (line.split(" = ") for line in text.splitlines())}


# ---------------------------------------------------------------------------
# Stage V: distill.py.

STEPS = 12
TRAIN = ["--do_train", f"--num_train_steps={STEPS}",
         "--save_checkpoints_steps=4", "--keep_checkpoint_max=3",
         "--iterations_per_loop=1", "--use_xla=false",
         f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={P}",
         f"--truncation_factor={K}", "--train_batch_size=4",
         "--learning_rate=1e-3", "--num_warmup_steps=2"]
# The bad records of the three bad training files.
CORRUPT_AT, TRUNCATED_AT, OUT_OF_VOCAB_AT = 12, 23, 7


def examples(count, seed):
  rng = np.random.default_rng(seed)
  return [random_example(rng) for _ in range(count)]


def distill_args(config, input_file, output_dir, *extra):
  return [DISTILL, f"--bert_config_file={config}", f"--input_file={input_file}",
          f"--output_dir={output_dir}", *TRAIN, *extra]


@pytest.fixture(scope="module")
def distill_runs(tmp_path_factory):
  """Phase 1: every first run at once; phase 2: every rerun at once."""
  root = tmp_path_factory.mktemp("reliability_distill")
  config = write_config(root / "student.json")
  clean = ref.write_records(root / "clean.tfrecord", examples(24, 1))
  evaluation = ref.write_records(root / "eval.tfrecord", examples(12, 2))
  flip_byte_in_record(evaluation, root / "eval_corrupt.tfrecord", 5)

  # Three bad files, and the good records of each: what skipping must train
  # on, in the same order (the same sorted names in another folder).
  bad, good = root / "bad", root / "good"
  bad.mkdir()
  good.mkdir()
  a, b, c = examples(24, 3), examples(24, 4), examples(24, 5)
  ref.write_records(root / "a.tfrecord", a)
  flip_byte_in_record(root / "a.tfrecord", bad / "a.tfrecord", CORRUPT_AT)
  ref.write_records(good / "a.tfrecord", a[:CORRUPT_AT])
  ref.write_records(root / "b.tfrecord", b)
  cut_in_record(root / "b.tfrecord", bad / "b.tfrecord", TRUNCATED_AT)
  ref.write_records(good / "b.tfrecord", b[:TRUNCATED_AT])
  c[OUT_OF_VOCAB_AT][records.INPUT_IDS][3] = 5000
  ref.write_records(bad / "c.tfrecord", c)
  ref.write_records(good / "c.tfrecord", c[:OUT_OF_VOCAB_AT] +
                    c[OUT_OF_VOCAB_AT + 1:])
  a_file = root / "a_file"
  a_file.write_text("not a folder")

  out = root / "out"
  eval_flags = ["--do_eval", "--eval_batch_size=4"]
  first = {
      "clean": distill_args(config, clean, out / "clean", *eval_flags,
                            f"--eval_input_file={evaluation}"),
      "nan": distill_args(config, clean, out / "nan", "--learning_rate=1e6",
                          "--save_checkpoints_steps=1"),
      "corrupt": distill_args(config, bad / "a.tfrecord", out / "corrupt"),
      "truncated": distill_args(config, bad / "b.tfrecord", out / "truncated"),
      "out_of_vocab": distill_args(config, bad / "c.tfrecord",
                                   out / "out_of_vocab"),
      "skipping": distill_args(config, f"{bad}/*.tfrecord", out / "skipping",
                               "--skip_corrupt_records"),
      "good_records": distill_args(config, f"{good}/*.tfrecord",
                                   out / "good_records"),
      "eval_corrupt": distill_args(
          config, clean, out / "eval_corrupt", *eval_flags,
          f"--eval_input_file={root / 'eval_corrupt.tfrecord'}"),
      "disk_full": [FAULT, "--file_size_limit=100000"] + distill_args(
          config, clean, out / "disk_full"),
      "killed": [FAULT, "--kill_at_rename=model.ckpt-8.index"] + distill_args(
          config, clean, out / "killed"),
      "unwritable": distill_args(config, clean, a_file / "out"),
  }
  results = stage_runs.run_all(first, str(root / "logs1"), timeout=900)

  # A checkpoint written with NaN (as before the guard) and one whose data
  # file was cut short, each the newest of a copy of the clean run.
  for name in ("poisoned", "truncated_checkpoint"):
    shutil.copytree(out / "clean", out / name)
  newest = f"model.ckpt-{STEPS}"
  values = checkpoint_values(out / "poisoned" / newest)
  values["bert/pooler/dense/bias"][0] = np.nan
  names = sorted(values)
  tf.raw_ops.SaveV2(prefix=str(out / "poisoned" / newest), tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(values[n]) for n in names])
  data_file = out / "truncated_checkpoint" / f"{newest}.data-00000-of-00001"
  data_file.write_bytes(data_file.read_bytes()[:data_file.stat().st_size // 2])
  after_first = {f"{name}_files": sorted(os.listdir(out / name))
                 for name in ("killed", "disk_full", "eval_corrupt")}

  second = {
      "disk_full": distill_args(config, clean, out / "disk_full"),
      "killed": distill_args(config, clean, out / "killed"),
      "eval_corrupt": distill_args(config, clean, out / "eval_corrupt",
                                   *eval_flags,
                                   f"--eval_input_file={evaluation}"),
      "poisoned": distill_args(config, clean, out / "poisoned"),
      "truncated_checkpoint": distill_args(config, clean,
                                           out / "truncated_checkpoint"),
  }
  reruns = stage_runs.run_all(second, str(root / "logs2"), timeout=900)
  return {"root": root, "out": out, "bad": bad, "first": results,
          "reruns": reruns, "a_file": a_file, **after_first}


def test_nan_guard_never_saves_a_poisoned_checkpoint(distill_runs):
  output_dir = distill_runs["out"] / "nan"
  steps = sorted(int(name[len("model.ckpt-"):-len(".index")])
                 for name in os.listdir(output_dir) if name.endswith(".index"))
  assert steps, "the run stopped before its first save"
  newest = output_dir / f"model.ckpt-{steps[-1]}"
  error = assert_one_error(
      distill_runs["first"]["nan"], "became nan at step",
      f"the newest finite checkpoint ({newest}) is the last good one")
  # Stopped at the step after the newest checkpoint (saved every step),
  # without saving that step.
  assert int(error.split("at step ")[1].split(";")[0]) == steps[-1] + 1
  for step in steps:
    for name, value in checkpoint_values(
        output_dir / f"model.ckpt-{step}").items():
      assert np.all(np.isfinite(value)), (step, name)
  assert not no_temporaries(output_dir)


def test_resume_passes_over_a_checkpoint_holding_nan(distill_runs):
  result = distill_runs["reruns"]["poisoned"]
  assert_ran(result)
  assert f"Passing over {distill_runs['out'] / 'poisoned'}/model.ckpt-12: " \
         "1 variables hold NaN" in result.stderr
  assert "Resuming from" in result.stderr
  assert "model.ckpt-8 at step 8" in result.stderr
  assert_same_checkpoints(distill_runs["out"] / "poisoned" / "model.ckpt-12",
                          distill_runs["out"] / "clean" / "model.ckpt-12")


@pytest.mark.parametrize("case,file,record,what", [
    ("corrupt", "a.tfrecord", CORRUPT_AT, "corrupted record at"),
    ("truncated", "b.tfrecord", TRUNCATED_AT, "truncated record at"),
    ("out_of_vocab", "c.tfrecord", OUT_OF_VOCAB_AT,
     "input_ids holds 5000, outside [0, 60) (vocab_size 60)")])
def test_a_bad_training_record_is_one_error_naming_file_and_record(
    distill_runs, case, file, record, what):
  assert_one_error(distill_runs["first"][case],
                   f"{distill_runs['bad'] / file}: record {record}: {what}",
                   "or rerun with --skip_corrupt_records")
  # TensorFlow's own status text stays out of the line.
  assert "failed with" not in distill_runs["first"][case].stderr
  assert not [name for name in os.listdir(distill_runs["out"] / case)
              if name.startswith("model.ckpt-")]


def test_skip_corrupt_records_trains_as_on_the_good_records_alone(
    distill_runs):
  result = distill_runs["first"]["skipping"]
  assert_ran(result)
  bad = distill_runs["bad"]
  log = result.stderr
  assert f"Skipping the end of {bad / 'a.tfrecord'} from record 12" in log
  assert f"Skipping the end of {bad / 'b.tfrecord'} from record 23" in log
  assert f"Skipping {bad / 'c.tfrecord'} record 7: input_ids holds 5000" in log
  assert ("1 records out of range left out, 2 of 3 files end unreadably; "
          "58 records remain") in log
  assert_ran(distill_runs["first"]["good_records"])
  assert_same_checkpoints(
      distill_runs["out"] / "skipping" / "model.ckpt-12",
      distill_runs["out"] / "good_records" / "model.ckpt-12")


def test_a_corrupt_eval_file_after_training_then_the_rerun_evaluates(
    distill_runs):
  out, root = distill_runs["out"], distill_runs["root"]
  assert_one_error(distill_runs["first"]["eval_corrupt"],
                   f"{root / 'eval_corrupt.tfrecord'}: record 5: corrupted",
                   "(--eval_input_file)")
  assert "model.ckpt-12.index" in distill_runs["eval_corrupt_files"]
  assert "eval_results.txt" not in distill_runs["eval_corrupt_files"]
  rerun = distill_runs["reruns"]["eval_corrupt"]
  assert_ran(rerun)
  assert "nothing to train" in rerun.stderr
  got, want = eval_results(out / "eval_corrupt"), eval_results(out / "clean")
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=key)


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(distill_runs):
  out = distill_runs["out"]
  result = distill_runs["reruns"]["truncated_checkpoint"]
  assert_ran(result)
  assert (f"Passing over {out / 'truncated_checkpoint'}/model.ckpt-12: "
          "truncated") in result.stderr
  assert "model.ckpt-8 at step 8" in result.stderr
  assert_same_checkpoints(out / "truncated_checkpoint" / "model.ckpt-12",
                          out / "clean" / "model.ckpt-12")


def test_kill_between_data_and_index_then_the_rerun_cleans_up_and_resumes(
    distill_runs):
  out = distill_runs["out"]
  killed = distill_runs["first"]["killed"]
  assert killed.returncode == -9, killed.stderr[-3000:]
  left = distill_runs["killed_files"]
  # Killed between the renames: step 8's data under its final name, its
  # index still temporary, so step 8 is not a checkpoint.
  assert "model.ckpt-8.data-00000-of-00001" in left
  assert "model.ckpt-8.index" not in left
  assert [name for name in left if name.startswith("model.ckpt-8.tmp-")]
  rerun = distill_runs["reruns"]["killed"]
  assert_ran(rerun)
  assert "left by an interrupted save" in rerun.stderr
  assert "model.ckpt-4 at step 4" in rerun.stderr
  assert not no_temporaries(out / "killed")
  assert_same_checkpoints(out / "killed" / "model.ckpt-12",
                          out / "clean" / "model.ckpt-12")


def test_disk_full_during_a_save_is_one_error_and_leaves_nothing(
    distill_runs):
  out = distill_runs["out"]
  assert_one_error(distill_runs["first"]["disk_full"],
                   f"cannot write {out / 'disk_full'}/model.ckpt-4:",
                   "File too large")
  left = distill_runs["disk_full_files"]
  assert not [name for name in left if ".tmp-" in name or "tempstate" in name]
  assert not [name for name in left if name.startswith("model.ckpt-")]
  assert_ran(distill_runs["reruns"]["disk_full"])
  assert_same_checkpoints(out / "disk_full" / "model.ckpt-12",
                          out / "clean" / "model.ckpt-12")


def test_an_unwritable_output_dir_is_one_error(distill_runs):
  assert_one_error(distill_runs["first"]["unwritable"],
                   f"--output_dir {distill_runs['a_file'] / 'out'}: cannot "
                   f"write there")


# ---------------------------------------------------------------------------
# Stage IV: extract_teacher_labels_truncated.py.

L = 32


def teacher_args(checkpoint, input_file, *output):
  """The whole distribution (70 kB for 30 records, for a full disk at 30 kB)
  without XLA (compiling costs more than these runs)."""
  return [TEACHER, f"--bert_config_file={checkpoint}.json",
          f"--init_checkpoint={checkpoint}", f"--input_file={input_file}",
          f"--max_seq_length={L}", f"--max_predictions_per_seq={P}",
          "--batch_size=8", "--truncation_factor=0", "--progress_interval=0",
          "--use_xla=false", *output]


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("reliability_teacher")
  config = ref.TINY_CONFIG
  teacher = str(root / "teacher.ckpt")
  (root / "teacher.ckpt.json").write_text(json.dumps(config))
  ref.write_google_checkpoint(teacher, ref.random_google_weights(config, 1),
                              global_step=1)
  truncated = str(root / "truncated.ckpt")
  (root / "truncated.ckpt.json").write_text(json.dumps(config))
  shutil.copy(teacher + ".index", truncated + ".index")
  data = open(teacher + ".data-00000-of-00001", "rb").read()
  open(truncated + ".data-00000-of-00001", "wb").write(data[:len(data) // 2])

  v = config["vocab_size"]
  inputs = ref.random_pretraining_examples(30, L, P, v, seed=1)
  ref.write_records(root / "input.tfrecord", inputs)
  beyond = [dict(e) for e in inputs]
  beyond[9] = dict(beyond[9])
  beyond[9][records.MASKED_LM_POSITIONS] = beyond[9][
      records.MASKED_LM_POSITIONS].copy()
  beyond[9][records.MASKED_LM_POSITIONS][0] = 99  # >= L
  ref.write_records(root / "position_99.tfrecord", beyond)
  past_end = [dict(e) for e in inputs]
  length = int(past_end[4][records.INPUT_MASK].sum())
  past_end[4][records.MASKED_LM_POSITIONS] = past_end[4][
      records.MASKED_LM_POSITIONS].copy()
  past_end[4][records.MASKED_LM_POSITIONS][0] = length  # a padding position
  ref.write_records(root / "past_end.tfrecord", past_end)
  (root / "a_file").write_text("not a folder")
  (root / "a_folder").mkdir()
  (root / "out").mkdir()

  source = str(root / "input.tfrecord")
  out = root / "out"
  first = {
      "clean": teacher_args(teacher, source, f"--output_file={out}/clean"),
      "position_99": teacher_args(
          teacher, root / "position_99.tfrecord",
          f"--output_file={out}/position_99", "--use_xla=true"),
      "past_end": teacher_args(teacher, root / "past_end.tfrecord",
                               f"--output_file={out}/past_end"),
      "truncated_teacher": teacher_args(truncated, source,
                                        f"--output_file={out}/truncated"),
      "output_dir_under_a_file": teacher_args(
          teacher, source, f"--output_dir={root / 'a_file' / 'labels'}"),
      "output_file_a_folder": teacher_args(
          teacher, source, f"--output_file={root / 'a_folder'}"),
      "output_file_in_no_folder": teacher_args(
          teacher, source, f"--output_file={root / 'none' / 'labels'}"),
      "disk_full": [FAULT, "--file_size_limit=30000"] + teacher_args(
          teacher, source, f"--output_file={out}/disk_full"),
      "killed": [FAULT, f"--kill_at_rename={out}/killed"] + teacher_args(
          teacher, source, f"--output_file={out}/killed"),
  }
  results = stage_runs.run_all(first, str(root / "logs1"), timeout=900)
  after_first = sorted(os.listdir(out))
  second = {name: teacher_args(teacher, source, f"--output_file={out}/{name}")
            for name in ("disk_full", "killed")}
  reruns = stage_runs.run_all(second, str(root / "logs2"), timeout=900)
  return {"root": root, "out": out, "first": results, "reruns": reruns,
          "after_first": after_first}


def test_teacher_masked_position_beyond_max_seq_length_is_an_error(
    teacher_runs):
  """Under XLA (the default) a gather at 99 with L = 32 used to be clamped
  silently and the run exited 0."""
  root = teacher_runs["root"]
  assert_one_error(teacher_runs["first"]["position_99"],
                   f"{root / 'position_99.tfrecord'}: record 9: "
                   f"masked_lm_positions holds 99, outside [0, 32) "
                   f"(--max_seq_length 32)")
  assert_one_error(teacher_runs["first"]["past_end"],
                   f"{root / 'past_end.tfrecord'}: record 4: "
                   f"masked_lm_positions holds", "beyond its")
  assert "position_99" not in teacher_runs["after_first"]
  assert "past_end" not in teacher_runs["after_first"]


def test_teacher_truncated_checkpoint_is_one_error(teacher_runs):
  assert_one_error(teacher_runs["first"]["truncated_teacher"],
                   f"--init_checkpoint: {teacher_runs['root']}/truncated.ckpt:"
                   f" truncated")


@pytest.mark.parametrize("case,text", [
    ("output_dir_under_a_file", "a_file/labels: cannot create it"),
    ("output_file_a_folder", "a_folder is a directory"),
    ("output_file_in_no_folder", "none/labels: cannot write")])
def test_teacher_unwritable_output_is_one_error(teacher_runs, case, text):
  assert_one_error(teacher_runs["first"][case], text)


def test_teacher_disk_full_is_one_error_then_the_rerun_writes_it_all(
    teacher_runs):
  out = teacher_runs["out"]
  assert_one_error(teacher_runs["first"]["disk_full"],
                   f"{out}/disk_full: cannot write", "File too large")
  assert not [n for n in teacher_runs["after_first"] if "disk_full" in n]
  assert_ran(teacher_runs["reruns"]["disk_full"])
  assert (out / "disk_full").read_bytes() == (out / "clean").read_bytes()


def test_teacher_kill_before_the_rename_then_the_rerun_writes_it_all(
    teacher_runs):
  out = teacher_runs["out"]
  killed = teacher_runs["first"]["killed"]
  assert killed.returncode == -9, killed.stderr[-3000:]
  left = [n for n in teacher_runs["after_first"] if n.startswith("killed")]
  assert len(left) == 1 and ".tmp-" in left[0]  # only the temporary file
  rerun = teacher_runs["reruns"]["killed"]
  assert_ran(rerun)
  assert "left by an interrupted run" in rerun.stderr
  assert (out / "killed").read_bytes() == (out / "clean").read_bytes()
  assert not no_temporaries(out)
