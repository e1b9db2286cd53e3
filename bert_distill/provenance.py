"""What a training run's output folder was made from, and one run at a time.

Stage V (distill.py) and fine-tuning (run_classifier.py) resume from the
newest checkpoint of --output_dir. Without a record of what that checkpoint
was trained on, a rerun on replaced data or with another learning rate would
resume it (or find it finished: "nothing to train") and report a model of
other inputs as this run's. So:

  * `<output_dir>/made_from.json` records the identity (name, size, sha256)
    of every file training reads (records, configs, checkpoints, the task's
    data through its feature recipe) and every setting that changes the
    model, written when training starts from step 0;
  * a run that would resume (or finds the training done) compares them and
    refuses, in one line naming what changed, unless the user asks to
    continue on the new inputs (then the record is updated);
  * `<output_dir>/run.lock` (pid, host, process start time) keeps a second
    run out of a folder a live run writes; a lock left by a killed run (its
    process is gone) is taken over by the next run.

Defines no flags: the scripts pass the values in.
"""

import atexit
import json
import os
import socket
import time

from absl import logging
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import huggingface
from bert_distill import cli
from bert_distill import file_io

RECORD_NAME = "made_from.json"
LOCK_NAME = "run.lock"


def checkpoint_identity(checkpoint):
  """The identity of each of a checkpoint's files (its index, then its data
  files), or None where checkpoint names none (the load then says so)."""
  try:
    prefix = checkpoints.resolve_checkpoint(checkpoint)
  except ValueError:
    return None
  if huggingface.is_checkpoint(prefix):  # an HF folder: its weight files
    return [file_io.file_identity(path) for path in huggingface._weight_files(prefix)]  # pylint: disable=protected-access
  return [file_io.file_identity(path) for path in
          [prefix + ".index"] + sorted(tf.io.gfile.glob(prefix + ".data-*"))]


def same_bytes(recorded, now):
  """Whether two file identities (or lists of them) are of the same bytes,
  whatever their names and times (a copied or renamed file is the same)."""
  if isinstance(recorded, list) or isinstance(now, list):
    return (isinstance(recorded, list) and isinstance(now, list) and
            len(recorded) == len(now) and
            all(same_bytes(a, b) for a, b in zip(recorded, now)))
  if not isinstance(recorded, dict) or not isinstance(now, dict):
    return recorded == now
  return all(recorded.get(key) == now.get(key) for key in ("size", "sha256"))


def differences(recorded, now):
  """What differs between two training records, in words, e.g.
  ["--input_file (train-0.tfrecord)", "--learning_rate 0.001, now 0.01"]."""
  found = []
  for flag, identity in now["inputs"].items():
    was = recorded.get("inputs", {}).get(flag)
    if not same_bytes(was, identity):
      names = sorted({i.get("name") for i in (identity if isinstance(
          identity, list) else [identity]) if isinstance(i, dict)})
      found.append(f"--{flag} ({', '.join(map(str, names)) or 'none'})")
  for flag, value in now["settings"].items():
    was = recorded.get("settings", {}).get(flag, "unset")
    if was != value:
      found.append(f"--{flag} {was}, now {value}")
  return found


def check_training_record(output_dir, record, resumed, continue_flag,
                          continue_anyway=False):
  """Records what training in output_dir is made from, or refuses to resume
  a model made from other inputs or settings.

  Args:
    output_dir: the run's folder (chief only).
    record: {"inputs": {flag: identity or [identities]}, "settings": {flag:
      value}}, JSON-serialisable.
    resumed: whether output_dir held a checkpoint this run resumed from.
    continue_flag: the flag that asks to continue despite changes, named in
      the error.
    continue_anyway: its value: log the changes, update the record, resume.

  Raises:
    cli.StageError: resumed, and the record differs (names every change).
  """
  path = os.path.join(output_dir, RECORD_NAME)
  if resumed:
    recorded = file_io.read_json(path)
    if recorded is None:
      logging.warning("%s: no record of what its checkpoints were trained on "
                      "(made before records were kept?); recording this "
                      "run's inputs and settings", output_dir)
    else:
      changed = differences(recorded, record)
      if changed and not continue_anyway:
        raise cli.StageError(
            f"--output_dir {output_dir} holds a model trained on other inputs "
            f"or settings ({'; '.join(changed)}); give the inputs and "
            f"settings of {path} to resume it, a new --output_dir to train "
            f"anew, or --{continue_flag} to continue training it on these")
      if changed:
        logging.warning("Continuing %s on other inputs or settings (--%s): %s",
                        output_dir, continue_flag, "; ".join(changed))
      else:
        return
  file_io.write_json(path, record)


def _process_start(pid):
  """The start time of process pid in clock ticks since boot (Linux), or
  None where it cannot be read; with the pid it names one process even
  after the pid is reused."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(owner):
  """Whether the process a lock names still runs (on this host)."""
  pid = owner.get("pid")
  if not isinstance(pid, int):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # It exists, under another user.
  start = _process_start(pid)
  return start is None or owner.get("start") in (None, start)


def lock_output_dir(output_dir):
  """Takes output_dir for this process until it exits: one run per folder.

  The lock file holds this process's pid, host and start time. A lock whose
  process is gone (killed, the machine restarted) is taken over, with a log
  line; one held by a live process, or by another host (which cannot be
  checked from here), is an error naming it. Local folders only (others are
  not locked).

  Raises:
    cli.StageError: another run holds output_dir, or it cannot be written.
  """
  if "://" in output_dir:
    return
  path = os.path.join(output_dir, LOCK_NAME)
  me = {"pid": os.getpid(), "host": socket.gethostname(),
        "start": _process_start(os.getpid()),
        "since": time.strftime("%Y-%m-%d %H:%M:%S")}
  tmp_path = file_io.temporary_path(path)
  try:
    os.makedirs(output_dir, exist_ok=True)
    with open(tmp_path, "w") as f:
      json.dump(me, f)
  except OSError as e:
    raise cli.StageError(f"--output_dir {output_dir}: cannot write there "
                         f"({file_io.describe_os_error(e)})") from None
  try:
    for _ in range(2):
      try:
        os.link(tmp_path, path)  # atomic: fails when the lock exists
        break
      except FileExistsError:
        owner = file_io.read_json(path) or {}
        if owner.get("host") not in (None, me["host"]):
          raise cli.StageError(
              f"--output_dir {output_dir} is in use by pid {owner.get('pid')}"
              f" on {owner.get('host')} since {owner.get('since')} ({path}); "
              f"wait for that run, or remove {path} if it is gone") from None
        if _alive(owner):
          raise cli.StageError(
              f"--output_dir {output_dir} is in use by another run (pid "
              f"{owner.get('pid')}, since {owner.get('since')}); wait for it "
              f"to end or stop it: one run per --output_dir") from None
        logging.info("Taking over %s, left by a run that is gone (pid %s)",
                     path, owner.get("pid"))
        os.remove(path)
    else:
      raise cli.StageError(f"--output_dir {output_dir}: cannot take {path}; "
                           f"another run took it first")
  finally:
    os.remove(tmp_path)

  def release():
    if (file_io.read_json(path) or {}).get("pid") == me["pid"]:
      os.remove(path)
  atexit.register(release)
