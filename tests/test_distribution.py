"""distribution.sum_over_replicas: every value summed over real replicas
(two logical CPUs, mirrored and collective all-reduce), shapes kept; in a
subprocess, since logical devices must be set before TensorFlow starts."""

import json
import subprocess
import sys

from conftest import ROOT
from stage_runs import ENV

SCRIPT = r"""
import json, sys
import tensorflow as tf
sys.path.insert(0, sys.argv[1])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bert_distill import distribution
devices = ["/cpu:0", "/cpu:1"]
results = {}
for name, strategy in {
    "mirrored": tf.distribute.MirroredStrategy(devices),
    "collective":
        tf.distribute.MultiWorkerMirroredStrategy._from_local_devices(devices),
}.items():
  def replica_fn(x):
    r = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group,
                tf.float32)
    return {"scalar": r + x, "bins": tf.stack([r, 2.0 * r, x]),
            "count": tf.constant(1, tf.int32)}
  sums = tf.function(lambda: distribution.sum_over_replicas(
      strategy, replica_fn, (tf.constant(10.0),)))()
  results[name] = {k: [v.shape.as_list(), v.dtype.name, v.numpy().tolist()]
                   for k, v in sums.items()}
print(json.dumps(results))
"""


def test_sums_every_value_over_the_replicas_in_one_all_reduce():
  result = subprocess.run([sys.executable, "-c", SCRIPT, ROOT],
                          capture_output=True, text=True, timeout=300,
                          env=ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(result.stdout.splitlines()[-1])
  # Replicas 0 and 1: r + 10 sums to 21; [r, 2r, 10] to [1, 2, 20].
  want = {"scalar": [[], "float32", 21.0],
          "bins": [[3], "float32", [1.0, 2.0, 20.0]],
          "count": [[], "float32", 2.0]}
  assert results == {"mirrored": want, "collective": want}
