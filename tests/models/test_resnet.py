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


@pytest.mark.parametrize("grid_stage,grid,channels", [(0, 7, 2048), (5, 7, 2048), (4, 14, 1024), (3, 28, 512)])
def test_the_grid_stage_sets_the_grid_at_224_pixels(grid_stage, grid, channels):
  """ResNet-101 at 224 px: conv4_x (stage 4, stride 16) gives 14x14, its later stage is not built."""
  config = resnet.resnet_config("resnet101", grid_stage=grid_stage)
  shapes = jax.eval_shape(resnet.ResNet(config).init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  out = jax.eval_shape(resnet.ResNet(config).apply, shapes, jnp.zeros((2, 224, 224, 3)))
  assert out.shape == (2, grid, grid, channels) == (2, 224 // config.stride, 224 // config.stride,
                                                    config.out_channels)
  built = {name.split("_block_")[0] for name in shapes["params"] if name.startswith("stage_")}
  assert built == {f"stage_{k}" for k in range(config.num_stages)}


def test_a_truncated_resnet_gives_the_full_ones_intermediate_features():
  full = resnet.resnet_config("tiny")
  cut = resnet.resnet_config("tiny", grid_stage=2)  # conv2_x: the first of its two stages
  images = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype(np.float32)
  variables = resnet.ResNet(full).init(jax.random.key(0), images)
  _, state = resnet.ResNet(full).apply(variables, images, capture_intermediates=True, mutable=["intermediates"])
  expected, _ = state["intermediates"]["stage_0_block_0"]["__call__"][0]  # a block returns (x, None): a scan body
  params = {k: v for k, v in variables["params"].items() if not k.startswith("stage_1")}
  np.testing.assert_array_equal(resnet.ResNet(cut).apply({"params": params}, images), expected)
  with pytest.raises(ValueError, match=r"grid_stage=4: a ResNet of 2 stages .* has stages 2 \(conv2_x\) to 3"):
    resnet.resnet_config("tiny", grid_stage=4)


def test_a_truncated_backbone_stacks_and_unstacks_only_the_stages_it_builds():
  """A scanned backbone with `grid_stage` short of the last (the recipe's conv4_x): the layouts convert."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = resnet.resnet_config("tiny", stage_sizes=(1, 2, 2), grid_stage=3)  # stages 0 and 1 built
  images = np.zeros((1, 16, 16, 3), np.float32)
  unrolled = resnet.ResNet(cfg).init(jax.random.key(0), images)["params"]
  scanned = resnet.ResNet(dataclasses.replace(cfg, scan_layers=True)).init(jax.random.key(0), images)["params"]
  stacked = resnet.stack_blocks(unrolled, cfg)
  assert jax.tree.structure(stacked) == jax.tree.structure(scanned)
  jax.tree.map(np.testing.assert_array_equal, resnet.unstack_blocks(stacked, cfg), unrolled)
