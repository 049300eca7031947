"""Run as a script on 2 CPU devices: grad_accum_steps=0 through the loop's search, with the memory limit set by
`device_memory_gib`: 1 micro-batch where the step fits, more where it does not, and a cached choice."""
import json
import sys
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 2)  # before JAX starts its backends
jax.config.update("jax_threefry_partitionable", False)
import numpy as np  # pylint: disable=wrong-import-position

from lrr_jax.models import lrr  # pylint: disable=wrong-import-position
from lrr_jax.train import loop, micro_batching, partitioning, trainer  # pylint: disable=wrong-import-position
from tests.train.test_trainer import OPTIMIZER  # pylint: disable=wrong-import-position


def example_batch(rows: int = 16, length: int = 96) -> dict[str, np.ndarray]:
  """Rows long enough that activations, not the tiny model's parameters, set the step's peak."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 512, (rows, length + 1)).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": np.tile(np.arange(length), (rows, 1)),
          "segment_ids": np.ones((rows, length), np.int32), "frame_index": np.ones((rows, length), np.int32),
          "loss_mask": np.ones((rows, length), np.int32),
          "video": rng.integers(0, 256, (rows, 2, 16, 16, 3), dtype=np.uint8)}


def main() -> dict:
  model = lrr.LRRModel(lrr.lrr_config("tiny", dropout_rate=0.0))
  example = example_batch()  # 16 rows: 8 per device
  mesh = partitioning.make_mesh({"data": -1})
  optimizer = trainer.make_optimizer(OPTIMIZER)
  built = []

  def build(k: int) -> tuple:
    built.append(k)
    return trainer.make_sharded_training(model, optimizer, trainer.learning_rate_schedule(OPTIMIZER), example,
                                         mesh, partitioning.DEFAULT_RULES, k)

  def fit(limit_bytes: int, workdir: str) -> dict:
    config = loop.TrainConfig(batch_size=16, grad_accum_steps=0, device_memory_gib=limit_bytes / micro_batching.GIB,
                              optimizer=OPTIMIZER, mesh=loop.MeshConfig(data=-1))
    built.clear()
    choice = loop.fitting_micro_batches(config, model, example, mesh, build, workdir)
    return dict(choice.record(), cached=choice.cached, built=list(built))

  roomy, tight = tempfile.mkdtemp(), tempfile.mkdtemp()
  fits = fit(2**40, roomy)
  whole = fits["peaks"]["1"]
  return dict(devices=jax.device_count(), fits=fits, split=fit(whole - 1, tight), again=fit(whole - 1, tight))


if __name__ == "__main__":
  json.dump(main(), sys.stdout)
