"""Joint training end to end: `configs/released.py:mixture=star+something_else:3` on the release fixtures, two
steps; one BPE covers both datasets' text and each is evaluated on its own split with its own metrics."""
import json
import os
import subprocess
import sys

import pytest

from lrr_jax.data.builders import release
from tests.data import release_fixtures

pytestmark = pytest.mark.slow  # an end-to-end mixture run


def test_a_mixture_trains_on_both_datasets_and_reports_each_with_its_own_metrics(tmp_path):
  release_fixtures.write_star_release(tmp_path / "STAR")
  release_fixtures.write_something_else_release(tmp_path / "SE")
  env = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}
  out = subprocess.run(
      [sys.executable, "-m", "lrr_jax.main", "--config=configs/released.py:mixture=star+something_else:3",
       f"--workdir={tmp_path / 'run'}", f"--config.data.sources.star.manual_dir={tmp_path / 'STAR'}",
       f"--config.data.sources.something_else.manual_dir={tmp_path / 'SE'}",
       f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.vocab_size=400", "--config.model.size=tiny",
       "--config.num_steps=2", "--config.batch_size=2", "--config.mesh.data=1", "--config.data.max_length=320",
       "--config.data.resolution=32", "--config.eval.max_new_tokens=6", "--config.eval.num_classes=4",
       "--config.eval.every=0", "--config.data.worker_count=0",
       # the tiny preset's two-stage backbones: their last stage gives the grid
       "--config.model.video.static_backbone.grid_stage=0", "--config.model.video.motion_backbone.grid_stage=0"],
      capture_output=True, text=True, timeout=900, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  by_dataset = results["eval_by_dataset"]
  assert {"accuracy", "accuracy_pooled", "question_type/Prediction", "well_formed"} <= set(by_dataset["star"])
  assert {"top1", "top5", "well_formed"} <= set(by_dataset["something_else"])
  assert results["eval"]["something_else/top1"] == by_dataset["something_else"]["top1"]
  assert results["eval"]["mean_headline"] == (by_dataset["star"]["accuracy"] + by_dataset["something_else"]["top1"]) / 2
  assert results["evaluated_records"] == {"star": [0], "something_else": [0]}
  lines = [json.loads(line) for line in (tmp_path / "run" / "eval_examples.jsonl").read_text().splitlines()]
  assert [(line["dataset"], line["index"]) for line in lines] == [("star", 0), ("something_else", 0)]
  assert lines[0]["scores"]["accuracy_pooled"] == by_dataset["star"]["accuracy_pooled"]
  assert "question_type" in lines[0]["groups"] and lines[1]["scores"]["top5"] == by_dataset["something_else"]["top5"]
  assert "Mixture of star default (weight 1), something_else default (weight 3)" in out.stdout
  assert "| something_else | top5 |" in out.stdout and "| all | mean_headline |" in out.stdout
  [path] = (tmp_path / "data" / "mixtures").glob("*/tokenizer.json")  # one BPE over both datasets' text
  names = json.loads((path.parent / "datasets.json").read_text())  # default_<hash>: 32 px frames, not 224
  assert [n.split("/")[0] for n in names] == ["something_else", "star"], names
  version = str(release.ReleaseBuilder.VERSION)
  assert all(n.split("/")[1].startswith("default_") and n.endswith(f"/{version}") for n in names), names
  assert json.loads((tmp_path / "run" / "run.json").read_text())["tokenizer"] == str(path)
  assert not list((tmp_path / "data").glob("*/default*/*/tokenizer.json"))  # no per-dataset BPE
