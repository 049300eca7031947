"""Repeated layers as one `nn.scan` (one traced body, parameters stacked on a leading `layers` axis), shared by
the decoder, the video encoder and the ResNet (their remat policies: `remat.py`).

`model.scan_layers` turns the Python loops into scans: the HLO holds one copy of the repeated body, so large
models compile several times faster. Stacked parameters carry the logical axis `layers`, which the
partitioning rules map to no mesh axis. `stack` / `unstack` move parameter trees between the two layouts
(converters, checkpoints of the other layout).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LAYERS_AXIS = "layers"  # logical axis of stacked parameters


def scanned(module_class: type[nn.Module], length: int, in_axes: Any, out_axes: Any = 0) -> type[nn.Module]:
  """`module_class` applied `length` times in a scan: its `__call__(carry, *args) -> (carry, outputs)`;
  in_axes per arg (`nn.broadcast`: the same at every step), outputs stacked along `out_axes`. Parameters,
  BatchNorm statistics and sown intermediates are stacked along a leading axis named `layers`."""
  return nn.scan(module_class, variable_axes={"params": 0, "batch_stats": 0, "intermediates": 0},
                 split_rngs={"params": True, "dropout": True}, in_axes=in_axes, out_axes=out_axes,
                 length=length, metadata_params={nn.PARTITION_NAME: LAYERS_AXIS})


def stack(trees: Sequence[Any]) -> Any:
  """Trees of the same structure -> one tree with each leaf stacked along a new leading axis (the layout of
  a scanned module's variables). Logical-partitioning boxes gain the `layers` axis."""
  boxed = lambda x: isinstance(x, nn.Partitioned)

  def stack_leaves(*leaves):
    if boxed(leaves[0]):
      value = jnp.stack([leaf.value for leaf in leaves])
      return leaves[0].replace(value=value, names=(LAYERS_AXIS, *leaves[0].names))
    return jnp.stack([jnp.asarray(leaf) for leaf in leaves])

  return jax.tree.map(stack_leaves, *trees, is_leaf=boxed)


def unstack(tree: Any, length: int) -> list[Any]:
  """The inverse of `stack`: `length` trees, the i-th holding slice i of each leaf."""
  boxed = lambda x: isinstance(x, nn.Partitioned)

  def take(leaf, i):
    if boxed(leaf):
      return leaf.replace(value=leaf.value[i], names=leaf.names[1:])
    return leaf[i]

  return [jax.tree.map(lambda leaf: take(leaf, i), tree, is_leaf=boxed) for i in range(length)]
