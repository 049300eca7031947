"""The papers' tables on generated worlds: the runs (through the configs' sweeps), then tables and plots.

  python -m benchmarks.reproduce --tables=cater_static,search          # what this CPU ran (docs/reproduction.md)
  python -m benchmarks.reproduce --tables=cater_static,cater_moving,acre,search --config.num_steps=1600
  python -m benchmarks.reproduce --tables=cater_static,cater_encoder --seeds=3 --sweep_dir=workdirs/seeds

Tables (benchmarks/tables.py): cater_static, cater_moving (the rationale ablation, one camera each),
cater_encoder (two streams vs one, temporal window tau), acre (the ablation on three splits); and
  search: greedy vs best-of-N vs sentence-level vs stage-level beam search on the full CATER (static) run, or
    on each training seed's (--search_seeds); --num_candidates=paper --stage_beams=1,2,4 --scorers=likelihood,judge
    is LLaVA-o1's Table 5 N with a beam sweep and both scorers (`lrr_jax.scaling` says what each is);
    --search_strategies picks rows, --search_output keeps each setting's table apart in every run (and --out
    its pooled cells and orderings).
Runs live under --sweep_dir (finished runs are reused); results go to --out as JSON, Markdown and PNGs.
Every run uses the config's seed (0) for its data, initialisation and data order.

--seeds=N (or --seeds=0,1,2): every training cell once per seed on one world, each cell as mean and 95%
interval over seeds and held-out records, and the papers' orderings judged (benchmarks/seed_tables.py:
run layout, defaults, files); --summary there only reads the runs that exist.
"""
import argparse
import json
import pathlib
import subprocess
import sys
from typing import Any, Sequence

import matplotlib
import numpy as np
matplotlib.use("Agg")
from matplotlib import figure  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import seed_tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
from lrr_jax.evaluation import intervals  # pylint: disable=g-import-not-at-top,wrong-import-position
from lrr_jax import scaling  # pylint: disable=g-import-not-at-top,wrong-import-position
from lrr_jax.inference import search  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]


TABLES, labels = tables.TABLES, tables.labels  # what the tables are (benchmarks/tables.py)


def train_table(table: str, sweep_dir: pathlib.Path, extra: Sequence[str], python: str) -> list[dict[str, Any]]:
  """Train (or reuse) the table's runs; one row per run with its label keys and eval scores."""
  spec = TABLES[table]
  runs = [r for r in sweep.expand(spec.config, sweep_dir / pathlib.Path(spec.config).stem)
          if spec.keep(labels(r.name))]
  failed = sweep.run_locally(runs, extra, python)
  rows = []
  for row in sweep.summarize(runs, failed):
    named = {**spec.defaults, **labels(row["name"])}
    rows.append({**{k: named.get(k) for k in spec.keys}, "status": row["status"],
                 "minutes": row["minutes"], **{m: row["eval"].get(m) for m in spec.metrics}})
  return rows


def search_workdirs(sweep_dir: pathlib.Path, seeds: Sequence[int]) -> list[pathlib.Path]:
  """The full static-camera CATER run of each training seed (`...,seed=<s>`); no seeds: the config's seed's."""
  names = [f"variant=full,camera=static,seed={s}" for s in seeds] or ["variant=full,camera=static"]
  return [sweep_dir / "cater" / name for name in names]


def search_table(workdirs: Sequence[pathlib.Path], python: str, scaling_flags: Sequence[str],
                 output: str = "scaling") -> list[dict]:
  """The inference-time scaling table (`lrr_jax.scaling`, its flags from `scaling.settings_flags`) on
  each run, in `<workdir>/<output>`, reused where its `flags.json` holds the same flags; rows name the run. Each
  row keeps its `per_example` outcomes (for a bootstrap over examples and seeds)."""
  missing = [str(w) for w in workdirs if not (w / "results.json").is_file()]
  if missing:
    raise FileNotFoundError(f"{', '.join(missing)}: no finished run; reproduce cater_static (with its seeds) first.")
  rows = []
  for workdir in workdirs:
    done = workdir / output / "flags.json"
    if done.is_file() and json.loads(done.read_text()) == list(scaling_flags):
      print(f"{workdir}: reusing its scaling table (same flags)", flush=True)
    else:
      subprocess.run([python, "-m", "lrr_jax.scaling", f"--workdir={workdir}", *scaling_flags,
                      f"--output={workdir / output}"], check=True)
    rows += [{"run": workdir.name, **row} for row in json.loads((workdir / output / "scaling.json").read_text())]
  return rows


