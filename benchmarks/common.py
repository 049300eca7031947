"""What every benchmark repeats: timing side by side, and a result JSON that says which machine made it.

This machine is shared and noisy, so comparisons are measured alternately in one run (ours, theirs, ours, ...)
and reported as medians; a ratio measured that way survives load that absolute times do not.
"""
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable

import jax


def seconds(fn: Callable[[], Any]) -> float:
  """Wall time of one call of `fn`, waiting for any JAX arrays it returns."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def median_seconds(fn: Callable[[], Any], repetitions: int) -> float:
  """Median wall time of `repetitions` calls of `fn` (warm it up first: compilation is not excluded here)."""
  return statistics.median(seconds(fn) for _ in range(repetitions))


def interleaved_medians(runs: dict[str, Callable[[], Any]], repetitions: int) -> dict[str, float]:
  """Median seconds of each callable, all called in turn in every repetition so that all see the same load."""
  times = {name: [] for name in runs}
  for _ in range(repetitions):
    for name, run in runs.items():
      times[name].append(seconds(run))
  return {name: statistics.median(t) for name, t in times.items()}


def alternating_medians(ours: Callable[[], Any], theirs: Callable[[], Any],
                        repetitions: int) -> tuple[float, float]:
  """Median seconds of `ours` and `theirs`, called alternately so that both see the same machine load."""
  medians = interleaved_medians({"ours": ours, "theirs": theirs}, repetitions)
  return medians["ours"], medians["theirs"]


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine_info() -> dict[str, Any]:
  """CPU model, core count, accelerator, library versions, the date and the load (1, 5, 15 minutes) when the
  result was written: enough to tell two results apart."""
  return dict(cpu=_cpu_model(), cpu_cores=os.cpu_count(), device=str(jax.devices()[0].device_kind),
              platform=jax.devices()[0].platform, python=platform.python_version(), jax=jax.__version__,
              jaxlib=_version("jaxlib"), flax=_version("flax"), torch=_version("torch"),
              transformers=_version("transformers"), load_average=os.getloadavg(),
              date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def write_result(out: str | os.PathLike, result: dict[str, Any], summary: str) -> None:
  """Write `result` with the machine's description to the JSON file `out` and print the one-line summary."""
  path = pathlib.Path(out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({**result, "machine": machine_info()}, indent=2))
  print(summary)


def parse_threads(values: list[str]) -> list[int]:
  """torch intra-op thread counts from a flag's list; 0 is torch's default."""
  import torch  # pylint: disable=g-import-not-at-top
  return [int(value) or torch.get_num_threads() for value in values]


def alternating_medians_over_threads(ours: Callable[[], Any], theirs: Callable[[], Any],
                                     thread_counts: list[int], repetitions: int) -> dict[str, Any]:
  """`alternating_medians` with torch at each of `thread_counts` intra-op threads in turn.

  The pair measured at torch's fastest count is the comparison: on a loaded machine torch's OpenMP threads wait
  for descheduled peers at every parallel region, and 2 threads were seen ~80x slower than 1 on this machine.
  Returns ours_s, theirs_s, torch_threads (the fastest count) and every pair by thread count.
  """
  import torch  # pylint: disable=g-import-not-at-top
  by_threads = {}
  for count in thread_counts:
    torch.set_num_threads(count)
    by_threads[count] = alternating_medians(ours, theirs, repetitions)
  best = min(by_threads, key=lambda count: by_threads[count][1])
  torch.set_num_threads(best)
  return dict(ours_s=by_threads[best][0], theirs_s=by_threads[best][1], torch_threads=best,
              by_threads={count: dict(ours_s=o, theirs_s=t) for count, (o, t) in by_threads.items()})
