"""The precision rules: loss scaling for float16 only, float32 logits out of a
bfloat16 model, and the hardware's default precision (bert_distill/hardware.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import bert_reference as ref
from conftest import ROOT
from bert_distill import checkpoints
from bert_distill import classifier
from bert_distill import hardware
import modeling
import optimization

# /proc/cpuinfo excerpts of the three kinds of x86 CPU the benches met.
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
COOPER_LAKE = """model name\t: Intel(R) Xeon(R) Platinum 8380H CPU
flags\t\t: fpu avx2 avx512f avx512_bf16
"""
ZEN_3 = """model name\t: AMD EPYC 7B13
flags\t\t: fpu avx avx2 fma
"""


@pytest.mark.parametrize("precision, scaled", [
    ("float32", False), ("mixed_float16", True), ("mixed_bfloat16", False)])
def test_loss_scaling_for_float16_only(precision, scaled):
  """bfloat16 has float32's exponent range: no underflow to scale away."""
  loss_scale = optimization.loss_scale_for(precision)
  assert isinstance(loss_scale, optimization.DynamicLossScale) == scaled
  assert (loss_scale is None) == (not scaled)


def test_loss_scale_for_an_unknown_precision_raises():
  with pytest.raises(ValueError, match="bfloat16"):
    optimization.loss_scale_for("bfloat16")


def test_bfloat16_models_compute_in_bfloat16_and_return_float32():
  """Softmax and losses read float32 logits; the variables stay float32 and
  so do their gradients (what the optimizer and the checkpoints see)."""
  config = modeling.BertConfig.from_dict(ref.TINY_CONFIG)
  rng = np.random.default_rng(0)
  ids = tf.constant(rng.integers(0, 99, (2, 8)), tf.int32)
  mask = tf.ones([2, 8], tf.int32)
  segments = tf.zeros([2, 8], tf.int32)
  positions = tf.constant([[1, 3], [2, 5]], tf.int32)
  model = modeling.BertPretrainingModel(config, compute_dtype=tf.bfloat16,
                                        seed=0)
  head = classifier.BertClassifier(config, 3, tf.bfloat16, seed=0)
  with tf.GradientTape() as tape:
    outputs = model(ids, mask, segments, positions, training=True,
                    intermediates=True)
    logits = head(ids, mask, segments, training=True)["logits"]
    loss = (tf.reduce_sum(tf.nn.log_softmax(outputs["masked_lm_logits"])) +
            tf.reduce_sum(logits))
  assert outputs["masked_lm_logits"].dtype == tf.float32
  assert outputs["next_sentence_logits"].dtype == tf.float32
  assert logits.dtype == tf.float32
  assert outputs["sequence_output"].dtype == tf.bfloat16
  variables = list(model.variables_by_name().values())
  assert {v.dtype for v in variables} == {tf.float32}
  grads = tape.gradient(loss, variables)
  assert {g.dtype for g in grads if g is not None} == {tf.float32}
  assert all(np.all(np.isfinite(tf.convert_to_tensor(g)))
             for g in grads if g is not None)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_a_frozen_teacher_stores_its_matmul_weights_in_the_compute_dtype(
    tmp_path, precision):
  """load_teacher's 16-bit teacher holds kernels, dense biases and embedding
  tables in its compute dtype (cast once, from the float32 checkpoint),
  LayerNorm's and the output biases in float32, and computes exactly what a
  trainable model of the same dtype and weights computes (which casts the
  float32 weights on every call)."""
  _, prefix, _ = ref.write_model_dir(str(tmp_path / "teacher"),
                                     ref.TINY_CONFIG, seed=3)
  config = modeling.BertConfig.from_dict(ref.TINY_CONFIG)
  compute_dtype = modeling.COMPUTE_DTYPES[precision]
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  teacher = checkpoints.load_teacher(strategy, config, prefix, precision)
  variables = teacher.variables_by_name()
  dtypes = {name: v.dtype for name, v in variables.items()}
  assert dtypes["bert/embeddings/word_embeddings"] == compute_dtype
  assert dtypes["bert/encoder/layer_0/intermediate/dense/kernel"] == (
      compute_dtype)
  assert dtypes["bert/encoder/layer_0/attention/self/query/bias"] == (
      compute_dtype)
  assert dtypes["bert/encoder/layer_0/output/LayerNorm/gamma"] == tf.float32
  assert dtypes["cls/predictions/output_bias"] == tf.float32
  assert not any(v.trainable for v in variables.values())

  trained = modeling.BertPretrainingModel(config, compute_dtype, seed=0)
  checkpoints.load_checkpoint(trained, prefix)
  assert {v.dtype for v in trained.variables_by_name().values()} == {
      tf.float32}
  rng = np.random.default_rng(1)
  ids = tf.constant(rng.integers(0, config.vocab_size, (2, 8)), tf.int32)
  inputs = (ids, tf.ones_like(ids), tf.zeros_like(ids),
            tf.constant([[1, 3], [2, 5]], tf.int32))
  got = teacher(*inputs)["masked_lm_logits"]
  want = trained(*inputs)["masked_lm_logits"]
  assert got.dtype == want.dtype == tf.float32
  np.testing.assert_array_equal(got.numpy(), want.numpy())
  # The float32 teacher is as it was: every variable float32.
  float32_teacher = checkpoints.load_teacher(strategy, config, prefix)
  assert {v.dtype for v in float32_teacher.variables_by_name().values()} == {
      tf.float32}


@pytest.mark.parametrize("text, precision, why", [
    (SAPPHIRE_RAPIDS, "mixed_bfloat16", "amx_bf16, avx512_bf16"),
    (COOPER_LAKE, "mixed_bfloat16", "avx512_bf16"),
    (ZEN_3, "float32", "AMD EPYC 7B13 has neither"),
])
def test_preferred_precision_follows_the_cpu_flags(text, precision, why):
  assert hardware.preferred_precision(text, gpu="")[0] == precision
  assert why in hardware.preferred_precision(text, gpu="")[1]


def test_a_gpu_with_bfloat16_units_picks_bfloat16():
  chosen, why = hardware.preferred_precision(ZEN_3, gpu="NVIDIA H100")
  assert chosen == "mixed_bfloat16" and "NVIDIA H100" in why


def test_cpu_info_reads_the_model_and_flags():
  model, flags = hardware.cpu_info(SAPPHIRE_RAPIDS)
  assert model.startswith("Intel(R) Xeon(R) Platinum 8481C")
  assert {"amx_bf16", "amx_tile", "avx512_bf16"} <= flags
  assert hardware.cpu_info("") == ("unknown", set())


def _pipeline(tmp_path, *flags):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep +
             os.environ["PATH"])
  return subprocess.run(
      ["bash", os.path.join(ROOT, "run_pipeline.sh"),
       f"--work_dir={tmp_path}", f"--python={sys.executable}", "--stages=IV",
       f"--teacher_config={tmp_path}/none.json", *flags],
      capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_run_pipeline_says_which_precision_it_chose(tmp_path):
  result = _pipeline(tmp_path)  # stops at the missing teacher, after choosing
  chosen, why = hardware.preferred_precision()
  assert f"run_pipeline.sh: precision {chosen} ({why})" in result.stdout
  result = _pipeline(tmp_path, "--precision=float32")
  assert "run_pipeline.sh: precision float32 (given)" in result.stdout
  result = _pipeline(tmp_path, "--precision=bfloat16")
  assert result.returncode != 0
  assert "error: --precision=bfloat16: use auto" in result.stderr
