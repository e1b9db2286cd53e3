"""tf.distribute for stages IV and V and the classifier: which strategy, who
writes.

create_strategy turns --distribution_strategy (and --tpu) into a strategy
(distill.py, run_classifier.py); local_strategy is stage IV's choice (all
GPUs of one machine when there are several); is_chief says which process
writes checkpoints, summaries and results; check_workers_agree stops workers
that would train from different checkpoints; sum_over_replicas runs a step
on every replica and sums what it returns with one all-reduce.
"""

import os

from absl import logging

import tensorflow as tf

from bert_distill import cli
from bert_distill import interrupts


def prefetched(dataset, buffer_size=tf.data.AUTOTUNE):
  """The end of every input pipeline: `dataset` prefetched (`buffer_size`
  elements), with tf.data's autotuning off.

  With autotuning on, deleting an iterator that a tf.function consumed (the
  training loops, the evaluation steps) waits for the autotuner's next
  round, whose period grows to a minute: measured here (TensorFlow 2.21,
  2 cores), 51 s after 2.5 minutes of training, 0.01 s without autotuning,
  at the same rate. (distributed_dataset avoids tf.distribute's own
  autotuned per-device pipeline on one CPU for the same reason.) The
  AUTOTUNE parallelism and buffer sizes then keep their starting values
  (as many parallel calls as cores).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.prefetch(buffer_size).with_options(options)


def sum_over_replicas(strategy, replica_fn, args):
  """Runs replica_fn(*args) on every replica and sums the {name: tensor} it
  returns over all replicas (all workers): {name: float32 sum}, each of its
  own shape.

  The tensors travel as one vector, in one all-reduce: one collective each
  cost a step of two workers on loopback ports about 1 ms apiece
  (docs/performance.md, "Several workers").
  """
  shapes = {}  # {name: shape}, in the order of the vector; set when traced

  def packed_fn(*replica_args):
    values = replica_fn(*replica_args)
    for name, value in values.items():
      if not value.shape.is_fully_defined():
        raise ValueError(f"sum_over_replicas: {name} has shape "
                         f"{value.shape}: the sums need static shapes")
    shapes.clear()
    shapes.update((name, value.shape) for name, value in values.items())
    # [the sum of the values' sizes]
    return tf.concat([tf.reshape(tf.cast(value, tf.float32), [-1])
                      for value in values.values()], axis=0)

  packed = strategy.reduce(tf.distribute.ReduceOp.SUM,
                           strategy.run(packed_fn, args=args), axis=None)
  parts = tf.split(packed, [shape.num_elements() for shape in shapes.values()])
  return {name: tf.reshape(part, shape)
          for (name, shape), part in zip(shapes.items(), parts)}


def create_strategy(name, tpu=None):
  """The tf.distribute strategy called `name` (None: mirrored on GPUs).

  Call it before any other TensorFlow op: MultiWorkerMirroredStrategy must
  configure the runtime before it starts.
  """
  gpus = tf.config.list_physical_devices("GPU")
  if name is None:
    name = "mirrored" if gpus else "one_device"
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker_mirrored":
    if "TF_CONFIG" not in os.environ:
      raise cli.StageError("--distribution_strategy multi_worker_mirrored "
                           "needs the TF_CONFIG environment variable (see "
                           "launch_multiworker.sh)")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    interrupts.take_back()  # from TensorFlow's preemption notifier
    return strategy
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
  """Whether this process writes checkpoints, summaries and results."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and (
      not has_chief)


def check_workers_agree(strategy, step, output_dir):
  """Raises cli.StageError unless every worker starts from the same step
  (they disagree when --output_dir is not one directory all workers see)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return
  gather = tf.function(lambda: strategy.gather(
      strategy.run(lambda: tf.constant([step], tf.int64)), axis=0))
  steps = gather().numpy()
  if steps.min() != steps.max():
    raise cli.StageError(
        f"the workers start from different steps ({sorted(set(steps))}): "
        f"--output_dir {output_dir} must be one directory every worker sees")


def local_strategy():
  """A MirroredStrategy over all GPUs when there are several, else the default
  (one device: the GPU, or all CPU cores through TensorFlow's thread pools)."""
  gpus = tf.config.list_logical_devices("GPU")
  if len(gpus) > 1:
    return tf.distribute.MirroredStrategy([g.name for g in gpus])
  return tf.distribute.get_strategy()


def check_batch_sizes(replicas, **batch_sizes):
  """Each global batch size must split evenly across the replicas."""
  for flag, size in batch_sizes.items():
    if size % replicas:
      raise cli.StageError(f"--{flag} {size} does not split evenly across "
                           f"{replicas} replicas")


def distributed_dataset(strategy, make_dataset, global_batch_size,
                        steps_done=0):
  """A dataset per input pipeline of `strategy`, in per-replica batches.

  make_dataset(batch_size, num_shards, shard_index, skip_examples) builds
  one pipeline's: its per-replica batch size, its shard of the examples,
  and the examples it fed the steps_done global steps already trained (a
  resumed run then sees the batches an uninterrupted one would).
  """
  def dataset_fn(context):
    skip = steps_done * global_batch_size // context.num_input_pipelines
    if skip:
      logging.info("Input pipeline %d: skipping the %d examples it fed the "
                   "first %d steps", context.input_pipeline_id, skip,
                   steps_done)
    return make_dataset(context.get_per_replica_batch_size(global_batch_size),
                        context.num_input_pipelines,
                        context.input_pipeline_id, skip)
  if _is_one_cpu(strategy):
    # The pipeline itself: tf.distribute would feed it through a
    # MultiDeviceIterator, whose per-device pipeline tf.data autotunes
    # whatever the pipeline's options say (see prefetched); on one CPU
    # there is nothing to fetch to.
    return dataset_fn(tf.distribute.InputContext())
  return strategy.distribute_datasets_from_function(dataset_fn)


def _is_one_cpu(strategy):
  """Whether `strategy` is a OneDeviceStrategy on a CPU."""
  return (isinstance(strategy, tf.distribute.OneDeviceStrategy) and
          tf.DeviceSpec.from_string(strategy.extended.worker_devices[0])
          .device_type == "CPU")
