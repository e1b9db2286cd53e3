"""Name-based checkpoints in the TF1 layout Google's tools read and write.

Every save and load goes through a {Google name: variable} mapping (the
model's `variables_by_name()`, plus optimizer slots and `global_step`):
`save_checkpoint` writes `model.ckpt-<step>` with SaveV2 under temporary names
and renames it when complete, keeps the newest few and rewrites the
`checkpoint` state file; `latest_checkpoint` finds the newest complete one
(reading the state file with TensorFlow's own reader); `restore_variables`
resumes training strictly, `load_checkpoint` initialises a model fully or
partially, optionally taking its encoder layers from other layers of the
checkpoint (a layer map).

What a crash or a bad file can do, and what is promised then:
- a save is never seen half-done: data and index files are written under
  temporary names, fsynced, and renamed data first, index last (a prefix is
  complete once its index exists); the state file is replaced the same way.
  `remove_interrupted_saves` removes what a killed or failed save left.
- a save refuses non-finite values (NonFiniteError), so no checkpoint holds
  NaN or infinity.
- a checkpoint whose index or data cannot be read in full (a truncated copy,
  a power cut) raises CorruptCheckpointError before any variable is
  assigned; `complete_checkpoints` lists the older ones to fall back to.
- a failed write (disk full, no permission) raises CheckpointWriteError
  naming the file, and leaves no temporary file behind.

HuggingFace's layout (a folder with config.json and model.safetensors) is
read wherever a checkpoint is: resolve_checkpoint accepts such a folder and
the readers map its names to Google's (huggingface.py), so every stage's
--init_checkpoint / --teacher_checkpoint / --checkpoint takes one.

This module defines no flags.
"""

import os
import re

from absl import logging
from google.protobuf import text_format
import numpy as np
import tensorflow as tf

from bert_distill import cli
from bert_distill import file_io
from bert_distill import huggingface
import modeling


class CorruptCheckpointError(ValueError):
  """A checkpoint's index or data files cannot be read in full."""


class NonFiniteError(ValueError):
  """Values to be saved, or a checkpoint's values to be loaded, hold NaN or
  infinity."""


class CheckpointWriteError(ValueError):
  """A checkpoint or the state file could not be written (disk full, ...)."""


_STATE_FILE = "checkpoint"
_STEP_PREFIX = re.compile(r"^model\.ckpt-(\d+)$")


def _is_complete(prefix):
  return tf.io.gfile.exists(prefix + ".index")


def latest_checkpoint(directory):
  """Returns the newest complete checkpoint prefix in `directory`, or None.

  Uses the `checkpoint` state file when it names a complete checkpoint, else
  the highest `model.ckpt-<step>`, else the newest other `*.index` prefix (a
  downloaded Google release such as `bert_model.ckpt`).
  """
  if not tf.io.gfile.isdir(directory):
    return None
  paths = _read_state_file(directory)
  if paths:
    # TF1's Saver writes absolute paths: after a move, look beside the file.
    for prefix in (paths[-1],
                   os.path.join(directory, os.path.basename(paths[-1]))):
      if _is_complete(prefix):
        return prefix
  prefixes = _complete_prefixes(directory)
  stepped = [p for p in prefixes if _STEP_PREFIX.match(os.path.basename(p))]
  if stepped:
    return max(stepped, key=_step_from_name)
  if prefixes:
    return max(prefixes, key=lambda p: tf.io.gfile.stat(p + ".index").mtime_nsec)
  return None


def _complete_prefixes(directory):
  """Prefixes in `directory` with an index file, ignoring unfinished saves
  (named by file_io.temporary_path)."""
  return [p[:-len(".index")]
          for p in tf.io.gfile.glob(os.path.join(directory, "*.index"))
          if ".tmp-" not in os.path.basename(p)]


def _step_from_name(prefix):
  match = _STEP_PREFIX.match(os.path.basename(prefix))
  return int(match.group(1)) if match else None


