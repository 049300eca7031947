"""ResNet grid features: torchvision's parameter counts, grid shapes, frozen BatchNorm, GroupNorm."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.models import resnet

# torchvision's resnet18/50/101 parameter counts minus their 1000-way classifier (fc: 512 or 2048 -> 1000).
TORCHVISION_COUNTS = {"resnet18": 11_689_512 - 513_000, "resnet50": 25_557_032 - 2_049_000,
                      "resnet101": 44_549_160 - 2_049_000}


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_parameter_count_and_grid_shape_match_torchvision(name):
  config = resnet.resnet_config(name)
  shapes = jax.eval_shape(resnet.ResNet(config).init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  assert sum(x.size for x in jax.tree.leaves(nn.unbox(shapes["params"]))) == TORCHVISION_COUNTS[name]
  grid = jax.eval_shape(resnet.ResNet(config).apply, shapes, jnp.zeros((2, 224, 224, 3)))
  assert grid.shape == (2, 7, 7, config.out_channels) and config.stride == 32


def test_projection_to_the_lm_width():
  config = resnet.resnet_config("tiny", projection_dim=24)
  variables = resnet.ResNet(config).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  grid = resnet.ResNet(config).apply(variables, jnp.zeros((3, 32, 32, 3)))
  assert grid.shape == (3, 32 // config.stride, 32 // config.stride, 24)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_each_image_is_encoded_independently_of_its_batch(norm):
  config = resnet.resnet_config("tiny", norm=norm)
  images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  variables = resnet.ResNet(config).init(jax.random.key(0), images)
  apply = jax.jit(resnet.ResNet(config).apply)
  batched = apply(variables, images)
  alone = apply(variables, images[:1])
  np.testing.assert_allclose(batched[:1], alone, atol=1e-5)
  assert ("batch_stats" in variables) == (norm == "batch")


def test_batch_norm_uses_running_statistics():
  config = resnet.resnet_config("tiny", norm="batch")
  images = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
  variables = resnet.ResNet(config).init(jax.random.key(0), images)
  stats = jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])  # non-trivial statistics
  out, updates = resnet.ResNet(config).apply(dict(variables, batch_stats=stats), images,
                                             mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], stats)  # inference mode: untouched
  assert np.isfinite(out).all()


def test_unknown_names_and_norms_are_rejected():
  with pytest.raises(ValueError, match="resnet34"):
    resnet.resnet_config("resnet34")
  with pytest.raises(ValueError, match="layer"):
    resnet.resnet_config("tiny", norm="layer")
