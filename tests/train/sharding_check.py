"""Run as a script on 8 CPU devices: one train step under DP, FSDP and DP+TP against one device."""
import json
import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_threefry_partitionable", False)
import numpy as np  # pylint: disable=wrong-import-position

from lrr_jax.models import lrr  # pylint: disable=wrong-import-position
from lrr_jax.train import partitioning, trainer  # pylint: disable=wrong-import-position
from tests.train.test_trainer import OPTIMIZER, fixed_batch  # pylint: disable=wrong-import-position

LAYOUTS = {"single": dict(data=1), "dp": dict(data=8), "fsdp": dict(fsdp=8), "dp_tp": dict(data=4, tensor=2)}


def one_step(layout: str):
  model = lrr.LRRModel(lrr.lrr_config("tiny", dropout_rate=0.0))
  optimizer = trainer.make_optimizer(OPTIMIZER)
  batch = {k: np.concatenate([v, v]) for k, v in fixed_batch().items()}  # 8 rows
  devices = jax.devices()[:1] if layout == "single" else jax.devices()
  mesh = partitioning.make_mesh(LAYOUTS[layout], devices)
  init, step, shardings = trainer.make_sharded_training(
      model, optimizer, trainer.learning_rate_schedule(OPTIMIZER), batch, mesh, partitioning.DEFAULT_RULES)
  state = init(jax.random.key(0))
  losses = []
  for _ in range(3):  # the warmup's first learning rate is 0
    state, metrics = step(state, partitioning.global_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  split = sum(1 for x in jax.tree.leaves(state.params) if x.sharding.shard_shape(x.shape) != x.shape)
  return losses, jax.tree.map(np.asarray, state.params), split


if __name__ == "__main__":
  reference_loss, reference_params, _ = one_step("single")
  model = lrr.LRRModel(lrr.lrr_config("tiny", dropout_rate=0.0))
  initial_params = jax.tree.map(np.asarray, trainer.init_train_state(
      model, trainer.make_optimizer(OPTIMIZER), {k: np.concatenate([v, v]) for k, v in fixed_batch().items()},
      jax.random.key(0)).params)
  report = {}
  for name in ("dp", "fsdp", "dp_tp"):
    loss, params, sharded = one_step(name)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params, reference_params))
    report[name] = {"loss_diff": max(abs(a - b) for a, b in zip(loss, reference_loss)),
                    "max_param_diff": max(diffs), "sharded_leaves": sharded,
                    "params_moved": max(jax.tree.leaves(jax.tree.map(
                        lambda a, b: float(np.abs(a - b).max()), params, initial_params)))}
  print(json.dumps(report))
