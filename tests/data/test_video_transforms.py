"""The pipeline's frame transforms: the resize is antialiased (an independent implementation agrees), and the
colour jitter keeps what the answers depend on."""
import jax
import numpy as np
import pytest

from lrr_jax.data import video_transforms


@pytest.mark.parametrize("size,resolution", [(64, 16), (224, 112), (48, 20), (16, 24)])
def test_resize_matches_jax_antialiased_linear_resize(size, resolution):
  """Pillow's bilinear resize (8-bit) against jax.image.resize(linear, antialias=True) in float: within one
  level of rounding, down (by integer and fractional factors) and up."""
  frames = np.random.default_rng(size).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
  ours = video_transforms.resize(frames, resolution)
  reference = jax.image.resize(frames.astype(np.float32), (2, resolution, resolution, 3), "linear",
                               antialias=True)
  assert ours.shape == (2, resolution, resolution, 3) and ours.dtype == np.uint8
  assert np.abs(ours.astype(np.float32) - np.asarray(reference)).max() < 1.01


def test_resize_averages_detail_away_instead_of_sampling_it():
  """A one-pixel checkerboard shrunk 4x is mid grey (nearest neighbour would give all black or all white)."""
  board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
  frames = np.repeat(board[None, :, :, None], 3, -1)
  assert np.abs(video_transforms.resize(frames, 16).astype(int) - 127.5).max() <= 1
  assert video_transforms.resize(frames, 64) is frames  # the same size: untouched


def test_colour_jitter_is_one_draw_per_video_and_off_at_zero():
  video = np.random.default_rng(0).integers(40, 200, (4, 8, 8, 3), dtype=np.uint8)
  rng = np.random.default_rng(1)
  assert video_transforms.colour_jitter(video, rng, 0.0, 0.0) is video
  assert rng.uniform() == np.random.default_rng(1).uniform()  # nothing drawn
  brighter = video_transforms.colour_jitter(video, np.random.default_rng(2), 0.2, 0.0).astype(float)
  ratio = brighter.sum((1, 2, 3)) / video.sum((1, 2, 3))
  assert np.ptp(ratio) < 0.01 and 0.8 <= ratio[0] <= 1.2 and abs(ratio[0] - 1) > 1e-3  # the same for each frame
  contrasted = video_transforms.colour_jitter(video, np.random.default_rng(3), 0.0, 0.3).astype(float)
  np.testing.assert_allclose(contrasted.mean(), video.mean(), atol=1)  # contrast keeps the mean grey
  order = np.argsort(video.reshape(-1), kind="stable")
  assert (np.diff(contrasted.reshape(-1)[order]) >= 0).all()  # and the order of intensities: no hue change
