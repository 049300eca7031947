"""Nothing lost, nothing silently wrong: `python -m lrr_jax.main` rejects bad values within seconds before
writing anything, refuses to resume a checkpoint with a config that changes the arithmetic, re-evaluates a
finished run keeping its train metrics, and `run.json` records every start (old files still load)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from absl import flags
from ml_collections import config_flags
import pytest

from lrr_jax import config_checks
from lrr_jax import run_config
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.train import loop
from tests.conftest import TINY_RUN_FLAGS

ROOT = pathlib.Path(__file__).parents[1]
TINY = ["--config.num_steps=2", "--config.batch_size=4", "--config.data.num_train=16", "--config.data.num_eval=2",
        "--config.eval.max_new_tokens=4", "--config.eval.every=0"]


def main(workdir: pathlib.Path, *flags_: str, devices: int = 1) -> tuple[subprocess.CompletedProcess, float]:
  """`python -m lrr_jax.main` in this worktree on `devices` CPU devices; its output and seconds taken."""
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_THREEFRY_PARTITIONABLE": "false",
         "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"}
  start = time.time()
  out = subprocess.run([sys.executable, "-m", "lrr_jax.main", f"--workdir={workdir}", *flags_],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
  return out, time.time() - start


def parse(*overrides: str):
  """The config `lrr_jax.main` parses from these flags."""
  argv = ["main", *[a.replace("--config=configs/", f"--config={ROOT}/configs/") for a in overrides]]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", str(ROOT / "configs/cater.py"), flag_values=flag_values,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@pytest.fixture(scope="module")
def finished_run(tiny_run, tmp_path_factory) -> pathlib.Path:
  """A copy of the session's finished 4-step run (conftest's TINY_RUN_FLAGS) that these tests may rerun."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  shutil.copytree(tiny_run[0], workdir)
  return workdir


def as_json(value):
  return json.loads(json.dumps(value))


def snapshot(workdir: pathlib.Path) -> dict[str, bytes]:
  """The bytes of every file of a workdir but the data."""
  return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
          if p.is_file() and "data" not in p.relative_to(workdir).parts}


@pytest.mark.parametrize("flags_, devices, error", [
    (["--config.optimizer.lr=-0.01"], 1, "config.optimizer.lr=-0.01 must be > 0."),
    (["--config.num_steps=-5"], 1, "config.num_steps=-5 must be > 0."),
    (["--config.batch_size=6"], 4,
     "config.batch_size=6 does not divide over the 4 data-parallel devices (mesh.data=4, mesh.fsdp=1)."),
], ids=["negative_lr", "negative_steps", "batch_over_devices"])
def test_a_bad_config_fails_within_seconds_and_writes_nothing(tmp_path, flags_, devices, error):
  out, seconds = main(tmp_path / "run", *TINY, *flags_, devices=devices)
  assert out.returncode != 0 and error in out.stderr, out.stderr[-3000:]
  assert seconds < 20 and not (tmp_path / "run").exists()


@pytest.mark.slow  # over 4 s
def test_misspelt_keys_in_a_config_file_or_on_the_command_line_fail_before_any_work(tmp_path):
  """The hidden-typo config (three misspelt keys in a file that imports cater's) is refused naming each key and
  the closest known one in one error; a misspelt `--config.` override is named in full; nothing is written."""
  config_file = tmp_path / "typos.py"
  config_file.write_text("from configs import cater\n\n\ndef get_config(arg=None):\n"
                         "  config = cater.get_config(arg)\n  config.data.surogate_prompt_prob = 0.5\n"
                         "  config.optimizer.learning_rate = 0.1\n  config.eval.evry = 10\n  return config\n")
  out, seconds = main(tmp_path / "run", f"--config={config_file}", *TINY)
  assert out.returncode != 0, out.stderr[-3000:]
  for line in ("config.data.surogate_prompt_prob is not a config key (did you mean "
               "config.data.surrogate_prompt_prob?)",
               "config.optimizer.learning_rate is not a config key (did you mean config.optimizer.lr?)",
               "config.eval.evry is not a config key (did you mean config.eval.every?)"):
    assert line in out.stderr, out.stderr[-3000:]
  out, _ = main(tmp_path / "run", *TINY, "--config.eval.evry=10")
  assert out.returncode != 0 and "config.eval.evry is not a config key (did you mean config.eval.every?)" in (
      out.stderr), out.stderr[-3000:]
  assert seconds < 20 and not (tmp_path / "run").exists()


