"""Verified orbax checkpoints of the train state and the Grain iterator (local or gs://): resume, fallback.

This file alone knows the layout. A step directory `<directory>/<step>/` holds three items: `state` (params,
BatchNorm statistics, optimizer state, step and RNG: a `TrainState`), `data_iter` (the iterator's JSON state, so a
resumed run sees the batches an uninterrupted run would) and `digest` (JSON: a 32-bit fingerprint of every array of
`state`, computed on device when saving, and a hash of `data_iter`). Restoring recomputes the fingerprints and
compares: orbax checks only its index files, so flipped bytes in a data file would otherwise restore silently as
wrong numbers.

Saves are asynchronous every `save_every` steps and at the end; orbax keeps the last `max_to_keep`, deleting older
ones only after a new save has committed. `Checkpointer.restore` takes the newest step that reads and verifies;
newer damaged steps are logged and moved aside to `<step>.damaged` (never deleted), so the run can save those
steps again and they do not count against `max_to_keep`. Checkpoints from before digests restore with a warning.
SIGTERM (preemption) asks the loop to save and stop.
"""
import dataclasses
import hashlib
import json
import pathlib
from typing import Any, Callable, TypeVar

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from lrr_jax import files

T = TypeVar("T")
DIGEST_VERSION = 1
REQUIRED_FILES = ("state/_METADATA", "data_iter/metadata")  # orbax reads neither strictly: check them first


class CheckpointError(ValueError):
  """A checkpoint step that cannot be used; the subclass (and `kind`) says why, the message names the step."""
  kind = "unusable"


class ShapeMismatch(CheckpointError):
  """The checkpoint holds another model's arrays (another shape or config)."""
  kind = "shape"


class MissingFile(CheckpointError):
  """A file the checkpoint needs is absent."""
  kind = "missing"


class Corrupted(CheckpointError):
  """Stored arrays cannot be read, or differ from the digest saved with them."""
  kind = "corrupt"


class NoIntactCheckpoint(CheckpointError):
  """Every step of a checkpoint directory failed; `failures` maps each step to its error."""
  kind = "none intact"

  def __init__(self, directory: pathlib.Path, failures: dict[int, CheckpointError]):
    self.failures = failures
    tried = "; ".join(f"step {step} ({e.kind}): {e}" for step, e in failures.items())
    super().__init__(f"No intact checkpoint in {directory}. Tried {tried}")


# Fingerprints: per leaf, the wrapping uint32 sum over elements of mix(bits ^ mix(position)). `mix` (murmur3's
# finaliser) is a bijection, so any one changed element changes the sum, and the position catches swaps. Integer
# sums are exact in any order: the same number for any sharding, computed where the arrays live.

def _mix(h: jax.Array) -> jax.Array:
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
  """x's bits as uint32: one word per element of 8-32 bits, a trailing axis of 2 for 64-bit elements."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  if x.dtype.itemsize >= 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}")).astype(jnp.uint32)


def _position(shape: tuple[int, ...]) -> jax.Array:
  """uint32[*shape]: each element's row-major index (mod 2**32)."""
  index = jnp.zeros(shape, jnp.uint32)
  for axis, size in enumerate(shape):
    index = index * jnp.uint32(size) + jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
  return index


@jax.jit
def _leaf_fingerprints(leaves: list[jax.Array]) -> list[jax.Array]:
  words = [_words(x) for x in leaves]
  return [jnp.sum(_mix(w ^ _mix(_position(w.shape))), dtype=jnp.uint32) for w in words]


def fingerprint(tree: Any) -> dict[str, int]:
  """{leaf path ("params/decoder/..."): 32-bit fingerprint} of a pytree of arrays, sharded or not."""
  named = _leaves_by_path(tree)
  return dict(zip(named, map(int, jax.device_get(_leaf_fingerprints(list(named.values()))))))


