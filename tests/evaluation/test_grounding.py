"""Grounding metrics on hand-written responses (right, wrong, missing, malformed facts) with values counted by
hand, and every generated world's true rationale scored against itself (all right)."""
import numpy as np
import pytest

from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.evaluation import grounding
from lrr_jax.evaluation import outcomes
from lrr_jax.evaluation import results_table

CATER_TRUE = ("<SUMMARY>s</SUMMARY><CAPTION>frame 0: <detect> snitch 4,5; red cone 3,2; blue cube 0,1.</CAPTION>"
              "<REASONING>frame 1: <track> snitch 4,5. frame 2: <track> snitch hidden; <reid> red cone 4,5 covers "
              "it. frame 3: <track> snitch hidden; <reid> red cone 2,2 covers it. </REASONING>"
              "<CONCLUSION>The snitch ends at 2,2. answer 2,2</CONCLUSION>")
CATER_WRONG = ("<CAPTION>frame 0: <detect> snitch 4,5; red cone 3,3; blue cube 0,1.</CAPTION><REASONING>frame 1: "
               "<track> snitch 4,4. frame 2: <track> snitch banana. </REASONING><CONCLUSION>answer 2,2</CONCLUSION>")
CATER_GARBAGE = "garbage <CAPTION> frame <track> snitch 4,5 </REASONING> answer"


def test_cater_facts_right_wrong_missing_and_malformed():
  responses = [CATER_TRUE, CATER_WRONG, CATER_GARBAGE]
  correct = cater_eval.cater_outcomes(responses, np.array([14, 14, 14]))["top1"]
  result = grounding.evaluate("generated_cater", responses, [CATER_TRUE] * 3, [CATER_TRUE] * 3, correct)
  s = result.scores
  # record 1: frame 0 right (detections 2 of 3), frame 1 wrong, frame 2 malformed, frame 3 missing
  expected = {"frame_fact_acc": 5 / 12, "detect_cell_acc": 5 / 9, "track_cell_acc": 1 / 3, "reid_acc": 2 / 6,
              "frame0_acc": 2 / 3, "frame1_acc": 1 / 3, "frame2_acc": 1 / 3, "frame3_acc": 1 / 3,
              "stated": 6 / 12, "missing": 5 / 12, "malformed": 1 / 12, "num_facts": 12}
  assert {k: s[f"grounding/{k}"] for k in expected} == pytest.approx(expected)
  assert s["top1/contained_at_end"] == pytest.approx(2 / 3) and s["count/contained_at_end"] == 3
  assert s["top1/moved"] == pytest.approx(2 / 3) and "top1/never_moved" not in s
  assert result.per_record["grounding/frame_fact_acc"].tolist() == [1.0, 0.25, 0.0]
  assert result.per_record["grounding/malformed"].tolist() == [0.0, 0.25, 0.0]
  assert result.groups == {"snitch_at_end": ["contained"] * 3, "snitch_moved": ["moved"] * 3}


def test_facts_count_outside_stage_tags_but_not_in_the_conclusion():
  response = ("<SUMMARY>s</SUMMARY> frame 0: <detect> snitch 4,5. <REASONING>frame 1: <track> snitch 4,5. "
              "<CONCLUSION>frame 2: <track> snitch hidden; <reid> red cone 4,5 covers it. answer 2,2</CONCLUSION>")
  s = grounding.evaluate("generated_cater", [response], [CATER_TRUE]).scores
  assert (s["grounding/frame0_acc"], s["grounding/frame1_acc"], s["grounding/frame2_acc"]) == (1, 1, 0)
  assert s["grounding/detect_cell_acc"] == pytest.approx(1 / 3) and s["grounding/missing"] == 0.5


def test_an_unreadable_object_or_cell_is_wrong_and_the_rest_still_counts():
  response = ("<CAPTION>frame 0: <detect> snitch 4,5; red cone; blue cube 0,1.</CAPTION><REASONING>frame 1: "
              "<track> snitch 99999999999,5. frame 2: <track> snitch hidden; <reid> red cone 4,5 covers it. "
              "frame 3: <detect> snitch 2,2.</REASONING>")
  s = grounding.evaluate("generated_cater", [response], [CATER_TRUE]).scores
  assert (s["grounding/detect_cell_acc"], s["grounding/frame0_acc"], s["grounding/frame1_acc"]) == (2 / 3, 1, 0)
  assert (s["grounding/reid_acc"], s["grounding/frame3_acc"]) == (0.5, 1)  # frame 3: the right cell, not a reid
  assert (s["grounding/stated"], s["grounding/malformed"], s["grounding/missing"]) == (0.75, 0.25, 0)


