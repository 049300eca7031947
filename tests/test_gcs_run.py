"""A run whose every path is gs:// (a real GCS emulator): it trains, checkpoints, is killed, resumes exactly,
evaluates, and `infer` reads it back; nothing is written to local disk but caches."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from etils import epath
import pytest

pytestmark = pytest.mark.slow  # runs against the GCS emulator

ROOT = pathlib.Path(__file__).parents[1]
FLAGS = ["--config.num_steps=4", "--config.log_every=1", "--config.checkpoint.every=2", "--config.batch_size=4",
         "--config.data.num_train=32", "--config.data.num_eval=4", "--config.eval.max_new_tokens=12",
         "--config.eval.every=2", "--config.eval.num_examples=2"]  # as the local `tiny_run` fixture's


def test_a_gs_run_resumes_exactly_and_equals_the_local_run(gcs, tiny_run, tmp_path):
  workdir, data_dir = f"{gcs}/runs/tiny", f"{gcs}/data"
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false", "LRR_JAX_CACHE": str(tmp_path / "cache"),
         "PYTHONPATH": str(ROOT)}
  command = [sys.executable, "-m", "lrr_jax.main", f"--config={ROOT / 'configs/cater.py'}",
             f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *FLAGS]
  process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  start = time.time()
  while not (epath.Path(workdir) / "ckpt" / "2" / "digest").exists():  # the first checkpoint is written
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.time() - start < 600
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (epath.Path(workdir) / "results.json").exists()  # it really was cut short
  out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]

  local = json.loads((tiny_run[0] / "results.json").read_text())
  remote = json.loads((epath.Path(workdir) / "results.json").read_text())
  assert remote["params_checksum"] == local["params_checksum"]
  assert remote["eval"] == local["eval"]
  names = {p.name for p in epath.Path(workdir).iterdir()}
  assert {"run.json", "results.json", "metrics.jsonl", "batches.jsonl", "ckpt"} <= names
  assert any(n.startswith("events.out.tfevents") for n in names)
  steps = [json.loads(line)["step"] for line in (epath.Path(workdir) / "batches.jsonl").read_text().splitlines()]
  assert sorted(set(steps)) == [0, 1, 2, 3]
  assert list(cwd.iterdir()) == []  # nothing written where it ran: no `gs:` folder, no workdir

  infer = subprocess.run([sys.executable, "-m", "lrr_jax.infer", f"--workdir={workdir}", "--strategy=greedy",
                          "--max_new_tokens=8", "--example=1"], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
  assert infer.returncode == 0, infer.stderr[-3000:]
  assert "Answer:" in infer.stdout and "(step 4)" in infer.stdout
