"""Which frames of a video to keep: the one rule shared by the release builders and the input pipeline."""
import numpy as np


def evenly_spaced(count: int, num_frames: int) -> np.ndarray:
  """int[num_frames] indices of frames spread over `count` (repeating frames when there are fewer)."""
  return np.linspace(0, count - 1, num_frames).round().astype(int)
