"""What a stage IV output was made from: `<output>.made_from.json` beside it.

The record holds the identity of the input file, of the teacher's config and
checkpoint, and every setting that changes a label, so that a rerun never
skips labels made by another teacher, from another input or with other
settings (teacher_labels.plan_outputs redoes such an output).
"""

import functools
import os

import tensorflow as tf

from bert_distill import file_io
from bert_distill import label_settings
from bert_distill import provenance



@functools.lru_cache(maxsize=None)
def _identity_of_version(path, size, mtime_ns):
  del size, mtime_ns  # The key of the cache: one hash per version of a file.
  return file_io.file_identity(path)


def _identity(path):
  """file_io.file_identity of a file, hashed once per version in a run."""
  if "://" in path:
    return _identity_of_version(path, 0, 0)
  status = os.stat(path)
  return _identity_of_version(path, status.st_size, status.st_mtime_ns)


def label_sources(config_path, checkpoint, settings, seed, max_records,
                  max_seq_length, max_predictions_per_seq,
                  precision="float32"):
  """What every output of a run is made from besides its input: the
  teacher's config and checkpoint (the identity of their files) and every
  setting that changes a label, by its flag's name."""
  sampled = settings.mode == label_settings.SAMPLED
  return {
      "teacher": {"bert_config_file": _identity(config_path),
                  "init_checkpoint": provenance.checkpoint_identity(
                      checkpoint)},
      "settings": {
          "label_mode": settings.mode, "truncation_factor": settings.k,
          "num_samples": settings.num_samples,
          "sample_temperature": settings.temperature,
          "exact_top_k": settings.head_k, "seed": seed if sampled else None,
          "max_records": max_records, "max_seq_length": max_seq_length,
          "max_predictions_per_seq": max_predictions_per_seq,
          "precision": precision}}


def made_from(input_files, sources):
  """The record of an output made from input_files with label_sources."""
  return dict(sources, inputs=[_identity(path) for path in input_files])


def _same_files(recorded, now):
  return (isinstance(recorded, list) and now is not None and
          len(recorded) == len(now) and
          all(file_io.same_content(a, b) for a, b in zip(recorded, now)))


def why_not_complete(output_path, record_now):
  """None when output_path exists, complete and made as record_now says;
  otherwise the reason, in words."""
  if not tf.io.gfile.exists(output_path):
    return "missing"
  path = file_io.made_from_path(output_path)
  recorded = file_io.read_json(path)  # None: missing or unreadable
  if recorded is None:
    return f"no record of what it was made from ({path})"
  if recorded.get("output_size") != tf.io.gfile.stat(output_path).length:
    return "its size differs from the one recorded when it was written"
  if not _same_files(recorded.get("inputs"), record_now["inputs"]):
    names = [i.get("name") for i in recorded.get("inputs") or []]
    return f"made from another content of {', '.join(map(str, names))}"
  for flag in ("bert_config_file", "init_checkpoint"):
    if not provenance.same_bytes(recorded.get("teacher", {}).get(flag),
                                 record_now["teacher"][flag]):
      return f"made by another teacher (--{flag})"
  changed = [f"--{key}" for key, value in record_now["settings"].items()
             if recorded.get("settings", {}).get(key) != value]
  if changed:
    return "made with other settings: " + ", ".join(changed)
  return None


def write_made_from(output_path, record):
  """Writes output_path's record (with its size) under its final name only
  when complete."""
  file_io.write_json(file_io.made_from_path(output_path), dict(
      record, output_size=tf.io.gfile.stat(output_path).length))


def remove_output(output_path):
  """Removes an output and its record (a record alone never stays)."""
  for path in (file_io.made_from_path(output_path), output_path):
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