def _iterator_hash(iterator_state: Any) -> str:
  return hashlib.sha256(json.dumps(iterator_state, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """config.checkpoint: async orbax saves under <workdir>/ckpt."""
  every: int = 400  # steps between saves (0: at the end only)
  keep: int = 2  # the newest checkpoints kept


class Checkpointer:
  """Wraps `ocp.CheckpointManager` with the three items of a step: `state`, `data_iter` and `digest`."""

  def __init__(self, directory: str | pathlib.Path, save_every: int, max_to_keep: int = 3):
    self.directory = files.as_path(directory)  # local or gs://
    self.save_every = save_every
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, abstract_state: Any, data_iterator: Any) -> Any | None:
    """The newest intact state (laid out as `abstract_state`'s shardings), restoring the iterator from the same
    step; None if there is no checkpoint. Damaged newer steps are logged and moved aside.

    Raises:
      ShapeMismatch: the newest readable step holds another model.
      NoIntactCheckpoint: no step reads and verifies (each is named with its cause); nothing is moved.
    """
    if not self.manager.all_steps():
      return None
    step, (state, iterator_state), failures = _newest_intact(
        self.directory, self.manager.all_steps(), lambda step: self._read(step, abstract_state))
    if failures:
      logging.warning("Resuming from step %d of %s, the newest intact checkpoint.", step, self.directory)
      self._set_aside(failures)
    data_iterator.set_state(iterator_state)
    return state

  def last_good_step(self, abstract_state: Any) -> int | None:
    """The newest step that reads and verifies against `abstract_state` (None if none); waits for pending saves.
    It restores each step it tries onto `abstract_state`'s devices, so free a discarded state first."""
    self.manager.wait_until_finished()
    try:
      return _newest_intact(self.directory, self.manager.all_steps(),
                           lambda step: self._read(step, abstract_state))[0]
    except NoIntactCheckpoint:
      return None

  def save_due(self, step: int, force: bool = False) -> bool:
    """Whether `maybe_save` would save at `step`."""
    if not force and (self.save_every <= 0 or step % self.save_every):
      return False
    return self.manager.latest_step() != step

  def maybe_save(self, step: int, state: Any, data_iterator: Any, force: bool = False) -> bool:
    """Save (asynchronously) every `save_every` steps, or when forced; the iterator state and the digest are
    taken now (the digest waits for `state` to be computed)."""
    if not self.save_due(step, force):
      return False
    iterator_state = data_iterator.get_state()
    digest = {"version": DIGEST_VERSION, "state": fingerprint(state),
              "data_iter": _iterator_hash(iterator_state)}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data_iter=ocp.args.JsonSave(iterator_state),
        digest=ocp.args.JsonSave(digest)), force=True)
    return True

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def _read(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
    """(state, iterator state) of `step`, checked for files, shapes and digest."""
    path = self.directory / str(step)

    def read():
      _check_files(path, REQUIRED_FILES)
      _check_shapes(path, {name: x.shape for name, x in _leaves_by_path(abstract_state).items()})
      items = {"state": ocp.args.StandardRestore(abstract_state), "data_iter": ocp.args.JsonRestore()}
      if (path / "digest").is_dir():
        items["digest"] = ocp.args.JsonRestore()
      return _read_or_raise(path, lambda: self.manager.restore(step, args=ocp.args.Composite(**items)))

    restored = _on_every_process(path, read)
    _verify(path, restored.get("digest"), fingerprint(restored["state"]), restored["data_iter"])
    return restored["state"], restored["data_iter"]

  def _set_aside(self, failures: dict[int, CheckpointError]) -> None:
    """Rename damaged steps to `<step>.damaged` (`.damaged.2`, ...): kept for inspection, out of orbax's way."""
    if jax.process_index() == 0:
      for step in failures:
        target, copies = self.directory / f"{step}.damaged", 1
        while target.exists():
          copies += 1
          target = self.directory / f"{step}.damaged.{copies}"
        (self.directory / str(step)).rename(target)
        logging.warning("Moved damaged checkpoint %s aside to %s.", self.directory / str(step), target)
    multihost_utils.sync_global_devices("lrr_jax checkpoint set aside")
    self.manager.reload()


def restore_params(directory: str | pathlib.Path, expected_shapes: Any, step: int | None = None
                   ) -> tuple[Any, int]:
  """`restore_variables` of the params alone: (params, step); `expected_shapes` is the params' shapes."""
  variables, step = restore_variables(directory, {"params": expected_shapes}, step)
  return variables["params"], step


def restore_variables(directory: str | pathlib.Path, expected_shapes: dict[str, Any], step: int | None = None
                      ) -> tuple[dict[str, Any], int]:
  """The model's variables (params, BatchNorm statistics) in checkpoint `step` as host numpy arrays, whatever
  mesh or process count saved them.

  Args:
    directory: a run's checkpoint directory (`<workdir>/ckpt`).
    expected_shapes: {collection: pytree of shape tuples (or of anything with `.shape`)} for each collection of
      the model ("params", maybe "batch_stats"), each a field of the saved `TrainState`. A collection without
      arrays (a GroupNorm model's batch_stats) restores as {}.
    step: the step to read; None: the newest intact one (damaged newer steps are logged and skipped).
  Returns:
    (variables, step), verified against the digest saved with them (unverified, with a warning, if none).
  Raises:
    MissingFile: no such directory or step. ShapeMismatch: variables of another model. Corrupted: `step` is
    damaged. NoIntactCheckpoint: `step` is None and no step is intact.
  """
  directory = files.as_path(directory)
  if not directory.is_dir():
    raise MissingFile(f"No checkpoint directory {directory}.")
  manager = ocp.CheckpointManager(directory)
  steps = list(manager.all_steps())
  if not steps or (step is not None and step not in steps):
    raise MissingFile(f"No checkpoint {'at all' if step is None else f'for step {step}'} in {directory} "
                      f"(steps: {steps}).")
  is_shape = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)
  expected = {name: tuple(getattr(x, "shape", x))
              for name, x in _leaves_by_path(expected_shapes, is_leaf=is_shape).items()}
  read = lambda step: _read_variables(manager, directory / str(step), expected, tuple(expected_shapes))
  try:
    if step is not None:
      return read(step), step
    found, variables, _ = _newest_intact(directory, steps, read)
    return variables, found
  finally:
    manager.close()


