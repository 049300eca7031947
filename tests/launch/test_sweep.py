"""launch/sweep.py: a config file's sweep function -> runs, their commands for each launcher, resume, and the
summary table of their results.json files."""
import json
import pathlib
import sys
import textwrap

import pytest

from launch import sweep

ROOT = pathlib.Path(__file__).parents[2]
ABLATION = [f"variant={v},camera={c}" for c in ("static", "moving")
            for v in ("direct", "no_surrogate", "no_tags", "full")]
ENCODER_OVERRIDES = ["model.video.two_stream=False", "model.video.temporal_window=2", "model.video.temporal_window=4"]
CATER = ABLATION + [f"variant=full,camera=static,{o}" for o in ENCODER_OVERRIDES]  # run names
CONFIG_ARGS = ABLATION + ["variant=full,camera=static"] * len(ENCODER_OVERRIDES)
FLAGS = [[]] * len(ABLATION) + [[f"--config.{o}"] for o in ENCODER_OVERRIDES]


def test_cater_sweep_expands_to_the_rationale_ablation_on_both_cameras_and_the_encoder_ablations(tmp_path):
  runs = sweep.expand(str(ROOT / "configs/cater.py"), tmp_path)
  assert [r.name for r in runs] == CATER
  assert [r.config for r in runs] == [f"{ROOT / 'configs/cater.py'}:{arg}" for arg in CONFIG_ARGS]
  assert [r.workdir for r in runs] == [tmp_path / arg for arg in CATER]
  assert sweep.command(runs[0], ["--config.num_steps=100"], python="py") == [
      "py", "-m", "lrr_jax.main", f"--config={ROOT / 'configs/cater.py'}:variant=direct,camera=static",
      f"--workdir={tmp_path / 'variant=direct,camera=static'}", "--config.num_steps=100"]


def test_print_gives_one_command_per_run_for_each_launcher(capsys):
  def printed(*args):
    assert sweep.main(["--config=configs/cater.py", "--sweep_dir=sw", "--print", "--python=py", *args]) == 0
    return capsys.readouterr().out.splitlines()

  assert printed("--config.num_steps=100") == [
      " ".join([f"py -m lrr_jax.main --config=configs/cater.py:{a} --workdir=sw/{name}", *flags,
                "--config.num_steps=100"]) for a, name, flags in zip(CONFIG_ARGS, CATER, FLAGS)]
  assert printed("--launcher=slurm")[:len(ABLATION)] == [
      f"CONFIG=configs/cater.py:{a} WORKDIR=sw/{a} sbatch launch/slurm.sbatch" for a in ABLATION]
  tpu = printed("--launcher=tpu_vm", "--config.batch_size=64")
  assert tpu[0] == (f"CONFIG=configs/cater.py:{CATER[0]} WORKDIR=sw/{CATER[0]} LOGS_DIR=sw/{CATER[0]} "
                    "bash launch/tpu_vm.sh --config.batch_size=64")  # the first run sets the TPU VM up
  assert tpu[1] == (f"CONFIG=configs/cater.py:{CATER[1]} WORKDIR=sw/{CATER[1]} LOGS_DIR=sw/{CATER[1]} "
                    "STEPS=run,fetch bash launch/tpu_vm.sh --config.batch_size=64")


def write_config(tmp_path, body: str) -> str:
  path = tmp_path / "family.py"
  path.write_text("def sweep(add, arg=None):\n" + textwrap.indent(textwrap.dedent(body), "  "))
  return str(path)


def test_overrides_name_the_run_and_become_flags(tmp_path):
  config = write_config(tmp_path, """\
      add(config_arg=f"variant=direct", **{"optimizer.lr": 1e-3, "optimizer.trainable": ("a/", "b")})
      add(**{"model.gate_init": 0.0})
      add()
      """)
  runs = sweep.expand(f"{config}:size=tiny", tmp_path / "sw")
  assert [r.name for r in runs] == ["variant=direct,optimizer.lr=0.001,optimizer.trainable=-a-,-b-",
                                    "size=tiny,model.gate_init=0.0", "size=tiny"]
  assert [r.config for r in runs] == [f"{config}:variant=direct", f"{config}:size=tiny", f"{config}:size=tiny"]
  assert sweep.command(runs[0], [], python="py")[5:] == ["--config.optimizer.lr=0.001",
                                                          "--config.optimizer.trainable=('a/', 'b')"]
  assert sweep.expand(config, tmp_path)[2].name == "default"


