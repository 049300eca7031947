"""Frame transforms of the input pipeline: an antialiased resize and the augmentations that keep the answer.

Only photometric augmentations, the same for every frame of a video (brightness, contrast). The tasks ask
where things are (CATER's cell, Something-Else's and STAR's boxes, quantised in image coordinates), which is
left or right, and which colour an object has, and the rationales name frames: flips, crops (even mild: an
object near a cell's border would cross it), hue or saturation changes, and temporal jitter could each make
the target wrong, so there are none.
"""
import numpy as np
from PIL import Image


def resize(frames: np.ndarray, resolution: int) -> np.ndarray:
  """uint8[T, H, W, 3] -> uint8[T, resolution, resolution, 3], antialiased: Pillow's bilinear (triangle) filter,
  its support widened by the downscaling factor (as `jax.image.resize(..., "linear", antialias=True)` and
  torchvision's `antialias=True`), so every source pixel contributes. Frames already of that size are
  returned as they are."""
  if frames.shape[1:3] == (resolution, resolution):
    return frames
  return np.stack([np.asarray(Image.fromarray(frame).resize((resolution, resolution), Image.BILINEAR))
                   for frame in frames])


def colour_jitter(video: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float
                  ) -> np.ndarray:
  """uint8[T, H, W, 3] with brightness scaled by 1 + U(-brightness, brightness), then contrast (each pixel's
  distance from the video's mean grey) by 1 + U(-contrast, contrast); one draw per video. 0 leaves a
  transform off (and draws nothing)."""
  if not (brightness or contrast):
    return video
  pixels = video.astype(np.float32)
  if brightness:
    pixels = pixels * (1 + brightness * rng.uniform(-1, 1))
  if contrast:
    mean = pixels.mean()
    pixels = mean + (pixels - mean) * (1 + contrast * rng.uniform(-1, 1))
  return np.clip(pixels, 0, 255).astype(np.uint8)