def _read_variables(manager: ocp.CheckpointManager, path: pathlib.Path, expected: dict[str, tuple],
                    collections: tuple[str, ...]) -> dict[str, Any]:
  """{collection: arrays} of step directory `path` as numpy arrays, checked for files, shapes and digest."""
  _check_files(path, REQUIRED_FILES[:1])
  prefixes = tuple(f"{c}/" for c in collections)
  metadata = _check_shapes(path, expected, prefix=prefixes)
  present = [c for c in collections if any(name.startswith(f"{c}/") for name in expected)]
  item = {c: metadata[c] for c in present}
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  items = {"state": ocp.args.PyTreeRestore(item=item, restore_args=as_numpy, partial_restore=True)}
  if (path / "digest").is_dir():
    items["digest"] = ocp.args.JsonRestore()
  restored = _read_or_raise(path, lambda: manager.restore(int(path.name), args=ocp.args.Composite(**items)))
  digest = restored.get("digest")
  if digest is not None:
    digest = {**digest, "state": {k: v for k, v in digest["state"].items() if k.startswith(prefixes)}}
  with jax.default_device(_host_device()):
    _verify(path, digest, fingerprint(restored["state"]))
  return {c: restored["state"][c] if c in present else {} for c in collections}


def _newest_intact(directory: pathlib.Path, steps: Any, read: Callable[[int], T]
                  ) -> tuple[int, T, dict[int, CheckpointError]]:
  """(step, read(step), failures of the newer steps) for the newest step that `read` accepts; each failure is
  logged. A shape mismatch is raised at once: older steps of another model are no fallback."""
  failures = {}
  for step in sorted(steps, reverse=True):
    try:
      return step, read(step), failures
    except ShapeMismatch:
      raise
    except CheckpointError as e:
      logging.warning("Checkpoint step %d is unusable (%s): %s", step, e.kind, e)
      failures[step] = e
  raise NoIntactCheckpoint(directory, failures)


