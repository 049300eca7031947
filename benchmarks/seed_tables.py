"""`benchmarks.reproduce --seeds`: every training cell of a table run once per seed on one generated world; each
cell the mean over seeds of the runs' means over held-out records, with a 95% interval over seeds and records
(`lrr_jax.evaluation.intervals`), and the papers' orderings between cells (`tables.ORDERINGS`) judged.

The run of seed s: <sweep_dir>/<config stem>/<sweep run name>,seed=<s>, trained with --config.seed=<s> (its
initialisation and data order) and --config.data.world_seed=WORLD_SEED (one world, one held-out set for all).
Unless given: --config.data.num_eval=512, --config.eval.every=0, --config.data.data_dir=<sweep_dir>/data.
A run is done when its results.json names its per-record scores (`lrr_jax.evaluation.outcomes`); a finished
run without them (written before they were) is evaluated again by `lrr_jax.main`, training nothing.

Writes <out>/<table>_seeds.{json,md,png} and <out>/orderings.{json,md} (other tables' orderings there are kept).
"""
import dataclasses
import json
import pathlib
from typing import Any, Sequence

import numpy as np
from matplotlib import figure

from benchmarks import tables
from launch import sweep
from lrr_jax.evaluation import intervals
from lrr_jax.evaluation import outcomes

WORLD_SEED = 0
DEFAULTS = {"data.num_eval": "512", "eval.every": "0"}  # and data.data_dir: <sweep_dir>/data


def parse_seeds(text: str) -> list[int]:
  """'3' -> [0, 1, 2] (a count); '0,2,5' -> [0, 2, 5], '2,' -> [2] (the seeds)."""
  try:
    seeds = [int(s) for s in text.split(",") if s.strip()] if "," in text else list(range(int(text)))
  except ValueError as e:
    raise ValueError(f"--seeds={text!r}: expected a count (3) or seeds (0,1,2).") from e
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds={text!r}: expected a positive count or distinct seeds >= 0.")
  return seeds


def overrides(extra: Sequence[str], sweep_dir: pathlib.Path) -> list[str]:
  """The --config.* flags every run gets: `extra`, then DEFAULTS and the shared data directory unless given."""
  given = {flag.split("=", 1)[0] for flag in extra}
  defaults = {**DEFAULTS, "data.data_dir": str(sweep_dir / "data")}
  return list(extra) + [f"--config.{k}={v}" for k, v in defaults.items() if f"--config.{k}" not in given]


def seed_runs(table: str, sweep_dir: pathlib.Path, seeds: Sequence[int]) -> list[tuple[str, int, sweep.Run]]:
  """(cell name, seed, run) of every cell of `table` and seed, cell by cell."""
  spec = tables.TABLES[table]
  runs = []
  for run in sweep.expand(spec.config, sweep_dir / pathlib.Path(spec.config).stem):
    if spec.keep(tables.labels(run.name)):
      for seed in seeds:
        name = f"{run.name},seed={seed}"
        runs.append((tables.cell_name(table, tables.labels(run.name)), seed, sweep.Run(
            name, run.config, {**run.overrides, "seed": seed, "data.world_seed": WORLD_SEED},
            run.workdir.parent / name)))
  return runs


def examples_file(run: sweep.Run) -> pathlib.Path | None:
  """The run's eval_examples.jsonl if its results.json names one that exists (else None)."""
  named = (sweep.read_results(run) or {}).get("eval_examples")
  path = run.workdir / named["file"] if isinstance(named, dict) else None
  return path if path is not None and path.is_file() else None


def run_minutes(results: dict[str, Any]) -> tuple[float | None, float | None]:
  """(minutes of the start that trained the run, minutes of its latest evaluation if that trained nothing)."""
  entries = results.get("earlier_results", []) + [results]
  trained = [e for e in entries if not e.get("evaluated_only")]
  return (trained[-1].get("minutes") if trained else None,
          results.get("minutes") if results.get("evaluated_only") else None)


def read_run(cell: str, seed: int, run: sweep.Run, metrics: Sequence[str], failed: Sequence[str]) -> dict:
  """A run's status, minutes and (when done) per-record values of each metric: {metric: (indices, values)}."""
  path = examples_file(run)
  record = {"cell": cell, "seed": seed, "workdir": str(run.workdir),
            "status": "done" if path else "failed" if run.name in failed else "missing"}
  if path:
    results, lines = sweep.read_results(run), outcomes.read(path)
    record["minutes"], record["eval_minutes"] = run_minutes(results)
    record["values"] = {m: outcomes.metric_values(lines, m, where=str(path)) for m in metrics
                        if outcomes.has_metric(lines, m)}  # e.g. a query type the split lacks: none
  return record


