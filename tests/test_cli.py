"""Shared stage plumbing: atomic outputs, input globs, progress."""
import os

import pytest

from bert_distill import cli
from bert_distill import file_io
from bert_distill import progress_log


def test_atomic_output_renames_only_on_success(tmp_path):
  final = str(tmp_path / "out.txt")
  with file_io.atomic_output(final) as tmp:
    with open(tmp, "w") as f:
      f.write("done")
    assert not os.path.exists(final)
  assert open(final).read() == "done"


def test_atomic_output_leaves_nothing_after_a_crash(tmp_path):
  final = str(tmp_path / "out.txt")
  with pytest.raises(RuntimeError):
    with file_io.atomic_output(final) as tmp:
      open(tmp, "w").write("half")
      raise RuntimeError("crash")
  assert os.listdir(tmp_path) == []


def test_atomic_output_of_a_local_path_does_not_load_tensorflow(tmp_path):
  """Stage III-b's workers write through it and must stay TensorFlow-free."""
  import subprocess
  import sys
  from conftest import ROOT
  final = str(tmp_path / "out.txt")
  code = ("import sys\nfrom bert_distill import file_io\n"
          f"with file_io.atomic_output({final!r}) as tmp:\n"
          "  open(tmp, 'w').write('done')\n"
          "print('tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == "False"
  assert open(final).read() == "done"


def test_expand_input_files_sorts_and_rejects_empty_globs(tmp_path):
  for name in ("b.tfrecord", "a.tfrecord"):
    (tmp_path / name).write_text("")
  files = cli.expand_input_files(f"{tmp_path}/*.tfrecord")
  assert [os.path.basename(f) for f in files] == ["a.tfrecord", "b.tfrecord"]
  with pytest.raises(cli.StageError, match="nothing-here"):
    cli.expand_input_files(f"{tmp_path}/*.tfrecord,{tmp_path}/nothing-here*")


def test_format_seconds():
  assert progress_log.format_seconds(3725) == "1:02:05"
  assert progress_log.format_seconds(float("inf")) == "?"


def test_flag_errors_are_one_line_with_exit_1():
  """absl's two-line 'FATAL Flags parsing error' becomes one `error:` line."""
  import subprocess
  import sys
  from conftest import ROOT
  script = os.path.join(ROOT, "split_text.py")
  for args in (["--bogus_flag=1"], ["--read_file=x", "--folder=y", "--split_number=0"],
               ["--read_file=x"]):
    result = subprocess.run([sys.executable, script] + args, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 1, args
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)


def test_run_freezes_what_is_alive_at_exit_after_main_finished():
  """cli.run leaves the objects alive at exit out of Python's last garbage
  collections (gc.freeze), and only once main has returned and its output
  is written. A handler registered before cli.run runs after cli.run's."""
  import subprocess
  import sys
  from conftest import ROOT
  code = ("import atexit, gc, sys\n"
          "from bert_distill import cli\n"
          "atexit.register(lambda: print('frozen at exit', gc.get_freeze_count() > 0))\n"
          "def main(argv):\n"
          "  print('frozen in main', gc.get_freeze_count() > 0)\n"
          "cli.run(main)\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, check=True)
  assert result.stdout.splitlines() == ["frozen in main False",
                                        "frozen at exit True"], result.stdout


def test_progress_logs_counts_rate_time_left_and_note(caplog):
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO)
  progress = progress_log.Progress("extract", total=4.0, unit="MB", interval=3600.0)
  progress.update(1.5, note="1/3 files, 10 articles")
  assert not caplog.records  # the interval has not passed
  with caplog.at_level("INFO"):
    progress.log()
  line = caplog.records[-1].getMessage()
  assert line.startswith("extract: 1.50/4.00 MB (37.5%), ")
  assert "MB/s" in line and "time left" in line
  assert line.endswith("; 1/3 files, 10 articles")


@pytest.mark.parametrize("raise_in_main, want", [
    ("open(sys.argv[1])", "error: {dir}: Is a directory"),
    ("import tensorflow as tf\n  tf.io.gfile.GFile(sys.argv[1] + '/none').read()",
     "error: {dir}/none; No such file or directory"),
    # As TensorFlow raises it for a file without read permission (the suite
    # runs as root, whom chmod does not stop).
    ("import tensorflow as tf\n  raise tf.errors.PermissionDeniedError("
     "None, None, sys.argv[1] + '/vocab.txt; Permission denied')",
     "error: {dir}/vocab.txt; Permission denied"),
])
def test_a_users_unreadable_file_is_one_line_naming_it(tmp_path, raise_in_main,
                                                      want):
  """An OSError naming a file, or TensorFlow's not-found / permission
  errors, raised anywhere in a stage: one `error:` line naming the file,
  exit 1, no traceback. Other exceptions still show their traceback."""
  import subprocess
  import sys
  from conftest import ROOT
  code = ("import sys\n"
          "from bert_distill import cli\n"
          "def main(argv):\n"
          f"  {raise_in_main}\n"
          "cli.run(main)\n")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 1
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert lines == [want.format(dir=tmp_path)], result.stderr
  assert "Traceback" not in result.stderr
  bug = subprocess.run(
      [sys.executable, "-c", code.replace(raise_in_main.split("\n")[-1].strip(),
                                          "[][1]")],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert bug.returncode == 1 and "IndexError" in bug.stderr
  assert "Traceback" in bug.stderr
