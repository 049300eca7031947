"""95% intervals over training seeds and held-out records (a hierarchical bootstrap), and the papers' orderings
judged by them.

A cell (one configuration) is S runs (seeds) scored on the same N held-out records: per-record values
float[S, N] (`outcomes.metric_values` of each run). Its estimate is the mean over seeds of each run's mean over
records. A bootstrap replicate draws S seeds with replacement and N records with replacement, the same records
for every seed (all runs share the held-out set), and takes the same mean; the interval is the replicates'
2.5th and 97.5th percentiles. A difference between two cells draws the records once per replicate for both
(paired: the same records are hard for both) and each cell's seeds apart (their runs are different models).
"""
import dataclasses
from typing import Sequence

import numpy as np

NUM_RESAMPLES = 2000
LEVEL = 0.95
LOWER_IS_BETTER = ("l1",)  # metrics where a smaller value is the better one (CATER's grid distance)
CLAIMS = ("above", "not_above")


@dataclasses.dataclass(frozen=True)
class Interval:
  mean: float  # the estimate (mean over seeds of the runs' means over records)
  low: float
  high: float


def as_matrix(runs: Sequence[np.ndarray], where: str = "cell") -> np.ndarray:
  """float[S, N]: the runs' per-record values (one 1-D array per seed, all over the same N records)."""
  lengths = sorted({len(np.ravel(run)) for run in runs})
  if not runs or len(lengths) != 1 or lengths[0] == 0:
    raise ValueError(f"{where}: every run must score the same, non-empty held-out records; runs have "
                     f"{[len(np.ravel(run)) for run in runs]} records.")
  return np.stack([np.asarray(run, np.float64).ravel() for run in runs])


def _draws(rng: np.random.Generator, num_resamples: int, size: int) -> np.ndarray:
  """int[R, size]: how often each of `size` items is drawn in each of R resamples of `size` with replacement."""
  drawn = rng.integers(0, size, (num_resamples, size)) + size * np.arange(num_resamples)[:, None]
  return np.bincount(drawn.ravel(), minlength=num_resamples * size).reshape(num_resamples, size)


def _replicates(values: np.ndarray, seed_draws: np.ndarray, record_draws: np.ndarray) -> np.ndarray:
  """float[R]: each replicate's mean over its drawn seeds and records (values float[S, N])."""
  return np.einsum("rs,sn,rn->r", seed_draws, values, record_draws) / values.size


def _interval(mean: float, replicates: np.ndarray, level: float) -> Interval:
  low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
  return Interval(float(mean), float(low), float(high))


def cell_interval(runs: Sequence[np.ndarray], num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                  level: float = LEVEL) -> Interval:
  """A cell's estimate and its `level` interval (runs: per-record values of each seed's run)."""
  values = as_matrix(runs)
  rng = np.random.default_rng(seed)
  seed_draws = _draws(rng, num_resamples, values.shape[0])
  record_draws = _draws(rng, num_resamples, values.shape[1])
  return _interval(values.mean(), _replicates(values, seed_draws, record_draws), level)


def difference_interval(first: Sequence[np.ndarray], second: Sequence[np.ndarray],
                        num_resamples: int = NUM_RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
  """first's estimate minus second's and its interval, records paired (the same N records in both cells)."""
  a, b = as_matrix(first, "first cell"), as_matrix(second, "second cell")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"The cells compared score {a.shape[1]} and {b.shape[1]} records; a paired difference "
                     "needs the same held-out records in both.")
  rng = np.random.default_rng(seed)
  record_draws = _draws(rng, num_resamples, a.shape[1])
  replicates = (_replicates(a, _draws(rng, num_resamples, a.shape[0]), record_draws)
                - _replicates(b, _draws(rng, num_resamples, b.shape[0]), record_draws))
  return _interval(a.mean() - b.mean(), replicates, level)


def verdict(advantage: Interval, claim: str = "above") -> str:
  """Whether a claim about first against second holds, given the interval of first's advantage (first minus
  second, or second minus first for a metric in LOWER_IS_BETTER). "above": holds when the interval lies above 0,
  reversed below 0, else not resolved. "not_above": reversed when the interval lies above 0, else holds."""
  if claim not in CLAIMS:
    raise ValueError(f"Unknown claim {claim!r}; expected one of {CLAIMS}.")
  if claim == "not_above":
    return "reversed" if advantage.low > 0 else "holds"
  return "holds" if advantage.low > 0 else "reversed" if advantage.high < 0 else "not resolved"


@dataclasses.dataclass(frozen=True)
class Ordering:
  """A paper's claim that cell `first` scores above (or, claim "not_above", not above) cell `second`."""
  name: str
  first: str
  second: str
  metric: str
  claim: str = "above"


def judge(ordering: Ordering, first: Sequence[np.ndarray], second: Sequence[np.ndarray],
          num_resamples: int = NUM_RESAMPLES, seed: int = 0) -> dict:
  """The ordering's advantage of first over second (in the metric's better direction), its interval and
  verdict; first, second: per-record values of each run of the two cells."""
  difference = difference_interval(first, second, num_resamples, seed)
  if ordering.metric in LOWER_IS_BETTER:
    difference = Interval(-difference.mean, -difference.high, -difference.low)
  return {**dataclasses.asdict(ordering), "advantage": difference.mean, "low": difference.low,
          "high": difference.high, "verdict": verdict(difference, ordering.claim),
          "seeds": [len(first), len(second)], "records": len(np.ravel(first[0]))}
