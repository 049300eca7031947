"""Encoded frames: PNG round trips exactly, JPEG within a stated tolerance, raw records (no `frame_format`)
read as before, only the frames asked for are decoded, and bad frames are named."""
import numpy as np
import pytest

from lrr_jax.data import frame_codec
from lrr_jax.data import records


def smooth_frames(count: int = 3, size: int = 64) -> np.ndarray:
  """Frames like rendered scenes: gradients and a few flat shapes (what JPEG is made for)."""
  y, x = np.mgrid[:size, :size] / size
  frames = np.stack([np.stack([200 * x, 200 * y, 120 + 60 * np.sin(6 * x + t)], -1) for t in range(count)])
  frames[:, 20:40, 10:30] = (220, 40, 40)
  return frames.astype(np.uint8)


def test_png_round_trips_exactly():
  frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)  # even noise
  record = {"frames": frame_codec.encode(frames, "png"), "frame_format": "png"}
  np.testing.assert_array_equal(frame_codec.decode(record), frames)
  np.testing.assert_array_equal(frame_codec.decode(record, [3, 1, 1]), frames[[3, 1, 1]])


def test_jpeg_at_quality_90_is_within_tolerance_and_smaller():
  """Quality 90 on smooth frames: mean error under 3 levels (of 255), 90% of values within 5 (the rest at
  sharp colour edges, whose chroma JPEG subsamples 4:2:0), in under a quarter of the raw bytes."""
  frames = smooth_frames()
  encoded = frame_codec.encode(frames, "jpeg", 90)
  error = np.abs(frame_codec.decode({"frames": encoded, "frame_format": b"jpeg"}).astype(int) - frames)
  assert error.mean() < 3 and np.percentile(error, 90) <= 5
  assert sum(len(b) for b in encoded) < frames.nbytes / 4


def test_a_raw_record_reads_as_before():
  frames = smooth_frames()
  record = {"frames": frames}
  assert frame_codec.frame_format(record) == "raw" and frame_codec.frame_count(record) == 3
  np.testing.assert_array_equal(frame_codec.decode(record, [2, 0]), frames[[2, 0]])
  assert "frame_format" not in records.features(64, 64)  # raw datasets are written exactly as before


@pytest.mark.parametrize("record,message", [
    ({"frames": np.array([b"not an image"], dtype=object), "frame_format": "jpeg"},
     r"clip 7: frame 0 \(jpeg\) cannot be decoded"),
    ({"frames": np.array([], dtype=object), "frame_format": "png"}, "clip 7 has no frames"),
    ({"frames": np.zeros((2, 4, 4), np.uint8)}, r"clip 7: frames have shape \(2, 4, 4\)"),
    ({"frames": np.zeros((2, 4, 4, 3), np.uint8), "frame_format": "webp"}, "clip 7 has frame_format='webp'"),
])
def test_bad_frames_are_named(record, message):
  with pytest.raises(ValueError, match=message):
    frame_codec.decode(record, source="clip 7")


def test_unknown_formats_and_qualities_are_refused():
  with pytest.raises(ValueError, match="frame_format='gif'"):
    frame_codec.encode(smooth_frames(1), "gif")
  with pytest.raises(ValueError, match="jpeg_quality=100"):
    frame_codec.encode(smooth_frames(1), "jpeg", 100)