def _read_state_file(directory):
  """Returns the checkpoint paths the `checkpoint` state file of `directory`
  names, newest last ([] when there is none or it cannot be parsed).

  The file is read by TensorFlow's own reader (the CheckpointState proto),
  which joins relative paths to the directory.
  """
  try:
    state = tf.train.get_checkpoint_state(directory)
  except ValueError:  # a state file without model_checkpoint_path
    return []
  if state is None:
    return []
  latest = state.model_checkpoint_path
  return [p for p in state.all_model_checkpoint_paths if p != latest] + [latest]


def _write_state_file(directory, prefixes):
  """Writes the `checkpoint` state file atomically; the last prefix is newest.

  Names are written relative to the directory (so it can be moved), as a
  CheckpointState proto in text form, which TF1's Saver and
  tf.train.latest_checkpoint read.
  """
  names = [os.path.basename(p) for p in prefixes]
  # save_dir "." keeps the relative names as they are.
  state = tf.compat.v1.train.generate_checkpoint_state_proto(
      ".", names[-1], all_model_checkpoint_paths=names)
  path = os.path.join(directory, _STATE_FILE)
  with file_io.atomic_output(path) as tmp_path:
    with tf.io.gfile.GFile(tmp_path, "w") as f:
      f.write(text_format.MessageToString(state))
    _fsync(tmp_path)


def resolve_checkpoint(checkpoint):
  """Turns a checkpoint prefix or directory into a complete prefix.

  Raises:
    ValueError: nothing readable at that path (names it).
  """
  if checkpoint.endswith(".index") and tf.io.gfile.exists(checkpoint):
    checkpoint = checkpoint[:-len(".index")]
  if tf.io.gfile.isdir(checkpoint):
    prefix = latest_checkpoint(checkpoint)
    if prefix is None and huggingface.is_checkpoint(checkpoint):
      return checkpoint
    if prefix is None:
      raise ValueError(f"{checkpoint}: directory holds no complete checkpoint "
                       f"(no *.index file, no {huggingface.WEIGHTS_FILE})")
    return prefix
  if huggingface.is_checkpoint(checkpoint):
    return checkpoint
  if not _is_complete(checkpoint):
    raise ValueError(f"{checkpoint}: no checkpoint there (expected "
                     f"{checkpoint}.index and {checkpoint}.data-*)")
  return checkpoint


