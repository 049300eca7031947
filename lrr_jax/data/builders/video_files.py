"""Reading the frames of released datasets: video files (PyAV) and folders of images, with named errors."""
import pathlib

import numpy as np
from PIL import Image


def decode_video(path: pathlib.Path, resolution: int, start: float = 0.0, end: float | None = None
                 ) -> tuple[list[np.ndarray], float]:
  """Frames of `path` between `start` and `end` seconds, resized to resolution x resolution, and the fps."""
  import av  # pylint: disable=g-import-not-at-top
  if not path.is_file():
    raise FileNotFoundError(f"Video {path} is missing.")
  try:
    with av.open(str(path)) as container:
      stream = container.streams.video[0]
      fps = float(stream.average_rate or 24)
      frames = [f.to_ndarray(format="rgb24", width=resolution, height=resolution)
                for f in container.decode(video=0)
                if f.time is None or (f.time >= start - 1e-6 and (end is None or f.time <= end + 1e-6))]
  except av.error.FFmpegError as e:
    raise ValueError(f"Video {path} cannot be decoded: {e}") from e
  if not frames:
    raise ValueError(f"Video {path} has no frames between {start}s and {end}s.")
  return frames, fps


def read_image(path: pathlib.Path, resolution: int) -> np.ndarray:
  if not path.is_file():
    raise FileNotFoundError(f"Image {path} is missing.")
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB").resize((resolution, resolution), Image.BILINEAR))
  except OSError as e:
    raise ValueError(f"Image {path} cannot be decoded: {e}") from e

