"""Asynchronous orbax checkpoints of the train state and the Grain iterator, resume, and save on SIGTERM.

A checkpoint holds params, optimizer state, step and RNG (`TrainState`) and the data iterator's state, so a
resumed run sees exactly the batches an uninterrupted run would. Saves are asynchronous every `save_every`
steps and at the end; the last `max_to_keep` are kept. SIGTERM (preemption) asks the loop to save and stop.
"""
import pathlib
import signal
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model being trained."""


class Checkpointer:
  """Wraps `ocp.CheckpointManager` with the two items of a run: `state` and `data_iter`."""

  def __init__(self, directory: str | pathlib.Path, save_every: int, max_to_keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    self.save_every = save_every
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             enable_async_checkpointing=True))
    self.preempted = False

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, abstract_state: Any, data_iterator: Any) -> Any | None:
    """The latest state (laid out as `abstract_state`'s shardings), also restoring the iterator; None if none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data_iter=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"Checkpoint {self.directory / str(step)} does not fit this model "
                            f"(another model shape or config?): {e}") from e
    data_iterator.set_state(restored["data_iter"])
    return restored["state"]

  def save_due(self, step: int, force: bool = False) -> bool:
    """Whether `maybe_save` would save at `step`."""
    if not force and (self.save_every <= 0 or step % self.save_every):
      return False
    return self.manager.latest_step() != step

  def maybe_save(self, step: int, state: Any, data_iterator: Any, force: bool = False) -> bool:
    """Save (asynchronously) every `save_every` steps, or when forced; the iterator state is taken now."""
    if not self.save_due(step, force):
      return False
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data_iter=ocp.args.JsonSave(data_iterator.get_state())), force=True)
    return True

  def watch_sigterm(self) -> None:
    """On SIGTERM, set `preempted`; the train loop then saves and stops."""
    def handler(signum, frame):
      del signum, frame
      self.preempted = True
    signal.signal(signal.SIGTERM, handler)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `state` (arrays or abstract values) with the given shardings, for restoring.

  Frozen parameters have no optimizer state (`optax.MaskedNode`, which the shardings give one sharding).
  """
  def abstract(x, sharding):
    return x if isinstance(x, optax.MaskedNode) else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree.map(abstract, state, shardings, is_leaf=lambda x: isinstance(x, optax.MaskedNode))


def restore_params(directory: str | pathlib.Path, expected_shapes: Any, step: int | None = None
                   ) -> tuple[Any, int]:
  """Params of checkpoint `step` (default: the latest) in `directory` as host arrays, whatever mesh or number
  of processes saved them, checked against `expected_shapes` (a pytree of shape tuples)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"No checkpoint directory {directory}.")
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f"No checkpoint {'at all' if step is None else f'for step {step}'} in {directory} "
                            f"(steps: {list(manager.all_steps())}).")
  try:
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(directory / str(step) / "state").item_metadata
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    params = checkpointer.restore(directory / str(step) / "state", restore_args=as_numpy)["params"]
  except Exception as e:  # orbax raises many kinds on a damaged checkpoint
    raise CheckpointError(f"Checkpoint {directory / str(step)} cannot be read: {e}") from e
  if jax.tree.map(lambda x: tuple(x.shape), params) != expected_shapes:
    raise CheckpointError(f"Checkpoint {directory / str(step)} holds params of another model shape than the "
                          "run config describes.")
  return params, step
