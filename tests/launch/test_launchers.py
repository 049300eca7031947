"""The Cloud TPU VM and SLURM launchers' dry runs print exactly the commands they would run."""
import os
import pathlib
import shlex
import subprocess

import pytest

ROOT = pathlib.Path(__file__).parents[2]


def dry_run(script: str, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
  clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_", "ZONE", "PROJECT"))}
  return subprocess.run(["bash", script, *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                        check=check, timeout=60)


def test_tpu_vm_dry_run_for_a_four_worker_pod():
  env = dict(TPU_NAME="lrr-pod", ZONE="us-central2-b", ACCELERATOR_TYPE="v4-32", PROJECT="my-project",
             CONFIG="configs/acre.py:split=compositional", WORKDIR="/mnt/shared/acre")
  out = dry_run("launch/tpu_vm.sh", env, "--dry-run", "--config.num_steps=400", "--config.batch_size=64")
  tpu, where = ["gcloud", "compute", "tpus", "tpu-vm"], ["--zone=us-central2-b", "--project=my-project"]
  install = ("(command -v python3.11 >/dev/null || (sudo apt-get update -qq && sudo apt-get install -y -qq "
             "python3.11 python3.11-venv)) && cd ~/lrr_jax && python3.11 -m venv .venv && .venv/bin/pip install -q "
             "-U pip && .venv/bin/pip install -q -e . 'jax[tpu]>=0.10.2,<0.11'")
  train = ("set -o pipefail; cd ~/lrr_jax && .venv/bin/python -m lrr_jax.main "
           "--config=configs/acre.py:split=compositional --workdir=/mnt/shared/acre "
           "--config.distributed.enabled=True --config.num_steps=400 --config.batch_size=64 "
           "2>&1 | tee ~/lrr_jax_train.log")
  expected = [
      [*tpu, "describe", "lrr-pod", *where],
      [*tpu, "create", "lrr-pod", *where, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"],
      ["tar", "-czf", "/tmp/lrr-pod-code.tar.gz", "--exclude=./.git", "--exclude=./.venv", "--exclude=./workdirs",
       "--exclude=./logs", "."],
      [*tpu, "scp", "/tmp/lrr-pod-code.tar.gz", "lrr-pod:lrr_jax_code.tar.gz", *where, "--worker=all"],
      [*tpu, "ssh", "lrr-pod", *where, "--worker=all",
       "--command=mkdir -p ~/lrr_jax && tar -xzf ~/lrr_jax_code.tar.gz -C ~/lrr_jax"],
      [*tpu, "ssh", "lrr-pod", *where, "--worker=all", f"--command={install}"],
      [*tpu, "ssh", "lrr-pod", *where, "--worker=all", f"--command={train}"],
      ["mkdir", "-p", "logs/lrr-pod"],
      *([*tpu, "scp", "lrr-pod:lrr_jax_train.log", f"logs/lrr-pod/worker{w}.log", *where, f"--worker={w}"]
        for w in range(4)),
      [*tpu, "scp", "lrr-pod:/mnt/shared/acre/results.json", "logs/lrr-pod/results.json", *where, "--worker=0"],
  ]
  assert out.stdout.splitlines() == [shlex.join(c) for c in expected]
  assert [shlex.split(line) for line in out.stdout.splitlines()] == expected  # one shell word per argument


@pytest.mark.parametrize("accelerator, workers", [("v4-8", 1), ("v4-32", 4), ("v5p-128", 16), ("v3-32", 4),
                                                  ("v5litepod-16", 4), ("v6e-8", 1), ("v6e-256", 64)])
def test_tpu_vm_fetches_from_every_worker_of_the_slice(accelerator, workers):
  out = dry_run("launch/tpu_vm.sh", dict(ACCELERATOR_TYPE=accelerator, STEPS="fetch", TPU_NAME="t", WORKDIR="/w"),
                "--dry-run")
  assert [line.split()[-1] for line in out.stdout.splitlines()[1:-1]] == [f"--worker={w}" for w in range(workers)]


def test_tpu_vm_rejects_an_unknown_argument():
  out = dry_run("launch/tpu_vm.sh", dict(WORKDIR="/w"), "--dry-run", "--num_steps=3", check=False)
  assert out.returncode == 2 and "unknown argument --num_steps=3" in out.stderr


def test_tpu_vm_passes_a_gs_workdir_to_every_worker_and_fetches_results_from_the_bucket():
  out = dry_run("launch/tpu_vm.sh", dict(TPU_NAME="t", ACCELERATOR_TYPE="v4-16", WORKDIR="gs://bucket/runs/x",
                                         STEPS="run,fetch"), "--dry-run")
  lines = [shlex.split(line) for line in out.stdout.splitlines()]
  assert "--workdir=gs://bucket/runs/x" in lines[0][-1] and "--worker=all" in lines[0]
  assert lines[-1] == ["gcloud", "storage", "cp", "gs://bucket/runs/x/results.json", "logs/t/results.json"]


@pytest.mark.parametrize("workdir", ["", "workdirs/relative"])
def test_tpu_vm_refuses_a_workdir_the_workers_do_not_share(workdir):
  out = dry_run("launch/tpu_vm.sh", dict(WORKDIR=workdir), "--dry-run", check=False)
  assert out.returncode == 2 and "every worker shares" in out.stderr


def test_slurm_dry_run_for_a_two_node_job():
  env = dict(DRY_RUN="1", SLURM_JOB_NODELIST="gpu[07-08]", SLURM_NTASKS="2", SLURM_JOB_ID="4242",
             SLURM_SUBMIT_DIR=str(ROOT), CONFIG="configs/cater.py:camera=moving", PORT="23456")
  out = dry_run("launch/slurm.sbatch", env, "--config.num_steps=100")
  main = (".venv/bin/python -m lrr_jax.main --config=configs/cater.py:camera=moving --workdir=workdirs/slurm_4242 "
          "--config.distributed.enabled=True --config.distributed.coordinator_address=gpu07:23456 "
          "--config.distributed.num_processes=2 --config.num_steps=100")
  srun = ["srun", "--label", "--kill-on-bad-exit=1", "bash", "-c",
          f"exec {main} --config.distributed.process_id=$SLURM_PROCID"]
  assert out.stdout.splitlines() == [shlex.join(srun), f"task 0: {main} --config.distributed.process_id=0",
                                     f"task 1: {main} --config.distributed.process_id=1"]


def test_each_slurm_task_runs_main_with_its_own_process_id():
  """The srun command's `bash -c` script, run as task 1 would run it (PYTHON=echo prints the command)."""
  env = dict(DRY_RUN="1", SLURM_JOB_NODELIST="node3,node4", SLURM_NTASKS="2", PYTHON="echo", WORKDIR="w")
  script = shlex.split(dry_run("launch/slurm.sbatch", env).stdout.splitlines()[0])[-1]
  task = subprocess.run(["bash", "-c", script], env={**os.environ, "SLURM_PROCID": "1"}, capture_output=True,
                        text=True, check=True)
  assert task.stdout.split() == [
      "-m", "lrr_jax.main", "--config=configs/cater.py", "--workdir=w", "--config.distributed.enabled=True",
      "--config.distributed.coordinator_address=node3:12321", "--config.distributed.num_processes=2",
      "--config.distributed.process_id=1"]


@pytest.mark.parametrize("nodelist, first", [("gpu[01-04]", "gpu01"), ("a100-[3,5-6],b1", "a100-3"),
                                             ("node7", "node7"), ("x[0010-0012]", "x0010")])
def test_slurm_coordinator_is_the_first_node(nodelist, first):
  env = dict(DRY_RUN="1", SLURM_JOB_NODELIST=nodelist, SLURM_NTASKS="1")
  assert f"--config.distributed.coordinator_address={first}:12321" in dry_run("launch/slurm.sbatch", env).stdout


def test_slurm_outside_a_job_says_what_is_missing():
  out = dry_run("launch/slurm.sbatch", {}, check=False)
  assert out.returncode != 0 and "SLURM_JOB_NODELIST" in out.stderr and "sbatch" in out.stderr
