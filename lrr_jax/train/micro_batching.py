"""Gradient accumulation chosen to fit the device: `grad_accum_steps=0` (auto) trains with the fewest
micro-batches k whose compiled train step fits a device's memory.

Candidates are the divisors of the rows each data-parallel device holds, ascending (a micro-batch takes 1/k of
every device's rows: `trainer.make_train_step`); each is compiled and its peak read from the compiler's
`memory_analysis()`, stopping at the first that fits. The memory: `config.device_memory_gib` if set, else the
device's `memory_stats()["bytes_limit"]` (TPU, GPU). A backend that reports no limit (CPU) with no
`device_memory_gib` gets k = 1 without compiling anything, and the log says so. The choice is cached in a JSON
file keyed by everything that decides it (model, layout, shapes, devices, limit), so a resume compiles no
candidate again.
"""
import dataclasses
import hashlib
import json
from typing import Any, Callable

from absl import logging

from lrr_jax import files

AUTO = 0  # config.grad_accum_steps: choose k at compile time
CACHE_FILE = "micro_batches.json"  # in the workdir: {key: choice}
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Choice:
  """The micro-batches chosen and why: each tried k's peak bytes per device against `limit_bytes`."""
  steps: int  # k; where none fits, the largest tried
  fits: bool
  limit_bytes: int | None  # None: no limit known (k = 1 untried)
  peaks: dict[int, int] = dataclasses.field(default_factory=dict)
  cached: bool = False

  def record(self) -> dict[str, Any]:
    """As run.json and the cache file keep it (JSON keys are strings)."""
    return dict(steps=self.steps, fits=self.fits, limit_bytes=self.limit_bytes,
                peaks={str(k): v for k, v in self.peaks.items()})

  @classmethod
  def from_record(cls, record: dict[str, Any]) -> "Choice":
    return cls(steps=int(record["steps"]), fits=bool(record["fits"]), limit_bytes=record["limit_bytes"],
               peaks={int(k): int(v) for k, v in record["peaks"].items()}, cached=True)

  def describe(self) -> str:
    tried = ", ".join(f"k={k}: {v / GIB:.2f} GiB" for k, v in self.peaks.items())
    if self.limit_bytes is None:
      return ("grad_accum_steps=0 (auto): the device reports no memory limit and config.device_memory_gib is 0; "
              "using 1 micro-batch (set device_memory_gib to search)")
    verdict = f"chose {self.steps}" if self.fits else "none fits"
    return (f"grad_accum_steps=0 (auto) against {self.limit_bytes / GIB:.2f} GiB per device: peaks {tried}; "
            f"{verdict}{' (cached)' if self.cached else ''}")


def candidates(rows: int) -> list[int]:
  """The micro-batch counts that split `rows` (per data-parallel device) evenly, ascending."""
  return [k for k in range(1, rows + 1) if rows % k == 0]


def peak_bytes(compiled: Any) -> int:
  """A compiled program's peak bytes per device: the compiler's peak, or (where it reports less, as XLA:CPU
  does) arguments + outputs + temporaries - aliased, everything live at once: conservative."""
  memory = compiled.memory_analysis()
  return max(getattr(memory, "peak_memory_in_bytes", 0) or 0,
             memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
             - memory.alias_size_in_bytes)


def memory_limit_bytes(device: Any, device_memory_gib: float = 0.0) -> int | None:
  """`device_memory_gib` in bytes if > 0, else the device's own limit (None where it reports none: CPU)."""
  if device_memory_gib > 0:
    return int(device_memory_gib * GIB)
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (a backend without memory stats, or a topology's device)
    stats = {}
  return stats.get("bytes_limit")


def choose(measure: Callable[[int], int], rows: int, limit_bytes: int | None) -> Choice:
  """The fewest micro-batches whose step fits: `measure(k)` compiles the step with k and returns its peak bytes
  per device; candidates are tried ascending and the search stops at the first that fits."""
  if limit_bytes is None:
    return Choice(steps=1, fits=True, limit_bytes=None)
  peaks = {}
  for k in candidates(rows):
    peaks[k] = int(measure(k))
    logging.info("grad_accum_steps=%d: peak %.2f GiB per device (limit %.2f GiB)", k, peaks[k] / GIB,
                 limit_bytes / GIB)
    if peaks[k] <= limit_bytes:
      return Choice(steps=k, fits=True, limit_bytes=limit_bytes, peaks=peaks)
  return Choice(steps=max(peaks), fits=False, limit_bytes=limit_bytes, peaks=peaks)


def cache_key(fields: dict[str, Any]) -> str:
  """A digest of what decides the choice (e.g. the model config, mesh, batch shapes, device kind and count,
  the limit); values are compared by their JSON (or repr)."""
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def resolve(measure: Callable[[int], int], rows: int, limit_bytes: int | None, key_fields: dict[str, Any],
            cache_path: Any = None) -> Choice:
  """`choose`, or the cached choice for the same `key_fields` in the JSON file at `cache_path` (None: no cache);
  a new choice is added to the file. Raises ValueError when no k fits, naming each k's peak."""
  key = cache_key(dict(key_fields, rows=rows, limit_bytes=limit_bytes))
  path = None if cache_path is None else files.as_path(cache_path)
  known = files.read_json(path, expect=dict) if path is not None and path.is_file() else {}
  choice = Choice.from_record(known[key]) if key in known else choose(measure, rows, limit_bytes)
  logging.info("%s", choice.describe())
  if not choice.fits:
    raise ValueError(f"{choice.describe()}. Lower batch_size, set model.remat_policy=full, shard more "
                     "(mesh.fsdp), or raise device_memory_gib if the device has more.")
  if path is not None and key not in known:
    files.write_atomic(path, json.dumps({**known, key: choice.record()}, indent=2))
  return choice
