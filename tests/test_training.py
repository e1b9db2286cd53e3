"""training.py: the loop stage V and fine-tuning share, on a toy step whose
losses are the dataset's values (so every mean and stop is known by hand)."""

import math

from absl import logging as absl_logging
import numpy as np
import pytest
import tensorflow as tf

from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import interrupts
from bert_distill import training


def toy_loop(losses, norms=None, stop_during=None):
  """(train_loop, iterator, steps_taken) over one step per value: the step's
  loss is the value, "twice" twice it, its global norm `norms` (default
  |value|); steps_taken counts the steps that ran. With stop_during=N, step
  N requests a stop as a Ctrl-C does (interrupts.on_request's callbacks)."""
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    steps_taken = tf.Variable(0)
  norms = np.abs(losses) if norms is None else norms
  dataset = tf.data.Dataset.from_tensor_slices(
      (np.float32(losses), np.float32(norms)))
  callbacks = []

  def request_stop(step):
    if step == stop_during:
      for callback in callbacks:
        callback()
    return np.float32(0.0)

  def replica_step(features):
    loss, norm = features
    step = steps_taken.assign_add(1)
    if stop_during is not None:
      # Before the step's loss is known, as a request during a step is.
      loss += tf.ensure_shape(
          tf.py_function(request_stop, [step], tf.float32), [])
    return {"loss": loss, "twice": 2.0 * loss}, norm

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(interrupts, "_callbacks", callbacks)
    loop = training.make_loop(strategy, replica_step, ["loss", "twice"])
  return loop, iter(strategy.experimental_distribute_dataset(dataset)), \
      steps_taken


def test_loop_returns_the_means_of_the_steps_it_ran():
  loop, iterator, steps_taken = toy_loop([1.0, 2.0, 3.0, 4.0, 5.0])
  steps_run, terms, _ = loop(iterator, tf.constant(3))
  assert int(steps_run) == 3 and int(steps_taken) == 3
  assert {k: float(v) for k, v in terms.items()} == {
      "loss": 2.0, "twice": 4.0, "global_norm": 2.0}
  steps_run, terms, _ = loop(iterator, tf.constant(2))  # the same trace goes on
  assert int(steps_run) == 2 and float(terms["loss"]) == 4.5


def test_loop_stops_after_the_step_during_which_a_stop_was_requested():
  loop, iterator, steps_taken = toy_loop([1.0, 2.0, 3.0, 4.0, 5.0],
                                         stop_during=2)
  steps_run, terms, stopped = loop(iterator, tf.constant(5))
  assert int(steps_run) == 2 and int(steps_taken) == 2 and bool(stopped)
  assert float(terms["loss"]) == 1.5 and float(terms["global_norm"]) == 1.5


@pytest.mark.parametrize("losses, norms", [
    ([1.0, float("nan"), 3.0], None),                   # a NaN loss
    ([1.0, 2.0, 3.0], [1.0, float("inf"), 1.0])])       # a finite loss, inf norm
def test_loop_stops_after_the_first_non_finite_step(losses, norms):
  loop, iterator, steps_taken = toy_loop(losses, norms)
  steps_run, terms, _ = loop(iterator, tf.constant(3))
  assert int(steps_run) == 2 and int(steps_taken) == 2
  # That step's own terms, not a mean.
  assert not (math.isfinite(terms["loss"]) and
              math.isfinite(terms["global_norm"]))
  if norms:
    assert float(terms["loss"]) == 2.0


def settings(tmp_path, **overrides):
  values = dict(num_train_steps=10, iterations_per_loop=3,
                save_checkpoints_steps=4, keep_checkpoint_max=0,  # keep all
                global_batch_size=8, output_dir=str(tmp_path), chief=True)
  values.update(overrides)
  return training.LoopSettings(**values)


def saved(output_dir):
  """{step: the saved steps_taken} of output_dir's checkpoints."""
  return {checkpoints.checkpoint_step(str(path)[:-len(".index")]):
          int(tf.train.load_checkpoint(str(path)[:-len(".index")]).get_tensor(
              "steps_taken"))
          for path in output_dir.glob("model.ckpt-*.index")}


def test_train_saves_every_n_steps_and_at_the_end(tmp_path, caplog):
  absl_logging.set_verbosity(absl_logging.INFO)
  loop, iterator, steps_taken = toy_loop(np.arange(1.0, 11.0))
  step = training.train(loop, iterator, 0, settings(tmp_path), lambda s: 0.1,
                        {"steps_taken": steps_taken},
                        lambda terms: f"loss {terms['loss']:.2f}")
  assert step == 10 and int(steps_taken) == 10
  # Calls of 3, 1, 3, 1, 2 steps: never past a checkpoint step, and each
  # checkpoint holds the values of its step.
  assert saved(tmp_path) == {4: 4, 8: 8, 10: 10}
  log = caplog.text
  assert "step 4/10: loss 4.00" in log and "step 10/10: loss 9.50" in log
  assert "examples/s" in log and "steps/s" in log and "time left" in log
  assert list(tmp_path.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("iterations_per_loop", [1, 3])
def test_a_stop_request_saves_its_step_and_raises(tmp_path, caplog,
                                                  iterations_per_loop):
  """Step 5 is not a checkpoint step, nor (with 3 steps a call) the last of
  a call: it is saved all the same, and train ends there."""
  absl_logging.set_verbosity(absl_logging.INFO)
  loop, iterator, steps_taken = toy_loop(np.arange(1.0, 11.0), stop_during=5)
  with pytest.raises(KeyboardInterrupt):
    training.train(loop, iterator, 0,
                   settings(tmp_path, iterations_per_loop=iterations_per_loop),
                   lambda s: 0.1, {"steps_taken": steps_taken},
                   lambda terms: "")
  assert int(steps_taken) == 5
  assert saved(tmp_path) == {4: 4, 5: 5}
  assert "Stopped on request at step 5; saved model.ckpt-5" in caplog.text


def test_train_resumed_mid_way_runs_only_the_rest(tmp_path):
  loop, iterator, steps_taken = toy_loop(np.arange(1.0, 11.0))
  step = training.train(loop, iterator, 6, settings(tmp_path), lambda s: 0.1,
                        {"steps_taken": steps_taken}, lambda terms: "")
  assert step == 10 and int(steps_taken) == 4
  assert saved(tmp_path) == {8: 2, 10: 4}


def test_a_non_finite_loss_stops_training_without_saving(tmp_path):
  losses = np.arange(1.0, 11.0)
  losses[5] = np.nan  # step 6
  loop, iterator, steps_taken = toy_loop(losses)
  with pytest.raises(cli.StageError) as error:
    training.train(loop, iterator, 0, settings(tmp_path), lambda s: 0.1,
                   {"steps_taken": steps_taken}, lambda terms: "")
  newest = tmp_path / "model.ckpt-4"
  assert str(error.value).startswith(
      f"the loss became nan at step 6; stopped, the newest finite checkpoint "
      f"({newest}) is the last good one")
  assert saved(tmp_path) == {4: 4}  # none after the NaN
