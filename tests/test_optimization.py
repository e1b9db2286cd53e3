"""optimization.py: the schedule, Adam steps against a NumPy re-derivation of
Google's AdamWeightDecayOptimizer, slot names and checkpoints, and the same
result with 2 replicas (MirroredStrategy, MultiWorkerMirroredStrategy) as
with 1 on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from bert_distill import checkpoints
import modeling
import optimization


def adam(learning_rate, num_train_steps, num_warmup_steps, variables_by_name):
  """AdamWeightDecay on BERT's schedule, built for the variables."""
  return optimization.AdamWeightDecay(optimization.LinearWarmupLinearDecay(
      learning_rate, num_train_steps, num_warmup_steps)).build(
          variables_by_name)


def test_schedule_warms_up_then_decays_linearly_to_zero():
  schedule = optimization.LinearWarmupLinearDecay(1.0, num_train_steps=10,
                                                  num_warmup_steps=4)
  # warmup: step/4; after: 1 - step/10; past the end: 0.
  expected = {0: 0.0, 1: 0.25, 3: 0.75, 4: 0.6, 9: 0.1, 10: 0.0, 15: 0.0}
  for step, lr in expected.items():
    assert float(schedule(tf.constant(step, tf.int64))) == pytest.approx(lr)
  no_warmup = optimization.LinearWarmupLinearDecay(2.0, 8, 0)
  assert float(no_warmup(0)) == pytest.approx(2.0)
  assert float(no_warmup(6)) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="num_warmup_steps"):
    optimization.LinearWarmupLinearDecay(1.0, 10, 11)


VARIABLE_SHAPES = {
    "bert/encoder/layer_0/attention/output/LayerNorm/gamma": (3,),
    "bert/pooler/dense/bias": (3,),
    "bert/pooler/dense/kernel": (3, 2),
    "cls/seq_relationship/output_weights": (2, 3),
}


def gradient_steps(seed=0):
  """Gradients for 4 steps: a big one (clipped), small ones, one None."""
  rng = np.random.default_rng(seed)
  steps = []
  for scale in (3.0, 0.05, 0.2, 1.0):
    steps.append({n: (scale * rng.standard_normal(s)).astype(np.float32)
                  for n, s in VARIABLE_SHAPES.items()})
  steps[2]["bert/pooler/dense/bias"] = None
  return steps


def numpy_adam_weight_decay(params, steps, lr_at, weight_decay=0.01,
                            beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                            clip_norm=1.0):
  """Google's AdamWeightDecayOptimizer + clip_by_global_norm, in float64,
  with the betas as the float32 values the optimizer holds: TensorFlow's
  fused Adam kernel forms 1 - beta in float32, so 1 - beta_2 is
  1 - float32(0.999) = 0.00099998713, where Google's code multiplies by
  0.001 (a 1.3e-5 relative difference in the second moment's step)."""
  beta_1, beta_2 = float(np.float32(beta_1)), float(np.float32(beta_2))
  params = {n: p.astype(np.float64) for n, p in params.items()}
  m = {n: np.zeros_like(p) for n, p in params.items()}
  v = {n: np.zeros_like(p) for n, p in params.items()}
  norms = []
  for step, grads in enumerate(steps):
    grads = {n: g.astype(np.float64) for n, g in grads.items() if g is not None}
    norm = np.sqrt(sum((g**2).sum() for g in grads.values()))
    norms.append(norm)
    scale = clip_norm / max(norm, clip_norm)
    lr = lr_at(step)
    for name, g in grads.items():
      g = g * scale
      m[name] = beta_1 * m[name] + (1 - beta_1) * g
      v[name] = beta_2 * v[name] + (1 - beta_2) * g * g
      update = m[name] / (np.sqrt(v[name]) + epsilon)
      if "LayerNorm" not in name and "bias" not in name:
        update += weight_decay * params[name]
      params[name] = params[name] - lr * update
  return params, m, v, norms


