"""Expand a config file's `sweep(add, arg)` into runs, one workdir each; run them in sequence, or print them.

  python launch/sweep.py --config=configs/cater.py --sweep_dir=workdirs/sweeps/cater --config.num_steps=400
  python launch/sweep.py --config=configs/cater.py --sweep_dir=workdirs/sweeps/cater --print --launcher=slurm
  python launch/sweep.py --config=configs/cater.py --sweep_dir=workdirs/sweeps/cater --summary

`sweep(add, arg)` calls `add(config_arg="variant=direct", **{"optimizer.lr": 1e-3})` once per run; `arg` is the
part after `:` in --config. A run's workdir is <sweep_dir>/<name>, its name its config arg and overrides
(`variant=direct,camera=static`). Extra `--config.*` flags go to every run. Runs whose results.json exists are
skipped, so rerunning resumes a sweep. At the end: a Markdown table of each run's results (eval scores, last
train loss, minutes), also written to <sweep_dir>/summary.{md,json}. --launcher=tpu_vm|slurm prints the
commands for those launchers (their runs write elsewhere; `--summary` tabulates what has come back).
"""
import argparse
import dataclasses
import importlib.util
import json
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Any, Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  config: str  # path[:arg], as --config takes it
  overrides: dict[str, Any]  # config key -> value
  workdir: pathlib.Path


def run_name(config_arg: str | None, overrides: dict[str, Any]) -> str:
  """'variant=direct,camera=static' + {'optimizer.lr': 0.001} -> 'variant=direct,camera=static,optimizer.lr=0.001'."""
  parts = [p for p in (config_arg or "").split(",") if p] + [f"{k}={flag_value(v)}" for k, v in overrides.items()]
  return re.sub(r"[^A-Za-z0-9_.,=+-]+", "-", ",".join(parts)) or "default"


def flag_value(value: Any) -> str:
  return value if isinstance(value, str) else repr(value)


def load_config_module(path: str):
  spec = importlib.util.spec_from_file_location(f"sweep_config_{pathlib.Path(path).stem}", path)
  if spec is None or not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"Config file {path} does not exist.")
  root = str(pathlib.Path(path).resolve().parents[1])  # config files import their siblings as `configs.<name>`
  if root not in sys.path:  # `configs` is not installed: it is found beside the config's folder
    sys.path.insert(0, root)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path} has no sweep(add, arg) function.")
  return module


def expand(config: str, sweep_dir: str | pathlib.Path) -> list[Run]:
  """The runs of `config`'s (path[:arg]) sweep function, each with its workdir under `sweep_dir`."""
  path, _, arg = config.partition(":")
  runs = []

  def add(config_arg: str | None = None, **overrides: Any) -> None:
    config_arg = arg or None if config_arg is None else config_arg
    name = run_name(config_arg, overrides)
    if any(r.name == name for r in runs):
      raise ValueError(f"{path}'s sweep adds the run {name!r} twice.")
    runs.append(Run(name, f"{path}:{config_arg}" if config_arg else path, dict(overrides),
                    pathlib.Path(sweep_dir) / name))

  load_config_module(path).sweep(add, arg or None)
  return runs


def command(run: Run, extra: Sequence[str], launcher: str = "local", python: str = sys.executable,
            first: bool = True) -> list[str]:
  """The command (argv; environment assignments first for the shell launchers) that trains `run`."""
  overrides = [f"--config.{k}={flag_value(v)}" for k, v in run.overrides.items()] + list(extra)
  if launcher == "local":
    return [python, "-m", "lrr_jax.main", f"--config={run.config}", f"--workdir={run.workdir}", *overrides]
  env = [f"CONFIG={run.config}", f"WORKDIR={run.workdir}"]
  if launcher == "tpu_vm":  # the first run sets the TPU VM up; all fetch their results into their workdir here
    steps = [] if first else ["STEPS=run,fetch"]
    return [*env, f"LOGS_DIR={run.workdir}", *steps, "bash", "launch/tpu_vm.sh", *overrides]
  if launcher == "slurm":
    return [*env, "sbatch", "launch/slurm.sbatch", *overrides]
  raise ValueError(f"Unknown launcher {launcher!r}; expected local, tpu_vm or slurm.")


def read_results(run: Run) -> dict[str, Any] | None:
  path = run.workdir / "results.json"
  return json.loads(path.read_text()) if path.is_file() else None


