"""Checkpointer: state and iterator round-trip; a checkpoint of another shape is a clear error."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.train import checkpoint


class FakeIterator:
  def __init__(self):
    self.state = {"next_index": 0}

  def get_state(self):
    return dict(self.state)

  def set_state(self, state):
    self.state = dict(state)


def test_round_trip_and_shape_mismatch(tmp_path):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.array(4)}
  iterator = FakeIterator()
  iterator.state = {"next_index": 17}
  saver = checkpoint.Checkpointer(tmp_path / "ckpt", save_every=2)
  assert saver.maybe_save(4, state, iterator) and not saver.maybe_save(5, state, iterator)
  saver.close()

  restored_iterator = FakeIterator()
  loader = checkpoint.Checkpointer(tmp_path / "ckpt", save_every=2)
  abstract = checkpoint.abstract_like(state, {"w": sharding, "step": sharding})
  restored = loader.restore(abstract, restored_iterator)
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert restored_iterator.state == {"next_index": 17} and loader.latest_step() == 4

  other = {"w": jax.ShapeDtypeStruct((3, 3), jnp.float32, sharding=sharding),
           "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding)}
  with pytest.raises(checkpoint.CheckpointError, match="does not fit this model"):
    loader.restore(other, FakeIterator())
  loader.close()
