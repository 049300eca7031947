"""Generated CATER: determinism, the label against a replay of the actions, containment hides the snitch."""
import dataclasses

import numpy as np
import pytest

from lrr_jax.data.worlds import cater

CONFIG = cater.CaterConfig(num_frames=10, num_objects=6, contain_prob=0.6)


@pytest.fixture(scope="module")
def videos():
  return cater.generate(CONFIG, 48, seed=3)


def test_same_seed_same_bytes_other_seed_other_bytes(videos):
  again = cater.generate(CONFIG, 48, seed=3)
  assert videos.frames.tobytes() == again.frames.tobytes()
  np.testing.assert_array_equal(videos.label, again.label)
  assert cater.generate(CONFIG, 48, seed=4).frames.tobytes() != videos.frames.tobytes()
  assert videos.frames.shape == (48, 10, 32, 32, 3) and videos.frames.dtype == np.uint8


def replay_snitch(video: cater.CaterVideos, n: int) -> tuple[int, int]:
  """The snitch's final cell from its first cell and the action log alone."""
  snitch, holder = tuple(video.cell[n, 0, 0]), None
  for action in video.actions[n]:
    if action.kind == "contain" and action.target == 0:
      holder = action.actor
    elif action.actor == 0 or (holder is not None and action.actor == holder):
      snitch = action.destination
  return snitch


def test_label_is_the_snitch_final_cell(videos):
  for n in range(len(videos)):
    row, col = replay_snitch(videos, n)
    assert videos.label[n] == row * cater.GRID + col, n
    np.testing.assert_array_equal(videos.cell[n, -1, 0], (row, col))
  assert len(set(videos.label.tolist())) > 10  # the answers are spread over the grid


def test_containment_really_hides_the_snitch(videos):
  contained = videos.container[:, :, 0] >= 0
  assert contained.any() and not contained.all()
  assert not videos.visible[:, :, 0][contained].any()
  # Re-render the same worlds with the snitch removed everywhere: where it is contained, no pixel differs.
  rng = np.random.default_rng(0)
  worlds = [cater._simulate(CONFIG, np.random.default_rng(0)) for _ in range(1)]
  shape, color, position, lift, angle, container = (np.stack([w[i] for w in worlds]) for i in range(6))
  origin, cell_px = cater._screen_geometry(CONFIG, 1, rng)
  frames, _ = cater.render(CONFIG, shape, color, position, lift, angle, container, origin, cell_px)
  without = container.copy()
  without[:, :, 0] = 1  # a cone, so the snitch is never drawn
  frames_without, _ = cater.render(CONFIG, shape, color, position, lift, angle, without, origin, cell_px)
  hidden = container[0, :, 0] >= 0
  np.testing.assert_array_equal(frames[0, hidden], frames_without[0, hidden])
  assert (frames[0, ~hidden] != frames_without[0, ~hidden]).any()


def test_visibility_matches_the_pixels(videos):
  gold = np.array(cater.COLORS["gold"], np.float32)
  for n in range(8):
    for t in range(CONFIG.num_frames):
      pixels = videos.frames[n, t].reshape(-1, 3).astype(np.float32)
      ratio = pixels / np.maximum(pixels.max(-1, keepdims=True), 1)
      gold_like = np.abs(ratio - gold / gold.max()).max(-1) < 0.02
      assert gold_like.any() == videos.visible[n, t, 0], (n, t)


def test_moving_camera_pans_the_floor():
  config = dataclasses.replace(CONFIG, moving_camera=True, camera_pan=0.2)
  static, moving = cater.generate(CONFIG, 2, 0), cater.generate(config, 2, 0)
  np.testing.assert_array_equal(static.label, moving.label)  # same worlds, other views
  background = lambda frames: (frames == (90, 90, 100)).all(-1).mean(axis=(-1, -2))
  assert np.ptp(background(static.frames), axis=1).max() < 0.01  # only lifted objects cover it
  assert np.ptp(background(moving.frames), axis=1).min() > 0.03


def test_bad_configs_are_rejected():
  with pytest.raises(ValueError, match="num_cones"):
    cater.CaterConfig(num_objects=2, num_cones=2)
  with pytest.raises(ValueError, match="num_frames=2"):
    cater.CaterConfig(num_frames=2, frames_per_action=2)
