"""Crashes, reruns, dying workers, stale outputs and full disks: stages II,
III-a, III-b and run_pipeline.sh's markers (issue 14, items 1, 2, 4, 8, 9).

Each case asserts the exit status, the one `error:` line naming the file, that
nothing partial is left under a final name, and that the rerun's output
equals an uninterrupted run's. A worker is killed with SIGKILL, as the
out-of-memory killer does, while it holds a known file: that file is a named
pipe (FIFO), on which the worker blocks until the test has killed it. A full
disk is a file size limit (`ulimit -f`, in 1 KB blocks).
"""
import filecmp
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import stage_runs
from conftest import ROOT, VOCAB_FILE
from wiki_cases import EXPECTED_TEXT, write_wiki_file

SPLIT_TEXT = os.path.join(ROOT, "split_text.py")
CREATE_RECORDS = os.path.join(ROOT, "multifile_create_pretraining_data.py")
EXTRACT_JSONS = os.path.join(ROOT, "extract_wikipedia_for_bert",
                             "extract_jsons.py")
PIPELINE = os.path.join(ROOT, "run_pipeline.sh")
INPUT_DIR = os.path.join(ROOT, "tests", "data", "pretraining", "input")
# Small settings: a file's records take a fraction of a second.
RECORD_FLAGS = [f"--vocab_file={VOCAB_FILE}", "--max_seq_length=32",
                "--max_predictions_per_seq=5", "--dupe_factor=2",
                "--random_seed=7", "--output_base_name=ours"]


def run(args, file_blocks=None, timeout=120):
  """Runs a command; with file_blocks, under `ulimit -f file_blocks`."""
  if file_blocks is not None:
    args = ["bash", "-c", f'ulimit -f {file_blocks}; exec "$@"', "bash",
            *args]
  return stage_runs.run(args, timeout=timeout)


def assert_one_error(result, *needles):
  """Exit status 1 (an error, not a crash) and one `error:` line holding
  every needle; no traceback."""
  assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
  return stage_runs.assert_one_line_error(result, *needles)


def temporaries(folder):
  return glob.glob(os.path.join(str(folder), "**", "*.tmp-*"), recursive=True)


def same_files(folder_a, folder_b, pattern):
  """The files matching pattern in both folders: same names, same bytes."""
  names_a = sorted(os.path.basename(p) for p in
                   glob.glob(os.path.join(str(folder_a), pattern)))
  names_b = sorted(os.path.basename(p) for p in
                   glob.glob(os.path.join(str(folder_b), pattern)))
  assert names_a == names_b and names_a
  match, mismatch, errors = filecmp.cmpfiles(folder_a, folder_b, names_a,
                                             shallow=False)
  assert not mismatch and not errors, (mismatch, errors)
  return names_a


def children(pid):
  """The pids of the processes whose parent is pid."""
  found = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid:
        found.append(int(entry))
  return found


def holder_of(parent_pid, path):
  """The child of parent_pid that has path open, or None."""
  for pid in children(parent_pid):
    try:
      fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
      continue
    for fd in fds:
      try:
        if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
          return pid
      except OSError:
        continue
  return None


def kill_the_worker_reading(process, fifo, before_kill=lambda: True,
                            timeout=60):
  """Waits until a worker of `process` has opened fifo (and before_kill()),
  kills that worker with SIGKILL, and returns the parent's exit status."""
  deadline = time.monotonic() + timeout
  writer = None
  try:
    while writer is None:
      assert time.monotonic() < deadline, "no worker opened the FIFO"
      assert process.poll() is None, process.communicate()
      try:  # Succeeds once a reader has opened it.
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
      except OSError:
        time.sleep(0.05)
    worker = None
    while worker is None or not before_kill():
      assert time.monotonic() < deadline, "the worker or its peers hung"
      worker = holder_of(process.pid, fifo)
      time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    return process.wait(timeout=timeout)
  finally:
    if writer is not None:
      os.close(writer)
    if process.poll() is None:
      process.kill()


# ---------------------------------------------------------------------------
# Stage III-b: multifile_create_pretraining_data.py


def make_records(input_dir, output_dir, *extra, file_blocks=None):
  return run([sys.executable, CREATE_RECORDS, f"--input_dir={input_dir}",
              f"--output_dir={output_dir}", *RECORD_FLAGS, *extra],
             file_blocks=file_blocks)


