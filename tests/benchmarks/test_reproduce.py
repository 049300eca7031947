"""benchmarks/reproduce.py turns finished sweep runs into the ablation tables and plots (no training here)."""
import json

from benchmarks import reproduce


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
