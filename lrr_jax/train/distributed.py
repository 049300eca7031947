"""Multi-process start-up: `jax.distributed.initialize` from `config.distributed`, and what differs per process.

`initialize` must run before any other JAX call (a multi-host run that touched JAX first hangs). Settings:
  enabled: False for one process. True: join the other processes of the run.
  coordinator_address ("host:port"), num_processes, process_id: "", 0, -1 let JAX detect them from the
    cluster environment (Cloud TPU, SLURM); set them explicitly for local multi-process runs and SLURM.
  local_device_count: >0 sets this process's number of CPU devices (`jax_num_cpu_devices`), also with
    enabled=False (one process with N CPU devices).
`config.batch_size` is the global batch: each process reads `batch_size / process_count` rows of it.
"""
import dataclasses
from typing import Any, Callable, TypeVar

import jax
from jax.experimental import multihost_utils

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """config.distributed."""
  enabled: bool = False  # join the other processes of a multi-process run
  coordinator_address: str = ""  # "host:port" of process 0 ("": from the cluster environment)
  num_processes: int = 0  # 0: from the cluster environment
  process_id: int = -1  # -1: from the cluster environment
  local_device_count: int = 0  # >0: this process's number of CPU devices


def initialize(settings: DistributedConfig) -> None:
  """Set the CPU device count and join the run's processes, as `settings` (config.distributed) say."""
  if settings.local_device_count > 0:
    jax.config.update("jax_num_cpu_devices", int(settings.local_device_count))
  if not settings.enabled:
    return
  explicit = {}
  if settings.coordinator_address:
    explicit["coordinator_address"] = settings.coordinator_address
  if settings.num_processes > 0:
    explicit["num_processes"] = int(settings.num_processes)
  if settings.process_id >= 0:
    explicit["process_id"] = int(settings.process_id)
  jax.distributed.initialize(**explicit)  # what is not given, JAX reads from the cluster environment


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of the global batch; an error if the processes cannot share it evenly."""
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.batch_size={global_batch_size} (the global batch) is not divisible by the "
                     f"{jax.process_count()} processes.")
  return global_batch_size // jax.process_count()


def process_file_name(name: str) -> str:
  """`name` for process 0, `stem.process<i>.suffix` for the others, so that processes never share a file."""
  if jax.process_index() == 0:
    return name
  stem, dot, suffix = name.rpartition(".")
  return f"{stem}.process{jax.process_index()}{dot}{suffix}" if dot else f"{name}.process{jax.process_index()}"


def primary_first(fn: Callable[[], T]) -> T:
  """`fn()` on process 0, then (after a barrier) on the others: e.g. write data once that all then read."""
  if jax.process_count() == 1:
    return fn()
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("lrr_jax.primary_first")
  return result if jax.process_index() == 0 else fn()


def whole_arrays(tree: Any) -> Any:
  """`tree` with every leaf whole on this process: as it is when every array is addressable here, else
  gathered from all processes (FSDP or data parallel across hosts; every process must call this), never
  fetched from devices this process cannot address."""
  if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in jax.tree.leaves(tree)):
    return tree
  return multihost_utils.process_allgather(tree, tiled=True)
