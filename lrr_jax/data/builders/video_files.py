"""Reading the frames of released datasets: video files (PyAV) and folders of images, with named errors.

A video is read in two passes: the packets are listed without decoding (their timestamps give the clip's frame
count and which frames to keep), then frames are decoded in order, seeking to the keyframe before each kept frame
when one lies ahead, and only the kept frames are converted and held. Memory is the kept frames, however long the
video; a clip with fewer frames than asked for is refused rather than repeated.
"""
import bisect
import dataclasses
import pathlib

import numpy as np
from PIL import Image

from lrr_jax.data import frame_sampling

MAX_PACKETS = 10_000_000  # video packets listed (a day at 100 fps)
MAX_DECODED_FRAMES = 2048  # frames returned when all are asked for (`num_frames=None`)


@dataclasses.dataclass
class Clip:
  frames: np.ndarray  # uint8[num_frames, resolution, resolution, 3]
  kept: np.ndarray  # int[num_frames]: each frame's index among the clip's frames (from `start`)
  count: int  # frames in the clip
  fps: float


def decode_video(path: pathlib.Path, resolution: int, start: float = 0.0, end: float | None = None,
                 num_frames: int | None = None) -> tuple[list[np.ndarray], float]:
  """Frames of `path` between `start` and `end` seconds, resized to resolution x resolution, and the fps:
  `num_frames` evenly spaced (`sample_video`), or all of them (at most MAX_DECODED_FRAMES)."""
  clip = sample_video(path, resolution, num_frames, start, end)
  return list(clip.frames), clip.fps


def sample_video(path: pathlib.Path, resolution: int, num_frames: int | None, start: float = 0.0,
                 end: float | None = None) -> Clip:
  """`num_frames` frames evenly spaced (`frame_sampling.evenly_spaced`) over those of `path` between `start`
  and `end` seconds (None: all of them, at most MAX_DECODED_FRAMES), decoded and kept one at a time.

  Raises:
    FileNotFoundError: `path` is missing.
    ValueError naming `path`: no video stream (an audio file, a cut MP4), undecodable data, no frames in the
      range, fewer frames than `num_frames`, or more than MAX_DECODED_FRAMES when all are asked for.
  """
  import av  # pylint: disable=g-import-not-at-top
  if not path.is_file():
    raise FileNotFoundError(f"Video {path} is missing.")
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise ValueError(f"Video {path} has no video stream (streams: "
                         f"{[s.type for s in container.streams] or 'none'}); is it audio only, or cut short?")
      stream = container.streams.video[0]
      fps = float(stream.average_rate or 24)
      stamps, keyframes = _packet_times(path, container, stream, start, end)
      kept = _kept_indices(path, len(stamps), num_frames, start, end)
      frames = np.empty((len(kept), resolution, resolution, 3), np.uint8)
      found = _decode_kept(container, stream, stamps, keyframes, kept, frames)
  except av.error.FFmpegError as e:
    raise ValueError(f"Video {path} cannot be decoded: {e}") from e
  if found < len(kept):
    raise ValueError(f"Video {path} decoded {found} of the {len(kept)} frames it lists (damaged or cut short).")
  return Clip(frames, kept, len(stamps), fps)


def _packet_times(path: pathlib.Path, container, stream, start: float, end: float | None
                  ) -> tuple[list[int | None], list[int]]:
  """Timestamps (stream units, presentation order) of the video packets between `start` and `end`, and those
  of keyframes (any keyframe, for seeking); the container is rewound for decoding. Nothing is decoded."""
  stamps, keyframes, total = [], [], 0
  base = float(stream.time_base) if stream.time_base else None
  for packet in container.demux(stream):
    total += packet.pts is not None or packet.size > 0  # not the demuxer's final empty packet
    if packet.size == 0:
      continue
    if len(stamps) >= MAX_PACKETS:
      raise ValueError(f"Video {path} has over {MAX_PACKETS} frames.")
    if packet.pts is not None and packet.is_keyframe:
      keyframes.append(packet.pts)
    t = None if packet.pts is None or base is None else packet.pts * base
    if t is None or (t >= start - 1e-6 and (end is None or t <= end + 1e-6)):
      stamps.append(packet.pts)
  if total < (stream.frames or 0):
    raise ValueError(f"Video {path} holds {total} of the {stream.frames} frames its header lists (cut short?).")
  container.seek(0)
  if None in stamps:  # frames without timestamps: kept by their order, without seeking
    return [None] * len(stamps), []
  return sorted(stamps), sorted(keyframes)


def _kept_indices(path: pathlib.Path, count: int, num_frames: int | None, start: float, end: float | None
                  ) -> np.ndarray:
  """Which of the clip's `count` frames to keep; errors name the file and what was asked."""
  where = f" between {start}s and {end}s" if start or end is not None else ""
  if count == 0:
    raise ValueError(f"Video {path} has no frames{where}.")
  if num_frames is None:
    if count > MAX_DECODED_FRAMES:
      raise ValueError(f"Video {path} has {count} frames{where}, over the {MAX_DECODED_FRAMES} decoded whole; "
                       "ask for num_frames to sample them.")
    return np.arange(count)
  if count < num_frames:
    raise ValueError(f"Video {path} has {count} frame{'s' if count != 1 else ''}{where}, fewer than the "
                     f"{num_frames} needed (refused rather than repeating frames).")
  return frame_sampling.evenly_spaced(count, num_frames)


def _decode_kept(container, stream, stamps: list[int | None], keyframes: list[int], kept: np.ndarray,
                 out: np.ndarray) -> int:
  """Decode the kept frames (increasing, distinct indices) in order into `out` (uint8[len(kept), R, R, 3]);
  before each, a seek to the last keyframe at or before it when that keyframe lies past the frame just decoded
  (never twice to one keyframe). Returns how many were found."""
  rgb = lambda frame: frame.to_ndarray(format="rgb24", width=out.shape[2], height=out.shape[1])
  if stamps[0] is None:  # no timestamps: by decoding order
    found, wanted = 0, {int(index): j for j, index in enumerate(kept)}
    for index, frame in zip(range(int(kept[-1]) + 1), container.decode(stream)):
      if index in wanted:
        out[wanted[index]], found = rgb(frame), found + 1
    return found
  found, frames, position, last_seek, t = 0, container.decode(stream), None, None, 0
  while t < len(kept):
    target = stamps[kept[t]]
    k = bisect.bisect_right(keyframes, target) - 1
    if k >= 0 and keyframes[k] != last_seek and (position is None or keyframes[k] > position):
      container.seek(keyframes[k], stream=stream, backward=True)
      frames, last_seek = container.decode(stream), keyframes[k]
    frame = next(frames, None)
    if frame is None:
      break
    position = frame.pts
    while t < len(kept) and frame.pts is not None and frame.pts >= stamps[kept[t]]:
      if frame.pts == stamps[kept[t]]:
        out[t], found = rgb(frame), found + 1
      t += 1  # found, or passed (a frame missing from the decode is reported by the caller)
  return found


def read_image(path: pathlib.Path, resolution: int) -> np.ndarray:
  if not path.is_file():
    raise FileNotFoundError(f"Image {path} is missing.")
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB").resize((resolution, resolution), Image.BILINEAR))
  except OSError as e:
    raise ValueError(f"Image {path} cannot be decoded: {e}") from e