def search_orderings(rows: Sequence[dict[str, Any]], num_resamples: int) -> list[dict[str, Any]]:
  """LLaVA-o1's search ordering (`tables.SEARCH_ORDERINGS`) judged per scorer on the search table's rows: each
  strategy at beam 1 (greedy shared), one per-example array of the row's headline (`lrr_jax.scaling`: CATER's
  top1, ACRE's accuracy, ...) per training run, bootstrapped over runs and examples as the training tables are."""
  judged = []
  for scorer in sorted({r["scorer"] for r in rows} - {"none"}):
    values: dict[str, dict[str, list]] = {}
    for row in rows:
      if row["beam"] == 1 and row["scorer"] in ("none", scorer):
        cell = values.setdefault(f"strategy={row['strategy']}", {"top1": []})
        cell["top1"].append(np.asarray(row["per_example"][headline(row)], np.float64))
    for item in seed_tables.judge_orderings("search", tables.SEARCH_ORDERINGS, values, num_resamples):
      judged.append({**item, "name": f"{item['name']} ({scorer})"})
  return judged


SEARCH_CELL = ("strategy", "scorer", "num_candidates", "beam")  # a search cell: one row per training run


def headline(row: dict[str, Any]) -> str:
  """The scaling row's headline, its dataset's per-example score (tables from before it: CATER's top1)."""
  return row.get("headline", "top1")


def search_cells(rows: Sequence[dict[str, Any]], num_resamples: int) -> list[dict[str, Any]]:
  """The search table's cells over training runs: the headline (`headline`: CATER's top1) and L1 (CATER) as
  mean [95% interval] (a bootstrap over runs and examples, as the training tables), the per-run headline
  (`<headline>_per_run`), and the mean tokens and seconds per example."""
  cells: dict[tuple, list[dict[str, Any]]] = {}
  for row in rows:
    cells.setdefault(tuple(row[k] for k in SEARCH_CELL), []).append(row)
  out = []
  for key, runs in cells.items():
    name = headline(runs[0])
    cell = {**dict(zip(SEARCH_CELL, key)), "runs": len(runs), "examples": runs[0]["examples"], "headline": name,
            "chance": runs[0].get("chance_top1", runs[0].get("chance", 1 / 36 if name == "top1" else None))}
    for metric in [name] + (["l1"] if "l1" in runs[0]["per_example"] else []):
      interval = intervals.cell_interval([np.asarray(r["per_example"][metric], np.float64) for r in runs],
                                         num_resamples)
      cell[metric] = {"mean": interval.mean, "low": interval.low, "high": interval.high}
    cell[f"{name}_per_run"] = [r[name] for r in runs]
    for measure in ("tokens_sampled", "tokens_judged", "seconds"):
      cell[measure] = float(np.mean([r[measure] for r in runs]))
    out.append(cell)
  return out


def search_cells_markdown(cells: Sequence[dict[str, Any]]) -> str:
  name = cells[0].get("headline", "top1")
  lines = [f"| strategy | scorer | N | beam | runs | examples | {name} | l1 | {name} per run | tokens sampled | "
           "tokens judged | s / example |", "| " + " | ".join(["---"] * 12) + " |"]
  for c in cells:
    lines.append("| " + " | ".join([
        c["strategy"], c["scorer"], str(c["num_candidates"]), str(c["beam"]), str(c["runs"]), str(c["examples"]),
        seed_tables.interval_text(c[name]), seed_tables.interval_text(c["l1"]) if "l1" in c else "-",
        " / ".join(f"{v:.3f}" for v in c[f"{name}_per_run"]), f"{c['tokens_sampled']:.0f}",
        f"{c['tokens_judged']:.0f}", f"{c['seconds']:.2f}"]) + " |")
  return "\n".join(lines)


def plot_search_cells(cells: Sequence[dict[str, Any]], path: pathlib.Path) -> None:
  """The headline (CATER's top-1) per search cell: the mean with its 95% interval, each training run as a dot,
  greedy's mean marked."""
  name = cells[0].get("headline", "top1")
  fig = figure.Figure(figsize=(1.6 + 1.1 * len(cells), 3.4))
  ax = fig.subplots()
  seed_tables.interval_bars(ax, [c[name] for c in cells], [c[f"{name}_per_run"] for c in cells], "one training run")
  greedy = [c[name]["mean"] for c in cells if c["strategy"] == "greedy"]
  if greedy:
    ax.axhline(greedy[0], color="tab:orange", linestyle=":", label="greedy")
  if cells[0].get("chance", 1 / 36) is not None:  # CATER's 1/36 (cells from before `chance`), ACRE's 1/3
    ax.axhline(cells[0].get("chance", 1 / 36), color="gray", linestyle="--", label="chance")
  ax.set_xticks(range(len(cells)), [f"{c['strategy']}\n{c['scorer']}\nN={c['num_candidates']}"
                                    + (f" beam={c['beam']}" if c["strategy"] == "stage_beam" else "") for c in cells],
                fontsize=7)
  ax.set_ylabel(name)
  ax.set_title(f"inference-time scaling, {cells[0]['runs']} training run(s), {cells[0]['examples']} videos",
               fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
  columns = [c for c in rows[0] if not isinstance(rows[0][c], (dict, list))]  # per_example: in the JSON only
  cell = lambda v: "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
  return "\n".join(lines + ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows])