@pytest.mark.parametrize("in_tf_function", [False, True])
def test_steps_match_a_numpy_rederivation(in_tf_function):
  rng = np.random.default_rng(1)
  init = {n: rng.standard_normal(s).astype(np.float32)
          for n, s in VARIABLE_SHAPES.items()}
  variables = {n: tf.Variable(p) for n, p in init.items()}
  optimizer = adam(0.1, 5, 2, variables)
  apply = optimizer.apply_gradients
  if in_tf_function:
    apply = tf.function(apply)
  steps = gradient_steps()
  norms = []
  for grads in steps:
    if in_tf_function:  # a fixed structure per trace: None grads as zeros
      grads = {n: g for n, g in grads.items() if g is not None}
    norms.append(float(apply(grads)))

  def lr_at(step):  # 0.1 * step / 2 in warmup, then 0.1 * (1 - step / 5)
    return 0.1 * step / 2 if step < 2 else 0.1 * (1 - step / 5)
  if in_tf_function:
    steps = [{n: g for n, g in s.items() if g is not None} for s in steps]
  want, m, v, want_norms = numpy_adam_weight_decay(init, steps, lr_at)
  assert norms[0] > 1.0 and norms[1] < 1.0  # both clipping branches ran
  np.testing.assert_allclose(norms, want_norms, rtol=1e-5)
  slots = optimizer.slot_variables_by_name()
  for name, variable in variables.items():
    np.testing.assert_allclose(variable.numpy(), want[name], rtol=1e-5,
                               atol=1e-6, err_msg=name)
    np.testing.assert_allclose(slots[name + "/adam_m"].numpy(), m[name],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(slots[name + "/adam_v"].numpy(), v[name],
                               rtol=1e-5, atol=1e-9)
  assert int(optimizer.global_step.numpy()) == 4
  assert float(optimizer.learning_rate(optimizer.global_step)) == pytest.approx(0.02)


def test_slots_use_googles_names_and_survive_a_checkpoint(tmp_path):
  variables = {n: tf.Variable(np.ones(s, np.float32))
               for n, s in VARIABLE_SHAPES.items()}
  optimizer = adam(0.1, 10, 0, variables)
  steps = gradient_steps()
  optimizer.apply_gradients(steps[0])
  state = dict(variables, **optimizer.checkpoint_variables())
  assert set(optimizer.checkpoint_variables()) == {"global_step"} | {
      f"{n}/{s}" for n in VARIABLE_SHAPES for s in ("adam_m", "adam_v")}
  prefix = checkpoints.save_checkpoint(state, str(tmp_path), step=1)
  reader = tf.train.load_checkpoint(prefix)
  assert reader.has_tensor("bert/pooler/dense/kernel/adam_v")

  # Resuming from the checkpoint gives what continuing would have given.
  optimizer.apply_gradients(steps[1])
  continued = {n: v.numpy() for n, v in variables.items()}
  fresh_vars = {n: tf.Variable(np.zeros(s, np.float32))
                for n, s in VARIABLE_SHAPES.items()}
  fresh = adam(0.1, 10, 0, fresh_vars)
  checkpoints.restore_variables(dict(fresh_vars, **fresh.checkpoint_variables()),
                                prefix)
  assert int(fresh.global_step.numpy()) == 1
  fresh.apply_gradients(steps[1])
  for name in VARIABLE_SHAPES:
    np.testing.assert_array_equal(fresh_vars[name].numpy(), continued[name])


@pytest.mark.parametrize("in_tf_function", [False, True])
def test_skipped_update_keeps_variables_and_slots_and_counts_the_step(
    in_tf_function):
  variables = {n: tf.Variable(np.ones(s, np.float32))
               for n, s in VARIABLE_SHAPES.items()}
  optimizer = adam(0.1, 10, 0, variables)
  apply = optimizer.apply_gradients
  if in_tf_function:
    apply = tf.function(apply)
  steps = gradient_steps()
  apply(steps[0], skip_update=tf.constant(False))
  before = {n: v.numpy() for n, v in optimizer.checkpoint_variables().items()}
  before.update({n: v.numpy() for n, v in variables.items()})
  # An overflowed float16 step: inf/NaN gradients must not reach any value.
  overflow = {n: np.full(s, np.inf, np.float32)
              for n, s in VARIABLE_SHAPES.items()}
  apply(overflow, skip_update=tf.constant(True))
  after = dict(optimizer.checkpoint_variables(), **variables)
  for name, value in before.items():
    if name == "global_step":
      assert int(after[name].numpy()) == int(value) + 1
    else:
      np.testing.assert_array_equal(after[name].numpy(), value, err_msg=name)


def test_unknown_gradient_names_and_unbuilt_use_are_errors():
  optimizer = optimization.AdamWeightDecay(0.1)
  with pytest.raises(ValueError, match="build"):
    optimizer.apply_gradients({})
  optimizer.build({"a/kernel": tf.Variable([1.0])})
  with pytest.raises(ValueError, match="b/kernel"):
    optimizer.apply_gradients({"b/kernel": tf.constant([1.0])})


# ----- 2 replicas == 1 replica ------------------------------------------------

# Trains a tiny BERT for 2 steps on fixed global batches of 4 and writes the
# final weights, slots, step and gradient norms to an .npz file. Mode "local":
# with no strategy, with MirroredStrategy over 2 logical CPUs, and with
# MultiWorkerMirroredStrategy's collective all-reduce over the same 2 local
# devices (the code path of multi-worker training, in one process); every
# copy of a variable must agree. Mode "worker": one of two real
# MultiWorkerMirroredStrategy workers (TF_CONFIG set by the test).
TRAIN_SCRIPT = r"""
import os, sys
import numpy as np
import tensorflow as tf
mode, out_path, root = sys.argv[1:4]
sys.path.insert(0, root)
if mode == "local":
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  devices = ["/cpu:0", "/cpu:1"]
  strategies = {
      "single": tf.distribute.get_strategy(),
      "mirrored": tf.distribute.MirroredStrategy(devices),
      "collective":
          tf.distribute.MultiWorkerMirroredStrategy._from_local_devices(devices)}
else:
  strategies = {"worker": tf.distribute.MultiWorkerMirroredStrategy()}
import modeling, optimization

CONFIG = modeling.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=24,
                             max_position_embeddings=16, type_vocab_size=2)
BATCH, SEQ, P = 4, 8, 3

def global_batch(step):
  rng = np.random.default_rng(step)
  return {"ids": rng.integers(0, 50, (BATCH, SEQ)),
          "mask": (np.arange(SEQ)[None] < rng.integers(4, SEQ + 1, (BATCH, 1))
                   ).astype(np.int64),
          "seg": np.zeros((BATCH, SEQ), np.int64),
          "pos": rng.integers(0, 4, (BATCH, P)),
          "labels": rng.integers(0, 50, (BATCH, P)),
          "nsp": rng.integers(0, 2, (BATCH,))}

def train(strategy):
  with strategy.scope():
    model = modeling.BertPretrainingModel(CONFIG, seed=0)
    # Written out: this function's source also runs in a subprocess.
    optimizer = optimization.AdamWeightDecay(
        optimization.LinearWarmupLinearDecay(0.01, 10, 1)).build(
            model.variables_by_name())
  names = sorted(model.variables_by_name())
  variables = [model.variables_by_name()[n] for n in names]

  def step(f):
    with tf.GradientTape() as tape:
      out = model(f["ids"], f["mask"], f["seg"], f["pos"])
      mlm = tf.nn.sparse_softmax_cross_entropy_with_logits(
          f["labels"], out["masked_lm_logits"])
      nsp = tf.nn.sparse_softmax_cross_entropy_with_logits(
          f["nsp"], out["next_sentence_logits"])
      loss = (tf.reduce_sum(mlm) / P + tf.reduce_sum(nsp)) / BATCH
    grads = tape.gradient(loss, variables)
    return optimizer.apply_gradients(dict(zip(names, grads)))

  @tf.function
  def distributed_step(features):
    return strategy.run(step, args=(features,))

  norms = []
  for s in range(2):
    batch = global_batch(s)
    def shard(ctx, batch=batch):
      n, i = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
      return {k: v[i * BATCH // n:(i + 1) * BATCH // n] for k, v in batch.items()}
    features = strategy.experimental_distribute_values_from_function(shard)
    norms.append(strategy.experimental_local_results(
        distributed_step(features))[0].numpy())
  state = dict(model.variables_by_name(), **optimizer.checkpoint_variables())
  for name, var in state.items():
    copies = [c.numpy() for c in getattr(var, "values", [var])]
    assert all(np.array_equal(c, copies[0]) for c in copies), name
  return {n: v.numpy() for n, v in state.items()}, np.array(norms)

results = {}
for label, strategy in strategies.items():
  state, norms = train(strategy)
  results.update({f"{label}:{n}": v for n, v in state.items()})
  results[f"{label}:norms"] = norms
np.savez(out_path, **results)
"""


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start(args, env_extra=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             **(env_extra or {}))
  return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT] + args,
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _wait(process, timeout=150):
  try:
    _, stderr = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    _, stderr = process.communicate()
  assert process.returncode == 0, stderr[-3000:]


