"""Exact resume: a run killed with SIGKILL after a checkpoint and restarted ends with the same params and saw
the same batches as an uninterrupted run; SIGTERM saves before exiting."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np

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


def test_sigkill_then_restart_equals_an_uninterrupted_run(tmp_path):
  data_dir = tmp_path / "data"
  subprocess.run(command(tmp_path / "straight", data_dir), cwd=ROOT, check=True, capture_output=True, timeout=600)

  killed = tmp_path / "killed"
  process = subprocess.Popen(command(killed, data_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  wait_for(lambda: (killed / "ckpt" / "20").is_dir() and len(logged_steps(killed)) >= 24, process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert len(logged_steps(killed)) < 40  # it really was cut short
  subprocess.run(command(killed, data_dir), cwd=ROOT, check=True, capture_output=True, timeout=600)

  straight = json.loads((tmp_path / "straight" / "results.json").read_text())
  resumed = json.loads((killed / "results.json").read_text())
  assert resumed["params_checksum"] == straight["params_checksum"]
  assert last_batch_per_step(killed) == last_batch_per_step(tmp_path / "straight")
  assert len(logged_steps(killed)) > 40  # steps after the checkpoint ran twice, with the same batches


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