def cell_values(runs: Sequence[dict], metric: str) -> list[np.ndarray]:
  """The done runs' per-record values of `metric`, checked to be over the same records ([]: a run lacks it)."""
  done = [r for r in runs if r["status"] == "done"]
  if not all(metric in r["values"] for r in done):
    return []
  for run in done[1:]:
    if not np.array_equal(run["values"][metric][0], done[0]["values"][metric][0]):
      raise ValueError(f"{run['workdir']} and {done[0]['workdir']} scored other held-out records for {metric!r}; "
                       "a cell's runs must share the world and config.data.num_eval.")
  return [r["values"][metric][1] for r in done]


def cell_row(table: str, cell: str, runs: Sequence[dict], num_resamples: int) -> dict[str, Any]:
  """A cell's labels, seeds, records, minutes and each metric's mean, interval and per-seed means."""
  spec, done = tables.TABLES[table], [r for r in runs if r["status"] == "done"]
  row = {**tables.labels(cell), "cell": cell, "seeds": [r["seed"] for r in done],
         "missing_seeds": [r["seed"] for r in runs if r["status"] != "done"],
         "records": max((len(v[0]) for v in done[0]["values"].values()), default=0) if done else 0,
         "minutes": [r["minutes"] for r in done], "eval_minutes": [r["eval_minutes"] for r in done],
         "workdirs": [r["workdir"] for r in runs], "metrics": {}}
  for metric in spec.metrics:
    values = cell_values(runs, metric)
    if not values:
      continue
    interval = intervals.cell_interval(values, num_resamples)
    row["metrics"][metric] = {"mean": interval.mean, "low": interval.low, "high": interval.high,
                              "per_seed": [float(v.mean()) for v in values], "records": len(values[0])}
  return row


def judge_orderings(table: str, orderings: Sequence[intervals.Ordering],
                    values: dict[str, dict[str, list[np.ndarray]]], num_resamples: int) -> list[dict[str, Any]]:
  """Each ordering judged on per-record values {cell: {metric: [one array per seed's run]}}; an ordering
  whose cells have no runs is 'missing'. Any table's cells fit, a search table's strategies included."""
  judged = []
  for ordering in orderings:
    first, second = (values.get(c, {}).get(ordering.metric) for c in (ordering.first, ordering.second))
    if first and second:
      judged.append({"table": table, **intervals.judge(ordering, first, second, num_resamples)})
    else:
      judged.append({"table": table, **dataclasses.asdict(ordering), "verdict": "missing"})
  return judged


def interval_text(stats: dict[str, float] | None) -> str:
  return "" if not stats else f"{stats['mean']:.3f} [{stats['low']:.3f}, {stats['high']:.3f}]"


def markdown(table: str, rows: Sequence[dict[str, Any]]) -> str:
  """| keys | seeds | records | each metric: mean [95% interval] | headline per seed | minutes per run |"""
  spec = tables.TABLES[table]
  columns = [*spec.keys, "seeds", "records", *spec.metrics, f"{spec.metrics[0]} per seed", "minutes per run"]
  lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
  for row in rows:
    headline = row["metrics"].get(spec.metrics[0])
    minutes = [m for m in row["minutes"] if m is not None]
    values = [*(row[k] for k in spec.keys), ",".join(map(str, row["seeds"])) or "none", str(row["records"]),
              *(interval_text(row["metrics"].get(m)) for m in spec.metrics),
              " / ".join(f"{v:.3f}" for v in headline["per_seed"]) if headline else "",
              f"{np.mean(minutes):.1f}" if minutes else ""]
    lines.append("| " + " | ".join(values) + " |")
  return "\n".join(lines)


