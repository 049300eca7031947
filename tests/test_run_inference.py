"""`run_inference.video_prompt`: a user's video sampled to the run's frames, refused (naming the file) when it
has fewer frames than the run needs or no video stream, instead of repeating one frame into a clip (issue 30)."""
import types

import numpy as np
import pytest
from PIL import Image

from lrr_jax import run_inference
from tests.data import release_fixtures


def fake_run(num_frames: int, resolution: int):
  """What video_prompt reads of a run before its tokenizer: the video shape."""
  return types.SimpleNamespace(config=types.SimpleNamespace(video_shape=lambda: (num_frames, resolution)))


def test_a_one_frame_video_or_an_image_named_avi_is_refused(tmp_path):
  release_fixtures.write_video(tmp_path / "one.avi", np.zeros((1, 32, 32, 3), np.uint8))
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "image.png")
  (tmp_path / "image.avi").write_bytes((tmp_path / "image.png").read_bytes())
  for name in ("one.avi", "image.avi"):
    with pytest.raises(ValueError, match=rf"Video .*{name} has 1 frame, fewer than the 8 needed"):
      run_inference.video_prompt(fake_run(8, 16), tmp_path / name, "Where is the snitch?")


def test_an_audio_file_is_refused(tmp_path):
  release_fixtures.write_audio(tmp_path / "talk.mp4")
  with pytest.raises(ValueError, match=r"Video .*talk.mp4 has no video stream"):
    run_inference.video_prompt(fake_run(8, 16), tmp_path / "talk.mp4", "Where?")
