"""CATER scores from generated text: top-1 accuracy and L1 grid distance of the snitch's final cell."""
import numpy as np

from lrr_jax.data import rationales
from lrr_jax.data.worlds import cater

GRID_DIAMETER = 2 * (cater.GRID - 1)  # the L1 distance charged for an unreadable answer


def parse_cell(answer: str | None) -> int | None:
  """'row,col' -> row * 6 + col, or None if it is not a cell of the grid."""
  try:
    row, col = (int(x) for x in (answer or "").split(","))
  except ValueError:
    return None
  return row * cater.GRID + col if 0 <= row < cater.GRID and 0 <= col < cater.GRID else None


def cater_outcomes(responses: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
  """Per response: top1 (0/1), l1 distance in grid cells (GRID_DIAMETER when unreadable), well_formed (0/1)."""
  cells = [parse_cell(rationales.parse_response(text).answer) for text in responses]
  readable = np.array([c is not None for c in cells])
  predicted = np.array([c if c is not None else -1 for c in cells])
  distance = np.where(readable, np.abs(predicted // cater.GRID - labels // cater.GRID)
                      + np.abs(predicted % cater.GRID - labels % cater.GRID), GRID_DIAMETER)
  return {"top1": (predicted == labels).astype(np.int64), "l1": distance.astype(np.int64),
          "well_formed": readable.astype(np.int64)}
