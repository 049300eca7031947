"""The loss at scale: chunked cross-entropy equals the whole-sequence loss (values and gradients), and bf16
compute keeps float32 params, optimizer state and loss, close to float32's."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.models import lrr
from lrr_jax.train import trainer

OPTIMIZER = trainer.OptimizerConfig(lr=3e-3, warmup_steps=1, total_steps=10, final_fraction=0.1,
                                   clip_norm=1.0, b1=0.9, b2=0.98, weight_decay=0.01)


def batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 500, (2, 12)).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": np.tile(np.arange(11), (2, 1)),
          "segment_ids": np.ones((2, 11), np.int32), "frame_index": np.full((2, 11), 1, np.int32),
          "loss_mask": (np.arange(11) >= 3).astype(np.int32)[None].repeat(2, 0),
          "video": rng.integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8)}


def model_with(**fields) -> lrr.LRRModel:
  """The tiny model with gates open and vocabulary rows from 500 on padding (never predicted)."""
  config = lrr.lrr_config("tiny", gate_init=0.5)
  return lrr.LRRModel(dataclasses.replace(config, num_predicted_tokens=500, **fields))


@pytest.mark.slow  # over 10 s
def test_chunked_loss_equals_the_whole_sequence_loss_and_gradients():
  data = batch()
  model = model_with()
  state = trainer.init_train_state(model, trainer.make_optimizer(OPTIMIZER), data, jax.random.key(0))

  def loss(chunk_size):
    chunked = lrr.LRRModel(dataclasses.replace(model.config, loss_chunk_size=chunk_size))
    grad_fn = jax.value_and_grad(trainer.loss_and_metrics, has_aux=True)
    return jax.jit(lambda p: grad_fn(p, chunked, data, None))(state.params)

  (whole, whole_metrics), whole_grads = loss(0)
  (chunked, metrics), grads = loss(4)  # 11 positions: chunks of 4, the last padded with masked positions
  np.testing.assert_allclose(chunked, whole, rtol=1e-6)
  np.testing.assert_allclose(metrics["token_accuracy"], whole_metrics["token_accuracy"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, whole_grads)

  logits = model.apply({"params": state.params}, data["inputs"], data["positions"], data["segment_ids"],
                       data["frame_index"], data["video"])
  expected = -jnp.take_along_axis(jax.nn.log_softmax(logits), data["targets"][..., None], -1)[..., 0]
  mask = data["loss_mask"]
  np.testing.assert_allclose(whole, (expected * mask).sum() / mask.sum(), rtol=1e-6)
  assert float(jnp.max(logits[..., 500:])) == float(jnp.finfo(jnp.float32).min)  # padding never predicted


@pytest.mark.slow  # over 10 s
def test_bfloat16_compute_keeps_float32_state_and_a_close_loss():
  data = batch()
  optimizer = trainer.make_optimizer(OPTIMIZER)
  schedule = trainer.learning_rate_schedule(OPTIMIZER)

  def two_steps(dtype):
    config = lrr.config_from_dict(dict(size="tiny", dtype=dtype, decoder=dict(gate_init=0.5)))
    model = lrr.LRRModel(dataclasses.replace(config, loss_chunk_size=4))
    state = trainer.init_train_state(model, optimizer, data, jax.random.key(0))
    step = jax.jit(trainer.make_train_step(model, optimizer, schedule))
    state, _ = step(state, data)
    state, metrics = step(state, data)
    return model, state, metrics

  model, state, metrics = two_steps("bfloat16")
  assert model.config.video.static_backbone.dtype == "bfloat16" and model.config.decoder.dtype == "bfloat16"
  dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert metrics["loss"].dtype == jnp.float32
  _, _, float32_metrics = two_steps("float32")
  np.testing.assert_allclose(metrics["loss"], float32_metrics["loss"], rtol=2e-2)
  assert float(metrics["loss"]) != float(float32_metrics["loss"])  # bf16 did run
