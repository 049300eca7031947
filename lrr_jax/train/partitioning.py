"""The device mesh (`data`, `fsdp`, `tensor`), logical-axis rules, and the shardings of state and batches.

Parameters carry logical axis names (`lrr_jax/models/layers.py`); one table of rules (in the config) maps them
onto mesh axes. Data parallel: data=N. FSDP: fsdp=N shards every `embed` dimension. Tensor parallel: tensor=N
shards heads, MLP and vocabulary. The train step is compiled once with these shardings.
"""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
DEFAULT_RULES = (
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_frames", None),
    ("activation_grid", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("word_embed", None),
    ("positions", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("conv_height", None),
    ("conv_width", None),
    ("conv_in", None),
    ("conv_out", None),
)


def mesh_sizes(shape: dict[str, int], num_devices: int) -> dict[str, int]:
  """The size of each mesh axis (data, fsdp, tensor) over `num_devices`; one size may be -1 (all remaining).

  Raises ValueError naming the sizes when they do not multiply to the number of devices.
  """
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}.")
  sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1 or fixed <= 0 or (-1 in sizes and num_devices % fixed):
    raise ValueError(f"Mesh {dict(zip(MESH_AXES, sizes))} cannot be laid over {num_devices} devices.")
  sizes = [num_devices // fixed if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"Mesh {dict(zip(MESH_AXES, sizes))} has {int(np.prod(sizes))} devices, but there are "
                     f"{num_devices}: set config.mesh so that data x fsdp x tensor = {num_devices}.")
  return dict(zip(MESH_AXES, sizes))


def make_mesh(shape: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over axes data, fsdp, tensor (sizes as `mesh_sizes` resolves them over the devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_sizes(shape, len(devices))
  return Mesh(np.asarray(devices).reshape([sizes[axis] for axis in MESH_AXES]), MESH_AXES)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedShardings for a pytree whose leaves are logically partitioned boxes (or plain arrays: replicated)."""
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split along their first dimension over data x fsdp."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded over the mesh (every process passes its own rows)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def jit_sharded(fn: Callable, mesh: Mesh, rules: Sequence[tuple[str, Any]], in_shardings: Any,
                out_shardings: Any, donate_argnums: tuple[int, ...] = ()) -> Callable:
  """`fn` jitted once with explicit shardings, traced under the mesh and logical rules."""
  jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=donate_argnums)

  def call(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(*args)

  return call
