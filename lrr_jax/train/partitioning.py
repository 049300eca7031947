"""The device mesh (`data`, `fsdp`, `tensor`), logical-axis rules, and the shardings of state and batches.

Parameters carry logical axis names (`lrr_jax/models/layers.py`); one table of rules (`config.mesh.rules`,
default `DEFAULT_RULES`) maps them onto mesh axes. Data parallel: data=N. FSDP: fsdp=N shards every `embed`
dimension. Tensor parallel: tensor=N shards heads, MLP and vocabulary. The train step is compiled once with
these shardings.

The mesh is laid out by the topology: `data`, `fsdp`, `tensor` are the sizes within a slice (ICI; on TPU,
`mesh_utils.create_device_mesh` maps them onto the physical torus), `dcn_data`, `dcn_fsdp`, `dcn_tensor` the
sizes across slices (DCN), so a multi-slice run keeps its fast axes inside each slice, as MaxText does.
"""
import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """config.mesh: the mesh's axis sizes and the logical-axis rules."""
  data: int = -1  # within a slice; one of data, fsdp, tensor may be -1: the devices left
  fsdp: int = 1  # parameters and optimizer state sharded over this axis
  tensor: int = 1  # heads, MLP and vocabulary sharded over this axis
  dcn_data: int = 1  # across slices (multi-slice)
  dcn_fsdp: int = 1  # across slices
  dcn_tensor: int = 1  # across slices
  rules: tuple = ()  # (logical axis, mesh axes) pairs; (): DEFAULT_RULES

  def shape(self) -> dict[str, int]:
    """The axis sizes, as `make_mesh` and `mesh_sizes` take them."""
    return {k: v for k, v in dataclasses.asdict(self).items() if k != "rules"}
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
    ("layers", None),  # the stacking axis of scanned layers
)


def _resolve(sizes: dict[str, int], num_devices: int) -> list[int]:
  """Sizes of the mesh axes with one -1 resolved to the devices left; an error names the sizes."""
  values = [int(sizes[axis]) for axis in MESH_AXES]
  fixed = math.prod(v for v in values if v != -1)
  if values.count(-1) > 1 or fixed <= 0 or (-1 in values and num_devices % fixed):
    raise ValueError(f"Mesh {sizes} cannot be laid over {num_devices} devices.")
  values = [num_devices // fixed if v == -1 else v for v in values]
  if math.prod(values) != num_devices:
    raise ValueError(f"Mesh {dict(zip(MESH_AXES, values))} has {math.prod(values)} devices, but there "
                     f"are {num_devices}: set config.mesh so that data x fsdp x tensor = {num_devices}.")
  return values


def _slices(devices: list[jax.Device], num_slices: int) -> list[list[jax.Device]]:
  """Devices grouped by slice: TPU slices (`slice_index`), else processes, else equal runs of devices (a
  single-process simulation of slices, e.g. CPU devices in tests)."""
  for key in (lambda d: getattr(d, "slice_index", None), lambda d: d.process_index):
    groups = {}
    for device in devices:
      groups.setdefault(key(device), []).append(device)
    if len(groups) == num_slices and None not in groups:
      return [groups[k] for k in sorted(groups)]
  if len(devices) % num_slices:
    raise ValueError(f"{len(devices)} devices cannot form {num_slices} slices (config.mesh.dcn_*).")
  size = len(devices) // num_slices
  return [devices[i:i + size] for i in range(0, len(devices), size)]


def _ici_and_dcn(shape: dict[str, Any], num_devices: int) -> tuple[list[int], list[int]]:
  """Sizes within a slice and across slices of a `config.mesh`-like dict (its `rules` ignored)."""
  shape = {k: v for k, v in shape.items() if k != "rules"}
  dcn_axes = tuple(f"dcn_{axis}" for axis in MESH_AXES)
  unknown = set(shape) - set(MESH_AXES) - set(dcn_axes)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; expected {MESH_AXES + dcn_axes}.")
  dcn = [int(shape.get(axis, 1)) for axis in dcn_axes]
  num_slices = math.prod(dcn)
  if num_slices <= 0 or num_devices % num_slices:
    raise ValueError(f"Mesh dcn sizes {dict(zip(dcn_axes, dcn))} do not divide {num_devices} devices.")
  return _resolve({axis: shape.get(axis, 1) for axis in MESH_AXES}, num_devices // num_slices), dcn


def mesh_sizes(shape: dict[str, Any], num_devices: int) -> dict[str, int]:
  """The size of each mesh axis (data, fsdp, tensor: within-slice x across-slice) over `num_devices`."""
  ici, dcn = _ici_and_dcn(shape, num_devices)
  return {axis: i * d for axis, i, d in zip(MESH_AXES, ici, dcn)}


def make_mesh(shape: dict[str, Any], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A topology-aware mesh over axes data, fsdp, tensor (see the module docstring).

  `shape`: `data`, `fsdp`, `tensor` within a slice (one may be -1: the devices left) and optionally
  `dcn_data`, `dcn_fsdp`, `dcn_tensor` across slices (default 1), e.g. `config.mesh` (its `rules` ignored
  here). Raises ValueError naming the sizes when they do not fit the devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  ici, dcn = _ici_and_dcn(shape, len(devices))
  per_slice = [mesh_utils.create_device_mesh(ici, group, allow_split_physical_axes=True)
               for group in _slices(devices, math.prod(dcn))]
  # Slice meshes tiled along each axis by the dcn sizes: the axis size is ici x dcn.
  grid = np.empty(dcn, dtype=object)
  for index, mesh in zip(np.ndindex(*dcn), per_slice):
    grid[index] = mesh
  return Mesh(np.block(grid.tolist()), MESH_AXES)


def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
  """Logical-axis rules from a config (`config.mesh.rules`: pairs of a logical axis and a mesh axis, a tuple
  of mesh axes or None); DEFAULT_RULES when empty. An unknown mesh axis is named."""
  if not rules:
    return DEFAULT_RULES
  rules = tuple((str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in rules)
  for name, axes in rules:
    bad = [a for a in (axes if isinstance(axes, tuple) else (axes,)) if a is not None and a not in MESH_AXES]
    if bad:
      raise ValueError(f"config.mesh.rules maps {name!r} to unknown mesh axes {bad}; expected {MESH_AXES}.")
  return rules


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

  def lower(*args):  # ahead of time, e.g. for `.compile().cost_analysis()`; a later call reuses the compile
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted.lower(*args)

  call.lower = lower
  return call
