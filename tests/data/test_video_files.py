"""Videos read streaming (issue 30): the sampled frames equal a full decode's, memory holds only them, and a file
with no video stream, cut short, or with fewer frames than asked for is refused naming the file."""
import os
import pathlib
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from lrr_jax.data import frame_sampling
from lrr_jax.data.builders import video_files
from tests.data import release_fixtures

ROOT = pathlib.Path(__file__).parents[2]


def write_numbered(path: pathlib.Path, count: int, fps: int = 8, gop: int = 4, faststart: bool = False) -> None:
  """MPEG-4 video whose frame t is the gray level 7t (mod 256), with a keyframe every `gop` frames."""
  with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width = stream.height = 32
    stream.pix_fmt, stream.gop_size = "yuv420p", gop
    for t in range(count):
      image = np.full((32, 32, 3), 7 * t % 256, np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())


def decode_all(path: pathlib.Path, resolution: int, start: float, end: float | None) -> list[np.ndarray]:
  """The reference: every frame decoded in order, those timed within [start, end] kept."""
  with av.open(str(path)) as container:
    return [f.to_ndarray(format="rgb24", width=resolution, height=resolution) for f in container.decode(video=0)
            if start - 1e-6 <= f.time and (end is None or f.time <= end + 1e-6)]


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
@pytest.mark.parametrize("num_frames, start, end", [(8, 0.0, None), (5, 2.0, 6.5), (1, 0.0, None), (60, 1.0, None)])
def test_sampled_frames_are_those_of_a_full_decode(tmp_path, suffix, num_frames, start, end):
  path = tmp_path / f"clip{suffix}"
  write_numbered(path, 80)
  every = decode_all(path, 16, start, end)
  clip = video_files.sample_video(path, 16, num_frames, start, end)
  assert clip.count == len(every) and clip.fps == 8.0
  np.testing.assert_array_equal(clip.kept, frame_sampling.evenly_spaced(len(every), num_frames))
  np.testing.assert_array_equal(clip.frames, np.stack([every[i] for i in clip.kept]))
  frames, fps = video_files.decode_video(path, 16, start, end)  # all of them
  np.testing.assert_array_equal(np.stack(frames), np.stack(every))


PEAK_RSS = """
import pathlib, resource, sys
from lrr_jax.data.builders import video_files
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
clip = video_files.sample_video(pathlib.Path(sys.argv[1]), 224, 8)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, clip.frames.shape)
"""


def test_a_long_video_holds_only_the_sampled_frames(tmp_path):
  path = tmp_path / "long.mp4"
  write_numbered(path, 1500, fps=30, gop=30)  # 224 px: 1500 frames decoded whole would be 216 MiB
  done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path)], capture_output=True, text=True, timeout=120,
                        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
  grown, shape = done.stdout.split(" ", 1)
  assert shape.strip() == "(8, 224, 224, 3)", done.stderr[-2000:]
  assert int(grown) < 40 * 2**20, f"decoding grew the process by {int(grown) / 2**20:.0f} MiB"


def test_a_file_without_a_video_stream_is_named(tmp_path):
  release_fixtures.write_audio(tmp_path / "speech.mp4")
  with pytest.raises(ValueError, match=r"Video .*speech.mp4 has no video stream \(streams: \['audio'\]\)"):
    video_files.decode_video(tmp_path / "speech.mp4", 16)


def test_an_mp4_cut_in_half_is_named(tmp_path):
  for name, faststart, message in (("moov_last.mp4", False, "cannot be decoded"),
                                   ("moov_first.mp4", True, r"holds \d+ of the 48 frames its header lists")):
    write_numbered(tmp_path / "whole.mp4", 48, faststart=faststart)
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / name).write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=rf"Video .*{name} {message}"):
      video_files.sample_video(tmp_path / name, 16, 8)


def test_a_clip_with_fewer_frames_than_needed_is_refused_not_repeated(tmp_path):
  write_numbered(tmp_path / "one.avi", 1)
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "image.png")
  (tmp_path / "image.avi").write_bytes((tmp_path / "image.png").read_bytes())
  for name in ("one.avi", "image.avi"):
    with pytest.raises(ValueError, match=rf"Video .*{name} has 1 frame, fewer than the 8 needed"):
      video_files.sample_video(tmp_path / name, 16, 8)
    assert len(video_files.decode_video(tmp_path / name, 16)[0]) == 1  # all frames: the one there is


def test_decoding_all_frames_is_bounded(tmp_path, monkeypatch):
  write_numbered(tmp_path / "clip.avi", 48)
  monkeypatch.setattr(video_files, "MAX_DECODED_FRAMES", 40)
  with pytest.raises(ValueError, match=r"clip.avi has 48 frames, over the 40 decoded whole; ask for num_frames"):
    video_files.decode_video(tmp_path / "clip.avi", 16)
  assert len(video_files.decode_video(tmp_path / "clip.avi", 16, num_frames=8)[0]) == 8