def text_dir(folder, names):
  """A folder of input text files, each a copy of one of the test inputs."""
  os.makedirs(folder, exist_ok=True)
  for name, source in names.items():
    shutil.copy(os.path.join(INPUT_DIR, source), os.path.join(folder, name))
  return folder


def test_rerun_of_a_finished_stage_3b_with_workers_makes_nothing(tmp_path):
  out = tmp_path / "out"
  assert make_records(INPUT_DIR, out, "--num_workers=2").returncode == 0
  mtimes = [os.stat(p).st_mtime_ns for p in sorted(out.glob("*.tfrecord"))]
  # Before: a pool of 0 processes, "ValueError: Number of processes must be
  # at least 1", exit 1 on every rerun.
  result = make_records(INPUT_DIR, out, "--num_workers=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.count("already complete, skipped") == 2
  assert "0 to make" in result.stderr
  assert [os.stat(p).st_mtime_ns
          for p in sorted(out.glob("*.tfrecord"))] == mtimes


def test_a_killed_worker_fails_stage_3b_naming_its_file_and_rerun_redoes_it(
    tmp_path):
  inputs = text_dir(tmp_path / "in", {"a.txt": "text_0.txt"})
  fifo = inputs / "b.txt"
  os.mkfifo(fifo)
  out = tmp_path / "out"
  process = subprocess.Popen(
      [sys.executable, CREATE_RECORDS, f"--input_dir={inputs}",
       f"--output_dir={out}", *RECORD_FLAGS, "--num_workers=2"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
  # Killed once the other file is done: the rerun must not make it again.
  status = kill_the_worker_reading(
      process, fifo,
      before_kill=lambda: os.path.exists(out / "ours_0.tfrecord.made_from.json"))
  _, stderr = process.communicate()
  result = subprocess.CompletedProcess(process.args, status, "", stderr)
  error = assert_one_error(result, fifo, "SIGKILL")
  assert "Rerun to redo it" in error
  assert not os.path.exists(out / "ours_1.tfrecord")

  os.remove(fifo)
  shutil.copy(os.path.join(INPUT_DIR, "text_1.txt"), fifo)
  result = make_records(inputs, out, "--num_workers=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "ours_0.tfrecord: already complete, skipped" in result.stderr
  assert "1 to make" in result.stderr
  clean = tmp_path / "clean"
  assert make_records(inputs, clean, "--num_workers=1").returncode == 0
  same_files(out, clean, "*.tfrecord")
  assert not temporaries(out)


def test_stage_3b_redoes_outputs_whose_input_or_settings_changed(tmp_path):
  inputs = text_dir(tmp_path / "in", {"a.txt": "text_0.txt",
                                      "c.txt": "text_1.txt"})
  out = tmp_path / "out"
  assert make_records(inputs, out, "--num_workers=1").returncode == 0
  # A new input between the two: c.txt's records move to index 2. Before,
  # index 1 was skipped, holding c.txt's records, and b.txt never written.
  shutil.copy(os.path.join(INPUT_DIR, "text_1.txt"), inputs / "b.txt")
  with open(inputs / "b.txt", "a") as f:
    f.write("\nA new document of its own.\nIt has two sentences.\n")
  result = make_records(inputs, out, "--num_workers=1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "ours_0.tfrecord: already complete, skipped" in result.stderr
  assert "made from c.txt, not from b.txt as it is now; made again" in (
      result.stderr)
  clean = tmp_path / "clean"
  assert make_records(inputs, clean, "--num_workers=1").returncode == 0
  same_files(out, clean, "*.tfrecord")

  # Another --max_seq_length: every file is made again (before: skipped).
  result = make_records(inputs, out, "--num_workers=1",
                        "--max_seq_length=40")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.count("made with other settings: --max_seq_length") \
      == 3
  clean40 = tmp_path / "clean40"
  assert make_records(inputs, clean40, "--num_workers=1",
                      "--max_seq_length=40").returncode == 0
  same_files(out, clean40, "*.tfrecord")

  # An input removed: its index's old output goes, no other is left behind.
  os.remove(inputs / "c.txt")
  result = make_records(inputs, out, "--num_workers=1",
                        "--max_seq_length=40")
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(p.name for p in out.glob("*.tfrecord")) == [
      "ours_0.tfrecord", "ours_1.tfrecord"]
  # One beyond the inputs that this stage did not make: refused.
  (out / "ours_7.tfrecord").write_bytes(b"someone else's")
  assert_one_error(make_records(inputs, out, "--max_seq_length=40"),
                   out / "ours_7.tfrecord", "delete it")


def test_stage_3b_on_a_full_disk_names_the_file_and_rerun_completes(tmp_path):
  out = tmp_path / "out"
  # 8 KB: each record file is 13-16 KB. Before: "error: : File too large".
  result = make_records(INPUT_DIR, out, "--num_workers=1", file_blocks=8)
  assert_one_error(result, out / "ours_", ".tfrecord", "File too large")
  assert not list(out.glob("*.tfrecord")) and not temporaries(out)
  assert make_records(INPUT_DIR, out, "--num_workers=2").returncode == 0
  clean = tmp_path / "clean"
  assert make_records(INPUT_DIR, clean, "--num_workers=1").returncode == 0
  same_files(out, clean, "*.tfrecord")


def test_stage_3b_vocab_that_is_not_utf8_is_one_line(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncaf\xe9\n")
  result = run([sys.executable, CREATE_RECORDS, f"--input_dir={INPUT_DIR}",
                f"--output_dir={tmp_path / 'out'}", f"--vocab_file={vocab}"])
  assert_one_error(result, f"--vocab_file {vocab}: line 6", "not UTF-8")


def test_stage_3b_refuses_the_pieces_of_an_interrupted_split(tmp_path):
  pieces = tmp_path / "pieces"
  pieces.mkdir()
  (tmp_path / "wiki.txt").write_text(EXPECTED_TEXT)
  assert split(tmp_path / "wiki.txt", pieces, 2).returncode == 0
  manifest = pieces / "text.made_from.json"
  manifest.write_text(manifest.read_text().replace('"complete": true',
                                                   '"complete": false'))
  assert_one_error(make_records(pieces, tmp_path / "out"), manifest,
                   "interrupted")


def test_stage_3b_reads_a_folder_beside_a_manifest_that_is_not_splits(
    tmp_path):
  """A *.made_from.json that is not split_text.py's (valid JSON, not an
  object) is not a record of an interrupted split, and no traceback."""
  from bert_distill import pretraining_data
  (tmp_path / "a.txt").write_text("One sentence.\n")
  (tmp_path / "other.made_from.json").write_text("[1]")
  assert pretraining_data.find_input_files(str(tmp_path)) == [
      str(tmp_path / "a.txt")]


# ---------------------------------------------------------------------------
# Stage III-a: split_text.py


def split(read_file, folder, split_number, file_blocks=None):
  return run([sys.executable, SPLIT_TEXT, f"--read_file={read_file}",
              f"--folder={folder}", f"--split_number={split_number}"],
             file_blocks=file_blocks)


def wiki_text(folder, num_articles):
  """Writes num_articles short articles to folder/wiki.txt; returns that
  file and folder/pieces, the folder to split it into (not made)."""
  text = folder / "wiki.txt"
  text.write_text("".join(
      f"Article {i} starts here.\nIt has a second sentence.\n\n"
      for i in range(num_articles)))
  return text, folder / "pieces"


def test_split_into_fewer_pieces_leaves_none_of_the_former_ones(tmp_path):
  text, out = wiki_text(tmp_path, 20)
  assert split(text, out, 7).returncode == 0
  assert len(list(out.glob("text_*.txt"))) == 7
  # Before: pieces 3-6 of the first split stayed, and stage III-b read them.
  result = split(text, out, 3)
  assert result.returncode == 0, result.stderr
  clean = tmp_path / "clean"
  assert split(text, clean, 3).returncode == 0
  assert same_files(out, clean, "text_*.txt") == [
      "text_0.txt", "text_1.txt", "text_2.txt"]


def test_split_refuses_pieces_it_did_not_write(tmp_path):
  text, out = wiki_text(tmp_path, 4)
  out.mkdir()
  (out / "text_5.txt").write_text("Someone else's text.\n")
  assert_one_error(split(text, out, 2), out / "text_5.txt",
                   "not written by split_text.py")
  assert (out / "text_5.txt").read_text() == "Someone else's text.\n"
  assert not list(out.glob("text_[0-4].txt"))


def test_split_on_a_full_disk_names_the_piece_and_leaves_no_temporary(
    tmp_path):
  text, out = wiki_text(tmp_path, 2000)  # About 100 KB: 50 KB a piece.
  # Before: "error: : File too large", and the half-written piece stayed
  # under its temporary name (the cleanup failed on the same full disk).
  result = split(text, out, 2, file_blocks=30)
  assert_one_error(result, out / "text_", ".txt", "File too large")
  assert not temporaries(out)
  for piece in out.glob("text_*.txt"):  # Any piece there is complete.
    assert piece.stat().st_size < 60_000
  assert split(text, out, 2).returncode == 0
  clean = tmp_path / "clean"
  assert split(text, clean, 2).returncode == 0
  same_files(out, clean, "text_*.txt")


def test_split_removes_the_temporaries_of_a_killed_run(tmp_path):
  text, out = wiki_text(tmp_path, 4)
  out.mkdir()
  # What a run killed with SIGKILL leaves: a piece under its temporary name.
  (out / "text_1.txt.tmp-999999").write_text("Article 2 sta")
  (out / "text.made_from.json.tmp-999999").write_text("{")
  result = split(text, out, 2)
  assert result.returncode == 0, result.stderr
  assert not temporaries(out)
  assert "left by an interrupted run" in result.stderr


def test_split_refuses_to_read_a_piece_it_would_remove(tmp_path):
  text, out = wiki_text(tmp_path, 4)
  assert split(text, out, 2).returncode == 0
  pieces = {p.name: p.read_bytes() for p in out.glob("text_*.txt")}
  # Before: both pieces were removed as the former run's, then "No such
  # file" for the one being read.
  for read_file in (out / "text_0.txt", out / ".." / "pieces" / "text_1.txt"):
    assert_one_error(split(read_file, out, 2), f"--read_file={read_file}",
                     "copy it out")
  os.link(out / "text_0.txt", tmp_path / "hard_link.txt")
  assert_one_error(split(tmp_path / "hard_link.txt", out, 2),
                   "--read_file=", "text_0.txt")
  assert {p.name: p.read_bytes() for p in out.glob("text_*.txt")} == pieces


def test_split_of_a_directory_is_not_no_such_file(tmp_path):
  result = split(tmp_path, tmp_path / "pieces", 2)
  assert "no such file" not in assert_one_error(
      result, f"--read_file={tmp_path} is a directory")
  result = split(tmp_path / "missing.txt", tmp_path / "pieces", 2)
  assert_one_error(result, "missing.txt: no such file")


# ---------------------------------------------------------------------------
# Stage II: extract_jsons.py


def extract(folder, write_file, *extra, file_blocks=None):
  return run([sys.executable, EXTRACT_JSONS, f"--folder={folder}",
              f"--write_file={write_file}", *extra], file_blocks=file_blocks)


def wiki_folder(root, num_files=3):
  for i in range(num_files):
    write_wiki_file(os.path.join(str(root), "AA", f"wiki_{i:02d}"),
                    [(f"T{i}{j}", f"Article {i}.{j} starts. Dr. Who ends it.")
                     for j in range(50)])
  return root


def test_a_killed_worker_fails_extract_jsons_naming_its_file(tmp_path):
  folder = wiki_folder(tmp_path / "in", num_files=2)
  fifo = folder / "AA" / "wiki_02"
  os.mkfifo(fifo)
  out = tmp_path / "wiki.txt"
  process = subprocess.Popen(
      [sys.executable, EXTRACT_JSONS, f"--folder={folder}",
       f"--write_file={out}", "--num_workers=2"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
  # Before: the parent waited forever for the dead worker's file.
  status = kill_the_worker_reading(process, fifo)
  _, stderr = process.communicate()
  assert_one_error(subprocess.CompletedProcess(process.args, status, "",
                                               stderr), fifo, "SIGKILL")
  assert not out.exists() and not temporaries(tmp_path)

  os.remove(fifo)
  write_wiki_file(str(fifo), [("Late", "The last file is read too.")])
  assert extract(folder, out, "--num_workers=2").returncode == 0
  assert extract(folder, tmp_path / "clean.txt",
                 "--num_workers=1").returncode == 0
  assert out.read_bytes() == (tmp_path / "clean.txt").read_bytes()
  assert out.read_text().endswith("The last file is read too.\n\n")


@pytest.mark.parametrize("case", ["directory", "under_a_file", "unwritable"])
def test_extract_jsons_write_file_that_cannot_be_written(tmp_path, case):
  folder = wiki_folder(tmp_path / "in", num_files=1)
  if case == "directory":
    write_file, needle = tmp_path / "out", "is a directory"
    write_file.mkdir()
  elif case == "under_a_file":
    (tmp_path / "a_file").write_text("")
    write_file, needle = tmp_path / "a_file" / "wiki.txt", "is not a folder"
  else:
    if os.geteuid() == 0:
      pytest.skip("root writes into read-only folders")
    (tmp_path / "ro").mkdir(mode=0o500)
    write_file, needle = tmp_path / "ro" / "wiki.txt", "not writable"
  assert_one_error(extract(folder, write_file), f"--write_file={write_file}",
                   needle)
  assert not temporaries(tmp_path)


def test_extract_jsons_refuses_a_write_file_among_its_inputs(tmp_path):
  folder = wiki_folder(tmp_path / "in", num_files=2)
  inputs = {p: p.read_bytes() for p in folder.glob("AA/wiki_*")}
  os.symlink(folder / "AA" / "wiki_01", tmp_path / "link.txt")
  # Before: the first one overwrote AA/wiki_00 with the text of both files.
  for write_file, needle in [(folder / "AA" / "wiki_00", "input"),
                             (folder / "wiki.txt", "inside --folder"),
                             (tmp_path / "link.txt", "input")]:
    assert_one_error(extract(folder, write_file), f"--write_file={write_file}",
                     needle)
  assert {p: p.read_bytes() for p in folder.glob("AA/wiki_*")} == inputs
  assert not (folder / "wiki.txt").exists() and not temporaries(tmp_path)


def test_extract_jsons_dangling_wiki_link_is_one_line(tmp_path):
  folder = wiki_folder(tmp_path / "in", num_files=1)
  os.symlink(tmp_path / "gone" / "wiki_09", folder / "AA" / "wiki_01")
  assert_one_error(extract(folder, tmp_path / "wiki.txt"),
                   folder / "AA" / "wiki_01", "does not exist")


def test_extract_jsons_on_a_full_disk_names_the_file_and_cleans_up(tmp_path):
  folder = wiki_folder(tmp_path / "in", num_files=3)
  out = tmp_path / "wiki.txt"
  result = extract(folder, out, "--num_workers=1", file_blocks=2)
  assert_one_error(result, f"--write_file={out}", "File too large")
  assert not out.exists() and not temporaries(tmp_path)


def test_extract_jsons_removes_the_temporary_of_a_killed_run(tmp_path):
  folder = wiki_folder(tmp_path / "in", num_files=1)
  out = tmp_path / "wiki.txt"
  # What a parent killed with SIGKILL leaves behind.
  (tmp_path / "wiki.txt.tmp-999999").write_text("Article 0.0 sta")
  result = extract(folder, out)
  assert result.returncode == 0, result.stderr
  assert not temporaries(tmp_path)
  assert out.read_text().startswith("Article 0.0 starts.\n")


# ---------------------------------------------------------------------------
# run_pipeline.sh


def run_pipeline(work_dir, *flags):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep +
             os.environ["PATH"])
  return subprocess.run(
      ["bash", PIPELINE, f"--work_dir={work_dir}", f"--python={sys.executable}",
       f"--vocab_file={VOCAB_FILE}", "--split_number=2", "--dupe_factor=2",
       "--max_seq_length=32", "--max_predictions_per_seq=5",
       "--stages=III-a,III-b", *flags],
      capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)


def test_pipeline_markers_notice_a_rewritten_text_file(tmp_path):
  work = tmp_path / "work"
  work.mkdir()
  (work / "wiki.txt").write_text(EXPECTED_TEXT)
  assert run_pipeline(work, "--num_workers=1").returncode == 0
  # Killed after III-b's last file, before its marker: the rerun runs III-b
  # again, which finds every file made (before: a pool of 0 processes).
  os.remove(work / "stages" / "III-b.done")
  result = run_pipeline(work, "--num_workers=2")
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert result.stdout.count("already complete, skipped") == 2

  # The text file rewritten in place, same command line. Before: skipped,
  # the old pieces and records kept.
  (work / "wiki.txt").write_text(EXPECTED_TEXT.replace("Orchid", "Lotus"))
  result = run_pipeline(work, "--num_workers=2")
  assert result.returncode == 1
  assert (f"stage III-a (split the text): its input {work / 'wiki.txt'} was "
          f"rewritten") in result.stderr
  assert "Lotus" not in (work / "text" / "text_0.txt").read_text()