def _open_reader(prefix):
  """A checkpoint reader whose data files hold every byte the index names.

  Raises:
    CorruptCheckpointError: the index cannot be read or the data files are
      shorter than it says (checked by size, before anything is assigned).
  """
  if huggingface.is_checkpoint(prefix):
    try:
      return huggingface.SafetensorsReader(prefix)
    except ValueError as e:
      raise CorruptCheckpointError(str(e)) from None
  try:
    reader = tf.train.load_checkpoint(prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise CorruptCheckpointError(f"{prefix}: not a readable checkpoint "
                                 f"({str(e).splitlines()[0]})") from None
  _check_data_size(prefix, reader)
  return reader


def checkpoint_shapes(checkpoint):
  """{Google name: shape} of what a checkpoint (either layout) holds.

  Raises:
    ValueError: nothing readable at that path.
  """
  prefix = resolve_checkpoint(checkpoint)
  return {name: list(shape) for name, shape in
          _open_reader(prefix).get_variable_to_shape_map().items()}


def file_beside(checkpoint, kind):
  """The config ("config") or vocabulary ("vocab") file that comes with a
  checkpoint, or None: an HF folder's config.json / vocab.txt, a Google
  checkpoint folder's bert_config.json / vocab.txt."""
  try:
    prefix = resolve_checkpoint(checkpoint)
  except ValueError:
    return None
  if huggingface.is_checkpoint(prefix):
    folder = huggingface.folder_of(prefix)
    name = {"config": huggingface.CONFIG_FILE,
            "vocab": huggingface.VOCAB_FILE}[kind]
  else:
    folder = os.path.dirname(prefix)
    name = {"config": "bert_config.json", "vocab": "vocab.txt"}[kind]
  path = os.path.join(folder, name)
  return path if tf.io.gfile.exists(path) else None


def companion_file(given, checkpoint, kind, flag, checkpoint_flag):
  """The file a flag names, else the one of `kind` ("config", "vocab")
  beside the checkpoint (file_beside), for flags that may be left out when
  the checkpoint's folder has one.

  Raises:
    cli.StageError: neither (names both flags), or the checkpoint itself is
      missing (names the checkpoint flag: the missing file is not the
      config's).
  """
  if given:
    return given
  if checkpoint:
    try:
      resolve_checkpoint(checkpoint)
    except ValueError as e:
      raise cli.StageError(f"{checkpoint_flag}: {e}") from None
  found = file_beside(checkpoint, kind) if checkpoint else None
  if not found:
    what = {"config": "config.json or bert_config.json",
            "vocab": "vocab.txt"}[kind]
    raise cli.StageError(
        f"give {flag}" + (f": {checkpoint_flag} {checkpoint} has no {what} "
                          f"beside it" if checkpoint else ""))
  logging.info("%s: %s (beside %s)", flag, found, checkpoint_flag)
  return found


def _check_data_size(prefix, reader):
  """Raises CorruptCheckpointError when the data files are shorter than the
  tensors the index lists.

  SaveV2 (and TF1's Saver) store numeric tensors back to back, so the data
  files of a complete checkpoint hold at least the sum of their byte sizes;
  a checkpoint with other dtypes (strings) is left to the reads to check.
  """
  dtypes = reader.get_variable_to_dtype_map()
  if not all(dtype.is_numpy_compatible and dtype != tf.string
             for dtype in dtypes.values()):
    return
  shapes = reader.get_variable_to_shape_map()
  needed = sum(int(np.prod(shapes[name], dtype=np.int64)) * dtype.size
               for name, dtype in dtypes.items())
  held = sum(tf.io.gfile.stat(path).length
             for path in tf.io.gfile.glob(prefix + ".data-*"))
  if held < needed:
    raise CorruptCheckpointError(
        f"{prefix}: truncated: its data files hold {held} bytes but its "
        f"index lists {needed} (an interrupted write or copy)")


def _read_tensor(reader, prefix, name):
  """reader.get_tensor(name); a failed read raises CorruptCheckpointError."""
  try:
    return reader.get_tensor(name)
  except (tf.errors.OpError, IndexError, ValueError) as e:
    raise CorruptCheckpointError(
        f"{prefix}: cannot read {name} ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _summarize(items, limit=5):
  """'a, b, c (and 7 more)' for error messages that stay one line."""
  items = list(items)
  text = ", ".join(items[:limit])
  if len(items) > limit:
    text += f" (and {len(items) - limit} more)"
  return text


def restore_variables(variables_by_name, checkpoint):
  """Assigns every variable from the checkpoint entry of the same name.

  Args:
    variables_by_name: {checkpoint name: tf.Variable} (model variables,
      optimizer slots, global_step; tf.distribute variables are fine).
    checkpoint: a checkpoint prefix or a directory (its newest checkpoint).

  Returns:
    The list of names restored.

  Raises:
    ValueError: one line naming the checkpoint and every missing or
      mis-shaped variable; nothing is assigned then.
    CorruptCheckpointError: (a ValueError) the checkpoint cannot be read in
      full; nothing is assigned when its files are short.
  """
  prefix = resolve_checkpoint(checkpoint)
  reader = _open_reader(prefix)
  shapes = reader.get_variable_to_shape_map()
  missing = [n for n in variables_by_name if n not in shapes]
  misshaped = [f"{n} (checkpoint {shapes[n]}, expected {v.shape.as_list()})"
               for n, v in variables_by_name.items()
               if n in shapes and list(shapes[n]) != v.shape.as_list()]
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} variables: {_summarize(missing)}")
  if misshaped:
    problems.append(f"{len(misshaped)} mis-shaped: {_summarize(misshaped)}")
  if problems:
    raise ValueError(f"{prefix}: " + "; ".join(problems))
  for name, variable in variables_by_name.items():
    variable.assign(tf.cast(_read_tensor(reader, prefix, name),
                            variable.dtype))
  logging.info("Restored %d variables from %s", len(variables_by_name), prefix)
  return list(variables_by_name)


# An encoder layer's variable: its layer number and the name within the layer.
_LAYER_VARIABLE = re.compile(r"^bert/encoder/layer_(\d+)/(.*)$")


def _layer_numbers(names):
  """The encoder layer numbers that occur in `names`, as a set of ints."""
  return {int(m.group(1)) for m in map(_LAYER_VARIABLE.match, names) if m}


def _source_name(name, layer_map):
  """The checkpoint name a model variable is loaded from, given a layer map."""
  match = _LAYER_VARIABLE.match(name)
  if layer_map is None or not match:
    return name
  return f"bert/encoder/layer_{layer_map[int(match.group(1))]}/{match.group(2)}"


def load_checkpoint(model, checkpoint, layer_map=None, allow_partial=False,
                    optional=(), whole_encoder=False):
  """Loads a model from a Google-named checkpoint, fully or partially.

  Args:
    model: a BertPretrainingModel (or a {name: variable} dict).
    checkpoint: a checkpoint prefix or a directory.
    layer_map: optional list of ints; model layer j takes checkpoint layer
      layer_map[j] (e.g. [0, 2, 4, 7, 9, 11] for a 6-layer student).
    allow_partial: when True, variables the checkpoint lacks or holds in
      another shape keep their initial values; when False they are an error.
    optional: name prefixes (e.g. ("cls/", "bert/pooler/")) of variables the
      checkpoint may lack even without allow_partial: heads no loss of the
      caller needs. They keep their initial values (logged).
    whole_encoder: when True (a teacher, an export), a checkpoint with more
      encoder layers than the model is an error: loading its first layers
      alone would compute another function under the checkpoint's name.
      Otherwise (a student's initial values) it is a warning that names
      the layers left out and the layer map that would choose them.

  Returns:
    {"loaded": [...], "initialized": [...], "unused": [...]}: model names
    loaded / left initialized, and checkpoint names not used (optimizer
    slots, global_step, layers not mapped, ...).

  Raises:
    ValueError: one line: the path is not a checkpoint, a layer of the map is
      not in it, or (without allow_partial) variables are missing/mis-shaped
      (MissingHeadError when they are a head of an encoder-only checkpoint);
      CorruptCheckpointError (a ValueError) when it cannot be read in full;
      NonFiniteError (a ValueError) when a tensor it would load holds NaN or
      infinity (nothing is assigned then).
  """
  variables = (model if isinstance(model, dict) else model.variables_by_name())
  prefix = resolve_checkpoint(checkpoint)
  reader = _open_reader(prefix)
  shapes = reader.get_variable_to_shape_map()
  if layer_map is not None:
    _check_layer_map(layer_map, variables, shapes, prefix)
  else:
    _check_layer_count(variables, shapes, prefix, whole_encoder)

  # Every variable is checked before any is assigned: an error leaves the
  # model as it was.
  sources, initialized, problems = {}, [], []
  for name, variable in variables.items():
    source = _source_name(name, layer_map)
    expected = variable.shape.as_list()
    if source not in shapes:
      reason = "not in checkpoint"
    elif list(shapes[source]) != expected:
      reason = f"checkpoint shape {shapes[source]}"
    else:
      sources[name] = source
      continue
    if not allow_partial and not (source not in shapes and
                                  name.startswith(tuple(optional))):
      problems.append((source, f"{source} ({reason}, expected {expected})"))
      continue
    initialized.append(name)
    logging.info("%-60s %-14s initialized (%s: %s)", name, expected, source,
                 reason)
  if problems:
    _raise_missing_head(prefix, [source for source, _ in problems], shapes)
    raise ValueError(f"{prefix}: {len(problems)} variables missing or "
                     f"mis-shaped: {_summarize(text for _, text in problems)}")
  if initialized and not allow_partial:
    logging.warning("%s has no %s: left at initial values (not needed)",
                    prefix, _summarize(initialized, limit=8))
  values = {name: _read_tensor(reader, prefix, source)
            for name, source in sources.items()}
  check_finite_values(prefix, {sources[n]: v for n, v in values.items()})
  for name, source in sources.items():
    variable = variables[name]
    variable.assign(tf.cast(values[name], variable.dtype))
    origin = source if source == name else f"{source} (layer map)"
    logging.info("%-60s %-14s loaded from %s", name, variable.shape.as_list(),
                 origin)
  loaded = list(sources)
  used = set(sources.values())
  unused = sorted(n for n in shapes if n not in used)
  logging.info("%s: %d variables loaded, %d initialized, %d checkpoint "
               "entries unused: %s", prefix, len(loaded), len(initialized),
               len(unused), _summarize(unused, limit=8))
  return {"loaded": loaded, "initialized": initialized, "unused": unused}


class MissingHeadError(ValueError):
  """A checkpoint lacks a pretraining head the caller needs (an
  encoder-only checkpoint, such as a sentence-transformers model)."""


_HEADS = {"cls/predictions/": "masked-LM head (cls/predictions/*)",
          "cls/seq_relationship/": "next-sentence head (cls/seq_relationship/*)"}


def _raise_missing_head(prefix, problems, shapes):
  """Raises MissingHeadError when the names of `problems` are all absent
  head variables (one line: the head and the remedy)."""
  missing = [n for n in problems if n not in shapes]
  if len(missing) < len(problems) or not all(n.startswith("cls/")
                                             for n in missing):
    return
  heads = [text for head, text in _HEADS.items()
           if any(n.startswith(head) for n in missing)]
  raise MissingHeadError(
      f"{prefix}: has no {' and no '.join(heads)}: an encoder-only "
      f"checkpoint; fit a masked-LM head onto it with stage T "
      f"(docs/stages.md), or use losses that need no head (hidden, "
      f"attention, value relations: docs/online_distillation.md)")


def _check_layer_map(layer_map, variables, shapes, prefix):
  """Raises ValueError unless layer_map names one checkpoint layer per model
  layer and every one of them exists in the checkpoint."""
  model_layers = _layer_numbers(variables)
  if len(layer_map) != len(model_layers):
    raise ValueError(f"layer map {list(layer_map)} has {len(layer_map)} "
                     f"entries but the model has {len(model_layers)} layers")
  ckpt_layers = _layer_numbers(shapes)
  absent = [str(l) for l in layer_map if l not in ckpt_layers]
  if absent:
    raise ValueError(f"{prefix}: layer map names layer(s) {', '.join(absent)} "
                     f"but the checkpoint has layers 0..{max(ckpt_layers, default=-1)}")


def save_checkpoint(variables_by_name, directory, step, max_to_keep=5):
  """Writes `directory/model.ckpt-<step>` in Google's name-based layout.

  The checkpoint holds exactly the given names plus `global_step` (int64),
  written under temporary names and renamed when complete; then the
  `checkpoint` state file is replaced atomically and checkpoints older than
  the newest `max_to_keep` are removed.

  Args:
    variables_by_name: {name: tf.Variable or tensor}; tf.distribute
      variables are read from their primary copy.
    directory: created if missing.
    step: the global step, also stored as `global_step`.
    max_to_keep: how many `model.ckpt-<step>` to keep (None or 0 keeps all).

  Returns:
    The prefix written.

  Raises:
    NonFiniteError: a value holds NaN or infinity (names them); nothing is
      written then.
    CheckpointWriteError: a file could not be written (names it and why);
      the temporary files are removed and the older checkpoints stay.
  """
  step = int(step)
  prefix = os.path.join(directory, f"model.ckpt-{step}")
  tensors = {name: tf.convert_to_tensor(value)
             for name, value in variables_by_name.items()}
  bad = nonfinite_names(tensors)
  if bad:
    raise NonFiniteError(f"not saving {prefix}: {len(bad)} variables hold "
                         f"NaN or infinity: {_summarize(bad)}")
  tensors["global_step"] = tf.constant(step, tf.int64)
  try:
    _write_files(tensors, prefix)
  except (tf.errors.OpError, OSError) as e:
    raise CheckpointWriteError(f"cannot write {prefix}: "
                               f"{cli.error_line(e)}") from None

  kept = sorted((p for p in _complete_prefixes(directory)
                 if _step_from_name(p) is not None and p != prefix),
                key=_step_from_name)
  kept.append(prefix)
  if max_to_keep:
    for old in kept[:-max_to_keep]:
      _remove_checkpoint(old)
    kept = kept[-max_to_keep:]
  try:
    _write_state_file(directory, kept)
  except (tf.errors.OpError, OSError) as e:
    raise CheckpointWriteError(
        f"cannot write {os.path.join(directory, _STATE_FILE)}: "
        f"{cli.error_line(e)}") from None
  logging.info("Saved %s (%d variables)", prefix, len(tensors))
  return prefix


def _write_files(tensors, prefix):
  """SaveV2 under a temporary prefix, fsync, then rename into `prefix`.

  On any failure the temporary files are removed (SaveV2's own
  `*.tempstate*` files among them) and the error is raised again.
  """
  directory = os.path.dirname(prefix)
  tf.io.gfile.makedirs(directory)
  tmp_prefix = file_io.temporary_path(prefix)
  names = sorted(tensors)
  try:
    with tf.device("/cpu:0"):
      tf.raw_ops.SaveV2(prefix=tmp_prefix, tensor_names=names,
                        shape_and_slices=[""] * len(names),
                        tensors=[tensors[n] for n in names])
    data_files = tf.io.gfile.glob(tmp_prefix + ".data-*")
    for path in data_files + [tmp_prefix + ".index"]:
      _fsync(path)
  except BaseException:
    for path in tf.io.gfile.glob(tmp_prefix + "*"):
      try:
        tf.io.gfile.remove(path)
      except tf.errors.NotFoundError:  # SaveV2 removed it itself
        pass
    raise
  # Data first, index last: a prefix counts as complete once its index exists.
  for tmp_path in data_files:
    tf.io.gfile.rename(tmp_path, prefix + tmp_path[len(tmp_prefix):],
                       overwrite=True)
  tf.io.gfile.rename(tmp_prefix + ".index", prefix + ".index", overwrite=True)
  _fsync(directory)


def _fsync(path):
  """Flushes a local file (or directory: its entries) to the disk, so a power
  cut after a rename cannot leave a short file under the final name. Other
  file systems (gs://...) make a closed object durable themselves."""
  if "://" in path:
    return
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def nonfinite_names(values_by_name):
  """Sorted names of the floating-point values holding NaN or infinity.

  values_by_name: {name: tf.Variable or tensor} (one reduction each, on the
  values' own devices).
  """
  return sorted(
      name for name, value in values_by_name.items()
      if value.dtype.is_floating and
      not bool(tf.reduce_all(tf.math.is_finite(value))))


def check_finite_values(prefix, arrays_by_name):
  """Raises NonFiniteError naming prefix and a few of the checkpoint's
  floating-point tensors (NumPy arrays) that hold NaN or infinity: a model
  loaded from them computes garbage (NaN labels, all-zero draws) silently."""
  bad = sorted(name for name, value in arrays_by_name.items()
               if np.issubdtype(np.asarray(value).dtype, np.floating) and
               not np.isfinite(value).all())
  if bad:
    raise NonFiniteError(f"{prefix}: {len(bad)} variables hold NaN or "
                         f"infinity: {_summarize(bad, limit=3)}")


def remove_interrupted_saves(directory):
  """Removes what interrupted saves left in `directory`; returns the paths.

  That is the temporary files of a killed or failed save
  (`model.ckpt-<step>.tmp-<pid>*`, SaveV2's `*.tempstate*` among them, and
  `checkpoint.tmp-<pid>`) and data files of `model.ckpt-<step>` without an
  index (a save killed between its data and index renames, or a removal
  killed after the index). Call it only where no other process saves into
  `directory`.
  """
  if not tf.io.gfile.isdir(directory):
    return []
  stale = file_io.remove_stale_temporaries(
      os.path.join(directory, "model.ckpt-*"))
  stale += file_io.remove_stale_temporaries(
      os.path.join(directory, _STATE_FILE))
  for path in tf.io.gfile.glob(os.path.join(directory, "model.ckpt-*.data-*")):
    prefix = path[:path.rindex(".data-")]
    if ".tmp-" not in path and _step_from_name(prefix) is not None and (
        not _is_complete(prefix)):
      logging.warning("Removing %s, left by an interrupted save", path)
      tf.io.gfile.remove(path)
      stale.append(path)
  return stale


def complete_checkpoints(directory):
  """The complete `model.ckpt-<step>` prefixes in `directory`, newest first:
  latest_checkpoint's choice, then the others by step. Resuming falls back
  along this list when a checkpoint cannot be read."""
  latest = latest_checkpoint(directory)
  stepped = sorted((p for p in _complete_prefixes(directory)
                    if _step_from_name(p) is not None and p != latest),
                   key=_step_from_name, reverse=True)
  return ([latest] if latest else []) + stepped


def newest_finite_checkpoint(directory):
  """The first of complete_checkpoints(directory) that reads in full and
  holds only finite values, or None. Reads every tensor of the ones it
  rejects: for error messages, not for the training loop."""
  for prefix in complete_checkpoints(directory):
    try:
      reader = _open_reader(prefix)
      if all(np.all(np.isfinite(_read_tensor(reader, prefix, name)))
             for name, dtype in reader.get_variable_to_dtype_map().items()
             if dtype.is_floating):
        return prefix
    except CorruptCheckpointError:
      continue
  return None


def _remove_checkpoint(prefix):
  """Removes a checkpoint: its index first, so it is never seen half-gone."""
  tf.io.gfile.remove(prefix + ".index")
  for path in tf.io.gfile.glob(prefix + ".data-*"):
    tf.io.gfile.remove(path)


def checkpoint_step(prefix):
  """The `global_step` stored in a checkpoint, else the step in its name,
  else None."""
  prefix = resolve_checkpoint(prefix)
  reader = _open_reader(prefix)
  if reader.has_tensor("global_step"):
    return int(reader.get_tensor("global_step"))
  return _step_from_name(prefix)


def _check_layer_count(variables, shapes, prefix, whole_encoder):
  """Raises ValueError (whole_encoder) or warns when the checkpoint has
  encoder layers the model has not (loaded without a layer map)."""
  model_layers = _layer_numbers(variables)
  checkpoint_layers = _layer_numbers(shapes)
  left_out = sorted(checkpoint_layers - model_layers)
  if not left_out:
    return
  text = (f"{prefix}: the checkpoint has {len(checkpoint_layers)} "
          f"encoder layers, the config {len(model_layers)}: layers "
          f"{_summarize(map(str, left_out), limit=8)} would be left out")
  if whole_encoder:
    raise ValueError(f"{text}; give the checkpoint's own config")
  logging.warning("%s (the model takes layers 0..%d; a layer map chooses "
                  "others)", text, len(model_layers) - 1)


def load_teacher(strategy, config, checkpoint, precision="float32",
                 optional=("bert/pooler/", "cls/seq_relationship/"),
                 mlm_head=True):
  """A frozen teacher of `config` under the strategy's scope, loaded from
  `checkpoint` (stages IV and V's teacher): a BertPretrainingModel, or with
  mlm_head False the encoder alone (modeling.BertModel, for losses that need
  no masked-LM head). The variables under `optional` may be missing: no
  label uses the pooler or the next-sentence head; the masked-LM head is
  required when built.

  Raises:
    ValueError: the checkpoint is missing, or lacks or mis-shapes variables
      of the config (named); MissingHeadError when it has no masked-LM head
      (names the remedy); NonFiniteError when a tensor holds NaN or infinity.
  """
  model_class = (modeling.BertPretrainingModel if mlm_head
                 else modeling.BertModel)
  with strategy.scope():
    # Zeros, not random values: the strict load below sets every variable.
    teacher = model_class(
        config, compute_dtype=modeling.COMPUTE_DTYPES[precision],
        name="teacher", seed=0, trainable=False, initialize=False)
  load_checkpoint(teacher, checkpoint, optional=optional, whole_encoder=True)
  return teacher
