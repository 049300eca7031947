"""Repeated layers as one `nn.scan` (one traced body, parameters stacked on a leading `layers` axis) and the
rematerialisation policies, shared by the decoder, the video encoder and the ResNet.

`model.scan_layers` turns the Python loops into scans: the HLO holds one copy of the repeated body, so large
models compile several times faster. Stacked parameters carry the logical axis `layers`, which the
partitioning rules map to no mesh axis. `stack` / `unstack` move parameter trees between the two layouts
(converters, checkpoints of the other layout).

`model.remat_policy` says what the backward pass keeps of each repeated block's forward pass:
- "none": everything (no rematerialisation; fastest, most memory);
- "minimal": the outputs of matrix multiplications without batch dimensions (projections, FFN), recomputing
  the rest (attention scores, norms, activations);
- "full": only the block's inputs; the whole block is recomputed;
- "offload": as minimal, but the saved products live in host memory (`pinned_host`) until the backward pass
  (TPU and GPU; XLA:CPU has no host memory space to offload to).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

REMAT_POLICIES = ("none", "minimal", "full", "offload")
LAYERS_AXIS = "layers"  # logical axis of stacked parameters


def check_policy(policy: str, where: str) -> None:
  if policy not in REMAT_POLICIES:
    raise ValueError(f"{where}={policy!r}; expected one of {REMAT_POLICIES}.")


def checkpoint_policy(policy: str) -> Any:
  """The `jax.checkpoint` policy of a `remat_policy` name other than 'none'."""
  policies = jax.checkpoint_policies
  return {"minimal": policies.dots_with_no_batch_dims_saveable,
          "full": policies.nothing_saveable,
          "offload": policies.offload_dot_with_no_batch_dims("device", "pinned_host")}[policy]


def remat(module_class: type[nn.Module], policy: str, static_argnums: Sequence[int] = ()) -> type[nn.Module]:
  """`module_class` rematerialised under `policy` ('none': itself). static_argnums count `self` as 0."""
  if policy == "none":
    return module_class
  return nn.remat(module_class, policy=checkpoint_policy(policy), static_argnums=tuple(static_argnums),
                  prevent_cse=False)  # inside a scan CSE cannot merge iterations; outside it costs little


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
