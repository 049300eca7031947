"""benchmarks/reproduce.py turns finished sweep runs into the ablation tables and plots (no training here)."""
import json

import pytest

from benchmarks import reproduce
from lrr_jax.data.worlds import acre


def test_finished_runs_become_a_table_with_a_plot(tmp_path):
  scores = {"direct": 0.05, "no_surrogate": 0.08, "no_tags": 0.15, "full": 0.19}
  for variant, top1 in scores.items():
    workdir = tmp_path / "runs" / "cater" / f"variant={variant},camera=static"
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(
        {"minutes": 10.0, "train": {"loss": 0.4}, "eval": {"top1": top1, "top5": 0.4, "l1": 2.9, "well_formed": 1.0}}))
  reproduce.main(["--tables=cater_static", f"--sweep_dir={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}",
                  "--config.num_steps=10"])
  rows = json.loads((tmp_path / "out" / "cater_static.json").read_text())["rows"]
  assert [(r["variant"], r["top1"], r["status"]) for r in rows] == [(v, s, "done") for v, s in scores.items()]
  table = (tmp_path / "out" / "cater_static.md").read_text()
  assert table.startswith("| variant | status | minutes | top1 | top5 | l1 | well_formed |")
  assert "| full | done | 10.000 | 0.190 | 0.400 | 2.900 | 1.000 |" in table
  assert (tmp_path / "out" / "cater_static.png").stat().st_size > 1000


def test_acre_table_shows_every_query_type_the_evaluator_reports(tmp_path):
  eval_scores = {"accuracy": 0.6, "well_formed": 1.0, "split/iid": 0.6,
                 **{f"query_type/{q}": 0.1 * i for i, q in enumerate(acre.QUERY_TYPES)}}
  for split in ("iid", "compositional", "systematic"):
    for variant in ("direct", "no_surrogate", "full"):
      workdir = tmp_path / "runs" / "acre" / f"split={split},variant={variant}"
      workdir.mkdir(parents=True)
      (workdir / "results.json").write_text(json.dumps({"minutes": 5.0, "eval": eval_scores}))
  reproduce.main(["--tables=acre", f"--sweep_dir={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}"])
  rows = json.loads((tmp_path / "out" / "acre.json").read_text())["rows"]
  assert [(r["split"], r["variant"]) for r in rows][:3] == [("iid", v) for v in ("direct", "no_surrogate", "full")]
  assert len(rows) == 9 and all(r[k] == v for r in rows for k, v in eval_scores.items() if k in r)
  assert all(r[f"query_type/{q}"] is not None for r in rows for q in acre.QUERY_TYPES)


def test_the_encoder_table_holds_the_full_run_and_the_encoder_ablations(tmp_path):
  """cater_encoder: the full static run (two streams, all frames) and the sweep's one-stream and tau runs; the
  rationale tables leave the encoder runs out."""
  runs = {"variant=full,camera=static": 0.19, "variant=full,camera=static,model.video.two_stream=False": 0.12,
          "variant=full,camera=static,model.video.temporal_window=2": 0.15,
          "variant=full,camera=static,model.video.temporal_window=4": 0.17,
          "variant=direct,camera=static": 0.05}
  for name, top1 in runs.items():
    workdir = tmp_path / "runs" / "cater" / name
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps({"minutes": 1.0, "eval": {"top1": top1, "l1": 2.0}}))
  reproduce.main(["--tables=cater_encoder", f"--sweep_dir={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}"])
  rows = json.loads((tmp_path / "out" / "cater_encoder.json").read_text())["rows"]
  assert [(r["model.video.two_stream"], r["model.video.temporal_window"], r["top1"], r["status"]) for r in rows] == [
      ("True", "0", 0.19, "done"), ("False", "0", 0.12, "done"), ("True", "2", 0.15, "done"),
      ("True", "4", 0.17, "done")]
  static = reproduce.TABLES["cater_static"].keep
  assert [name for name in runs if static(reproduce.labels(name))] == ["variant=full,camera=static",
                                                                      "variant=direct,camera=static"]