def _leaves_by_path(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> dict[str, Any]:
  """{"params/decoder/kernel": leaf}: the same names for a TrainState, its orbax metadata and restored dicts."""
  def name(key):
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {"/".join(map(name, path)): leaf for path, leaf in leaves}


def _check_files(path: pathlib.Path, required: tuple[str, ...]) -> None:
  for name in required:
    if not (path / name).is_file():
      raise MissingFile(f"Checkpoint {path}: {name} is missing.")


def _check_shapes(path: pathlib.Path, expected: dict[str, tuple], prefix: str | tuple[str, ...] = "") -> Any:
  """The orbax metadata tree of `path`'s state, after checking that its arrays under `prefix` have the
  `expected` {path: shape} (`prefix`: one or a tuple of them)."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    metadata = _read_or_raise(path, lambda: handler.metadata(path / "state"))
  finally:
    handler.close()
  found = {name: tuple(leaf.shape) for name, leaf in _leaves_by_path(metadata).items()
           if name.startswith(prefix) and hasattr(leaf, "shape")}
  expected = {name: tuple(shape) for name, shape in expected.items()}
  if found != expected:
    differences = [f"{name} has shape {found[name]}, the model {expected[name]}"
                   for name in sorted(found.keys() & expected.keys()) if found[name] != expected[name]]
    differences += [f"no {name} in the checkpoint" for name in sorted(expected.keys() - found.keys())]
    differences += [f"{name} is not in the model" for name in sorted(found.keys() - expected.keys())]
    raise ShapeMismatch(f"Checkpoint {path} does not fit this model (another model shape or config?): "
                        f"{'; '.join(differences[:4])}{' ...' if len(differences) > 4 else ''}.")
  return metadata


def _read_or_raise(path: pathlib.Path, read: Callable[[], T]) -> T:
  """read(), its failure raised as a CheckpointError (MissingFile or Corrupted) naming `path`."""
  try:
    return read()
  except Exception as e:  # orbax and tensorstore raise many kinds for one damaged file
    if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e):
      raise  # out of memory says nothing about the checkpoint
    raise _classify(path, e) from e


def _on_every_process(path: pathlib.Path, read: Callable[[], T]) -> T:
  """read(); if it raised a CheckpointError on any process, raise one on all (a damaged file may hold only one
  process's shards), so that all processes go on to the same step."""
  error = None
  try:
    result = read()
  except CheckpointError as e:
    error = e
  if jax.process_count() > 1 and not multihost_utils.process_allgather(np.array(error is None)).all():
    error = error or Corrupted(f"Checkpoint {path} cannot be read on another process.")
  if error is not None:
    raise error
  return result


def _classify(path: pathlib.Path, error: Exception) -> CheckpointError:
  """MissingFile if a FileNotFoundError caused `error`, else Corrupted; the message ends with the root cause."""
  chain = [error]
  while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 16:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  cause = str(chain[-1]).splitlines()[0][:400] if str(chain[-1]) else type(chain[-1]).__name__
  if any(isinstance(e, FileNotFoundError) for e in chain):
    return MissingFile(f"Checkpoint {path}: a file is missing: {cause}")
  return Corrupted(f"Checkpoint {path} cannot be read (a damaged or missing data file?): {cause}")


def _verify(path: pathlib.Path, digest: dict | None, state_fingerprint: dict[str, int],
            iterator_state: Any = None) -> None:
  """Raise Corrupted unless the restored arrays (and iterator state) match the digest saved with them."""
  if digest is None:
    logging.warning("Checkpoint %s has no digest (saved before digests): restored unverified.", path)
    return
  saved = digest["state"]
  differ = sorted(name for name in saved.keys() | state_fingerprint.keys()
                  if saved.get(name) != state_fingerprint.get(name))
  if differ:
    raise Corrupted(f"Checkpoint {path} is corrupted: {len(differ)} of {len(saved)} arrays differ from the "
                    f"digest saved with them ({', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}).")
  if iterator_state is not None and digest["data_iter"] != _iterator_hash(iterator_state):
    raise Corrupted(f"Checkpoint {path} is corrupted: data_iter differs from the digest saved with it.")


def _host_device() -> jax.Device:
  try:
    return jax.local_devices(backend="cpu")[0]
  except RuntimeError:  # no CPU backend (JAX_PLATFORMS excludes it)
    return jax.local_devices()[0]


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `state` (arrays or abstract values) with the given shardings, for restoring.

  Frozen parameters have no optimizer state (`optax.MaskedNode`, which the shardings give one sharding).
  """
  def abstract(x, sharding):
    return x if isinstance(x, optax.MaskedNode) else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree.map(abstract, state, shardings, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