def plot(rows: Sequence[dict[str, Any]], table: str, path: pathlib.Path) -> None:
  """Bars of the table's first metric per run (the headline: top-1 or accuracy), with chance marked."""
  spec = TABLES[table]
  config, keys, metric = spec.config, spec.keys, spec.metrics[0]
  fig = figure.Figure(figsize=(1.2 + 0.9 * len(rows), 3.2))
  ax = fig.subplots()
  names = ["\n".join(f"{k.rsplit('.', 1)[1]}={r[k]}" if "." in k else str(r[k]) for k in keys) for r in rows]
  ax.bar(names, [r[metric] or 0.0 for r in rows], color="tab:blue")
  ax.axhline(1 / 36 if "cater" in table else 1 / 3, color="gray", linestyle="--", label="chance")
  ax.set_ylabel(metric)
  ax.set_title(f"{table} ({config})")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tables", default="cater_static,search")
  parser.add_argument("--sweep_dir", default="workdirs/reproduce")
  parser.add_argument("--out", default="benchmarks/results/reproduce")
  parser.add_argument("--num_examples", type=int, default=32, help="test examples of the search table")
  parser.add_argument("--num_candidates", default="4", help="search N: an int, 'paper' (LLaVA-o1 Table 5: "
                      "best_of_n:10,sentence_beam:2,stage_beam:4) or per strategy (lrr_jax.scaling)")
  parser.add_argument("--stage_beams", default="", help="stage_beam's beams (kept per stage), a row each: 1,2,4")
  parser.add_argument("--scorers", default="judge", help="search scorers, a row each: likelihood,judge")
  parser.add_argument("--search_strategies", default=",".join(search.STRATEGIES), help="the search table's rows")
  parser.add_argument("--search_output", default="scaling", help="each run's subdirectory for its search table "
                      "(another name keeps tables of other settings side by side: scaling_beams, scaling_judge)")
  parser.add_argument("--search_seeds", default="", help="the search table on the full static run of each "
                      "training seed (<sweep_dir>/cater/variant=full,camera=static,seed=<s>), e.g. 0,1,2")
  parser.add_argument("--seeds", help="a count (3: seeds 0, 1, 2) or seeds (0,1,2): each cell once per seed")
  parser.add_argument("--num_resamples", type=int, default=intervals.NUM_RESAMPLES, help="bootstrap (--seeds)")
  parser.add_argument("--summary", action="store_true", help="--seeds: only read the runs there are")
  parser.add_argument("--python", default=sys.executable)
  args, extra = parser.parse_known_args(argv)
  out, sweep_dir = pathlib.Path(args.out), pathlib.Path(args.sweep_dir)
  names = args.tables.split(",")
  unknown = [t for t in names if t not in TABLES and not (t == "search" and not args.seeds)]
  if unknown:
    parser.error(f"unknown table(s) {unknown}; expected one of {sorted(TABLES)}"
                 + (" (the search table has no --seeds mode)" if args.seeds else " or search"))
  out.mkdir(parents=True, exist_ok=True)
  if args.seeds:
    seeds = seed_tables.parse_seeds(args.seeds)
    judged = [j for table in names for j in seed_tables.seeds_table(
        table, sweep_dir, out, seeds, extra, args.python, args.num_resamples, args.summary)]
    everything = seed_tables.write_orderings(out, judged, names)
    print(f"\norderings\n{seed_tables.orderings_markdown(everything)}", flush=True)
    return
  for table in names:
    if table == "search":
      flags = scaling.settings_flags(strategies=args.search_strategies.split(","), num_examples=args.num_examples,
                                     num_candidates=args.num_candidates, scorers=args.scorers,
                                     stage_beams=args.stage_beams or None)
      seeds = [int(s) for s in args.search_seeds.split(",") if s]
      rows = search_table(search_workdirs(sweep_dir, seeds), args.python, flags, args.search_output)
      everything = seed_tables.write_orderings(out, search_orderings(rows, args.num_resamples), ["search"])
      print(f"\norderings\n{seed_tables.orderings_markdown(everything)}", flush=True)
      cells = search_cells(rows, args.num_resamples)
      (out / "search_cells.json").write_text(json.dumps({"cells": cells, "level": intervals.LEVEL,
                                                         "num_resamples": args.num_resamples}, indent=2))
      (out / "search_cells.md").write_text(search_cells_markdown(cells) + "\n")
      plot_search_cells(cells, out / "search.png")
      print(f"\nsearch cells\n{search_cells_markdown(cells)}", flush=True)
    else:
      rows = train_table(table, sweep_dir, extra, args.python)
      plot(rows, table, out / f"{table}.png")
    (out / f"{table}.json").write_text(json.dumps({"rows": rows, "overrides": extra, "seed": 0}, indent=2))
    (out / f"{table}.md").write_text(markdown(rows) + "\n")
    print(f"\n{table}\n{markdown(rows)}", flush=True)


if __name__ == "__main__":
  main()
