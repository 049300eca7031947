"""Boxes in rationale text: `(x1,y1,x2,y2)` quantised to `bins` steps per side of the frame, read back, scored.

A coordinate becomes the index of its bin, an integer in [0, bins - 1] (x over the width, y over the
height); reading back gives the bin's centre as a fraction of the side, within half a bin of the original.
Detections read `name (x1,y1,x2,y2)`, e.g. `<detect> cup (3,10,5,12); hand (4,13,6,19).`
"""
import re
from typing import Mapping

import numpy as np

Box = tuple[int, int, int, int]
BOX_PATTERN = re.compile(r"([^;:()<>]*?)\s*\((\d+),(\d+),(\d+),(\d+)\)")


def quantize(box: Mapping[str, float], width: float, height: float, bins: int) -> Box:
  """A box2d {x1, y1, x2, y2} (pixels of a width x height frame) -> its corners' bins (x1, y1, x2, y2)."""
  if bins < 1:
    raise ValueError(f"Box quantisation needs bins >= 1, got {bins}.")
  sides = {"x1": width, "x2": width, "y1": height, "y2": height}
  return tuple(int(np.clip(np.floor(float(box[k]) / sides[k] * bins), 0, bins - 1))  # type: ignore[return-value]
               for k in ("x1", "y1", "x2", "y2"))


def dequantize(box: Box, bins: int) -> tuple[float, float, float, float]:
  """The corners' bin centres as fractions of the frame's sides."""
  return tuple((b + 0.5) / bins for b in box)  # type: ignore[return-value]


def box_text(box: Box) -> str:
  return "({},{},{},{})".format(*box)


def parse_boxes(text: str) -> list[tuple[str, Box]]:
  """Every `name (x1,y1,x2,y2)` in `text`, in order (name stripped; '' when none precedes the box)."""
  return [(m.group(1).strip(), tuple(int(m.group(i)) for i in range(2, 6))) for m in BOX_PATTERN.finditer(text)]


def iou(a: Box, b: Box) -> float:
  """Intersection over union of two quantised boxes, each covering its bins x1..x2, y1..y2 (inclusive)."""
  width = lambda lo, hi: max(0, hi - lo + 1)
  inter = width(max(a[0], b[0]), min(a[2], b[2])) * width(max(a[1], b[1]), min(a[3], b[3]))
  union = width(a[0], a[2]) * width(a[1], a[3]) + width(b[0], b[2]) * width(b[1], b[3]) - inter
  return inter / union if union else 0.0


def detection_iou(response: str, reference: str) -> float | None:
  """Mean IoU of the reference text's boxes against the response's: the k-th box of a name in the reference is
  matched with the k-th box of that name in the response (a missing one scores 0; extra ones are ignored).
  None when the reference holds no boxes (a cell-format dataset)."""
  wanted = parse_boxes(reference)
  if not wanted:
    return None
  found: dict[str, list[Box]] = {}
  for name, box in parse_boxes(response):
    found.setdefault(name, []).append(box)
  seen: dict[str, int] = {}
  total = 0.0
  for name, box in wanted:
    k = seen[name] = seen.get(name, -1) + 1
    total += iou(box, found[name][k]) if k < len(found.get(name, ())) else 0.0
  return total / len(wanted)
