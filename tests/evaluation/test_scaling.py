"""The scaling table's settings: per-strategy N, the stage beam sweep and scorers as rows; CATER outcomes per
example (the end-to-end table runs in tests/test_main.py)."""
import numpy as np
import pytest

from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.evaluation import evaluator
from lrr_jax import scaling


def test_num_candidates_per_strategy_for_all_or_as_the_paper():
  assert scaling.parse_num_candidates("paper") == {"best_of_n": 10, "sentence_beam": 2, "stage_beam": 4}
  assert scaling.parse_num_candidates("3") == {"best_of_n": 3, "sentence_beam": 3, "stage_beam": 3}
  assert scaling.parse_num_candidates("best_of_n:10,stage_beam:4") == {"best_of_n": 10, "stage_beam": 4}
  assert scaling.parse_num_candidates(None) == {} == scaling.parse_num_candidates("")
  for bad in ("best_of_n:0", "beam:4", "greedy:2", "stage_beam"):
    with pytest.raises(ValueError, match=f"--num_candidates={bad!r}"):
      scaling.parse_num_candidates(bad)


def test_rows_greedy_once_the_others_per_scorer_stage_beam_per_beam():
  rows = scaling.row_settings(["greedy", "best_of_n", "stage_beam"], {"best_of_n": 10, "stage_beam": 4},
                              [1, 2], ["likelihood", "judge"])
  assert [(r["strategy"], r["num_candidates"], r["beam"], r["scorer"]) for r in rows] == [
      ("greedy", 1, 1, None),
      ("best_of_n", 10, None, "likelihood"), ("best_of_n", 10, None, "judge"),
      ("stage_beam", 4, 1, "likelihood"), ("stage_beam", 4, 1, "judge"),
      ("stage_beam", 4, 2, "likelihood"), ("stage_beam", 4, 2, "judge")]
  unset = scaling.row_settings(["sentence_beam"], {}, [None], ["judge"])
  assert unset == [dict(strategy="sentence_beam", num_candidates=None, beam=None, scorer="judge")]
  with pytest.raises(ValueError, match="--scorers=judge,reward"):
    scaling.row_settings(["greedy"], {}, [None], ["judge", "reward"])


def test_cater_outcomes_per_response_average_to_the_scores():
  responses = ["<CONCLUSION> The snitch is at answer 1,2. </CONCLUSION>", "<CONCLUSION> answer 0,0 </CONCLUSION>",
               "no cell here"]
  labels = np.array([1 * 6 + 2, 3 * 6 + 5, 0])
  outcomes = cater_eval.cater_outcomes(responses, labels)
  assert outcomes["top1"].tolist() == [1, 0, 0]
  assert outcomes["l1"].tolist() == [0, 8, cater_eval.GRID_DIAMETER]
  assert outcomes["well_formed"].tolist() == [1, 1, 0]
  scores = evaluator.task_scores("generated_cater", responses, [""] * 3, labels, [{}] * 3)
  assert all(scores[k] == pytest.approx(v.mean()) for k, v in outcomes.items())
  assert scores["chance_top1"] == pytest.approx(1 / 36)
