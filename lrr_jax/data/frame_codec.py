"""How a record's frames are stored: raw uint8 arrays, or each frame encoded as a JPEG or PNG file.

A record with a `frame_format` field ("jpeg" or "png") holds `frames` as bytes[T], one encoded image per frame
(a 224 px frame: ~150 kB raw, ~10-20 kB JPEG at quality 90); a record without one (every dataset written before
the field existed, and the generated worlds, which stay raw so that they are unchanged) holds uint8[T, H, W, 3].
Readers decode only the frames they keep.
"""
import io
from typing import Any, Sequence

import numpy as np
from PIL import Image

FORMATS = ("raw", "jpeg", "png")


def check_format(frame_format: str, jpeg_quality: int = 90, where: str = "frame_format") -> None:
  if frame_format not in FORMATS:
    raise ValueError(f"{where}={frame_format!r}; expected one of {FORMATS}.")
  if frame_format == "jpeg" and not 1 <= jpeg_quality <= 95:
    raise ValueError(f"jpeg_quality={jpeg_quality} must be in [1, 95] (Pillow's useful range).")


def encode(frames: np.ndarray, frame_format: str, jpeg_quality: int = 90) -> np.ndarray:
  """uint8[T, H, W, 3] -> bytes[T] (object array) of JPEG (4:2:0, `jpeg_quality`) or lossless PNG files."""
  check_format(frame_format, jpeg_quality)
  if frame_format == "raw":
    return frames
  encoded = []
  for frame in frames:
    buffer = io.BytesIO()
    if frame_format == "jpeg":
      Image.fromarray(frame).save(buffer, "JPEG", quality=jpeg_quality)
    else:
      Image.fromarray(frame).save(buffer, "PNG", compress_level=6)
    encoded.append(buffer.getvalue())
  return np.array(encoded, dtype=object)


def frame_format(record: dict[str, Any]) -> str:
  """'raw' for a record without a `frame_format` field, else its value."""
  value = record.get("frame_format", "raw")
  return value.decode() if isinstance(value, bytes) else str(value)


def frame_count(record: dict[str, Any], source: str = "record") -> int:
  """How many frames the record holds; ValueError naming `source` if none, or raw frames not [T, H, W, 3]."""
  stored = record["frames"]
  if frame_format(record) == "raw":
    shape = np.shape(stored)
    if len(shape) != 4 or shape[-1] != 3 or shape[0] == 0:
      raise ValueError(f"{source}: frames have shape {shape}; expected [T>0, H, W, 3].")
  elif len(stored) == 0:
    raise ValueError(f"{source} has no frames.")
  return len(stored)


def decode(record: dict[str, Any], indices: Sequence[int] | None = None, source: str = "record") -> np.ndarray:
  """uint8[len(indices), H, W, 3]: the record's frames at `indices` (None: all), decoded if encoded.

  Raises ValueError naming `source` for an unknown format, an image that cannot be decoded, or frames of
  another shape than [T>0, H, W, 3].
  """
  stored, kind = record["frames"], frame_format(record)
  if kind not in FORMATS:
    raise ValueError(f"{source} has frame_format={kind!r}; expected one of {FORMATS}.")
  frame_count(record, source)
  if kind == "raw":
    frames = np.asarray(stored)
    return frames if indices is None else frames[np.asarray(indices)]
  decoded = []
  for i in range(len(stored)) if indices is None else indices:
    try:
      with Image.open(io.BytesIO(stored[i])) as image:
        decoded.append(np.asarray(image.convert("RGB")))
    except OSError as e:
      raise ValueError(f"{source}: frame {i} ({kind}) cannot be decoded: {e}") from e
  if len({frame.shape for frame in decoded}) > 1:
    raise ValueError(f"{source}: frames of different sizes {sorted({f.shape for f in decoded})}.")
  return np.stack(decoded)