def test_resuming_with_another_config_is_refused_naming_the_changes(finished_run):
  before = snapshot(finished_run)
  out, seconds = main(finished_run, *TINY_RUN_FLAGS, "--config.optimizer.lr=0.01", "--config.batch_size=8",
                      "--config.eval.every=0")
  assert out.returncode != 0 and f"{finished_run} has a checkpoint at step 4" in out.stderr, out.stderr[-3000:]
  changed = "Changed: config.batch_size: 4 -> 8; config.optimizer.lr: 0.001 -> 0.01. Set them back"
  assert changed in out.stderr and "--config.resume_with_changes=True" in out.stderr
  assert "eval.every" not in out.stderr.split("Changed:")[1].split("Set them back")[0]  # free to change
  assert seconds < 20 and snapshot(finished_run) == before


def as_before_world_seed_and_eval_examples(workdir: pathlib.Path) -> None:
  """The workdir as lrr_jax.main wrote it before config.data.world_seed and eval_examples.jsonl existed."""
  meta = json.loads((workdir / "run.json").read_text())
  for config in [meta["config"], *(start["config"] for start in meta["starts"])]:
    del config["data"]["world_seed"]
  (workdir / "run.json").write_text(json.dumps(meta))
  results = json.loads((workdir / "results.json").read_text())
  del results["eval_examples"], results["evaluated_only"]
  (workdir / "results.json").write_text(json.dumps(results))
  (workdir / "eval_examples.jsonl").unlink()


def test_a_finished_run_is_evaluated_again_keeping_its_records(finished_run):
  """A run from before world_seed and per-record scores, evaluated again with the world's seed given: nothing
  changes, and its per-record scores are written."""
  as_before_world_seed_and_eval_examples(finished_run)
  earlier = json.loads((finished_run / "results.json").read_text())
  logs = {name: (finished_run / name).read_text() for name in ("metrics.jsonl", "batches.jsonl")}
  out, _ = main(finished_run, *TINY_RUN_FLAGS, "--config.data.world_seed=0")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"{finished_run} is finished: its checkpoint is at step 4 (config.num_steps=4)" in out.stdout
  results = json.loads((finished_run / "results.json").read_text())
  assert results["train"] == earlier["train"] and set(results["train"]) >= {"loss", "token_accuracy"}
  assert earlier.pop("earlier_results") == []  # a fresh run's
  assert results["earlier_results"] == [earlier] and results["step"] == 4
  assert results["params_checksum"] == earlier["params_checksum"]  # the checkpoint is the trained state
  assert set(results["eval"]) == set(earlier["eval"])
  assert {name: (finished_run / name).read_text() for name in logs} == logs  # nothing trained
  starts = json.loads((finished_run / "run.json").read_text())["starts"]
  assert [(s["resumed_from"], s["evaluated_only"]) for s in starts] == [(None, False), (4, True)]
  assert starts[1]["argv"] == [f"--workdir={finished_run}", *TINY_RUN_FLAGS, "--config.data.world_seed=0"]
  assert starts[1]["changes"] == {} and starts[1]["config"]["data"].pop("world_seed") == 0
  assert starts[1]["config"] == starts[0]["config"] and starts[1]["time"] >= starts[0]["time"]
  assert results["evaluated_only"] and results["eval_examples"] == {"file": "eval_examples.jsonl", "count": 4}
  lines = [json.loads(line) for line in (finished_run / "eval_examples.jsonl").read_text().splitlines()]
  assert sum(line["scores"]["top5"] for line in lines) / len(lines) == results["eval"]["top5"]


def old_run_file(meta: dict) -> dict:
  """run.json as lrr_jax.main wrote it before it kept its starts and before every DecoderConfig field sat
  under `config.model.decoder` (dropout_rate and gate_init beside it, the positions as max_positions)."""
  config = as_json(meta["config"])
  model = config["model"]  # the demo's architecture, as the old format wrote it
  config["model"] = dict(size="tiny", dropout_rate=0.0, gate_init=1.0, init_from="",
                         video=dict(coordinate_channels=True, static_backbone=dict(
                             stage_sizes=model["video"]["static_backbone"]["stage_sizes"])),
                         decoder=dict(cross_attention_heads=4, cross_attention_query_scale=5.0, remat=False,
                                      cross_attention_frames=model["decoder"]["cross_attention_frames"]))
  # remat: a bool before remat_policy took it in
  del config["search"], config["resume_with_changes"]
  return {"config": config, "tokenizer": meta["tokenizer"], "data_dir": meta["data_dir"], "max_positions": 256}


