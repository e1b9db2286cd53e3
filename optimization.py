"""BERT's optimizer in TF2: AdamWeightDecay and the warmup/decay schedule.

As Google's optimization.py: Adam without bias correction (beta_1 0.9,
beta_2 0.999, epsilon 1e-6), weight decay 0.01 added to the update (decoupled
from the gradient) for every variable whose name matches none of
("LayerNorm", "layer_norm", "bias"), gradients clipped to global norm 1.0,
and a learning rate that rises linearly from 0 over num_warmup_steps, then
falls linearly to 0 at num_train_steps. The slots are named as Google's
checkpoints name them (`<variable>/adam_m`, `<variable>/adam_v`), so they save
and restore through checkpoints.save_checkpoint / checkpoints.restore_variables.

Under a tf.distribute strategy, call `apply_gradients` inside `strategy.run`
with each replica's gradients (of a loss scaled by 1/global_batch_size): they
are summed across replicas (and workers), clipped, and applied once to every
copy of each variable.
"""

import re

import tensorflow as tf


class LinearWarmupLinearDecay:
  """lr(step): init_lr * step / num_warmup_steps while step < num_warmup_steps,
  else init_lr * (1 - step / num_train_steps), floored at 0."""

  def __init__(self, init_lr, num_train_steps, num_warmup_steps):
    if init_lr < 0:
      raise ValueError(f"learning rate must be >= 0, got {init_lr}")
    if num_train_steps <= 0:
      raise ValueError(f"num_train_steps must be positive, got {num_train_steps}")
    if not 0 <= num_warmup_steps <= num_train_steps:
      raise ValueError(f"num_warmup_steps must be in [0, num_train_steps="
                       f"{num_train_steps}], got {num_warmup_steps}")
    self.init_lr = float(init_lr)
    self.num_train_steps = int(num_train_steps)
    self.num_warmup_steps = int(num_warmup_steps)

  def __call__(self, step):
    """The learning rate (float32 scalar) at a global step (int scalar)."""
    step = tf.cast(step, tf.float32)
    decayed = self.init_lr * (
        1.0 - tf.minimum(step, float(self.num_train_steps)) /
        self.num_train_steps)
    if not self.num_warmup_steps:
      return decayed
    warmup = self.init_lr * step / self.num_warmup_steps
    return tf.where(step < self.num_warmup_steps, warmup, decayed)


