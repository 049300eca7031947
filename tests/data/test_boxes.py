"""Something-Else boxes as quantised (x1, y1, x2, y2) in rationale text, read back by `lrr_jax.data.boxes`."""
import numpy as np
import pytest

from lrr_jax.data import boxes
from lrr_jax.data import rationales
from lrr_jax.data.builders import something_else


@pytest.mark.parametrize("bins", [6, 32, 100])
def test_boxes_round_trip_through_text_within_half_a_bin(bins):
  rng = np.random.default_rng(bins)
  width, height = 96, 64
  for _ in range(50):
    x1, x2 = np.sort(rng.uniform(0, width, 2))
    y1, y2 = np.sort(rng.uniform(0, height, 2))
    box = dict(x1=x1, y1=y1, x2=x2, y2=y2)
    text = f"frame 2: <detect> red cup {boxes.box_text(boxes.quantize(box, width, height, bins))}; hand 0,1."
    [(name, read)] = boxes.parse_boxes(text)  # the cell `0,1` is not a box
    assert name == "red cup" and all(0 <= b < bins for b in read)
    fractions = np.array(boxes.dequantize(read, bins))
    original = np.array([x1 / width, y1 / height, x2 / width, y2 / height])
    assert np.all(np.abs(fractions - original) <= 0.5 / bins + 1e-12)


def test_box_corners_on_the_frame_edge_stay_in_range_and_iou_counts_bins():
  assert boxes.quantize(dict(x1=0, y1=0, x2=96, y2=64), 96, 64, 10) == (0, 0, 9, 9)
  assert boxes.iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
  assert boxes.iou((0, 0, 1, 1), (1, 0, 2, 1)) == pytest.approx(2 / 6)  # one column of two shared
  assert boxes.iou((0, 0, 0, 0), (3, 3, 4, 4)) == 0.0


def test_something_else_rationale_writes_quantised_boxes_that_parse_back():
  video = {"template": "Moving [something] from left to right"}
  frame_boxes = [[{"box2d": {"x1": 4 + 8 * t, "x2": 12 + 8 * t, "y1": 28, "y2": 36}, "category": "cup"}]
                 for t in range(3)]
  example = something_else.something_else_example(video, 93, frame_boxes, (96, 64), "full", box_bins=16)
  parsed = rationales.parse_response(example.response_text)
  assert parsed.problems == [] and parsed.answer == "93"
  found = boxes.parse_boxes(parsed.stages["CAPTION"])
  assert found == [("cup", boxes.quantize(b[0]["box2d"], 96, 64, 16)) for b in frame_boxes]
  assert found[0][1] == (0, 7, 2, 9)  # x 4/96*16 = 0.67, y 28/64*16 = 7, x2 12/96*16 = 2, y2 36/64*16 = 9
  assert "<track> cup (0,7,2,9) -> (3,7,4,9)" in parsed.stages["REASONING"]  # x 20/96*16 = 3.3, 28/96*16 = 4.7
  cells = something_else.something_else_example(video, 93, frame_boxes, (96, 64), "full")  # default: cells
  assert "cup 3,0" in cells.response_text and not boxes.parse_boxes(cells.response_text)


def test_something_else_builder_configs_name_their_bins():
  assert something_else.builder_config("default").box_bins == 0
  assert something_else.builder_config("boxes").box_bins == something_else.BOX_BINS
  assert something_else.builder_config("boxes64").box_bins == 64
  for bad in ("boxes1", "boxesx", "cells"):
    with pytest.raises(ValueError, match="Unknown Something-Else builder config"):
      something_else.builder_config(bad)


def test_detection_iou_matches_boxes_by_name_and_order_and_the_evaluator_reports_it():
  reference = "frame 0: <detect> cup (0,0,1,1); hand (2,2,3,3). frame 1: <detect> cup (1,0,2,1); hand (2,2,3,3)."
  assert boxes.detection_iou(reference, reference) == 1.0
  shifted = "frame 0: <detect> hand (2,2,3,3); cup (1,0,2,1). frame 1: <detect> cup (1,0,2,1)."
  # cup#0 2/6, hand#0 1, cup#1 1, hand#1 missing 0
  assert boxes.detection_iou(shifted, reference) == pytest.approx((2 / 6 + 1 + 1 + 0) / 4)
  assert boxes.detection_iou("no boxes", "frame 0: <detect> cup 1,2.") is None  # cells: no box score
  from lrr_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  scores = evaluator.task_scores("something_else", [reference, shifted], ["3", "3"], np.zeros(2, int), [{}, {}],
                                 [reference, reference])
  assert scores["box_iou"] == pytest.approx((1 + (2 / 6 + 2) / 4) / 2)
  assert "box_iou" not in evaluator.task_scores("something_else", ["a"], ["3"], np.zeros(1, int), [{}], ["b 1,2"])
