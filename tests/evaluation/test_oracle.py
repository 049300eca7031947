"""The oracle's check: a right answer first, then right facts minus wrong ones, against the true rationale."""
import pytest

from lrr_jax import run_objects
from lrr_jax.evaluation import oracle
from lrr_jax.inference import scorers

REFERENCE = ("<SUMMARY>Find the snitch.</SUMMARY><CAPTION>frame 0: <detect> snitch 1,4; purple cone 0,1.</CAPTION>"
             "<REASONING>frame 1: <track> snitch 1,4 occluded. frame 2: <reid> purple cone 2,2 covers it. "
             "</REASONING><CONCLUSION>The snitch ends at 2,2. answer 2,2</CONCLUSION>")
CAPTION = "<SUMMARY>Find the snitch.</SUMMARY><CAPTION>"


def test_counts_right_wrong_and_unreadable_facts_and_the_answer():
  text = CAPTION + "frame 0: <detect> snitch 1,4.</CAPTION><REASONING>frame 1: <track> snitch 3,3. frame 2: x"
  assert oracle.fact_counts("generated_cater", text, REFERENCE) == (1, 2, 3)  # frame 2 unreadable: wrong
  assert oracle.reference_score("generated_cater", text, REFERENCE) == 1 - 2
  assert oracle.reference_score("generated_cater", REFERENCE, REFERENCE) == 7 + 3  # (2 x 3 + 1) + 3 right
  wrong_answer = REFERENCE.replace("answer 2,2", "answer 1,4")
  assert oracle.reference_score("generated_cater", wrong_answer, REFERENCE) == 3
  assert not oracle.answer_right("generated_cater", REFERENCE[:REFERENCE.index("<CONCLUSION>")], REFERENCE)
  assert oracle.answer_right("star", "<CONCLUSION>So answer The_Cup</CONCLUSION>", "answer the_cup")
  assert oracle.reference_score("unknown", "answer 1", "answer 1") == 1.0  # no facts read: the answer alone


def test_the_oracle_scorer_prefers_the_candidate_with_right_facts_and_needs_a_reference():
  scorer = scorers.Oracle(lambda text, reference: oracle.reference_score("generated_cater", text, reference))
  candidates = [scorers.Candidate(CAPTION, text, 0.0, True) for text in (
      "frame 0: <detect> snitch 0,0; purple cone 0,1.</CAPTION>",  # the snitch's cell wrong
      "The video shows objects.</CAPTION>",  # no fact
      "frame 0: <detect> snitch 1,4; purple cone 0,1.</CAPTION>")]  # right
  context = scorers.Context(None, None, None, None, "Where is the snitch?", 2, reference=REFERENCE)
  ranking = scorer.rank(context, "CAPTION", candidates, None)
  assert ranking.order == [2, 1, 0] and ranking.scores == [-1.0, 0.0, 1.0]
  with pytest.raises(ValueError, match="needs the example's true rationale"):
    scorer.rank(scorers.Context(None, None, None, None, "?", 2), "CAPTION", candidates, None)


def test_scorers_by_name_include_the_oracle_and_the_release_judge():
  assert {"judge", "likelihood", "oracle", "release_judge"} <= set(run_objects.SCORERS)