class AdamWeightDecay(tf.Module):
  """Google's AdamWeightDecayOptimizer, distribution-aware, with named slots."""

  def __init__(self, learning_rate, weight_decay_rate=0.01, beta_1=0.9,
               beta_2=0.999, epsilon=1e-6,
               exclude_from_weight_decay=("LayerNorm", "layer_norm", "bias"),
               clip_norm=1.0, name="adam_weight_decay"):
    """Args:
      learning_rate: a float, or a callable step -> learning rate (such as
        LinearWarmupLinearDecay), called with global_step before increment.
      weight_decay_rate: decoupled weight decay; 0 disables it.
      beta_1, beta_2, epsilon: Adam's constants (no bias correction).
      exclude_from_weight_decay: regexes; a variable whose name matches any
        (re.search) gets no weight decay.
      clip_norm: gradients are clipped to this global norm; None disables.
    """
    super().__init__(name=name)
    self.learning_rate = learning_rate
    self.weight_decay_rate = weight_decay_rate
    self.beta_1 = beta_1
    self.beta_2 = beta_2
    self.epsilon = epsilon
    self.exclude_from_weight_decay = tuple(exclude_from_weight_decay or ())
    self.clip_norm = clip_norm
    self.global_step = None
    self._variables = None
    self._slots = None

  def build(self, variables_by_name):
    """Creates the `adam_m`/`adam_v` slots (zeros) and global_step.

    Call it under the same strategy scope as the variables were created in,
    so the slots are mirrored the same way.
    """
    self._variables = dict(variables_by_name)
    self._slots = {}
    for name, variable in self._variables.items():
      for slot in ("adam_m", "adam_v"):
        self._slots[f"{name}/{slot}"] = tf.Variable(
            tf.zeros(variable.shape, variable.dtype), trainable=False,
            name=f"{name}/{slot}")
    self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name="global_step")
    return self

  def slot_variables_by_name(self):
    """{"<name>/adam_m": var, "<name>/adam_v": var, ...} in Google's names."""
    self._check_built()
    return dict(self._slots)

  def checkpoint_variables(self):
    """The slots plus {"global_step": var}: what a checkpoint adds to a model."""
    variables = self.slot_variables_by_name()
    variables["global_step"] = self.global_step
    return variables

  def _learning_rate_at(self, step):
    if callable(self.learning_rate):
      return tf.cast(self.learning_rate(step), tf.float32)
    return tf.constant(self.learning_rate, tf.float32)

  def _check_built(self):
    if self._slots is None:
      raise ValueError("AdamWeightDecay.build(variables_by_name) must be "
                       "called before use")

  def _use_weight_decay(self, name):
    if not self.weight_decay_rate:
      return False
    return not any(re.search(r, name) for r in self.exclude_from_weight_decay)

  def apply_gradients(self, grads_by_name, skip_update=None):
    """Clips, then applies one Adam step; increments global_step.

    Args:
      grads_by_name: {variable name: gradient}; None gradients are skipped
        (the variable and its slots stay as they are). In a replica context
        of a strategy these are the replica's own gradients and are summed
        across replicas first.
      skip_update: optional scalar bool tensor, the same on every replica.
        When true, every variable and slot keeps its value and only
        global_step advances: a float16 step whose gradients overflowed.

    Returns:
      The global norm of the (summed) gradients before clipping.
    """
    self._check_built()
    unknown = [n for n in grads_by_name if n not in self._variables]
    if unknown:
      raise ValueError(f"gradients for unknown variables: {unknown[:5]}")
    names = sorted(n for n, g in grads_by_name.items() if g is not None)
    grads = [tf.convert_to_tensor(grads_by_name[n]) for n in names]

    replica_context = tf.distribute.get_replica_context()
    if replica_context is not None:
      # Sum across replicas and workers; the identity with no strategy.
      grads = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    global_norm = tf.linalg.global_norm(grads)
    if self.clip_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, self.clip_norm,
                                        use_norm=global_norm)
    learning_rate = self._learning_rate_at(self.global_step)
    if replica_context is not None:
      replica_context.merge_call(self._distributed_apply,
                                 args=(names, grads, learning_rate,
                                       skip_update))
    else:
      # Cross-replica context: the caller passed already-aggregated grads.
      self._distributed_apply(tf.distribute.get_strategy(), names, grads,
                              learning_rate, skip_update)
    return global_norm

  def _distributed_apply(self, strategy, names, grads, learning_rate,
                         skip_update):
    """Updates every copy of each variable, its slots and global_step.

    Runs in cross-replica context; `grads` and `learning_rate` are per-replica
    values (equal on every replica after the all-reduce), and
    strategy.extended.update hands each device its own copy.
    """
    updates = []
    for name, grad in zip(names, grads):
      updates.append(strategy.extended.update(
          self._variables[name], self._update_variable,
          args=(grad, self._slots[f"{name}/adam_m"],
                self._slots[f"{name}/adam_v"], learning_rate,
                self._use_weight_decay(name), skip_update),
          group=False))
    with tf.control_dependencies(tf.nest.flatten(updates)):
      return strategy.extended.update(
          self.global_step, lambda step: step.assign_add(1), group=False)

  def _update_variable(self, variable, grad, m, v, learning_rate,
                       use_weight_decay, skip_update):
    """One Adam step of one variable on one device, Google's math:

      m <- beta_1 m + (1 - beta_1) g;  v <- beta_2 v + (1 - beta_2) g^2
      variable <- variable - lr (m / (sqrt(v) + epsilon) + wd variable)

    (no bias correction). The decay is applied first, then TensorFlow's
    fused Adam kernel does the rest in one pass over the variable and its
    slots, with its bias correction switched off (beta powers 0): the
    elementwise ops one by one made eight passes over every tensor, which
    on a CPU took a third of a small model's fine-tuning step.
    """
    def step():
      decayed = ([variable.assign_sub(
          learning_rate * self.weight_decay_rate * variable)]
                 if use_weight_decay else [])
      with tf.control_dependencies(decayed):
        no_bias_correction = tf.constant(0.0, variable.dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle,
            beta1_power=no_bias_correction, beta2_power=no_bias_correction,
            lr=tf.cast(learning_rate, variable.dtype),
            beta1=tf.constant(self.beta_1, variable.dtype),
            beta2=tf.constant(self.beta_2, variable.dtype),
            epsilon=tf.constant(self.epsilon, variable.dtype),
            grad=grad, use_locking=False)

    if skip_update is None:
      return step()
    # Skipped, not computed: an overflowed step's gradients may be inf/NaN.
    return tf.cond(skip_update, tf.no_op, step)


