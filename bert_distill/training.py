"""The training loop shared by distillation (stage V) and fine-tuning.

distill_training.py and classifier.py each write their per-replica step (the
model, its losses, the gradients); this module runs it the same way for
both:
- make_loop: one tf.function that runs up to N steps of the step across the
  strategy's replicas and stops after a step whose loss or gradients'
  global norm is not finite, or on a Ctrl-C or SIGTERM (interrupts.py);
- train: calls it until num_train_steps, checkpointing every
  save_checkpoints_steps, at the end and where a Ctrl-C or SIGTERM stopped
  it (chief only), with a log line
  (loss terms, learning rate, global norm, examples/s, steps/s, time left)
  and TensorBoard summaries after every call;
- resume, save, prepare_output_dir: the checkpoint rules of both, on top of
  checkpoints.py (a truncated or non-finite checkpoint is passed over for an
  older one, nothing non-finite is saved, a failed save is one line).
Defines no flags.
"""

import dataclasses
import math
import os
import time

from absl import logging
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import distribution
from bert_distill import file_io
from bert_distill import interrupts
from bert_distill import progress_log
from bert_distill import summaries


@dataclasses.dataclass
class LoopSettings:
  """What the loop needs from the flags, for every kind of training."""
  num_train_steps: int
  iterations_per_loop: int
  save_checkpoints_steps: int
  keep_checkpoint_max: int
  global_batch_size: int
  output_dir: str
  chief: bool


def saved_variables(model, optimizer, extra_variables=None):
  """{Google name: variable} of what a save writes: the model,
  training-only variables (e.g. distill/...) and the optimizer's slots
  (save_checkpoint adds global_step)."""
  return {**model.variables_by_name(), **(extra_variables or {}),
          **optimizer.slot_variables_by_name()}


def checkpoint_variables(model, optimizer, extra_variables=None):
  """{Google name: variable} of everything a checkpoint holds, to restore
  into: saved_variables plus global_step."""
  return {**model.variables_by_name(), **(extra_variables or {}),
          **optimizer.checkpoint_variables()}


def make_loop(strategy, replica_step, term_names):
  """Returns train_loop(iterator, num_steps) -> (steps_run, terms, stopped).

  Args:
    strategy: the tf.distribute strategy the variables were made under.
    replica_step: features -> ({name: float32 scalar}, global_norm), run on
      every replica; the terms are summed over replicas (each replica divides
      by global totals), the global norm averaged. Its terms must include
      "loss".
    term_names: the names replica_step returns.

  One call runs up to num_steps steps inside a single tf.function and stops
  early after a step whose loss or gradients' global norm is not finite
  (steps_run then counts that step, and its terms are returned instead of
  the means), or after a step during which a Ctrl-C or SIGTERM reached any
  worker (interrupts.py): stopped is then True on every worker, and the
  terms' means cover the steps run. terms holds term_names plus
  "global_norm".
  """
  term_names = tuple(term_names) + ("global_norm",)
  # Set by the signal watcher thread while the graph runs.
  stop_requested = tf.Variable(False, trainable=False, name="stop_requested")
  interrupts.on_request(lambda: stop_requested.assign(True))

  def replica_step_and_vote(features):
    terms, global_norm = replica_step(features)
    values = {**terms, "global_norm": global_norm}
    with tf.control_dependencies(list(values.values())):
      # Read at the step's end: a request during the step stops the loop
      # before the next one.
      values["stop_votes"] = tf.cast(stop_requested.read_value(), tf.float32)
    return values

  @tf.function
  def train_loop(iterator, num_steps):
    terms = {name: tf.constant(0.0) for name in term_names}
    steps_run = tf.constant(0)
    stopped = tf.constant(False)
    for _ in tf.range(num_steps):
      sums = distribution.sum_over_replicas(strategy, replica_step_and_vote,
                                            (next(iterator),))
      step_terms = {name: sums[name] for name in term_names}
      step_terms["global_norm"] /= strategy.num_replicas_in_sync
      steps_run += 1
      # A NaN global norm poisons the weights while the loss of that step
      # may still be finite: either ends the loop.
      if not (tf.math.is_finite(step_terms["loss"]) &
              tf.math.is_finite(step_terms["global_norm"])):
        terms = step_terms
        break
      terms = {name: terms[name] + step_terms[name] for name in terms}
      # Summed over every worker, so that all stop after the same step.
      if sums["stop_votes"] > 0:
        stopped = tf.constant(True)
        break
    if tf.math.is_finite(terms["loss"]) & tf.math.is_finite(
        terms["global_norm"]):
      terms = {name: value / tf.cast(tf.maximum(steps_run, 1), tf.float32)
               for name, value in terms.items()}
    return steps_run, terms, stopped

  return train_loop


