"""Checkpointer: round trip; digests that catch damaged files; fallback to the newest intact step, with the
damaged one kept and the older one safe from garbage collection; errors that say which step failed and why."""
import logging
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrr_jax.train import checkpoint
from lrr_jax.train import trainer

SHARDING = jax.sharding.SingleDeviceSharding(jax.devices()[0])
OPTIMIZER = optax.adamw(1e-3)


class FakeIterator:
  def __init__(self, next_index: int = 0):
    self.state = {"next_index": next_index}

  def get_state(self):
    return dict(self.state)

  def set_state(self, state):
    self.state = dict(state)


def small_state(seed: int, width: int = 64) -> trainer.TrainState:
  """A TrainState with AdamW moments; random normal floats compress little, so flipped bytes in a data file
  decompress into wrong numbers rather than an error."""
  keys = jax.random.split(jax.random.key(seed), 3)
  params = {"dense": {"kernel": jax.random.normal(keys[0], (width, 64)), "bias": jax.random.normal(keys[1], (64,))},
            "embed": jax.random.normal(keys[2], (16, 8)).astype(jnp.bfloat16)}
  opt_state = OPTIMIZER.init(params)
  opt_state = jax.tree.map(lambda x: x + 0.5 if x.ndim else x + seed, opt_state)  # moments unlike the params
  return trainer.TrainState(step=jnp.array(seed, jnp.int32), params=params, opt_state=opt_state,
                            rng=jax.random.key_data(jax.random.key(seed)))


def abstract(state):
  return checkpoint.abstract_like(state, jax.tree.map(lambda _: SHARDING, state))


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> pathlib.Path:
  """A checkpoint directory with steps 10 and 20 (state seeds 10 and 20, iterator positions 10 and 20)."""
  directory = tmp_path_factory.mktemp("saved") / "ckpt"
  saver = checkpoint.Checkpointer(directory, save_every=10)
  for step in (10, 20):
    assert saver.maybe_save(step, small_state(step), FakeIterator(step))
  assert not saver.maybe_save(25, small_state(25), FakeIterator(25))
  saver.close()
  return directory


@pytest.fixture
def ckpt(saved, tmp_path) -> pathlib.Path:
  """A fresh copy of `saved` to damage."""
  return pathlib.Path(shutil.copytree(saved, tmp_path / "ckpt"))


