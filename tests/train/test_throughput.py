"""Throughput figures: the peak table, the analytic FLOPs against XLA's count, the loop-undercount fallback."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.models import lrr
from lrr_jax.models import resnet
from lrr_jax.train import throughput


@pytest.mark.parametrize("kind, peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12), ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989.4e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("cpu", None)])
def test_peak_flops_by_device_kind(kind, peak):
  assert throughput.peak_flops_per_device(kind) == peak
  assert throughput.peak_flops_per_device(kind, override=5e12) == 5e12


def test_resnet_flops_match_xla():
  """The analytic count of a ResNet-18 forward (3.63 GFLOPs at 224 px, the usual 1.8 G multiply-adds) against
  XLA's cost analysis of the program (which skips the padded taps but counts norms and activations)."""
  config = dataclasses.replace(resnet.RESNET_CONFIGS["resnet18"], norm="group")
  model = resnet.ResNet(config)
  images = jnp.zeros((1, 224, 224, 3))
  variables = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), images)))
  xla = throughput.compiled_flops(jax.jit(model.apply).lower(variables, images).compile())
  analytic = throughput._resnet_forward_flops(config, 1, 224, 224, 3)  # pylint: disable=protected-access
  np.testing.assert_allclose(analytic, 3.627e9, rtol=1e-3)
  assert xla <= analytic <= 1.1 * xla  # XLA: 3.38 G, 7% of the taps fall on padding


def test_lrr_model_flops_match_xla():
  """3 x the forward of the tiny LRR model, analytic against XLA's count of its forward pass."""
  config = lrr.lrr_config("tiny")
  model = lrr.LRRModel(config)
  b, s, t, h = 2, 32, 2, 32
  text = jnp.ones((b, s), jnp.int32)
  args = (text, jnp.broadcast_to(jnp.arange(s), (b, s)), text, jnp.zeros((b, s), jnp.int32),
          jnp.zeros((b, t, h, h, 3), jnp.uint8))
  variables = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), *args)))
  xla = throughput.compiled_flops(jax.jit(model.apply).lower(variables, *args).compile())
  analytic = throughput.analytic_train_flops(config, b, s, t, h, h) / 3
  assert 0.85 * xla <= analytic <= 1.05 * xla


def test_a_scanned_program_falls_back_to_the_model_flops():
  """XLA counts a scan's body once: 8 layers of [128, 256] x [256, 256] count as one."""
  def layers(x, w):
    return jax.lax.scan(lambda c, wi: (c @ wi, None), x, w)[0]

  compiled = jax.jit(layers).lower(jnp.ones((128, 256)), jnp.ones((8, 256, 256))).compile()
  model_flops = 8 * 2 * 128 * 256 * 256
  np.testing.assert_allclose(throughput.compiled_flops(compiled), model_flops / 8, rtol=0.01)
  assert throughput.step_flops(compiled, model_flops) == (model_flops, "analytic")
  assert throughput.step_flops(compiled, model_flops / 8)[1] == "compiled"


def test_step_timer_and_metrics():
  timer = throughput.StepTimer()
  assert timer.per_step(1) is None  # nothing timed yet
  timer.restart(1)
  assert timer.per_step(1) is None and timer.per_step(3) > 0
  scalars = throughput.step_metrics(2.0, examples=8, tokens=100.0, flops_per_device=4e12, peak=None)
  assert scalars == {"step_time_s": 2.0, "examples_per_s": 4.0, "tokens_per_s": 50.0, "tflops_per_device": 2.0}
  assert throughput.step_metrics(2.0, 8, 100.0, 4e12, 4e12)["mfu"] == 0.5