def test_an_old_run_file_loads_and_resumes_without_spurious_changes(finished_run, tmp_path):
  workdir = tmp_path / "old"
  shutil.copytree(finished_run, workdir, ignore=shutil.ignore_patterns("data"))
  meta = json.loads((workdir / "run.json").read_text())
  (workdir / "run.json").write_text(json.dumps(old_run_file(meta)))
  run = run_records.load_run(workdir)
  results = json.loads((workdir / "results.json").read_text())
  assert run.step == 4 and loop.params_checksum(run.params) == results["params_checksum"]
  typed = run_config.RunConfig.from_config_dict(parse(*TINY_RUN_FLAGS))
  assert run.model.config == run_objects.model_config(typed, run.tokenizer.vocab_size)
  previous = run_records.config_values(run_records.read_run_file(workdir / "run.json"))
  config = parse(*TINY_RUN_FLAGS)
  changes = config_checks.check_resume(config, previous, 4, workdir)  # no refusal
  assert set(changes) <= {"resume_with_changes"} | {k for k in config_checks.flatten(config.to_dict())
                                                    if k.startswith("search.")}
  config.optimizer.lr = 0.01
  with pytest.raises(config_checks.ConfigError, match=r"config\.optimizer\.lr: 0\.001 -> 0\.01"):
    config_checks.check_resume(config, previous, 4, workdir)


def test_each_start_is_appended_to_run_json(tmp_path, finished_run):
  tokenizer = tokenizer_lib.load(json.loads((finished_run / "run.json").read_text())["tokenizer"])
  (tmp_path / "run.json").write_text(json.dumps(old_run_file(json.loads((finished_run / "run.json").read_text()))))
  config = parse(*TINY_RUN_FLAGS, "--config.num_steps=6", "--config.resume_with_changes=True")
  run_records.write_run_file(tmp_path, config.to_dict(), tokenizer,
                             dict(time="t1", resumed_from=4, changes={"a": [1, 2]}))
  meta = json.loads((tmp_path / "run.json").read_text())
  assert meta["config"] == as_json(config.to_dict()) and meta["tokenizer"] == tokenizer.source
  assert meta["data_dir"] == run_objects.data_dir(run_config.RunConfig.from_config_dict(config), tmp_path)
  old = old_run_file(json.loads((finished_run / "run.json").read_text()))
  assert meta["starts"] == [
      dict(time=None, argv=None, resumed_from=None, changes=None, config=old["config"]),  # the old file's start
      dict(time="t1", resumed_from=4, changes={"a": [1, 2]}, config=as_json(config.to_dict()))]
  assert run_records.config_values(meta)["num_steps"] == 6  # the latest start's


@pytest.mark.parametrize("remat, policy, expected", [
    (True, None, "full"), (True, "none", "full"), (True, "minimal", "minimal"), (False, None, None), (None, "full", "full"),
])
def test_the_remat_bool_of_earlier_run_files_becomes_the_policy(remat, policy, expected):
  """run.json of runs from before `model.decoder.remat` was folded into `remat_policy` types today."""
  values = parse().to_dict()
  values["model"]["decoder"].update(remat=remat, remat_policy=policy)
  migrated = run_records.config_values({"config": values})
  assert "remat" not in migrated["model"]["decoder"] and migrated["model"]["decoder"]["remat_policy"] == expected
  typed = run_config.RunConfig.from_config_dict(migrated)
  assert run_objects.model_config(typed).decoder.remat_policy == (expected or "none")


def test_an_earlier_run_file_without_a_search_section_searched_with_the_defaults_of_then():
  values = parse().to_dict()
  del values["search"]
  typed = run_config.RunConfig.from_config_dict(run_records.config_values({"config": values}))
  assert (typed.search.num_candidates, typed.search.max_step_tokens, typed.search.sampling.top_p) == (4, 256, 0.9)


def test_what_auto_micro_batching_chose_is_recorded_in_the_latest_start(tmp_path):
  starts = [dict(time="earlier"), dict(time="now")]
  (tmp_path / "run.json").write_text(json.dumps(dict(config={}, tokenizer="t", data_dir="d", starts=starts)))
  run_records.record_in_start(tmp_path, micro_batches=dict(steps=2, peaks={"1": 9, "2": 5}))
  meta = json.loads((tmp_path / "run.json").read_text())
  assert meta["starts"] == [dict(time="earlier"),
                            dict(time="now", micro_batches=dict(steps=2, peaks={"1": 9, "2": 5}))]
  with pytest.raises(FileNotFoundError, match="No run.json"):
    run_records.record_in_start(tmp_path / "elsewhere", micro_batches={})
