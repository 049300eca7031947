"""Two local JAX processes on one global mesh (CPU, gloo) train exactly as one process with two devices on the
same global batch, also when one of them is sent SIGTERM mid-run and the run is started again; a failing process
stops the others; `--dry-run` prints each process's command."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from launch import local_multiprocess

ROOT = pathlib.Path(__file__).parents[2]
FLAGS = ["--config.num_steps=4", "--config.checkpoint.every=2", "--config.data.num_train=16",
         "--config.data.num_eval=2", "--config.eval.max_new_tokens=4", "--config.batch_size=4",
         "--config.log_every=1", "--config.optimizer.warmup_steps=4"]
# As tests/conftest.py (classic threefry, its XLA_FLAGS: no LLVM optimisation).
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_THREEFRY_PARTITIONABLE": "false"}


def restore_params(workdir: pathlib.Path, step: int) -> dict:
  """The params of checkpoint `step` as numpy arrays (whatever mesh saved them)."""
  path = workdir / "ckpt" / str(step) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  return checkpointer.restore(path, restore_args=restore_args)["params"]


def batches(workdir: pathlib.Path, name: str = "batches.jsonl") -> list[list[int]]:
  return [json.loads(line)["record_index"] for line in (workdir / name).read_text().splitlines()]


def start(command: list[str]) -> subprocess.Popen:
  return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_one_of_two(workdir: pathlib.Path, data: pathlib.Path, mesh: list[str]) -> int:
  """Start two processes, SIGTERM process 1 only once its train loop has started: both must save the same step
  (the flag is agreed by all-gather) and exit. Returns that step."""
  commands = local_multiprocess.process_commands(2, local_multiprocess.free_port(), "configs/cater.py",
                                                 str(workdir), [f"--config.data.data_dir={data}", *FLAGS, *mesh])
  logs = [workdir.parent / f"{workdir.name}.p{i}.log" for i in range(2)]
  processes = [subprocess.Popen(c, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=log.open("w"))
               for c, log in zip(commands, logs)]
  start_time = time.time()
  while "train:" not in logs[1].read_text():  # tqdm's bar: the SIGTERM handler is installed, step 1 not done
    assert all(p.poll() is None for p in processes), logs[1].read_text()[-4000:]
    assert time.time() - start_time < 600
    time.sleep(0.05)
  processes[1].send_signal(signal.SIGTERM)
  saved = []
  for process, log in zip(processes, logs):
    process.wait(timeout=600)
    text = log.read_text()
    assert process.returncode != 0 and "SIGTERM: saved step " in text, text[-4000:]
    saved.append(int(text.split("SIGTERM: saved step ")[1].split()[0]))
  assert saved[0] == saved[1] and 1 <= saved[0] < 4, saved
  assert [int(s.name) for s in (workdir / "ckpt").iterdir() if s.name.isdigit()] == [saved[0]]
  return saved[0]


def finish(process: subprocess.Popen) -> str:
  stdout, stderr = process.communicate(timeout=900)
  assert process.returncode == 0, stderr[-4000:]
  return stdout + stderr


@pytest.mark.slow  # two-process runs beside a single-process one
@pytest.mark.parametrize("mesh", [["--config.mesh.data=-1"], ["--config.mesh.data=1", "--config.mesh.fsdp=-1"]],
                         ids=["data_parallel", "fsdp_sigterm_to_one_process"])
def test_two_processes_train_as_one_process_with_two_devices(tmp_path, mesh):
  """With fsdp=2 every parameter is split across the two processes: the checksum and the evaluation gather them.
  The fsdp run is first stopped by a SIGTERM to process 1 only; started again, it ends as the uninterrupted
  single-process run does."""
  data = tmp_path / "data"
  single, multi = tmp_path / "single", tmp_path / "multi"
  one = start([sys.executable, "-m", "lrr_jax.main", f"--workdir={single}", f"--config.data.data_dir={data}",
               *FLAGS, *mesh, "--config.distributed.local_device_count=2"])
  start_time = time.time()
  while not list(data.rglob("tokenizer.json")):  # written after the dataset: both runs may read it now
    assert one.poll() is None, one.communicate()[1][-4000:]
    assert time.time() - start_time < 300
    time.sleep(0.2)
  if "--config.mesh.fsdp=-1" in mesh:
    interrupt_one_of_two(multi, data, mesh)
  two = start([sys.executable, "launch/local_multiprocess.py", "--num_processes=2", f"--workdir={multi}",
               f"--config.data.data_dir={data}", *FLAGS, *mesh])
  out = finish(two)
  finish(one)
  assert "[p0] " in out and "[p1] " in out

  # batch_size is the global batch: each process batches 2 of its shard (records i::2 of the shared shuffle),
  # so every step's global batch holds the single run's records, process 0's rows first.
  whole, first, second = batches(single), batches(multi), batches(multi, "batches.process1.jsonl")
  assert len(whole) == 4 and all(len(b) == 4 for b in whole)
  assert first == [b[0::2] for b in whole] and second == [b[1::2] for b in whole]

  expected, found, before = (restore_params(single, 4), restore_params(multi, 4), restore_params(single, 2))
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(before)))
  assert moved > 5e-4  # the tolerance below is far smaller than what the last two steps changed
  for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(found)):
    name = jax.tree_util.keystr(path)
    if "k_proj']['bias" in name:
      # Softmax ignores a key bias (it shifts all of a query's logits alike): its gradient is 0 but for
      # rounding, which Adam scales up, so it only drifts by noise, in both runs.
      assert np.abs(want).max() < 1e-4 and np.abs(got).max() < 1e-4, name
    else:
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-6, err_msg=name)
  results = [json.loads((multi / name).read_text()) for name in ("results.json", "results.process1.json")]
  assert results[0]["params_checksum"] == results[1]["params_checksum"]  # both processes hold the same params
  assert results[0]["eval"] == results[1]["eval"]  # gathered: both report the whole test split's scores
  assert (results[0]["evaluated_records"], results[1]["evaluated_records"]) == ([0], [1])  # disjoint halves
  np.testing.assert_allclose(results[0]["train"]["loss"],
                             json.loads((single / "results.json").read_text())["train"]["loss"], rtol=1e-5)


def test_a_failing_process_stops_the_others_and_shows_its_error(capfd):
  fail = [sys.executable, "-c", "import sys, time; time.sleep(1); print('boom: bad shard', file=sys.stderr); "
                                "sys.exit(3)"]
  hang = [sys.executable, "-c", "import time; time.sleep(120)"]
  start = time.time()
  assert local_multiprocess.run_processes([hang, fail], grace_s=2) == 3
  assert time.time() - start < 30  # the hanging process was stopped
  err = capfd.readouterr().err
  assert "[p1] boom: bad shard" in err
  assert "Process 1 of 2 failed with exit status 3" in err and err.rstrip().endswith("boom: bad shard")


def test_dry_run_prints_each_process_command():
  out = subprocess.run([sys.executable, "launch/local_multiprocess.py", "--dry-run", "--num_processes=3",
                        "--port=4321", "--config=configs/acre.py:split=iid", "--workdir=w",
                        "--config.num_steps=10"], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.splitlines() == [
      f"JAX_PLATFORMS=cpu {sys.executable} -m lrr_jax.main --config=configs/acre.py:split=iid --workdir=w "
      f"--config.distributed.enabled=True --config.distributed.coordinator_address=127.0.0.1:4321 "
      f"--config.distributed.num_processes=3 --config.distributed.process_id={i} "
      f"--config.distributed.local_device_count=1 --config.num_steps=10" for i in range(3)]
