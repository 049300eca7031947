"""Per-record scores of an evaluation, one JSON line per held-out record, so that intervals can resample the
records (`evaluation.intervals`): `<workdir>/eval_examples.jsonl`, written by `lrr_jax.main` beside results.json.

A line: {"index": the record's index in the held-out split, "scores": {metric: value} for each score of
results.json's `eval` that is a mean over records (the file's mean of a metric equals it: CATER's top1, top5,
top1_ranked, l1, well_formed; ACRE's accuracy, well_formed), "groups": {key: value} (ACRE's split and
query_type, STAR's question_type, CATER's snitch_at_end and snitch_moved), "response": the generated text}; a
mixture's lines also name their "dataset". Grounding scores (`evaluation.grounding`) are the record's own shares;
a record without such facts (e.g. no frame where the snitch is covered) has none of that score in its line.
"""
import json
from typing import Any, Sequence

import numpy as np

FILE = "eval_examples.jsonl"


def rows(indices: Sequence[int], scores: dict[str, np.ndarray], groups: dict[str, Sequence[str]],
         responses: Sequence[str]) -> list[dict[str, Any]]:
  """The lines of records `indices`: `scores[metric][i]`, `groups[key][i]` and `responses[i]` of the i-th."""
  for name, values in {**scores, **groups, "responses": responses}.items():
    if len(values) != len(indices):
      raise ValueError(f"{len(values)} values of {name!r} for {len(indices)} records.")
  return [{"index": int(index), "scores": {name: values[i].item() for name, values in scores.items()
                                          if not np.isnan(values[i])},  # NaN: the record has no such facts
           "groups": {key: str(values[i]) for key, values in groups.items()}, "response": responses[i]}
          for i, index in enumerate(indices)]


def write(path, lines: Sequence[dict[str, Any]]) -> None:
  """Write `lines` (`rows`'s) to `path` (a pathlib or epath path) as JSON lines."""
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def read(path) -> list[dict[str, Any]]:
  """The lines of an eval_examples.jsonl; an error names the file and line that is not one."""
  lines = []
  for number, text in enumerate(path.read_text().splitlines(), 1):
    if not text.strip():
      continue
    try:
      line = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{number} is not JSON: {e}") from e
    if not (isinstance(line, dict) and isinstance(line.get("index"), int) and isinstance(line.get("scores"), dict)):
      raise ValueError(f"{path}:{number} is not an evaluated record (an object with an int index and scores).")
    lines.append(line)
  return lines


def has_metric(lines: Sequence[dict[str, Any]], metric: str) -> bool:
  """Whether every line scores `metric`, or some line is in the group it names ('query_type/direct')."""
  key, _, value = metric.partition("/")
  return bool(lines) and (all(metric in line["scores"] for line in lines)
                          or any(value and line["groups"].get(key) == value for line in lines))


def metric_values(lines: Sequence[dict[str, Any]], metric: str, dataset: str | None = None,
                  where: str = "eval_examples.jsonl") -> tuple[np.ndarray, np.ndarray]:
  """(indices int[N], values float[N]) of `metric` by record index (of `dataset` in a mixture's file). A
  group's score, '<group key>/<value>' (ACRE's 'query_type/direct'), is the accuracy of the group's records."""
  chosen = [line for line in lines if dataset is None or line.get("dataset") == dataset]
  name, (key, _, value) = metric, metric.partition("/")
  if value and not any(metric in line["scores"] for line in chosen) and any(key in line["groups"] for line in chosen):
    chosen, name = [line for line in chosen if line["groups"].get(key) == value], "accuracy"
  missing = [line["index"] for line in chosen if name not in line["scores"]]
  if missing or not chosen:
    raise ValueError(f"{where} has no per-record {metric!r}" + (f" of {dataset}" if dataset else "")
                     + (f" (records {missing[:5]}...)" if missing else "") + ".")
  chosen = sorted(chosen, key=lambda line: line["index"])
  indices = np.array([line["index"] for line in chosen])
  if len(set(indices.tolist())) != len(indices):
    raise ValueError(f"{where} holds a record index twice" + (f" in {dataset}" if dataset else "") + ".")
  return indices, np.array([float(line["scores"][name]) for line in chosen])
