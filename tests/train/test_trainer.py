"""The pure train step: it learns a fixed batch, and the same seed gives the same run."""
import jax
import ml_collections
import numpy as np

from lrr_jax.models import lrr
from lrr_jax.train import trainer

OPTIMIZER = ml_collections.ConfigDict(dict(lr=3e-3, warmup_steps=2, total_steps=30, final_fraction=0.1,
                                           clip_norm=1.0, b1=0.9, b2=0.98, weight_decay=0.01))


def fixed_batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 512, (4, 12)).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": np.tile(np.arange(11), (4, 1)),
          "segment_ids": np.ones((4, 11), np.int32), "frame_index": np.full((4, 11), 1, np.int32),
          "loss_mask": (np.arange(11) >= 4).astype(np.int32)[None].repeat(4, 0),
          "video": rng.integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8)}


def run(num_steps: int):
  model = lrr.LRRModel(lrr.lrr_config("tiny", dropout_rate=0.1))
  optimizer = trainer.make_optimizer(OPTIMIZER)
  batch = fixed_batch()
  state = jax.jit(trainer.init_train_state, static_argnums=(0, 1))(model, optimizer, batch, jax.random.key(0))
  step = jax.jit(trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(OPTIMIZER)))
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return state, losses, metrics


def test_the_step_learns_a_fixed_batch_and_is_deterministic():
  state, losses, metrics = run(30)
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 30 and np.isfinite(float(metrics["grad_norm"]))
  again, again_losses, _ = run(30)
  assert again_losses == losses
  jax.tree.map(np.testing.assert_array_equal, again.params, state.params)
