"""Files the stages write and read back: outputs that appear under their
final name only when complete (atomic_output, write_json), the temporaries
an interrupted run left (remove_stale_temporaries, the one rule for every
output, checkpoints included), and what identifies a file's content
(file_identity, same_content).

Local paths go through os; others (gs://...) through tf.io.gfile, which is
imported only then.
"""

import contextlib
import functools
import glob
import hashlib
import json
import os
import shutil

from absl import logging


def temporary_path(final_path):
  """The name an output is written under until it is complete."""
  return f"{final_path}.tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_output(final_path):
  """Yields a temporary path; renames it to final_path only on success.

  On any exception the temporary file is removed, so a crash never leaves a
  half-written file under the final name and a rerun starts that file anew.
  Local paths go through os, others (gs://...) through tf.io.gfile.
  """
  if "://" in final_path:
    import tensorflow as tf
    exists, remove = tf.io.gfile.exists, tf.io.gfile.remove
    rename = functools.partial(tf.io.gfile.rename, overwrite=True)
  else:
    exists, remove, rename = os.path.exists, os.remove, os.replace
  tmp_path = temporary_path(final_path)
  try:
    yield tmp_path
    rename(tmp_path, final_path)
  except BaseException:
    if exists(tmp_path):
      remove(tmp_path)
    raise


def describe_os_error(error, path=None):
  """An OSError in words that name its file: `path`, else the error's own."""
  path = path or error.filename
  what = error.strerror or str(error)
  return f"{path}: {what}" if path else what


def remove_stale_temporaries(final_pattern):
  """Removes the temporaries that interrupted runs left for final_pattern.

  final_pattern is a final path or a glob of final paths (escape a literal
  path with glob.escape); their temporaries are named by temporary_path. A
  run killed (kill -9, a power cut) cannot remove its own, so every stage
  removes them when it starts again. Only one run at a time may write an
  output. A temporary folder (an export's) goes with all it holds. Returns
  the paths removed.
  """
  if "://" in final_pattern:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    find = tf.io.gfile.glob
    remove = lambda p: (tf.io.gfile.rmtree(p) if tf.io.gfile.isdir(p)
                        else tf.io.gfile.remove(p))
  else:
    find = glob.glob
    remove = lambda p: shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
  removed = []
  for stale in sorted(find(final_pattern + ".tmp-*")):
    logging.info("Removing %s, left by an interrupted run", stale)
    remove(stale)
    removed.append(stale)
  return removed


def file_identity(path, digest=None):
  """What identifies a file's content: {name, size, mtime_ns, sha256}; of a
  remote file (gs://...) its name and size alone.

  name is the base name. With `digest`, a hashlib object that was fed every
  byte of the file while it was read, its hex digest is taken instead of
  reading the file again.
  """
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return {"name": os.path.basename(path),
            "size": tf.io.gfile.stat(path).length}
  status = os.stat(path)
  if digest is None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(functools.partial(f.read, 1 << 20), b""):
        digest.update(block)
  return {"name": os.path.basename(path), "size": status.st_size,
          "mtime_ns": status.st_mtime_ns, "sha256": digest.hexdigest()}


def made_from_path(output_path):
  """Where the record of what an output file was made from is kept (stages
  III-b and IV)."""
  return output_path + ".made_from.json"


def same_content(identity, other):
  """Whether two file_identity records are of the same bytes (name, size and
  hash; the modification time alone changes with a copy or a touch)."""
  return all(identity.get(key) == other.get(key)
             for key in ("name", "size", "sha256"))


def _open_text(path, mode):
  """A text file of a local path (os) or another (tf.io.gfile)."""
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.GFile(path, mode)
  return open(path, mode, encoding="utf-8")


def write_json(path, value):
  """Writes a JSON file under its final name only when complete."""
  with atomic_output(path) as tmp_path:
    with _open_text(tmp_path, "w") as f:
      json.dump(value, f, indent=1, sort_keys=True)
      f.write("\n")


def read_json(path):
  """The JSON value in path, or None when the file is missing or unreadable."""
  unreadable = (OSError, ValueError)
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    unreadable += (tf.errors.OpError,)
  try:
    with _open_text(path, "r") as f:
      return json.load(f)
  except unreadable:
    return None
