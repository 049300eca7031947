"""Answer accuracy from generated text: STAR's overall is the mean over its question types, pooled kept."""
import numpy as np
import pytest

from lrr_jax.evaluation import evaluator


def response(letter: str) -> str:
  return f"<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>r</REASONING><CONCLUSION>So answer {letter}</CONCLUSION>"


def test_star_accuracy_is_the_mean_over_question_types_and_pooled_is_kept():
  # Interaction: 3 of 4 right; Sequence: 0 of 1; Prediction: 1 of 1; Feasibility: 1 of 2 (an unreadable response).
  rows = [("Interaction", "A", "A"), ("Interaction", "B", "B"), ("Interaction", "C", "C"), ("Interaction", "D", "A"),
          ("Sequence", "A", "B"), ("Prediction", "C", "C"), ("Feasibility", "B", "B"), ("Feasibility", "A", None)]
  responses = [response(p) if p else "no conclusion" for _, _, p in rows]
  scores = evaluator.task_scores("star", responses, [a for _, a, _ in rows], np.zeros(len(rows), int),
                                 [{"question_type": q} for q, _, _ in rows])
  assert scores["question_type/Interaction"] == 0.75 and scores["question_type/Feasibility"] == 0.5
  assert scores["accuracy"] == pytest.approx((0.75 + 0.0 + 1.0 + 0.5) / 4)  # 0.5625
  assert scores["accuracy_pooled"] == pytest.approx(5 / 8)
  assert scores["well_formed"] == pytest.approx(7 / 8)


def test_star_mean_counts_only_the_question_types_evaluated():
  rows = [("Prediction", "A", "A"), ("Prediction", "B", "C"), ("Sequence", "D", "D")]
  scores = evaluator.task_scores("star", [response(p) for _, _, p in rows], [a for _, a, _ in rows],
                                 np.zeros(3, int), [{"question_type": q} for q, _, _ in rows])
  assert scores["accuracy"] == pytest.approx((0.5 + 1.0) / 2) and scores["accuracy_pooled"] == pytest.approx(2 / 3)
  assert "question_type/Interaction" not in scores
