"""Run as a script on 4 CPU devices: splash attention (interpret mode) on inputs split over batch and heads
equals the reference path, values and gradients; prints the largest differences as JSON."""
import json
import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
import flax.linen as nn  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=wrong-import-position

from lrr_jax.models import attention  # pylint: disable=wrong-import-position
from tests.models.test_attention import case, qkv, reads_any  # pylint: disable=wrong-import-position

RULES = (("activation_batch", ("data", "fsdp")), ("heads", "tensor"))


def largest_differences(kind: str) -> dict[str, float]:
  """The largest difference, relative to the largest value, over the loss and its gradients."""
  visibility, sq, sk = case(kind)
  inputs = qkv(2, sq, sk, jnp.float32)
  sees = jnp.asarray(reads_any(visibility, 2, sq))[:, :, None, None]

  def loss_and_grads(implementation):
    loss = lambda *args: jnp.sum(jnp.where(sees, attention.attend(*args, visibility, implementation), 0.0) ** 2)
    return jax.value_and_grad(loss, argnums=(0, 1, 2))

  reference = loss_and_grads("reference")(*inputs)
  mesh = Mesh(np.array(jax.devices()).reshape(2, 1, 2), ("data", "fsdp", "tensor"))
  split = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor", None))
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    got = jax.jit(loss_and_grads("splash"))(*(jax.device_put(x, split) for x in inputs))
  return {kind: max(float(jnp.abs(a - b).max() / jnp.abs(b).max())
                    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(reference)))}


if __name__ == "__main__":
  print(json.dumps({**largest_differences("causal packed"), **largest_differences("frames")}))
