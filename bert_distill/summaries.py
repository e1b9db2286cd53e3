"""TensorBoard scalars, written by stage V and the classifier."""

import tensorflow as tf


def write_scalars(writer, group, values, step):
  """Writes {name: float} as TensorBoard scalars `group/name` at `step`.

  Uses the scalar plugin's event format directly, so that training does not
  need the tensorboard package installed (only viewing does).
  """
  metadata = tf.compat.v1.SummaryMetadata(
      plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
          plugin_name="scalars"))
  with writer.as_default():
    for name, value in values.items():
      tf.summary.write(f"{group}/{name}", tf.constant(value, tf.float32),
                       step=step, metadata=metadata)
  writer.flush()