def loss_scale_for(precision):
  """The loss scale a --precision trains with: a DynamicLossScale for
  mixed_float16, None for float32 and mixed_bfloat16.

  float16's 5 exponent bits flush small gradients to zero unless the loss is
  scaled up first; bfloat16 keeps float32's 8 exponent bits, so its
  gradients underflow no sooner than float32's and scaling would only add
  the overflow checks' work. Call it under the strategy's scope.
  """
  if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
    raise ValueError(f"unknown precision {precision!r}")
  return DynamicLossScale() if precision == "mixed_float16" else None


def apply_scaled_gradients(optimizer, names, grads, loss_scale=None):
  """Applies gradients of a loss multiplied by loss_scale.scale (float16's
  dynamic loss scale; None: unscaled) as {name: gradient}; an overflowed
  step updates nothing. Returns the optimizer's global gradient norm."""
  overflowed = None
  if loss_scale:
    grads, overflowed = loss_scale.unscale(grads)
  return optimizer.apply_gradients(dict(zip(names, grads)),
                                   skip_update=overflowed)


class DynamicLossScale:
  """The loss scale of float16 training.

  The loss is multiplied by `scale` before the backward pass and the
  gradients divided by it after. A step whose gradients overflow (on any
  replica) leaves the weights and Adam slots as they are and halves the
  scale; after `period` clean steps the scale doubles.
  """

  def __init__(self, initial=2.0**15, period=2000):
    on_first = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.scale = tf.Variable(initial, trainable=False, aggregation=on_first)
    self.clean_steps = tf.Variable(0, trainable=False, aggregation=on_first)
    self.period = period

  def unscale(self, grads):
    """Returns ([gradients] / scale, overflowed), zeros if any overflowed.

    Call in replica context: the overflow check is summed over replicas, so
    `overflowed` (a scalar bool) is the same on every replica.
    """
    # None: a variable no loss term reaches (the masked-LM head when only
    # intermediate-layer losses train); it stays None.
    grads = [None if g is None else tf.convert_to_tensor(g) / self.scale
             for g in grads]
    overflows = tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g),
                                                tf.float32))
                          for g in grads if g is not None])
    overflows = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, overflows)
    clean = overflows == 0
    grow = clean & (self.clean_steps + 1 >= self.period)
    self.scale.assign(tf.where(clean, tf.where(grow, 2.0, 1.0), 0.5) *
                      self.scale)
    self.clean_steps.assign(tf.where(clean & ~grow, self.clean_steps + 1, 0))
    return [None if g is None else tf.where(clean, g, tf.zeros_like(g))
            for g in grads], ~clean
