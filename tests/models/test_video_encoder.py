"""The two-stream video encoder: shapes, causality in time, temporal window, packed examples kept apart."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.models import lrr
from lrr_jax.models import video_encoder

FRAMES, SIZE = 6, 16


def encoder(**overrides):
  config = dataclasses.replace(lrr.lrr_config("tiny").video, **overrides)
  model = video_encoder.VideoEncoder(config)
  video = np.random.default_rng(0).integers(0, 256, (2, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), video)
  return config, jax.jit(lambda v, s=None: model.apply(variables, v, s)), video, variables


def with_frame_replaced(video, frame):
  changed = video.copy()
  changed[:, frame] = 255 - changed[:, frame]
  return changed


@pytest.mark.parametrize("two_stream", [True, False])
def test_output_shape_and_causality_in_time(two_stream):
  config, encode, video, variables = encoder(two_stream=two_stream)
  tokens = encode(video)
  grid = (SIZE // config.static_backbone.stride) ** 2
  assert tokens.shape == (2, FRAMES, grid, config.width)
  assert ("motion_stream" in variables["params"]) == two_stream
  changed = encode(with_frame_replaced(video, 3))
  np.testing.assert_array_equal(changed[:, :3], tokens[:, :3])
  assert np.abs(changed[:, 3:] - tokens[:, 3:]).max() > 1e-3


def test_temporal_window_limits_what_a_frame_reads():
  # One layer, window 2: frame t reads frames t-1 and t, whose motion features read t-2. Not t-3.
  _, encode, video, _ = encoder(temporal_window=2, num_layers=1)
  tokens, changed = encode(video), encode(with_frame_replaced(video, 1))
  np.testing.assert_array_equal(changed[:, 4:], tokens[:, 4:])
  assert np.abs(changed[:, 3] - tokens[:, 3]).max() > 1e-3


def test_packed_examples_do_not_see_each_other():
  _, encode, video, _ = encoder()
  segments = np.array([[1, 1, 1, 2, 2, 2]] * 2)
  packed = encode(video, segments)
  second_alone = encode(np.concatenate([video[:, 3:], video[:, 3:]], axis=1),
                        np.array([[1, 1, 1, 2, 2, 2]] * 2))
  np.testing.assert_allclose(packed[:, 3:], second_alone[:, :3], atol=1e-5)
  np.testing.assert_array_equal(encode(with_frame_replaced(video, 0), segments)[:, 3:], packed[:, 3:])


def test_frame_positions_restart_in_each_example():
  positions = video_encoder.frame_positions(jnp.array([[1, 1, 2, 2, 2, 0]]))
  np.testing.assert_array_equal(positions, [[0, 1, 0, 1, 2, 0]])


@pytest.mark.slow  # over 4 s
def test_too_many_frames_is_a_clear_error():
  config = dataclasses.replace(lrr.lrr_config("tiny").video, max_frames=4)
  with pytest.raises(ValueError, match="max_frames=4"):
    video_encoder.VideoEncoder(config).init(jax.random.key(0), jnp.zeros((1, 5, SIZE, SIZE, 3), jnp.uint8))