def test_search_table_runs_on_each_seed_and_keeps_per_example_outcomes_out_of_the_markdown(tmp_path):
  workdirs = reproduce.search_workdirs(tmp_path, [0, 2])
  assert [w.name for w in workdirs] == ["variant=full,camera=static,seed=0", "variant=full,camera=static,seed=2"]
  assert reproduce.search_workdirs(tmp_path, [])[0].name == "variant=full,camera=static"
  workdirs[0].mkdir(parents=True)
  (workdirs[0] / "results.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="seed=2: no finished run") as error:
    reproduce.main(["--tables=search", f"--sweep_dir={tmp_path}", f"--out={tmp_path / 'out'}", "--search_seeds=0,2"])
  assert "seed=0" not in str(error.value)
  row = {"run": "seed=0", "strategy": "best_of_n", "top1": 0.5, "per_example": {"top1": [1, 0]}}
  assert reproduce.markdown([row]).splitlines()[0] == "| run | strategy | top1 |"


def test_a_finished_search_table_with_the_same_flags_is_reused_and_another_is_not(tmp_path):
  workdir = reproduce.search_workdirs(tmp_path, [0])[0]
  (workdir / "scaling").mkdir(parents=True)
  (workdir / "results.json").write_text("{}")
  row = {"strategy": "greedy", "scorer": "none", "beam": 1, "per_example": {"top1": [1, 0]}}
  (workdir / "scaling" / "scaling.json").write_text(json.dumps([row]))
  flags = reproduce.scaling.settings_flags(num_examples=2, scorers="likelihood", stage_beams=[1, 2])
  assert flags == ["--num_examples=2", "--stage_beams=1,2", "--scorers=likelihood"]
  (workdir / "scaling" / "flags.json").write_text(json.dumps(flags))
  assert reproduce.search_table([workdir], "no-python-needed", flags) == [{"run": workdir.name, **row}]
  (workdir / "scaling").rename(workdir / "scaling_beams")  # another setting's table, in its own subdirectory
  assert reproduce.search_table([workdir], "no-python-needed", flags, "scaling_beams") == [{"run": workdir.name,
                                                                                            **row}]
  (workdir / "scaling_beams").rename(workdir / "scaling")
  with pytest.raises(FileNotFoundError):  # other flags: the table is run again (here with a python that is not)
    reproduce.search_table([workdir], str(tmp_path / "no-python"), flags[:1])
  with pytest.raises(ValueError, match="beams"):
    reproduce.scaling.settings_flags(beams=[1])


def test_search_orderings_are_judged_per_scorer_at_beam_one():
  n = 256
  row = lambda strategy, scorer, beam, top1: dict(strategy=strategy, scorer=scorer, beam=beam,
                                                  per_example=dict(top1=top1))
  rng = __import__("numpy").random.default_rng(0)
  half = (rng.random(n) < 0.5).astype(float).tolist()
  rows = [row("greedy", "none", 1, [0.0] * n),
          row("best_of_n", "likelihood", 1, half), row("stage_beam", "likelihood", 1, [1.0] * n),
          row("stage_beam", "likelihood", 2, [0.0] * n),  # beam 2: not in the ordering
          row("sentence_beam", "likelihood", 1, [0.0] * n),
          row("best_of_n", "judge", 1, [1.0] * n), row("stage_beam", "judge", 1, half)]
  judged = {j["name"]: j for j in reproduce.search_orderings(rows, num_resamples=200)}
  assert judged["stage-level > best-of-N (likelihood)"]["verdict"] == "holds"
  assert judged["stage-level > best-of-N (likelihood)"]["advantage"] == pytest.approx(1 - sum(half) / n)
  assert judged["best-of-N > greedy (likelihood)"]["verdict"] == "holds"
  assert judged["sentence-level not above greedy (likelihood)"]["verdict"] == "holds"
  assert judged["stage-level > best-of-N (judge)"]["verdict"] == "reversed"
  assert judged["sentence-level not above greedy (judge)"]["verdict"] == "missing"


def test_search_cells_pool_the_training_runs_with_an_interval_and_a_plot(tmp_path):
  row = lambda run, strategy, top1: dict(run=run, strategy=strategy, scorer="likelihood", num_candidates=10, beam=1,
                                         examples=4, top1=sum(top1) / 4, tokens_sampled=10.0 * len(run),
                                         tokens_judged=0.0, seconds=1.0, per_example=dict(top1=top1, l1=[1.0] * 4))
  rows = [row("seed=0", "best_of_n", [1, 0, 0, 0]), row("seed=1", "best_of_n", [1, 1, 1, 0]),
          row("seed=0", "stage_beam", [0, 0, 0, 0]), row("seed=1", "stage_beam", [0, 0, 0, 0])]
  cells = reproduce.search_cells(rows, num_resamples=200)
  assert [(c["strategy"], c["runs"], c["top1_per_run"]) for c in cells] == [
      ("best_of_n", 2, [0.25, 0.75]), ("stage_beam", 2, [0.0, 0.0])]
  best = cells[0]["top1"]
  assert best["mean"] == pytest.approx(0.5) and best["low"] < 0.5 < best["high"]
  assert cells[1]["top1"] == {"mean": 0.0, "low": 0.0, "high": 0.0} and cells[0]["l1"]["mean"] == 1.0
  assert cells[0]["tokens_sampled"] == 60.0
  assert "| best_of_n | likelihood | 10 | 1 | 2 | 4 | 0.500 [" in reproduce.search_cells_markdown(cells)
  reproduce.plot_search_cells(cells, tmp_path / "search.png")
  assert (tmp_path / "search.png").stat().st_size > 0


def test_search_cells_and_orderings_read_each_rows_headline(tmp_path):
  """An ACRE run's scaling rows: accuracy is the headline, no L1; chance 1/3."""
  row = lambda strategy, accuracy: dict(run="seed=0", strategy=strategy, scorer="likelihood", num_candidates=2,
                                        beam=1, examples=2, headline="accuracy", accuracy=sum(accuracy) / 2,
                                        chance=1 / 3, tokens_sampled=4.0, tokens_judged=0.0, seconds=1.0,
                                        per_example=dict(accuracy=accuracy, well_formed=[1, 1]))
  cells = reproduce.search_cells([row("best_of_n", [1, 0]), row("stage_beam", [1, 1])], num_resamples=50)
  assert [(c["headline"], c["accuracy"]["mean"], c["accuracy_per_run"]) for c in cells] == [
      ("accuracy", 0.5, [0.5]), ("accuracy", 1.0, [1.0])]
  assert "l1" not in cells[0] and cells[0]["chance"] == pytest.approx(1 / 3)
  markdown = reproduce.search_cells_markdown(cells)
  assert "| accuracy | l1 | accuracy per run |" in markdown and "| 0.500 [" in markdown
  reproduce.plot_search_cells(cells, tmp_path / "search.png")
  judged = reproduce.search_orderings([row("best_of_n", [1, 0]), row("stage_beam", [1, 1])], num_resamples=50)
  assert judged and all(j["name"].endswith("(likelihood)") for j in judged)
