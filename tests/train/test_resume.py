"""Exact resume: a run killed with SIGKILL after a checkpoint and restarted ends with the same params and saw
the same batches as an uninterrupted run, also when its newest checkpoint was then damaged (it resumes from the one
before); SIGTERM saves before exiting."""
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.train import test_checkpoint

pytestmark = pytest.mark.slow  # end-to-end runs killed and resumed

ROOT = pathlib.Path(__file__).parents[2]
FLAGS = ["--config.num_steps=40", "--config.checkpoint.every=10", "--config.data.num_train=32",
         "--config.data.num_eval=2", "--config.eval.max_new_tokens=4", "--config.batch_size=4",
         "--config.log_every=1"]


def command(workdir, data_dir):
  return [sys.executable, "-m", "lrr_jax.main", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          *FLAGS]


def logged_steps(workdir) -> list[dict]:
  path = workdir / "batches.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def wait_for(condition, process, timeout=300):
  start = time.time()
  while not condition():
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.time() - start < timeout
    time.sleep(0.05)


def last_batch_per_step(workdir) -> dict[int, list[int]]:
  return {entry["step"]: entry["record_index"] for entry in logged_steps(workdir)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
  """{"straight": an uninterrupted 40-step workdir, "killed": one SIGKILLed after its checkpoints 10 and 20 (tests
  resume copies of it), "data": their data directory}."""
  root = tmp_path_factory.mktemp("runs")
  data_dir = root / "data"
  subprocess.run(command(root / "straight", data_dir), cwd=ROOT, check=True, capture_output=True, timeout=600)
  killed = root / "killed"
  process = subprocess.Popen(command(killed, data_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  wait_for(lambda: (killed / "ckpt" / "20").is_dir() and len(logged_steps(killed)) >= 24, process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert len(logged_steps(killed)) < 40  # it really was cut short
  assert sorted(p.name for p in (killed / "ckpt").iterdir()) == ["10", "20"]
  return {"straight": root / "straight", "killed": killed, "data": data_dir}


def resume_copy(runs, tmp_path, damage=None) -> subprocess.CompletedProcess:
  """Rerun a copy of the killed run (at tmp_path / "run"), after `damage(the largest data file of step 20)`."""
  workdir = pathlib.Path(shutil.copytree(runs["killed"], tmp_path / "run"))
  if damage is not None:
    damage(test_checkpoint.data_file(workdir / "ckpt" / "20"))
  out = subprocess.run(command(workdir, runs["data"]), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  straight = json.loads((runs["straight"] / "results.json").read_text())
  resumed = json.loads((workdir / "results.json").read_text())
  assert resumed["params_checksum"] == straight["params_checksum"]
  assert last_batch_per_step(workdir) == last_batch_per_step(runs["straight"])
  return out


def test_sigkill_then_restart_equals_an_uninterrupted_run(runs, tmp_path):
  resume_copy(runs, tmp_path)
  assert len(logged_steps(tmp_path / "run")) > 40  # steps after the checkpoint ran twice, with the same batches


@pytest.mark.parametrize("damage, cause", [(test_checkpoint.flip_bytes, "differ from the digest"),
                                           (test_checkpoint.truncate, "cannot be read")])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(runs, tmp_path, damage, cause):
  out = resume_copy(runs, tmp_path, damage)
  assert "step 20 is unusable (corrupt)" in out.stderr and cause in out.stderr, out.stderr[-3000:]
  assert "Resuming from step 10" in out.stderr
  # kept for inspection, not counted by `checkpoint.keep=2`; step 20 was saved again and collected later
  assert sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir()) == ["20.damaged", "30", "40"]


def test_sigterm_saves_before_exiting(tmp_path):
  workdir = tmp_path / "run"
  process = subprocess.Popen(command(workdir, tmp_path / "data"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  wait_for(lambda: len(logged_steps(workdir)) >= 3, process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode != 0
  saved = int(stderr.split("SIGTERM: saved step ")[1].split()[0])
  assert saved == len(logged_steps(workdir)) >= 3  # the state after the last step taken
  assert (workdir / "ckpt" / str(saved)).is_dir()


def test_a_diverging_run_stops_and_keeps_only_finite_checkpoints(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  command = [sys.executable, "-m", "lrr_jax.main", "--config=configs/cater.py", f"--workdir={tmp_path}",
             "--config.num_steps=8", "--config.data.num_train=32", "--config.data.num_eval=4",
             "--config.batch_size=4", "--config.log_every=1", "--config.checkpoint.every=1",
             "--config.optimizer.lr=1e30", "--config.optimizer.warmup_steps=2", "--config.optimizer.clip_norm=1e30"]
  out = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert out.returncode != 0 and "FloatingPointError" in out.stderr, out.stderr[-2000:]
  assert "stopped, the last good checkpoint is step" in out.stderr
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  steps = manager.all_steps()
  assert steps and max(steps) < 8
  restored = manager.restore(max(steps), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored["state"]["params"]))