def _compare(results, reference, candidate):
  names = [k.split(":", 1)[1] for k in results if k.startswith(reference + ":")]
  assert len(names) > 25 and "global_step" in names
  for name in names:
    np.testing.assert_allclose(results[f"{candidate}:{name}"],
                               results[f"{reference}:{name}"],
                               rtol=1e-5, atol=1e-6, err_msg=name)
  assert int(results[f"{candidate}:global_step"]) == 2


def _load(path, label=None):
  results = dict(np.load(path))
  if label:
    results = {k.replace("worker:", f"{label}:"): v for k, v in results.items()}
  return results


def _tiny_initial_pooler_kernel():
  config = modeling.BertConfig(vocab_size=50, hidden_size=16,
                               num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=24, max_position_embeddings=16,
                               type_vocab_size=2)
  model = modeling.BertPretrainingModel(config, seed=0)
  return model.variables_by_name()["bert/pooler/dense/kernel"].numpy()


def test_two_replicas_equal_one_replica_on_the_same_global_batch(tmp_path):
  # A subprocess: logical devices must be set up before TF starts, which
  # this pytest process has already done.
  process = _start(["local", str(tmp_path / "local.npz"), ROOT])
  _wait(process)
  results = _load(tmp_path / "local.npz")
  # The weights moved: the comparison is not between two initial states.
  assert not np.allclose(results["single:bert/pooler/dense/kernel"],
                         _tiny_initial_pooler_kernel())
  _compare(results, "single", "mirrored")
  _compare(results, "single", "collective")


@pytest.mark.skipif(not os.environ.get("RUN_MULTIWORKER_TEST"),
                    reason="starts 3 TF processes (~1 min on 2 busy cores); "
                           "set RUN_MULTIWORKER_TEST=1")
def test_two_workers_equal_one_replica_on_the_same_global_batch(tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  processes = [_start(["local", str(tmp_path / "local.npz"), ROOT])] + [
      _start(["worker", str(tmp_path / f"worker{i}.npz"), ROOT],
             {"TF_CONFIG": json.dumps({"cluster": cluster,
                                       "task": {"type": "worker",
                                                "index": i}})})
      for i in range(2)]
  for process in processes:
    _wait(process)
  results = _load(tmp_path / "local.npz")
  for i in range(2):
    results.update(_load(tmp_path / f"worker{i}.npz", f"worker{i}"))
  _compare(results, "single", "worker0")
  _compare(results, "single", "worker1")
