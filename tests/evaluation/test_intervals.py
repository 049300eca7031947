"""The hierarchical bootstrap against the binomial's known spread, its coverage of a known mean, and the
orderings' verdicts on a real gap, on identical cells and on a reversed one."""
import numpy as np
import pytest

from lrr_jax.evaluation import intervals


def bernoulli(rng, p: float, n: int = 512) -> np.ndarray:
  return (rng.random(n) < p).astype(float)


def test_one_seed_gives_the_binomial_half_width():
  """p = 0.3 on 512 records: half-width 1.96 * sqrt(0.3 * 0.7 / 512) = 0.040."""
  values = bernoulli(np.random.default_rng(1), 0.3)
  interval = intervals.cell_interval([values])
  expected = 1.96 * np.sqrt(values.mean() * (1 - values.mean()) / 512)
  assert interval.mean == values.mean() and interval.low < interval.mean < interval.high
  assert (interval.high - interval.low) / 2 == pytest.approx(expected, rel=0.12)
  assert expected == pytest.approx(0.040, abs=0.002)


def test_the_interval_covers_the_true_mean_about_95_times_in_100():
  """Three seeds whose accuracies scatter around 0.3 (sd 0.02), 512 shared records each: the interval over
  seeds and records covers the population mean 0.3 in about 95% of draws; one drawing records only would not."""
  rng = np.random.default_rng(0)
  covered, covered_by_records_only, narrower = 0, 0, 0
  for trial in range(100):
    difficulty = rng.random(512)  # a record's difficulty, shared by every seed
    runs = [(difficulty < np.clip(0.3 + rng.normal(0, 0.02), 0, 1)).astype(float) for _ in range(3)]
    interval = intervals.cell_interval(runs, num_resamples=500, seed=trial)
    records_only = intervals.cell_interval(runs[:1], num_resamples=500, seed=trial)
    covered += interval.low <= 0.3 <= interval.high
    covered_by_records_only += records_only.low <= 0.3 <= records_only.high
    narrower += records_only.high - records_only.low < interval.high - interval.low
  assert 88 <= covered <= 100 and covered_by_records_only < covered and narrower >= 70  # 93, 81, 83


def test_a_real_gap_holds_identical_cells_are_not_resolved_and_a_reversed_one_is_named():
  rng = np.random.default_rng(2)
  difficulty = rng.random(512)
  better = [(difficulty < 0.40 + 0.01 * s).astype(float) for s in range(3)]
  worse = [(difficulty < 0.25 + 0.01 * s).astype(float) for s in range(3)]
  gap = intervals.judge(intervals.Ordering("full > direct", "full", "direct", "top1"), better, worse)
  assert gap["verdict"] == "holds" and gap["advantage"] == pytest.approx(0.15, abs=0.03) and gap["low"] > 0.1
  assert gap["seeds"] == [3, 3] and gap["records"] == 512
  same = intervals.judge(intervals.Ordering("a > a", "a", "a", "top1"), better, better)
  assert same["verdict"] == "not resolved" and same["advantage"] == 0 and same["low"] < 0 < same["high"]
  assert intervals.judge(intervals.Ordering("x", "d", "f", "top1"), worse, better)["verdict"] == "reversed"
  noisy = [bernoulli(rng, 0.3) for _ in range(3)]
  assert intervals.judge(intervals.Ordering("x", "a", "b", "top1"), noisy, noisy[::-1])["verdict"] == "not resolved"


def test_lower_is_better_metrics_and_not_above_claims():
  near, far = [np.full(64, 1.0), np.full(64, 1.2)], [np.full(64, 3.0), np.full(64, 2.8)]
  closer = intervals.judge(intervals.Ordering("full > direct", "full", "direct", "l1"), near, far)
  assert closer["verdict"] == "holds" and closer["advantage"] == pytest.approx(1.8) and closer["low"] > 0
  rng = np.random.default_rng(3)
  greedy, sentence = [bernoulli(rng, 0.3)], [bernoulli(rng, 0.3)]
  not_above = intervals.Ordering("sentence not above greedy", "sentence", "greedy", "top1", "not_above")
  assert intervals.judge(not_above, sentence, greedy)["verdict"] == "holds"  # no gap resolved: not above
  assert intervals.judge(not_above, [np.ones(512)], greedy)["verdict"] == "reversed"
  with pytest.raises(ValueError, match="same held-out records"):
    intervals.difference_interval([np.ones(4)], [np.ones(5)])
  with pytest.raises(ValueError, match=r"runs have \[4, 5\] records"):
    intervals.cell_interval([np.ones(4), np.ones(5)])