def data_file(step_dir: pathlib.Path) -> pathlib.Path:
  """The largest array data file of a step (it holds the kernel and its moments)."""
  return max((step_dir / "state" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size)


def flip_bytes(path: pathlib.Path):
  """Invert 64 bytes in the middle of the file."""
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  path.write_bytes(bytes(data))


def truncate(path: pathlib.Path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


DAMAGE = {  # name: (damage, the error's kind, words of its message)
    "flipped bytes": (lambda step_dir: flip_bytes(data_file(step_dir)), "corrupt",
                      "differ from the digest saved with them"),
    "truncated data file": (lambda step_dir: truncate(data_file(step_dir)), "corrupt", "cannot be read"),
    "deleted data file": (lambda step_dir: data_file(step_dir).unlink(), "corrupt", "cannot be read"),
    "no data_iter metadata": (lambda step_dir: (step_dir / "data_iter" / "metadata").unlink(), "missing",
                              "data_iter/metadata is missing"),
    "no _METADATA": (lambda step_dir: (step_dir / "state" / "_METADATA").unlink(), "missing",
                     "state/_METADATA is missing"),
}


def test_round_trip_and_shape_mismatch(tmp_path):
  state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.array(4)}
  saver = checkpoint.Checkpointer(tmp_path / "ckpt", save_every=2)
  assert saver.maybe_save(4, state, FakeIterator(17)) and not saver.maybe_save(5, state, FakeIterator())
  saver.close()

  restored_iterator = FakeIterator()
  loader = checkpoint.Checkpointer(tmp_path / "ckpt", save_every=2)
  restored = loader.restore(abstract(state), restored_iterator)
  assert_trees_equal(restored, state)
  assert restored_iterator.state == {"next_index": 17} and loader.latest_step() == 4

  other = {"w": jax.ShapeDtypeStruct((3, 3), jnp.float32, sharding=SHARDING),
           "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=SHARDING)}
  with pytest.raises(checkpoint.ShapeMismatch, match=r"does not fit this model.*w has shape \(2, 3\), the model "
                     r"\(3, 3\)") as error:
    loader.restore(other, FakeIterator())
  assert error.value.kind == "shape" and isinstance(error.value, checkpoint.CheckpointError)
  assert loader.manager.all_steps() == [4]  # nothing moved aside: another model is no damage
  loader.close()


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_step_falls_back_to_the_previous_one(ckpt, damage, caplog):
  damage_fn, kind, words = DAMAGE[damage]
  damage_fn(ckpt / "20")
  iterator = FakeIterator()
  loader = checkpoint.Checkpointer(ckpt, save_every=10)
  with caplog.at_level(logging.WARNING):
    restored = loader.restore(abstract(small_state(20)), iterator)
  assert_trees_equal(restored, small_state(10))
  assert iterator.state == {"next_index": 10}  # the iterator of the same step
  warning = next(r.getMessage() for r in caplog.records if "step 20 is unusable" in r.getMessage())
  assert f"({kind})" in warning and words in warning and str(ckpt / "20") in warning, warning
  assert (ckpt / "20.damaged").is_dir() and loader.manager.all_steps() == [10]  # kept, out of the way
  assert loader.maybe_save(20, small_state(21), FakeIterator(21))  # the run saves step 20 again
  loader.close()


def test_the_older_step_survives_until_new_saves_replace_it(ckpt):
  flip_bytes(data_file(ckpt / "20"))
  run = checkpoint.Checkpointer(ckpt, save_every=10, max_to_keep=2)
  assert_trees_equal(run.restore(abstract(small_state(20)), FakeIterator()), small_state(10))
  run.maybe_save(20, small_state(21), FakeIterator(21))
  run.manager.wait_until_finished()
  assert run.manager.all_steps() == [10, 20]  # the damaged step was not counted against max_to_keep
  run.maybe_save(30, small_state(30), FakeIterator(30))
  run.close()
  assert sorted(p.name for p in ckpt.iterdir()) == ["20", "20.damaged", "30"]
  assert_trees_equal(checkpoint.Checkpointer(ckpt, 10).restore(abstract(small_state(30)), FakeIterator()),
                     small_state(30))


def test_no_intact_step_names_every_step_and_moves_nothing(ckpt):
  flip_bytes(data_file(ckpt / "20"))
  truncate(data_file(ckpt / "10"))
  loader = checkpoint.Checkpointer(ckpt, save_every=10)
  with pytest.raises(checkpoint.NoIntactCheckpoint) as error:
    loader.restore(abstract(small_state(20)), FakeIterator())
  message = str(error.value)
  assert "step 20 (corrupt)" in message and "step 10 (corrupt)" in message and str(ckpt) in message
  assert set(error.value.failures) == {10, 20} and loader.manager.all_steps() == [10, 20]
  loader.close()


def test_a_checkpoint_without_digest_restores_with_a_warning(ckpt, caplog):
  shutil.rmtree(ckpt / "20" / "digest")  # as saved before digests
  with caplog.at_level(logging.WARNING):
    restored = checkpoint.Checkpointer(ckpt, 10).restore(abstract(small_state(20)), FakeIterator())
  assert_trees_equal(restored, small_state(20))
  assert any("no digest" in r.getMessage() and "20" in r.getMessage() for r in caplog.records)


def test_last_good_step_skips_damaged_steps_without_moving_them(ckpt):
  loader = checkpoint.Checkpointer(ckpt, save_every=10)
  assert loader.last_good_step(abstract(small_state(20))) == 20
  flip_bytes(data_file(ckpt / "20"))
  assert loader.last_good_step(abstract(small_state(20))) == 10
  truncate(data_file(ckpt / "10"))
  assert loader.last_good_step(abstract(small_state(20))) is None
  assert loader.manager.all_steps() == [10, 20]
  loader.close()


def test_restore_params(ckpt):
  shapes = jax.tree.map(lambda x: tuple(x.shape), small_state(20).params)
  params, step = checkpoint.restore_params(ckpt, shapes)
  assert step == 20 and isinstance(params["dense"]["kernel"], np.ndarray)
  assert_trees_equal(params, small_state(20).params)
  assert checkpoint.restore_params(ckpt, shapes, step=10)[1] == 10

  wrong = {**shapes, "embed": (16, 9)}
  with pytest.raises(checkpoint.ShapeMismatch, match=r"params/embed has shape \(16, 8\), the model \(16, 9\)"):
    checkpoint.restore_params(ckpt, wrong)
  with pytest.raises(checkpoint.MissingFile, match="No checkpoint for step 999"):
    checkpoint.restore_params(ckpt, shapes, step=999)

  flip_bytes(data_file(ckpt / "20"))
  with pytest.raises(checkpoint.Corrupted, match="20 is corrupted"):
    checkpoint.restore_params(ckpt, shapes, step=20)
  params, step = checkpoint.restore_params(ckpt, shapes)
  assert step == 10 and (ckpt / "20").is_dir()  # a reader falls back but moves nothing
  assert_trees_equal(params, small_state(10).params)


def numpy_fingerprint(x: np.ndarray) -> int:
  """The fingerprint written out in numpy, element by element."""
  def mix(h):
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)
  words = x.view(np.uint32) if x.dtype.itemsize == 4 else x.view(np.uint16).astype(np.uint32)
  return sum(mix(int(w) ^ mix(i)) for i, w in enumerate(words.ravel())) & 0xFFFFFFFF


def test_fingerprint_matches_numpy_and_catches_a_swap():
  tree = {"a": np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32),
          "b": [np.arange(7, dtype=np.int32), np.ones((2, 2), jnp.bfloat16)]}
  assert checkpoint.fingerprint(tree) == {"a": numpy_fingerprint(tree["a"]), "b/0": numpy_fingerprint(tree["b"][0]),
                                          "b/1": numpy_fingerprint(tree["b"][1])}
  swapped = tree["b"][0][[1, 0, 2, 3, 4, 5, 6]]
  assert checkpoint.fingerprint(swapped) != checkpoint.fingerprint(tree["b"][0])


