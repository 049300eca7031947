"""One run per workdir (`lrr_jax.data.lease`): a second claim is refused naming the live holder, a stale or dead
holder's lease is taken over, the holder renews it; on local disk and on gs:// (the GCS emulator)."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from lrr_jax import files
from lrr_jax.data import lease

ROOT = pathlib.Path(__file__).parents[2]
HOLD = ("import sys, time\nfrom lrr_jax.data import lease\n"
        "held = lease.Lease(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")


def hold_in_a_process(workdir: str) -> subprocess.Popen:
  """A separate process that claims `workdir`'s lease and keeps it (until killed)."""
  process = subprocess.Popen([sys.executable, "-c", HOLD, workdir], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
  line = process.stdout.readline()
  assert line.strip() == "held", process.communicate()[1][-2000:]
  return process


def claim_in_a_process(workdir: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", ""), workdir], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def write_holder(workdir, **fields) -> None:
  holder = {**vars(lease.Holder.me()), **fields}
  path = files.as_path(workdir) / lease.LEASE_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(holder))


def read_holder(workdir) -> dict:
  return json.loads((files.as_path(workdir) / lease.LEASE_FILE).read_text())


@pytest.mark.slow
def test_a_second_process_is_refused_naming_the_first(tmp_path):
  first = hold_in_a_process(str(tmp_path))
  try:
    second = claim_in_a_process(str(tmp_path))
    assert second.returncode != 0
    assert "WorkdirInUse" in second.stderr
    assert f"host {socket.gethostname()}, pid {first.pid}, started at " in second.stderr
  finally:
    first.kill()
    first.wait()
  assert claim_in_a_process(str(tmp_path)).returncode == 0  # a killed holder of this host: taken over at once


def test_a_stale_lease_is_taken_over_and_a_live_one_is_not(tmp_path):
  write_holder(tmp_path, host="elsewhere", pid=4242, renewed=time.time() - 10)
  with pytest.raises(lease.WorkdirInUse, match=r"host elsewhere, pid 4242, started at .*last renewed 10 s ago"):
    lease.Lease(tmp_path, stale_after=60).acquire()
  assert read_holder(tmp_path)["pid"] == 4242  # untouched
  held = lease.Lease(tmp_path, stale_after=5).acquire()  # 10 s without renewal is stale at 5
  assert read_holder(tmp_path)["token"] == held.holder.token
  held.release()
  assert not (tmp_path / lease.LEASE_FILE).exists()


def test_the_holder_renews_and_a_released_lease_is_free(tmp_path):
  held = lease.Lease(tmp_path, stale_after=0.4).acquire()
  first = read_holder(tmp_path)["renewed"]
  time.sleep(0.5)
  assert read_holder(tmp_path)["renewed"] > first  # renewed every 0.1 s: never stale while alive
  with pytest.raises(lease.WorkdirInUse):
    lease.Lease(tmp_path, stale_after=0.4).acquire()
  held.release()
  with lease.Lease(tmp_path):
    pass


def test_an_unreadable_lease_is_stale_and_a_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / lease.LEASE_FILE).write_text('{"host": "a", "pi')  # cut while written
  lease.Lease(tmp_path).acquire().release()
  (tmp_path / "file").write_text("x")
  with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'file'} is a file"):
    lease.Lease(tmp_path / "file").acquire()


@pytest.mark.slow
def test_on_gcs_a_claim_is_conditioned_and_a_stale_lease_taken_over(gcs):
  workdir = f"{gcs}/lease_test/run"
  held = lease.Lease(workdir, stale_after=60).acquire()
  with pytest.raises(lease.WorkdirInUse, match=f"pid {os.getpid()}"):
    lease.Lease(workdir, stale_after=60).acquire()
  other = claim_in_a_process(workdir)  # another process, through the emulator
  assert other.returncode != 0 and f"pid {os.getpid()}, started at" in other.stderr
  held.renew()
  held.release()
  assert not (files.as_path(workdir) / lease.LEASE_FILE).exists()
  write_holder(workdir, host="elsewhere", pid=7, renewed=time.time() - 100)
  taken = lease.Lease(workdir, stale_after=60).acquire()
  assert read_holder(workdir)["token"] == taken.holder.token
  taken.release()