def test_cater_cases_from_the_true_rationale():
  visible = "frame 0: <detect> snitch 1,1; red cone 3,2. frame 1: <track> snitch 1,1. "
  occluded = "frame 0: <detect> snitch 1,1. frame 1: <track> snitch 2,1 occluded. "
  assert grounding.cater_cases(visible) == {"snitch_at_end": "visible", "snitch_moved": "never_moved"}
  assert grounding.cater_cases(occluded) == {"snitch_at_end": "occluded", "snitch_moved": "moved"}
  assert grounding.cater_cases("answer 1,1") == {}
  result = grounding.evaluate("cater", ["", "", ""], [visible, occluded, CATER_TRUE], [visible, occluded, CATER_TRUE],
                              np.array([1, 0, 1]))
  s = result.scores
  assert (s["top1/visible_at_end"], s["top1/occluded_at_end"], s["top1/contained_at_end"]) == (1.0, 0.0, 1.0)
  assert (s["top1/never_moved"], s["count/never_moved"], s["top1/moved"], s["count/moved"]) == (1.0, 1, 0.5, 2)
  assert s["grounding/frame_fact_acc"] == 0.0 and s["grounding/missing"] == 1.0  # nothing stated: all wrong
  # a record with no covered frame has no reid score of its own
  assert np.isnan(result.per_record["grounding/reid_acc"][:2]).all()


ACRE_TRUE = ("<CAPTION>frame 0: <detect> red metal cube; light on. frame 1: <detect> gray rubber cylinder, blue "
             "rubber sphere; light off. </CAPTION><REASONING>red metal cube: blicket: alone, the light is on. gray "
             "rubber cylinder: not a blicket: the light is off with it. blue rubber sphere: not a blicket: the "
             "light is off with it. frame 2: <detect> blue rubber sphere. </REASONING><CONCLUSION>The light is off. "
             "answer off</CONCLUSION>")


def test_acre_panels_lights_and_statuses():
  wrong = ("<CAPTION>frame 0: <detect> red metal cube; light off. frame 1: <detect> blue rubber sphere, gray rubber "
           "cylinder; light off. </CAPTION><REASONING>red metal cube: blicket: alone. gray rubber cylinder: "
           "undetermined. frame 2: <detect> </REASONING><CONCLUSION>answer off</CONCLUSION>")
  malformed = "<CAPTION>frame 0: light on. frame 9: <detect> x.</CAPTION> answer on"
  s = grounding.evaluate("generated_acre", [wrong, malformed, ACRE_TRUE], [ACRE_TRUE] * 3).scores
  # wrong: frame 0's light wrong, frame 1 right (in another order), frame 2 states no object; statuses 1 of 3
  expected = {"frame_fact_acc": (1 + 0 + 3) / 9, "detect_acc": (3 + 0 + 4) / 12, "light_acc": (1 + 0 + 2) / 6,
              "status_acc": (1 + 0 + 3) / 9, "frame0_acc": 1 / 3, "frame1_acc": 2 / 3, "frame2_acc": 1 / 3,
              "stated": 6 / 9, "missing": 2 / 9, "malformed": 1 / 9, "num_facts": 9}
  assert {k: s[f"grounding/{k}"] for k in expected} == pytest.approx(expected)
  assert not any(k.startswith("top1/") for k in s)  # ACRE's answer by query type is the evaluator's


