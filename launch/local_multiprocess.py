"""N JAX processes on one machine that form one global mesh (CPU devices, gloo collectives).

  python launch/local_multiprocess.py --num_processes=2 --config=configs/cater.py --workdir=workdirs/mp \
      --config.num_steps=100 --config.batch_size=16

Each process runs `python -m lrr_jax.main` with `--config.distributed.*` set (coordinator on a free local port,
its process id, `--local_device_count` CPU devices); arguments the launcher does not know go to every process.
Output lines are prefixed `[p<i>]`. If a process fails, the others are stopped and its stderr's tail is shown;
the exit status is the failing process's. `--dry-run` prints the commands.
"""
import argparse
import collections
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence

TAIL_LINES = 40


def free_port() -> int:
  """A TCP port free on this machine now (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_commands(num_processes: int, port: int, config: str, workdir: str, overrides: Sequence[str],
                     local_device_count: int = 1, python: str = sys.executable) -> list[list[str]]:
  """One `lrr_jax.main` command per process, joined through the coordinator at 127.0.0.1:`port`."""
  return [[python, "-m", "lrr_jax.main", f"--config={config}", f"--workdir={workdir}",
           "--config.distributed.enabled=True",
           f"--config.distributed.coordinator_address=127.0.0.1:{port}",
           f"--config.distributed.num_processes={num_processes}",
           f"--config.distributed.process_id={i}",
           f"--config.distributed.local_device_count={local_device_count}", *overrides]
          for i in range(num_processes)]


def _pump(stream, prefix: str, out, tail: collections.deque | None, lock: threading.Lock) -> None:
  for line in stream:  # text mode: tqdm's carriage returns end lines too
    line = line.rstrip("\n")
    if tail is not None:
      tail.append(line)
    with lock:
      print(f"{prefix}{line}", file=out, flush=True)


def stop(processes: Sequence[subprocess.Popen], grace_s: float) -> None:
  """SIGTERM the running processes, SIGKILL those still running after `grace_s` seconds."""
  running = [p for p in processes if p.poll() is None]
  for p in running:
    p.send_signal(signal.SIGTERM)
  deadline = time.time() + grace_s
  for p in running:
    try:
      p.wait(timeout=max(deadline - time.time(), 0.1))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def run_processes(commands: Sequence[Sequence[str]], env: dict[str, str] | None = None, grace_s: float = 10.0,
                  cwd: str | None = None) -> int:
  """Run `commands` at once with prefixed output; 0 when all succeed, else the first failure's exit status.

  A failed process (its peers may then block in a collective forever) stops the others; its stderr tail is
  printed to stderr.
  """
  lock = threading.Lock()
  processes, tails, pumps = [], [], []
  for i, command in enumerate(commands):
    p = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=cwd, errors="replace")
    tail = collections.deque(maxlen=TAIL_LINES)
    pumps += [threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] ", sys.stdout, None, lock), daemon=True),
              threading.Thread(target=_pump, args=(p.stderr, f"[p{i}] ", sys.stderr, tail, lock), daemon=True)]
    processes.append(p)
    tails.append(tail)
  for pump in pumps:
    pump.start()
  failed = None
  try:
    while failed is None and any(p.poll() is None for p in processes):
      failed = next((i for i, p in enumerate(processes) if p.poll() not in (None, 0)), None)
      time.sleep(0.2)
    failed = next((i for i, p in enumerate(processes) if p.poll() not in (None, 0)), failed)
  except KeyboardInterrupt:
    stop(processes, grace_s)
    raise
  if failed is not None:
    stop(processes, grace_s)
  for pump in pumps:
    pump.join(timeout=5)
  if failed is None:
    return 0
  code = processes[failed].returncode
  with lock:
    print(f"\nProcess {failed} of {len(processes)} failed with exit status {code}; the others were stopped. "
          f"Its last stderr lines:\n" + "\n".join(tails[failed]), file=sys.stderr, flush=True)
  return code if code > 0 else 1


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--local_device_count", type=int, default=1, help="CPU devices per process")
  parser.add_argument("--config", default="configs/cater.py")
  parser.add_argument("--workdir", default="workdirs/local_multiprocess")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--platforms", default="cpu", help="JAX_PLATFORMS of the processes ('' : JAX's choice)")
  parser.add_argument("--grace_s", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print the commands")
  args, overrides = parser.parse_known_args(argv)
  unknown = [o for o in overrides if not o.startswith("--config.")]
  if unknown:
    parser.error(f"unknown arguments {unknown} (only --config.* overrides pass through to lrr_jax.main)")
  if args.num_processes < 1 or args.local_device_count < 1:
    parser.error("--num_processes and --local_device_count must be >= 1")
  return args, overrides


def main(argv: Sequence[str]) -> int:
  args, overrides = parse_args(argv)
  port = args.port or free_port()
  commands = process_commands(args.num_processes, port, args.config, args.workdir, overrides,
                              args.local_device_count)
  env_prefix = {"JAX_PLATFORMS": args.platforms} if args.platforms else {}
  if args.dry_run:
    for command in commands:
      print(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in env_prefix.items()), shlex.join(command)]))
    return 0
  return run_processes(commands, {**os.environ, **env_prefix}, args.grace_s)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