def orderings_markdown(judged: Sequence[dict[str, Any]]) -> str:
  """| table | ordering | metric | advantage (first over second) | 95% interval | verdict | seeds | records |"""
  lines = ["| table | ordering | metric | advantage | 95% interval | verdict | seeds | records |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for j in judged:
    found = j["verdict"] != "missing"
    cells = ([f"{j['advantage']:+.3f}", f"[{j['low']:+.3f}, {j['high']:+.3f}]", j["verdict"],
              f"{j['seeds'][0]} vs {j['seeds'][1]}", str(j["records"])] if found else ["", "", "missing", "", ""])
    lines.append("| " + " | ".join([j["table"], j["name"], j["metric"], *cells]) + " |")
  return "\n".join(lines)


def interval_bars(ax, stats: Sequence[dict[str, float] | None], dots: Sequence[Sequence[float]], dot_label: str
                  ) -> None:
  """Bars of each cell's mean with its 95% interval (stats: {mean, low, high} or None), its runs as dots."""
  means = [s["mean"] if s else 0.0 for s in stats]
  errors = np.array([[s["mean"] - s["low"], s["high"] - s["mean"]] if s else [0.0, 0.0] for s in stats]).T
  ax.bar(range(len(stats)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.7, label="mean, 95% interval")
  for x, values in enumerate(dots):
    ax.scatter(x + np.linspace(-0.15, 0.15, len(values)), values, color="black", s=12, zorder=3,
               label=dot_label if x == 0 else None)


def plot(table: str, rows: Sequence[dict[str, Any]], path: pathlib.Path) -> None:
  """Bars of the headline metric's mean per cell with its 95% interval, each seed's run as a dot."""
  spec = tables.TABLES[table]
  metric = spec.metrics[0]
  fig = figure.Figure(figsize=(1.4 + 0.9 * len(rows), 3.4))
  ax = fig.subplots()
  names = ["\n".join(f"{k.rsplit('.', 1)[-1]}={r[k]}" if "." in k else str(r[k]) for k in spec.keys) for r in rows]
  stats = [r["metrics"].get(metric) for r in rows]
  interval_bars(ax, stats, [s["per_seed"] if s else [] for s in stats], "one seed")
  ax.axhline(1 / 36 if "cater" in table else 1 / 3, color="gray", linestyle="--", label="chance")
  ax.set_xticks(range(len(rows)), names)
  ax.set_ylabel(metric)
  seeds = sorted({s for r in rows for s in r["seeds"]})
  ax.set_title(f"{table} ({spec.config}), seeds {','.join(map(str, seeds))}", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def write_orderings(out: pathlib.Path, judged: Sequence[dict[str, Any]], replaced: Sequence[str]) -> list[dict]:
  """<out>/orderings.{json,md}: `judged`, after the orderings already there of tables not in `replaced`."""
  path = out / "orderings.json"
  kept = [j for j in (json.loads(path.read_text())["orderings"] if path.is_file() else [])
          if j["table"] not in replaced]
  everything = kept + list(judged)
  path.write_text(json.dumps({"orderings": everything, "level": intervals.LEVEL}, indent=2))
  (out / "orderings.md").write_text(orderings_markdown(everything) + "\n")
  return everything


def seeds_table(table: str, sweep_dir: pathlib.Path, out: pathlib.Path, seeds: Sequence[int],
                extra: Sequence[str], python: str, num_resamples: int, summary: bool = False) -> list[dict]:
  """Train, evaluate again or reuse every run of `table` and seed (only read them if `summary`), write the
  table's files and return its orderings judged."""
  spec, flags = tables.TABLES[table], overrides(extra, sweep_dir)
  runs = seed_runs(table, sweep_dir, seeds)
  by_seed = [run for seed in seeds for _, s, run in runs if s == seed]  # every cell of a seed before the next
  failed = [] if summary else sweep.run_locally(by_seed, flags, python, done=lambda run: examples_file(run) is not None)
  read = [read_run(cell, seed, run, spec.metrics, failed) for cell, seed, run in runs]
  cells = list(dict.fromkeys(r["cell"] for r in read))
  rows = [cell_row(table, cell, [r for r in read if r["cell"] == cell], num_resamples) for cell in cells]
  values = {cell: {m: cell_values([r for r in read if r["cell"] == cell], m) for m in spec.metrics}
            for cell in cells}
  (out / f"{table}_seeds.json").write_text(json.dumps(
      {"table": table, "config": spec.config, "seeds": list(seeds), "world_seed": WORLD_SEED, "overrides": flags,
       "num_resamples": num_resamples, "level": intervals.LEVEL, "cells": rows}, indent=2))
  (out / f"{table}_seeds.md").write_text(markdown(table, rows) + "\n")
  plot(table, rows, out / f"{table}_seeds.png")
  print(f"\n{table}, seeds {list(seeds)}\n{markdown(table, rows)}", flush=True)
  return judge_orderings(table, tables.ORDERINGS.get(table, ()), values, num_resamples)