def test_reidentifications_right_wrong_and_missing_on_acre_something_else_and_star():
  """`reid_acc`: an object re-identified right names the same earlier frames at the same frame."""
  acre_true = ACRE_TRUE.replace("frame 2: <detect> blue rubber sphere. ",
                                "frame 2: <detect> blue rubber sphere, red metal cube. <reid> blue rubber sphere as "
                                "in frames 1; red metal cube as in frames 0, 1. ")
  acre_said = acre_true.replace("as in frames 0, 1", "as in frames 0")  # the cube's frames wrong, the sphere right
  result = grounding.evaluate("generated_acre", [acre_said, acre_true, ACRE_TRUE], [acre_true] * 3)
  assert result.scores["grounding/reid_acc"] == pytest.approx((1 + 2 + 0) / 6)  # the third states no <reid>
  assert list(result.per_record["grounding/frame_fact_acc"][:2]) == [1, 1]  # panel facts: as without <reid>
  se_true = ("frame 0: <detect> cup 1,1. frame 1: <detect> nothing. frame 2: <detect> cup 2,2. <reid> cup as in "
             "frames 0. ")
  for said, expected in ((se_true, 1.0), (se_true.replace("frames 0.", "frames 1."), 0.0),
                         (se_true.replace("<reid> cup as in frames 0. ", ""), 0.0),
                         ("frame 2: <reid> cup as in frames 0.", 1.0)):
    assert grounding.evaluate("something_else", [said], [se_true]).scores["grounding/reid_acc"] == expected, said
  star_true = ("frame 0: <detect> cup. frame 1: <detect> person. frame 3: <detect> cup, person. <reid> cup as in "
               "frames 0. ")
  star_said = star_true.replace("<reid> cup as in frames 0", "<reid> person as in frames 1")  # the wrong object
  assert grounding.evaluate("star", [star_said], [star_true]).scores["grounding/reid_acc"] == 0.0
  assert grounding.evaluate("star", [star_true], [star_true]).scores["grounding/reid_acc"] == 1.0


def test_boxes_by_iou_and_tracks():
  true = ("<CAPTION>frame 0: <detect> hand (0,0,3,3); cup (4,4,7,7). frame 1: <detect> nothing. </CAPTION>"
          "<REASONING><track> hand (0,0,3,3) -> (1,1,4,4). </REASONING><CONCLUSION>answer 3</CONCLUSION>")
  said = ("<CAPTION>frame 0: <detect> hand (0,0,3,2); cup (6,6,7,7). frame 1: <detect> cup (1,1,2,2). </CAPTION>"
          "<REASONING><track> hand (0,0,3,3) -> (1,1,4,4). </REASONING><CONCLUSION>answer 3</CONCLUSION>")
  s = grounding.evaluate("something_else", [said], [true]).scores  # hand IoU 0.75, cup 0.25
  assert (s["grounding/detect_box_acc"], s["grounding/frame_fact_acc"], s["grounding/track_box_acc"]) == (0.5, 0, 1)


def test_names_only_detections_of_star():
  true = "frame 0: <detect> person, cup. person holding cup. frame 2: <detect> nothing. "
  said = "frame 0: <detect> cup, person, towel. frame 2: <detect> nothing. answer A"
  s = grounding.evaluate("star", [said], [true]).scores
  assert (s["grounding/detect_acc"], s["grounding/frame0_acc"], s["grounding/frame2_acc"]) == (1.0, 0.0, 1.0)


@pytest.mark.parametrize("text", ["", "frame", "frame 99999999999999999999: <detect> snitch 9,9", "<detect>;;;.",
                                  "<REASONING>frame 1: <track> snitch hidden; <reid> covers it", "\x00 <CAPTION>"])
def test_malformed_text_never_raises(text):
  for dataset in ("generated_cater", "generated_acre", "something_else", "star", "direct_only"):
    result = grounding.evaluate(dataset, [text], [CATER_TRUE if "cater" in dataset else ACRE_TRUE], [text],
                                np.array([0]))
    assert all(0.0 <= v <= 12 for v in result.scores.values())


def test_true_rationales_of_the_generated_worlds_score_one():
  videos = cater.generate(cater.CaterConfig(num_objects=4, num_cones=1), 8, seed=3)
  truth = [cater.rationale_example(videos, n).response_text for n in range(8)]
  no_tags = [cater.rationale_example(videos, n, "no_tags").response_text for n in range(8)]
  s = grounding.evaluate("generated_cater", no_tags, truth).scores
  assert all(v == 1.0 for k, v in s.items() if k.endswith("acc") or k.endswith("stated")), s
  problems = acre.generate(acre.AcreConfig(), 3, seed=0)
  truth = [acre.rationale_example(p, q).response_text for p in problems for q in range(4)]
  s = grounding.evaluate("generated_acre", truth, truth).scores
  assert all(v == 1.0 for k, v in s.items() if k.endswith("acc") or k.endswith("stated")), s


