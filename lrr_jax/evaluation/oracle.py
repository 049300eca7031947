"""The oracle scorer's check (ours; issue #27: the world's ground truth checks each candidate's stated facts, the
ceiling of what search can add): a (partial) response against the record's own true rationale.

`reference_score(dataset, response, reference)`: with n the reference's frame facts (`grounding`), right the
facts the response states right, wrong those it states wrong or unreadably (a fact it leaves out is neither),
score = (2n + 1) x [its answer is right] + right - wrong. So a right answer outranks any facts, then more right
facts rank higher, and a wrong fact ranks below none (a search can still state the right one later). The answer
is read as the evaluator reads it (`rationales.parse_response`): CATER's by cell, the others' as text (stripped,
case ignored); a response without one (no conclusion yet) has none right. Never raises on model text.
"""
from lrr_jax.data import rationales
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.evaluation import grounding


def fact_counts(dataset: str, response: str, reference: str) -> tuple[int, int, int]:
  """(right, wrong, n): the response's frame facts stated right, stated wrong or unreadably, and the
  reference's frame facts that `grounding` reads (0s for a dataset without them)."""
  tally = grounding.record_tally(dataset, response, reference)
  if tally is None:
    return 0, 0, 0
  right = tally.counts["frame_fact_acc"][0]
  stated = tally.counts["stated"][0] + tally.counts["malformed"][0]
  return right, stated - right, tally.counts["stated"][1]


def answer_right(dataset: str, response: str, reference: str) -> bool:
  """Whether the response's answer is the reference's."""
  said, true = (rationales.parse_response(text).answer for text in (response, reference))
  if dataset in grounding.CATER_DATASETS:
    cell = cater_eval.parse_cell(said)
    return cell is not None and cell == cater_eval.parse_cell(true)
  return bool(said) and bool(true) and said.strip().lower() == true.strip().lower()


def reference_score(dataset: str, response: str, reference: str) -> float:
  """The oracle's score of `response` (a response so far) against `reference` (see the module)."""
  right, wrong, facts = fact_counts(dataset, response, reference)
  return float((2 * facts + 1) * answer_right(dataset, response, reference) + right - wrong)