def test_restore_variables_reads_the_batch_norm_statistics_and_checks_their_shapes(tmp_path):
  state = small_state(3)
  stats = {"norm": {"mean": jnp.arange(4.0), "var": jnp.linspace(0.5, 2.0, 4)}}
  state = state.replace(batch_stats=stats)
  saver = checkpoint.Checkpointer(tmp_path / "ckpt", save_every=1)
  assert saver.maybe_save(3, state, FakeIterator(3))
  saver.close()
  shapes = {"params": jax.tree.map(lambda x: tuple(x.shape), state.params),
            "batch_stats": {"norm": {"mean": (4,), "var": (4,)}}}
  variables, step = checkpoint.restore_variables(tmp_path / "ckpt", shapes)
  assert step == 3 and isinstance(variables["batch_stats"]["norm"]["var"], np.ndarray)
  assert_trees_equal(variables, {"params": state.params, "batch_stats": stats})
  with pytest.raises(checkpoint.ShapeMismatch, match=r"batch_stats/norm/var has shape \(4,\), the model \(5,\)"):
    checkpoint.restore_variables(tmp_path / "ckpt", {**shapes, "batch_stats": {"norm": {"mean": (4,), "var": (5,)}}})
  with pytest.raises(checkpoint.ShapeMismatch, match=r"batch_stats/norm/mean is not in the model"):
    checkpoint.restore_variables(tmp_path / "ckpt", {**shapes, "batch_stats": {}})  # a GroupNorm model's
