"""Evaluation of a run trained on several datasets: each dataset's own evaluator on its own held-out split.

Scores are `<dataset>/<metric>` (each dataset's own metrics: CATER's top-1 and L1, ACRE's query types, ...)
and `mean_headline`, the mean over the datasets of each one's headline metric (`HEADLINE`); they are not
pooled over records, since the datasets' tasks and sizes differ.
"""
from typing import Any, Callable

from lrr_jax.evaluation import evaluator as evaluator_lib

HEADLINE = {"generated_cater": "top1", "cater": "top1", "something_else": "top1",
            "generated_acre": "accuracy", "acre": "accuracy", "star": "accuracy"}  # STAR: mean over types


class PerDataset:
  """Evaluators by dataset name, called as one: (scores, responses by dataset name)."""

  def __init__(self, evaluators: dict[str, evaluator_lib.Evaluator]):
    self.evaluators = evaluators

  def __call__(self, variables: Any, num_examples: int | None = None,
               should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, float], dict[str, list[str]]]:
    """(scores, responses by dataset name) of `evaluate`."""
    evaluation = self.evaluate(variables, num_examples, should_stop)
    return evaluation.scores, evaluation.responses

  def evaluate(self, variables: Any, num_examples: int | None = None,
               should_stop: Callable[[], bool] | None = None) -> evaluator_lib.Evaluation:
    """Each dataset's scores on its first `num_examples` held-out records (all when None), responses by dataset
    and per-record lines, each naming its dataset. When `should_stop` ends one dataset's evaluation early, the
    datasets after it are skipped and `partial` (1) is added."""
    scores, responses, lines = {}, {}, []
    for name, evaluator in self.evaluators.items():
      own = evaluator.evaluate(variables, num_examples, should_stop)
      responses[name] = own.responses
      lines += [{"dataset": name, **line} for line in own.examples]
      scores.update({f"{name}/{key}": value for key, value in own.scores.items()})
      if own.scores.get("partial"):
        scores["partial"] = 1
        break
    headlines = [scores[f"{name}/{HEADLINE[e.dataset]}"] for name, e in self.evaluators.items()
                 if f"{name}/{HEADLINE.get(e.dataset)}" in scores]
    if headlines:
      scores["mean_headline"] = sum(headlines) / len(headlines)
    return evaluator_lib.Evaluation(scores, responses, lines)
