"""Which precision this machine computes fastest in, and the CPU it has.

bfloat16 halves the bytes of every matmul operand, but only hardware with
bfloat16 units turns that into speed: CPUs with AMX (amx_bf16) or
AVX512-BF16 (avx512_bf16), and GPUs of compute capability 8.0 and later
(A100, H100, ...). Elsewhere TensorFlow converts bfloat16 to float32 around
each matmul and gains nothing (docs/performance.md). run_pipeline.sh (and so
run_demo.sh) asks this module for the default --precision:

  python -m bert_distill.hardware   # prints "mixed_bfloat16 (CPU: ...)"

Reads /proc/cpuinfo without importing TensorFlow; imports it only to look
for a GPU when the CPU has no bfloat16 units. Defines no flags.
"""

import re

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# The flags the benches print next to the CPU's name.
REPORTED_CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")


def cpu_info(text=None):
  """(model name, set of flags) of the first CPU in /proc/cpuinfo (or in
  `text`, its contents); ("unknown", set()) where there is none."""
  if text is None:
    try:
      with open("/proc/cpuinfo") as f:
        text = f.read()
    except OSError:
      text = ""
  model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
  flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
  return (model.group(1).strip() if model else "unknown",
          set(flags.group(1).split()) if flags else set())


def cpu_bf16_flags(text=None):
  """The bfloat16 flags (BF16_CPU_FLAGS) the CPU has, in that order."""
  flags = cpu_info(text)[1]
  return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def gpu_with_bf16():
  """The name of a GPU TensorFlow sees with bfloat16 units (compute
  capability >= 8.0), or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    if tuple(details.get("compute_capability") or (0, 0)) >= (8, 0):
      return details.get("device_name", gpu.name)
  return None


def preferred_precision(cpuinfo_text=None, gpu=None):
  """("mixed_bfloat16" or "float32", why) for this machine.

  cpuinfo_text and gpu replace /proc/cpuinfo and the GPU look-up (tests);
  gpu=None looks the GPU up only when the CPU has no bfloat16 units.
  """
  model, _ = cpu_info(cpuinfo_text)
  flags = cpu_bf16_flags(cpuinfo_text)
  if flags:
    return "mixed_bfloat16", f"CPU {model} has {', '.join(flags)}"
  if gpu is None:
    gpu = gpu_with_bf16() or ""
  if gpu:
    return "mixed_bfloat16", f"GPU {gpu} has bfloat16 units"
  return "float32", (f"CPU {model} has neither {' nor '.join(BF16_CPU_FLAGS)}"
                     f" and no GPU with bfloat16 units is visible")


if __name__ == "__main__":
  import os  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  print("%s (%s)" % preferred_precision())