def summarize(runs: Sequence[Run], failed: Sequence[str] = ()) -> list[dict[str, Any]]:
  """One row per run: status (done | failed | missing), minutes, last train metrics, eval scores."""
  rows = []
  for run in runs:
    results = read_results(run) or {}
    status = "done" if results else "failed" if run.name in failed else "missing"
    rows.append(dict(name=run.name, config=run.config, overrides=run.overrides, workdir=str(run.workdir),
                     status=status, minutes=results.get("minutes"), train=results.get("train", {}),
                     eval=results.get("eval", {})))
  return rows


# Scores a summary across runs leaves out (results.json keeps them): `lrr_jax.evaluation.grounding`'s per frame,
# per case count, facts missing or malformed.
DETAIL = re.compile(r"grounding/(frame\d+_acc|missing|malformed|num_facts)$|(^|/)count/")


def markdown(rows: Sequence[dict[str, Any]]) -> str:
  """| run | status | minutes | train loss | <every eval score seen, in order, but grounding's details> |"""
  metrics = list(dict.fromkeys(k for row in rows for k in row["eval"] if not DETAIL.search(k)))
  cell = lambda v: "" if v is None else f"{v:.3f}" if isinstance(v, (int, float)) else str(v)
  lines = ["| " + " | ".join(["run", "status", "minutes", "train loss", *metrics]) + " |",
           "| " + " | ".join(["---"] * (4 + len(metrics))) + " |"]
  for row in rows:
    values = [row["name"], row["status"], cell(row["minutes"]), cell(row["train"].get("loss")),
              *(cell(row["eval"].get(m)) for m in metrics)]
    lines.append("| " + " | ".join(values) + " |")
  return "\n".join(lines)


def write_summary(runs: Sequence[Run], sweep_dir: pathlib.Path, failed: Sequence[str] = ()) -> str:
  rows = summarize(runs, failed)
  table = markdown(rows)
  sweep_dir.mkdir(parents=True, exist_ok=True)
  (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2))
  (sweep_dir / "summary.md").write_text(table + "\n")
  return table


def run_locally(runs: Sequence[Run], extra: Sequence[str], python: str,
                done: Callable[[Run], bool] | None = None) -> list[str]:
  """Train the runs one after another, skipping those `done` (default: with a results.json); the names of
  those that failed. A finished run not `done` is evaluated again by `lrr_jax.main`."""
  done = done or (lambda run: read_results(run) is not None)
  failed = []
  for i, run in enumerate(runs):
    if done(run):
      print(f"[{i + 1}/{len(runs)}] {run.name}: done already ({run.workdir / 'results.json'})", flush=True)
      continue
    print(f"[{i + 1}/{len(runs)}] {run.name}: {shlex.join(command(run, extra, python=python))}", flush=True)
    if subprocess.run(command(run, extra, python=python)).returncode:
      failed.append(run.name)
      print(f"[{i + 1}/{len(runs)}] {run.name} failed; going on with the next run.", file=sys.stderr, flush=True)
  return failed


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="config file with a sweep function, [:arg]")
  parser.add_argument("--sweep_dir", help="default: workdirs/sweeps/<config file name>")
  parser.add_argument("--print", "--dry-run", dest="print", action="store_true", help="print the commands only")
  parser.add_argument("--launcher", choices=("local", "tpu_vm", "slurm"), default="local")
  parser.add_argument("--summary", action="store_true", help="only tabulate the results there are")
  parser.add_argument("--python", default=sys.executable, help="the Python of local runs")
  args, extra = parser.parse_known_args(argv)
  unknown = [e for e in extra if not e.startswith("--config.")]
  if unknown:
    parser.error(f"unknown arguments {unknown} (only --config.* overrides pass through to the runs)")
  if args.launcher != "local" and not (args.print or args.summary):
    parser.error(f"--launcher={args.launcher} prints commands: add --print (or --summary)")
  sweep_dir = pathlib.Path(args.sweep_dir or f"workdirs/sweeps/{pathlib.Path(args.config.split(':')[0]).stem}")
  runs = expand(args.config, sweep_dir)
  if args.print:
    for i, run in enumerate(runs):
      print(shlex.join(command(run, extra, args.launcher, args.python, first=i == 0)))
    return 0
  failed = [] if args.summary else run_locally(runs, extra, args.python)
  print(f"\n{write_summary(runs, sweep_dir, failed)}\n\n({sweep_dir / 'summary.md'}, {sweep_dir / 'summary.json'})")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
