"""A mixture's evaluation: each dataset's own evaluator and metrics, `<dataset>/<metric>`, and the summary."""
import pytest

from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax.evaluation import mixture


class FakeEvaluator:
  """Scores as given; records how it was called; stops early (partial) when `should_stop` says so."""

  def __init__(self, dataset: str, scores: dict, responses: list[str]):
    self.dataset, self.scores, self.responses, self.calls = dataset, scores, responses, []

  def evaluate(self, variables, num_examples=None, should_stop=None):
    self.calls.append((variables, num_examples))
    responses = self.responses[:1] if should_stop is not None and should_stop() else self.responses
    scores = dict(self.scores, **({"num_examples": 1, "partial": 1} if len(responses) < len(self.responses) else {}))
    lines = [{"index": i, "scores": {"hit": 1}, "groups": {}, "response": r} for i, r in enumerate(responses)]
    return evaluator_lib.Evaluation(scores, responses, lines)


def evaluators():
  return {"cater": FakeEvaluator("cater", {"top1": 0.5, "l1": 1.5}, ["a", "b"]),
          "star": FakeEvaluator("star", {"accuracy": 0.25, "accuracy_pooled": 0.3}, ["c"]),
          "acre/iid": FakeEvaluator("acre", {"accuracy": 0.6, "query_type/direct": 1.0}, ["d"])}


def test_each_dataset_is_scored_by_its_own_evaluator_and_the_headlines_are_averaged():
  parts = evaluators()
  scores, responses = mixture.PerDataset(parts)({"params": 1}, 8)
  assert scores == {"cater/top1": 0.5, "cater/l1": 1.5, "star/accuracy": 0.25, "star/accuracy_pooled": 0.3,
                    "acre/iid/accuracy": 0.6, "acre/iid/query_type/direct": 1.0,
                    "mean_headline": pytest.approx((0.5 + 0.25 + 0.6) / 3)}
  assert responses == {"cater": ["a", "b"], "star": ["c"], "acre/iid": ["d"]}
  assert all(e.calls == [({"params": 1}, 8)] for e in parts.values())
  lines = mixture.PerDataset(evaluators()).evaluate({"params": 1}, 8).examples
  assert [(line["dataset"], line["index"], line["response"]) for line in lines] == [
      ("cater", 0, "a"), ("cater", 1, "b"), ("star", 0, "c"), ("acre/iid", 0, "d")]


def test_a_stop_ends_the_evaluation_at_the_dataset_it_stopped():
  parts = evaluators()
  scores, responses = mixture.PerDataset(parts)({}, should_stop=lambda: True)
  assert scores["partial"] == 1 and scores["cater/partial"] == 1 and list(responses) == ["cater"]
  assert not parts["star"].calls and scores["mean_headline"] == 0.5