def train(train_loop, dataset, start_step, settings, schedule, variables,
          describe_terms):
  """Trains from start_step to settings.num_train_steps; returns the step.

  Args:
    train_loop: as make_loop returns.
    dataset: the distributed training dataset, positioned at start_step.
    start_step: the global step the model is at.
    settings: a LoopSettings.
    schedule: step -> learning rate, for the log and the summaries.
    variables: {Google name: variable} that each checkpoint holds
      (saved_variables); the chief writes them as model.ckpt-<step>.
    describe_terms: terms -> the text of the log line's loss terms.

  Raises:
    KeyboardInterrupt: a Ctrl-C or SIGTERM stopped the loop after a step
      (on this worker or another); the chief saved that step first.
    cli.StageError: the loss or the gradients' global norm became NaN or
      infinite (names the step and the newest finite checkpoint, the last
      good one; nothing is saved then), or a save failed.
  """
  writer = (tf.summary.create_file_writer(settings.output_dir)
            if settings.chief else tf.summary.create_noop_writer())
  iterator = iter(dataset)
  total, every = settings.num_train_steps, settings.save_checkpoints_steps
  step = start_step
  loop_start = time.monotonic()
  while step < total:
    next_save = min((step // every + 1) * every, total)
    num_steps = min(settings.iterations_per_loop, next_save - step)
    started = time.monotonic()
    steps_run, terms, stopped = train_loop(iterator, tf.constant(num_steps))
    steps_run, stopped = int(steps_run), bool(stopped)
    terms = {name: float(value) for name, value in terms.items()}
    step += steps_run
    check_finite(terms, step, settings.output_dir)
    now = time.monotonic()
    examples_per_second = (steps_run * settings.global_batch_size /
                           (now - started))
    learning_rate = float(schedule(step))
    left = (total - step) * (now - loop_start) / (step - start_step)
    logging.info(
        "step %d/%d: %s, lr %.3g, global norm %.3g, %.1f examples/s "
        "(%.2f steps/s), time left %s", step, total, describe_terms(terms),
        learning_rate, terms["global_norm"], examples_per_second,
        steps_run / (now - started), progress_log.format_seconds(left))
    summaries.write_scalars(writer, "train", {
        **terms, "learning_rate": learning_rate,
        "examples_per_second": examples_per_second}, step)
    # A stopped loop ran at least one step past the last save: the rerun
    # resumes from a checkpoint of this very step.
    if settings.chief and (step % every == 0 or step == total or stopped):
      save(variables, step, settings.output_dir,
           settings.keep_checkpoint_max)
    if stopped:
      logging.info("Stopped on request at step %d%s", step,
                   f"; saved model.ckpt-{step}" if settings.chief else "")
      raise KeyboardInterrupt
  return step


def check_finite(terms, step, output_dir):
  """Raises cli.StageError when terms' loss or global norm is not finite."""
  for what, name in (("loss", "loss"),
                     ("gradients' global norm", "global_norm")):
    if not math.isfinite(terms[name]):
      last_good = checkpoints.newest_finite_checkpoint(output_dir)
      raise cli.StageError(
          f"the {what} became {terms[name]} at step {step}; stopped, the "
          f"newest finite checkpoint ({last_good or 'none'}) is the last "
          f"good one; check the input or lower --learning_rate")


def resume(variables, global_step, output_dir):
  """Restores output_dir's newest usable checkpoint into `variables`.

  A checkpoint that cannot be read in full (truncated) or holds NaN or
  infinity is passed over, with a warning, for the next older one.

  Args:
    variables: {Google name: variable}, as checkpoint_variables gives.
    global_step: the optimizer's step variable (among `variables`).
    output_dir: the folder of the checkpoints.

  Returns:
    The step resumed at, or None when output_dir holds no checkpoint.

  Raises:
    cli.StageError: output_dir holds another architecture's, task's or
      run's checkpoint, or none of its checkpoints can be used.
  """
  passed_over = []
  for prefix in checkpoints.complete_checkpoints(output_dir):
    try:
      checkpoints.restore_variables(variables, prefix)
    except checkpoints.CorruptCheckpointError as e:
      logging.warning("Passing over %s; trying an older checkpoint", e)
      passed_over.append(prefix)
      continue
    except ValueError as e:
      raise cli.StageError(
          f"--output_dir {output_dir} holds checkpoint {prefix} of another "
          f"architecture, task or run ({e}); use a new --output_dir"
      ) from None
    nonfinite = checkpoints.nonfinite_names(variables)
    if nonfinite:
      logging.warning("Passing over %s: %d variables hold NaN or infinity "
                      "(%s); trying an older checkpoint", prefix,
                      len(nonfinite), ", ".join(nonfinite[:3]))
      passed_over.append(prefix)
      continue
    step = int(global_step.numpy())
    logging.info("Resuming from %s at step %d", prefix, step)
    return step
  if passed_over:
    raise cli.StageError(
        f"--output_dir {output_dir}: none of its checkpoints can be resumed "
        f"from ({', '.join(passed_over)}: truncated or not finite); move "
        f"them away to start anew")
  return None


def save(variables, step, output_dir, keep):
  """Writes `variables` as output_dir/model.ckpt-<step>, keeping the newest
  `keep` checkpoints.

  Raises:
    cli.StageError: the values are not finite (nothing is written), or the
      checkpoint cannot be written (names the file; nothing partial stays).
  """
  try:
    return checkpoints.save_checkpoint(variables, output_dir, step,
                                       max_to_keep=keep)
  except checkpoints.NonFiniteError as e:
    raise cli.StageError(
        f"{e} at step {step}; stopped, the newest finite checkpoint "
        f"({checkpoints.newest_finite_checkpoint(output_dir) or 'none'}) is "
        f"the last good one; lower --learning_rate") from None
  except checkpoints.CheckpointWriteError as e:
    raise cli.StageError(f"{e}; make room or fix --output_dir, then rerun to "
                         f"resume from the newest checkpoint") from None


def prepare_output_dir(output_dir):
  """Creates output_dir, checks that files can be written there, and removes
  what interrupted saves left (checkpoints.remove_interrupted_saves).

  Raises:
    cli.StageError: output_dir cannot be created or written.
  """
  probe = file_io.temporary_path(os.path.join(output_dir, "write_test"))
  try:
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("")
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise cli.StageError(f"--output_dir {output_dir}: cannot write there "
                         f"({cli.error_line(e)})") from None
  checkpoints.remove_interrupted_saves(output_dir)


def write_eval_results(metrics, step, output_dir):
  """Writes output_dir/eval_results.txt (`key = value`, as Google's) and
  TensorBoard scalars under output_dir/eval (stage V and fine-tuning);
  returns the file's path.

  Raises:
    cli.StageError: the file cannot be written (names it).
  """
  results = {**metrics, "global_step": step}
  path = os.path.join(output_dir, "eval_results.txt")
  try:
    with file_io.atomic_output(path) as tmp_path:
      with tf.io.gfile.GFile(tmp_path, "w") as f:
        for key in sorted(results):
          f.write(f"{key} = {results[key]}\n")
  except (tf.errors.OpError, OSError) as e:
    raise cli.StageError(
        f"{path}: cannot write ({cli.error_line(e)})") from None
  writer = tf.summary.create_file_writer(os.path.join(output_dir, "eval"))
  summaries.write_scalars(writer, "eval", metrics, step)
  logging.info("Wrote %s: %s", path,
               ", ".join(f"{k} = {v:.4f}" for k, v in sorted(metrics.items())))
  return path


def require_a_model(output_dir, init_checkpoint, do_train, actions):
  """Raises cli.StageError when a run that does not train would evaluate or
  predict with random weights: output_dir holds no checkpoint and no
  --init_checkpoint was given, most often a mistyped --output_dir. Called
  before the run writes anything. `actions` names the flags asked for
  ("--do_eval")."""
  if do_train or init_checkpoint or checkpoints.latest_checkpoint(output_dir):
    return
  raise cli.StageError(
      f"{actions} without --do_train: --output_dir {output_dir} holds no "
      f"checkpoint and no --init_checkpoint was given, so the results would "
      f"be those of random weights")


def restore_or_initialize(model, optimizer, output_dir, init_checkpoint,
                          initialize, extra_variables=None):
  """Resumes from output_dir's newest usable checkpoint (resume), else calls
  initialize(init_checkpoint) to load it into the model, else keeps the
  random initial values. Stage V and fine-tuning differ only in
  `initialize` (a layer map; a new classifier head).

  Returns the global step training continues from.

  Raises:
    cli.StageError: as resume, or initialize raised a ValueError (the
      checkpoint is missing, mis-shaped or lacks a layer).
  """
  step = resume(checkpoint_variables(model, optimizer, extra_variables),
                optimizer.global_step, output_dir)
  if step is not None:
    return step
  if init_checkpoint:
    try:
      initialize(init_checkpoint)
    except ValueError as e:
      where = ("" if str(e).startswith(init_checkpoint) else
               f"{init_checkpoint}: ")
      raise cli.StageError(f"--init_checkpoint {where}{e}") from None
    logging.info("Initialised from %s", init_checkpoint)
  else:
    logging.info("No --init_checkpoint and no checkpoint in %s: starting "
                 "from random weights (--seed)", output_dir)
  return 0
