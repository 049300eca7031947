"""Cross-attention maps: the sown weights are the layer's own, obey the frame rule, and fold into [T, h, w]."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from lrr_jax.evaluation import attention_maps
from lrr_jax.models import cross_attention
from lrr_jax.models import layers
from lrr_jax.models import lrr

matplotlib.use("Agg")
BATCH, LENGTH, FRAMES, SIZE = 2, 10, 3, 16


@pytest.fixture(scope="module")
def tiny():
  """The tiny LRR model, its variables and inputs: tokens about no frame, frame 0, 1 and 2."""
  model = lrr.LRRModel(lrr.lrr_config("tiny", vocab_size=64, max_positions=32))
  rng = np.random.default_rng(0)
  frame_index = np.array([-1, -1, 0, 0, 0, 1, 1, 2, 2, 2], np.int32)
  inputs = dict(tokens=rng.integers(2, 64, (BATCH, LENGTH)).astype(np.int32),
                positions=np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH)),
                segment_ids=np.ones((BATCH, LENGTH), np.int32),
                frame_index=np.broadcast_to(frame_index, (BATCH, LENGTH)),
                video=rng.integers(0, 256, (BATCH, FRAMES, SIZE, SIZE, 3), dtype=np.uint8))
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), **inputs))
  weights = attention_maps.cross_attention_weights(model, variables, *inputs.values())
  return model, variables, inputs, weights


def test_weights_are_sown_per_block_only_when_asked(tiny):
  model, variables, inputs, weights = tiny
  heads = model.config.decoder.cross_attention_heads
  assert list(weights) == [f"cross_attention_{i}" for i in model.config.decoder.cross_attention_layers]
  cells = next(iter(weights.values())).shape[-1]
  assert cells % FRAMES == 0
  for block in weights.values():
    assert block.shape == (BATCH, heads, LENGTH, cells) and block.dtype == np.float32
  apply = jax.jit(model.apply, static_argnames="mutable")
  logits, state = apply(variables, *inputs.values(), mutable=("intermediates",))
  np.testing.assert_allclose(logits, apply(variables, *inputs.values()), atol=1e-6)  # training path unchanged
  assert set(state) == {"intermediates"}
  assert not jax.eval_shape(lambda v: model.apply(v, *inputs.values(), mutable=["batch_stats"]), variables)[1]


def test_weights_are_those_masked_attention_reads_values_with():
  """Values that are one-hot in the key index make `masked_attention` return its own weights."""
  rng = np.random.default_rng(1)
  b, s, m, h = 2, 5, 6, 3
  query = jnp.asarray(rng.normal(size=(b, s, h, m)), jnp.float32)
  keys = jnp.asarray(rng.normal(size=(b, m, h, m)), jnp.float32)
  one_hot = jnp.broadcast_to(jnp.eye(m)[None, :, None, :], (b, m, h, m))
  mask = jnp.asarray(rng.random((b, 1, s, m)) < 0.6).at[:, :, 0].set(False)  # token 0 sees nothing
  expected = jnp.einsum("bqhk->bhqk", layers.masked_attention(query, keys, one_hot, mask))
  got = cross_attention.visual_attention_weights(query, keys, mask)
  np.testing.assert_allclose(got[:, :, 1:], expected[:, :, 1:], atol=1e-6)
  np.testing.assert_array_equal(got[:, :, 0], 0.0)  # the layer zeroes what such a token reads
  shared = cross_attention.visual_attention_weights(query, keys[:1], mask)  # one video for every row
  np.testing.assert_allclose(shared[0], got[0], atol=1e-6)


def test_maps_sum_to_the_attention_mass_and_obey_the_frame_rule(tiny):
  _, _, inputs, weights = tiny
  cells = next(iter(weights.values())).shape[-1] // FRAMES
  grid = attention_maps.grid_shape(cells, SIZE, SIZE)
  frame_index = inputs["frame_index"][0]
  for block in weights.values():
    for row in range(BATCH):
      maps = attention_maps.token_maps(block[row], FRAMES, grid)
      assert maps.shape == (LENGTH, FRAMES, *grid)
      mass = (frame_index >= 0).astype(np.float32)
      np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), mass, atol=1e-5)
      for s, t in enumerate(frame_index):
        assert np.all(maps[s, t + 1:] == 0.0), (s, t)  # a token about frame t never reads a later frame
        if t >= 0:
          assert maps[s, t].sum() > 0
      one_head = attention_maps.token_maps(block[row], FRAMES, grid, head=1)
      np.testing.assert_allclose(one_head.sum(axis=(1, 2, 3)), mass, atol=1e-5)


def test_token_maps_fold_frame_major_cells():
  grid, frames = (2, 3), 2
  weights = np.zeros((2, 1, frames * 6), np.float32)
  weights[0, 0, 1 * 6 + 1 * 3 + 2] = 1.0  # head 0: frame 1, row 1, column 2
  weights[1, 0, 0] = 1.0  # head 1: frame 0, row 0, column 0
  maps = attention_maps.token_maps(weights, frames, grid)
  assert maps.shape == (1, frames, *grid)
  assert maps[0, 1, 1, 2] == 0.5 and maps[0, 0, 0, 0] == 0.5 and maps.sum() == 1.0
  assert attention_maps.token_maps(weights, frames, grid, head=0)[0, 1, 1, 2] == 1.0
  with pytest.raises(ValueError, match="3 frames"):
    attention_maps.token_maps(weights, 3, grid)


def test_grid_shape_follows_the_frame_aspect():
  assert attention_maps.grid_shape(64, 32, 32) == (8, 8)
  assert attention_maps.grid_shape(32, 32, 64) == (4, 8)
  with pytest.raises(ValueError, match="7 grid cells"):
    attention_maps.grid_shape(7, 32, 32)


def test_response_tokens_and_drawing(tiny):
  _, _, inputs, weights = tiny
  frame_index = inputs["frame_index"][0]
  loss_mask = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
  chosen = attention_maps.response_tokens(frame_index, loss_mask, 3)
  assert chosen == [3, 6, 9]
  block = next(iter(weights.values()))[0]
  grid = attention_maps.grid_shape(block.shape[-1] // FRAMES, SIZE, SIZE)
  maps = attention_maps.token_maps(block, FRAMES, grid)[chosen]
  figure = attention_maps.draw_token_maps(inputs["video"][0], maps, ["a", "b", "c"])
  assert len(figure.axes) == 3 * FRAMES
  with pytest.raises(ValueError, match="labels"):
    attention_maps.draw_token_maps(inputs["video"][0], maps, ["a"])


def test_a_scanned_decoder_gives_the_same_maps_and_gates(tiny):
  model, variables, inputs, weights = tiny
  config = model.config
  scanned_config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, scan_layers=True))
  scanned = lrr.relayout(variables, config, scanned_config)
  scanned_weights = attention_maps.cross_attention_weights(lrr.LRRModel(scanned_config), scanned,
                                                           *inputs.values())
  assert list(scanned_weights) == list(weights)
  for name, block in weights.items():
    np.testing.assert_allclose(scanned_weights[name], block, atol=1e-6)
  assert attention_maps.gate_values(scanned["params"]) == attention_maps.gate_values(variables["params"])
