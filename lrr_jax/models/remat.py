"""Rematerialisation policies: what the backward pass keeps of each repeated block's forward pass, shared by
the decoder, the video encoder and the ResNet (each part's `remat_policy`, or `model.remat_policy` for all).

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

POLICIES = ("none", "minimal", "full", "offload")


def check_policy(policy: str, where: str) -> None:
  if policy not in POLICIES:
    raise ValueError(f"{where}={policy!r}; expected one of {POLICIES}.")


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
