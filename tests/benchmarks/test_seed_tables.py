"""`benchmarks.reproduce --seeds`: finished runs of several seeds become cells with intervals and judged
orderings; runs from before per-record scores are evaluated again, missing ones trained, with commands that a
run started by hand (seed 0, without data.world_seed) resumes without a change."""
import json
import pathlib
import stat
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from benchmarks import reproduce
from benchmarks import seed_tables
from lrr_jax import config_checks
from lrr_jax.data.worlds import acre
from tests.benchmarks import fake_runs

ROOT = pathlib.Path(__file__).parents[2]
ACCURACY, RECORDS, top1, write_run = fake_runs.ACCURACY, fake_runs.RECORDS, fake_runs.top1, fake_runs.write_run


def test_finished_seeds_become_cells_with_intervals_and_orderings(tmp_path):
  for variant in ACCURACY:
    for seed in (0, 1, 2):
      if (variant, seed) != ("no_tags", 2):  # one run not there yet
        write_run(tmp_path / "runs" / "cater" / f"variant={variant},camera=static,seed={seed}", variant, seed)
  out = tmp_path / "out"
  reproduce.main(["--tables=cater_static", "--seeds=3", f"--sweep_dir={tmp_path / 'runs'}", f"--out={out}",
                  "--num_resamples=500", "--summary"])
  table = json.loads((out / "cater_static_seeds.json").read_text())
  cells = {c["variant"]: c for c in table["cells"]}
  assert list(cells) == ["direct", "no_surrogate", "no_tags", "full"] and table["seeds"] == [0, 1, 2]
  full = cells["full"]["metrics"]["top1"]
  assert full["per_seed"] == [top1("full", s).mean() for s in range(3)]
  assert full["mean"] == pytest.approx(np.mean(full["per_seed"])) and full["low"] < full["mean"] < full["high"]
  assert 0.02 < full["high"] - full["low"] < 0.12 and full["records"] == RECORDS
  assert cells["full"]["minutes"] == [50.0, 51.0, 52.0] and cells["full"]["workdirs"][0].endswith(
      "cater/variant=full,camera=static,seed=0")
  assert cells["no_tags"]["seeds"] == [0, 1] and cells["no_tags"]["missing_seeds"] == [2]
  table_md = (out / "cater_static_seeds.md").read_text()
  assert f"| full | 0,1,2 | 512 | {full['mean']:.3f} [{full['low']:.3f}, " in table_md
  assert (out / "cater_static_seeds.png").stat().st_size > 1000
  orderings = {o["name"]: o for o in json.loads((out / "orderings.json").read_text())["orderings"]}
  assert {name: o["verdict"] for name, o in orderings.items()} == {
      "full > no surrogate tasks": "holds", "no surrogate tasks > direct": "holds", "full > direct": "holds",
      "tags > no tags": "holds"}
  gap = np.mean([top1("full", s).mean() - top1("direct", s).mean() for s in range(3)])
  assert orderings["full > direct"]["advantage"] == pytest.approx(gap) and gap == pytest.approx(0.35, abs=0.05)
  assert orderings["tags > no tags"]["seeds"] == [3, 2]
  assert f"| cater_static | full > direct | top1 | {gap:+.3f} | [" in (out / "orderings.md").read_text()


FAKE_MAIN = '''#!{python}
"""Stands in for `python -m lrr_jax.main`: records its argv; evaluates a finished run again (keeping its
results as earlier ones) or 'trains' a new one; writes results.json and eval_examples.jsonl."""
import json, pathlib, sys
sys.path.insert(0, {root!r})
from tests.benchmarks import fake_runs as t
args = dict(a[2:].split("=", 1) for a in sys.argv[3:])
workdir = pathlib.Path(args["workdir"])
earlier = json.loads((workdir / "results.json").read_text()) if (workdir / "results.json").is_file() else None
variant, seed = args["config"].split("variant=")[1].split(",")[0], int(args["config.seed"])
t.write_run(workdir, variant, seed)
if earlier:
  results = json.loads((workdir / "results.json").read_text())
  results.update(minutes=2.0, evaluated_only=True, earlier_results=[earlier])
  (workdir / "results.json").write_text(json.dumps(results))
(workdir / "argv.json").write_text(json.dumps(sys.argv[1:]))
'''