def test_table_rows_fold_frames_facts_and_cases():
  scores = {"top1": 0.5, "grounding/frame_fact_acc": 0.25, "grounding/frame0_acc": 1.0, "grounding/frame1_acc": 0.0,
            "grounding/stated": 0.5, "grounding/missing": 0.5, "grounding/malformed": 0.0, "grounding/num_facts": 8,
            "top1/moved": 0.0, "count/moved": 3, "top1/never_moved": 1.0, "count/never_moved": 1}
  assert results_table.table_rows(scores) == [
      ("top1", "0.500"), ("grounding/frame_fact_acc", "0.250"), ("grounding/frame_acc t=0..1", "1.00 0.00"),
      ("grounding/stated / missing / malformed", "0.50 / 0.50 / 0.00 of 8 facts"),
      ("top1 by case (records)", "moved 0.00 (3); never_moved 1.00 (1)")]


def test_a_record_without_a_score_leaves_it_out_of_its_line():
  lines = outcomes.rows([0, 1], {"grounding/reid_acc": np.array([np.nan, 0.5])}, {}, ["a", "b"])
  assert [line["scores"] for line in lines] == [{}, {"grounding/reid_acc": 0.5}]


def test_training_curves_show_the_grounding_of_the_evaluations_during_training(tmp_path):
  from lrr_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  from lrr_jax.train import metrics  # pylint: disable=g-import-not-at-top
  writer = metrics.MetricWriter(tmp_path)
  writer.write_scalars(2, {"loss": 1.0, "eval/grounding/frame_fact_acc": 0.5, "eval/top1": 0.25})
  writer.close()
  figure = plots.training_curves(metrics.read_metrics(tmp_path))
  assert [a.get_title() for a in figure.axes if a.lines] == [
      "loss", "held-out: snitch's cell right (frame facts)", "held-out top-1"]


@pytest.mark.parametrize("box_bins", [0, 32])
def test_true_rationales_of_the_release_builders_score_one(box_bins):
  from lrr_jax.data.builders import something_else  # pylint: disable=g-import-not-at-top
  from lrr_jax.data.builders import star  # pylint: disable=g-import-not-at-top
  box = lambda x: {"box2d": {"x1": x, "y1": 10, "x2": x + 30, "y2": 50}}
  frame_boxes = [[{**box(10), "category": "hand"}, {**box(60), "category": "cup"}], [],
                 [{**box(40), "category": "hand"}]]
  example = something_else.something_else_example({"template": "Pushing [something]"}, 3, frame_boxes, (100, 80),
                                                  "full", box_bins)
  s = grounding.evaluate("something_else", [example.response_text], [example.response_text]).scores
  place = "box" if box_bins else "cell"
  assert (s[f"grounding/detect_{place}_acc"], s[f"grounding/track_{place}_acc"], s["grounding/frame_fact_acc"],
          s["grounding/num_facts"], s["grounding/reid_acc"]) == (1, 1, 1, 3, 1)  # the hand back at frame 2
  assert "frame 2: <detect> hand" in example.response_text and "<reid> hand as in frames 0. " in example.response_text
  question = {"question_id": "Interaction_T1_7", "question": "What?", "answer": "b",
              "choices": [{"choice": "a"}, {"choice": "b"}],
              "situations": {"3": {"bbox_labels": ["o1", "o2"], "rel_pairs": [["o1", "o2"]], "rel_labels": ["r1"],
                                   "actions": ["a1"]}, "9": {"bbox_labels": []}, "13": {"bbox_labels": ["o2"]}}}
  example = star.star_example(question, np.array([0, 4, 8, 12]), 1.0, 0.0, {"o1": "person", "o2": "cup"}, "full")
  assert "frame 3: <detect> cup. <reid> cup as in frames 0. " in example.response_text  # back after keyframe 9
  s = grounding.evaluate("star", [example.response_text], [example.response_text]).scores
  assert (s["grounding/detect_acc"], s["grounding/frame_fact_acc"], s["grounding/num_facts"],
          s["grounding/reid_acc"]) == (1, 1, 3, 1)
