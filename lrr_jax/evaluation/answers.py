"""Answer accuracy from generated text, overall and per group (ACRE split and query type, STAR question type).

The answer is read from each response's `<CONCLUSION>` (`rationales.parse_response`) and compared, as text,
with the reference answer (ACRE: on / off / undetermined; STAR: the option letter). STAR's overall accuracy is
the mean over its question types (`mean_over_group`), as its paper reports it; the pooled accuracy is kept.
"""
import collections
from typing import Sequence

import numpy as np

from lrr_jax.data import rationales

# STAR's question types, as its question ids begin (the builder keeps them as the record's `question_type`).
STAR_QUESTION_TYPES = ("Interaction", "Sequence", "Prediction", "Feasibility")


def answer_outcomes(responses: Sequence[str], answers: Sequence[str]) -> dict[str, np.ndarray]:
  """Per response: accuracy (1: its answer is the reference's, as text) and well_formed (1: it has an answer)."""
  predicted = [rationales.parse_response(text).answer for text in responses]
  correct = [p is not None and p.strip().lower() == a.strip().lower() for p, a in zip(predicted, answers)]
  return {"accuracy": np.array(correct, np.int64).reshape(-1),
          "well_formed": np.array([p is not None for p in predicted], np.int64).reshape(-1)}


def group_means(values: np.ndarray, groups: dict[str, Sequence[str]]) -> dict[str, float]:
  """{'<key>/<value>': the mean of `values` over the records with that value} for each group key."""
  scores = {}
  for key, of_record in groups.items():
    by_value = collections.defaultdict(list)
    for value, outcome in zip(of_record, values.tolist()):
      by_value[value].append(outcome)
    scores.update({f"{key}/{value}": sum(v) / len(v) for value, v in sorted(by_value.items())})
  return scores


def mean_over_group(scores: dict[str, float], key: str, values: Sequence[str]) -> float:
  """The mean of `scores['<key>/<value>']` over the `values` present in `scores` (a value with no records has
  no score and does not count); NaN if none is present."""
  present = [scores[f"{key}/{value}"] for value in values if f"{key}/{value}" in scores]
  return sum(present) / len(present) if present else float("nan")