def parse(argv):
  """The config `lrr_jax.main` parses from these flags (run from the repository root)."""
  argv = ["main", *[a.replace("--config=configs/", f"--config={ROOT}/configs/") for a in argv
                    if a.startswith("--config")]]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", str(ROOT / "configs/cater.py"), flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_runs_without_per_record_scores_are_evaluated_again_and_missing_seeds_trained(tmp_path):
  sweep_dir = tmp_path / "seeds"
  for variant in ACCURACY:  # seed 0 as started by hand before per-record scores and world_seed
    write_run(sweep_dir / "cater" / f"variant={variant},camera=static,seed=0", variant, 0, with_examples=False)
  fake = tmp_path / "python"
  fake.write_text(FAKE_MAIN.format(python=sys.executable, root=str(ROOT)))
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  out = tmp_path / "out"
  reproduce.main(["--tables=cater_static", "--seeds=0,1", f"--sweep_dir={sweep_dir}", f"--out={out}",
                  f"--python={fake}", "--num_resamples=200"])
  full0 = sweep_dir / "cater" / "variant=full,camera=static,seed=0"
  argv = json.loads((full0 / "argv.json").read_text())
  assert argv == ["-m", "lrr_jax.main", "--config=configs/cater.py:variant=full,camera=static",
                  f"--workdir={full0}", "--config.seed=0", "--config.data.world_seed=0",
                  "--config.data.num_eval=512", "--config.eval.every=0", f"--config.data.data_dir={sweep_dir}/data"]
  by_hand = parse(["--config=configs/cater.py:variant=full,camera=static", "--config.data.num_eval=512",
                   "--config.eval.every=0", f"--config.data.data_dir={sweep_dir}/data"]).to_dict()
  del by_hand["data"]["world_seed"]  # written before the key existed
  assert config_checks.resume_changes(by_hand, parse(argv).to_dict()) == {}  # resumed or evaluated, not refused
  started = sorted(sweep_dir.glob("cater/*/argv.json"), key=lambda path: path.stat().st_mtime_ns)
  assert [path.parent.name.rsplit("seed=", 1)[1] for path in started] == ["0"] * 4 + ["1"] * 4  # seed by seed
  seed1 = json.loads((sweep_dir / "cater" / "variant=direct,camera=static,seed=1" / "argv.json").read_text())
  assert "--config.seed=1" in seed1 and "--config.data.world_seed=0" in seed1
  cells = {c["variant"]: c for c in json.loads((out / "cater_static_seeds.json").read_text())["cells"]}
  assert all(c["seeds"] == [0, 1] for c in cells.values())
  assert cells["full"]["minutes"] == [50.0, 51.0] and cells["full"]["eval_minutes"] == [2.0, None]


def test_seeds_are_a_count_or_a_list():
  assert seed_tables.parse_seeds("3") == [0, 1, 2] and seed_tables.parse_seeds("0,2,5") == [0, 2, 5]
  assert seed_tables.parse_seeds("2,") == [2]
  for bad in ("0", "1,1", "x", "-1,2"):
    with pytest.raises(ValueError, match="--seeds="):
      seed_tables.parse_seeds(bad)


def test_acre_cells_score_each_query_type_and_judge_the_ablation_per_split(tmp_path):
  """Per-record accuracy grouped by query type (backward blocking absent from these records: no score); the
  ablation's orderings within each split."""
  types = acre.QUERY_TYPES[:3]  # no "potential" (backward blocking)
  for split, gain in (("iid", 0.5), ("compositional", 0.0), ("systematic", -0.5)):
    for variant, level in (("direct", 0.0), ("no_surrogate", 0.5), ("full", 1.0)):
      for seed in (0, 1):
        workdir = tmp_path / "runs" / "acre" / f"split={split},variant={variant},seed={seed}"
        workdir.mkdir(parents=True)
        hits = (np.random.default_rng(3).random(300) < 0.4 + gain * level * 0.6).astype(int)
        lines = [{"index": i, "scores": {"accuracy": int(h), "well_formed": 1},
                  "groups": {"split": split, "query_type": types[i % 3]}, "response": ""} for i, h in enumerate(hits)]
        (workdir / "eval_examples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        (workdir / "results.json").write_text(json.dumps(
            {"minutes": 9.0, "eval": {}, "eval_examples": {"file": "eval_examples.jsonl", "count": 300}}))
  out = tmp_path / "out"
  reproduce.main(["--tables=acre", "--seeds=2", f"--sweep_dir={tmp_path / 'runs'}", f"--out={out}",
                  "--num_resamples=300", "--summary"])
  cells = json.loads((out / "acre_seeds.json").read_text())["cells"]
  assert len(cells) == 9 and all(c["seeds"] == [0, 1] and c["records"] == 300 for c in cells)
  iid_full = next(c for c in cells if (c["split"], c["variant"]) == ("iid", "full"))["metrics"]
  hits = (np.random.default_rng(3).random(300) < 0.7).astype(int)
  assert iid_full["accuracy"]["mean"] == hits.mean() and iid_full["query_type/indirect"]["records"] == 100
  assert iid_full["query_type/indirect"]["mean"] == hits[1::3].mean() and "query_type/potential" not in iid_full
  verdicts = {o["name"]: o["verdict"] for o in json.loads((out / "orderings.json").read_text())["orderings"]}
  assert verdicts == {"iid: full > no surrogate tasks": "holds", "iid: no surrogate tasks > direct": "holds",
                      "iid: full > direct": "holds", "compositional: full > no surrogate tasks": "not resolved",
                      "compositional: no surrogate tasks > direct": "not resolved",
                      "compositional: full > direct": "not resolved",
                      "systematic: full > no surrogate tasks": "reversed",
                      "systematic: no surrogate tasks > direct": "reversed", "systematic: full > direct": "reversed"}
