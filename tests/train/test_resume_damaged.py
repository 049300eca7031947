"""A run whose newest checkpoint was damaged after it stopped resumes from the previous intact one, keeps the damaged
one aside, and ends with the same params as an uninterrupted run. Four `lrr_jax.main` runs in all: one uninterrupted,
one killed after two saves, and one rerun for each damage."""
import json
import pathlib
import shutil
import signal
import subprocess

import pytest

from tests.train.test_resume import ROOT, command, last_batch_per_step, logged_steps, wait_for


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
  """{"straight": an uninterrupted 40-step workdir, "killed": one killed after its checkpoints 10 and 20}."""
  root = tmp_path_factory.mktemp("runs")
  data_dir = root / "data"
  subprocess.run(command(root / "straight", data_dir), cwd=ROOT, check=True, capture_output=True, timeout=600)
  killed = root / "killed"
  process = subprocess.Popen(command(killed, data_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  wait_for(lambda: (killed / "ckpt" / "20").is_dir() and len(logged_steps(killed)) >= 24, process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert sorted(p.name for p in (killed / "ckpt").iterdir()) == ["10", "20"]
  return {"straight": root / "straight", "killed": killed, "data": data_dir}


def flip_bytes(path: pathlib.Path):
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  path.write_bytes(bytes(data))


def truncate(path: pathlib.Path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


@pytest.mark.parametrize("damage, cause", [(flip_bytes, "differ from the digest"), (truncate, "cannot be read")])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(runs, tmp_path, damage, cause):
  workdir = pathlib.Path(shutil.copytree(runs["killed"], tmp_path / "run"))
  data_files = (workdir / "ckpt" / "20" / "state" / "ocdbt.process_0" / "d").iterdir()
  damage(max(data_files, key=lambda p: p.stat().st_size))  # the largest array data file
  out = subprocess.run(command(workdir, runs["data"]), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step 20 is unusable (corrupt)" in out.stderr and cause in out.stderr, out.stderr[-3000:]
  assert "Resuming from step 10" in out.stderr

  straight = json.loads((runs["straight"] / "results.json").read_text())
  resumed = json.loads((workdir / "results.json").read_text())
  assert resumed["params_checksum"] == straight["params_checksum"]
  assert last_batch_per_step(workdir) == last_batch_per_step(runs["straight"])
  # kept for inspection, not counted by `checkpoint.keep=2`; step 20 was saved again and collected later
  assert sorted(p.name for p in (workdir / "ckpt").iterdir()) == ["20.damaged", "30", "40"]