def test_a_run_added_twice_is_an_error(tmp_path):
  config = write_config(tmp_path, 'add(config_arg="a=1")\nadd(config_arg="a=1")\n')
  with pytest.raises(ValueError, match="adds the run 'a=1' twice"):
    sweep.expand(config, tmp_path)


def results(top1, loss, minutes, **extra):
  return {"eval": {"top1": top1, **extra}, "train": {"loss": loss, "token_accuracy": 0.5}, "minutes": minutes,
          "params_checksum": "x"}


def test_summary_table_of_finished_runs(tmp_path, capsys):
  sweep_dir = tmp_path / "sw"
  for arg, result in [(CATER[0], results(0.25, 1.5, 3.0)), (CATER[3], results(0.5, 0.75, 12.25, l1=1.125))]:
    (sweep_dir / arg).mkdir(parents=True)
    (sweep_dir / arg / "results.json").write_text(json.dumps(result))
  assert sweep.main(["--config=configs/cater.py", f"--sweep_dir={sweep_dir}", "--summary"]) == 0
  table = (sweep_dir / "summary.md").read_text().splitlines()
  assert table[:2] == ["| run | status | minutes | train loss | top1 | l1 |", "| --- | --- | --- | --- | --- | --- |"]
  assert table[2] == f"| {CATER[0]} | done | 3.000 | 1.500 | 0.250 |  |"
  assert table[3] == f"| {CATER[1]} | missing |  |  |  |  |"
  assert table[5] == f"| {CATER[3]} | done | 12.250 | 0.750 | 0.500 | 1.125 |"
  assert len(table) == 2 + len(CATER) and "\n".join(table) in capsys.readouterr().out
  rows = json.loads((sweep_dir / "summary.json").read_text())
  assert rows[3]["eval"] == {"top1": 0.5, "l1": 1.125} and rows[3]["train"]["loss"] == 0.75
  assert [r["status"] for r in rows] == ["done", "missing", "missing", "done", *["missing"] * (len(CATER) - 4)]


def test_local_sweep_runs_what_is_missing_and_passes_overrides(tmp_path):
  """A stand-in for Python writes results.json (or fails for one run); finished runs are not run again."""
  sweep_dir, log = tmp_path / "sw", tmp_path / "calls.txt"
  fake = tmp_path / "fake_python"
  fake.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, pathlib, sys
      args = dict(a.split("=", 1) for a in sys.argv[3:])
      open({str(log)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
      if "no_tags" in args["--config"]:
        sys.exit(7)
      workdir = pathlib.Path(args["--workdir"]); workdir.mkdir(parents=True)
      (workdir / "results.json").write_text(json.dumps({{"eval": {{"top1": 0.5}}, "train": {{"loss": 1.0}},
                                                        "minutes": 0.5}}))
      """))
  fake.chmod(0o755)
  (sweep_dir / CATER[0]).mkdir(parents=True)
  (sweep_dir / CATER[0] / "results.json").write_text(json.dumps(results(0.125, 2.0, 1.0)))
  argv = ["--config=configs/cater.py", f"--sweep_dir={sweep_dir}", f"--python={fake}", "--config.num_steps=7"]
  assert sweep.main(argv) == 1  # two runs failed
  calls = log.read_text().splitlines()
  assert len(calls) == len(CATER) - 1 and not any(CATER[0] in c for c in calls)  # the finished run was skipped
  assert all(c.startswith("-m lrr_jax.main --config=configs/cater.py:") and c.endswith(" --config.num_steps=7")
             for c in calls)
  rows = json.loads((sweep_dir / "summary.json").read_text())
  assert [r["status"] for r in rows] == ["done", "done", "failed", "done", "done", "done", "failed", "done",
                                         *["done"] * len(ENCODER_OVERRIDES)]
  assert rows[0]["eval"]["top1"] == 0.125 and rows[1]["eval"]["top1"] == 0.5
  assert sweep.main(argv) == 1 and len(log.read_text().splitlines()) == len(CATER) + 1  # a rerun retries only the failures


def test_remote_launchers_only_print():
  with pytest.raises(SystemExit):
    sweep.main(["--config=configs/cater.py", "--launcher=slurm"])
