"""Every tensor of a local Hugging Face model directory, whichever layout holds it: `model.safetensors`,
shards listed by `model.safetensors.index.json`, or `pytorch_model.bin` (and its sharded index).

None of them needs `transformers` or torch: `pytorch_model.bin` is unpickled by `torch_pickle`, which reads
only tensors and their storages.
"""
import os
import pathlib
from typing import Callable

import numpy as np

from lrr_jax.convert import safetensors_file
from lrr_jax.convert import torch_pickle
from lrr_jax import files

PathLike = str | os.PathLike
WeightsFileError = safetensors_file.WeightsFileError
Reader = Callable[[pathlib.Path], dict[str, np.ndarray]]


def read_pytorch_bin(file: PathLike) -> dict[str, np.ndarray]:
  """A `pytorch_model.bin` state dict as NumPy arrays, read without torch (`torch_pickle`: only tensors and
  their storages are unpickled; anything else is refused)."""
  return torch_pickle.read_state_dict(file)


def read_weight_map(index_file: pathlib.Path) -> dict[str, str]:
  """The `weight_map` (tensor name -> shard file name) of a sharded checkpoint's index, each shard a plain
  file name inside the index's directory (a path that could leave it is refused)."""
  try:
    index = files.read_json(index_file, expect=dict)
  except ValueError as e:
    raise WeightsFileError(str(e)) from e
  weight_map = index.get("weight_map")
  if not isinstance(weight_map, dict):
    raise WeightsFileError(f"{index_file} has no weight_map object (tensor name -> shard file); it has "
                           f"{weight_map!r:.100}.")
  for name, shard in weight_map.items():
    if not isinstance(shard, str):
      raise WeightsFileError(f"{index_file}: weight_map[{name!r}] is {shard!r:.100}, not a shard file name.")
    if not _is_inside(shard):
      raise WeightsFileError(f"{index_file}: weight_map[{name!r}] = {shard!r} is not a file inside "
                             f"{index_file.parent}; shard names must be relative paths within the directory.")
  return weight_map


def _is_inside(name: str) -> bool:
  """Whether `name` is a relative path that stays inside its directory: no absolute path, drive or '..'.
  Checked on the name alone, not resolved: the Hugging Face cache links each file to a blob elsewhere."""
  relative = pathlib.PurePath(name)
  return bool(name) and not relative.anchor and ".." not in relative.parts


def read_sharded(index_file: pathlib.Path, reader: Reader) -> dict[str, np.ndarray]:
  """The tensors of every shard the index lists; each listed tensor must be in the shard the index names, and
  no tensor may be in two shards."""
  weight_map = read_weight_map(index_file)
  shards = sorted(set(weight_map.values()))
  missing = [s for s in shards if not (index_file.parent / s).is_file()]
  if missing:
    raise WeightsFileError(f"{index_file} lists shards that are missing from {index_file.parent}: {missing}.")
  tensors, source = {}, {}
  for shard in shards:
    for name, value in reader(index_file.parent / shard).items():
      if name in tensors:
        raise WeightsFileError(f"{index_file.parent}: tensor {name!r} is in both {source[name]} and {shard}.")
      tensors[name], source[name] = value, shard
  for name, shard in weight_map.items():
    if source.get(name) != shard:
      raise WeightsFileError(f"{index_file}: tensor {name!r} is listed in shard {shard}, but "
                             f"{index_file.parent / shard} does not hold it.")
  return tensors


def read_weights(path: PathLike) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint in directory `path`, whichever of the Hugging Face layouts it uses."""
  path = pathlib.Path(path)
  for index_name, reader in (("model.safetensors.index.json", safetensors_file.read_safetensors),
                             ("pytorch_model.bin.index.json", read_pytorch_bin)):
    if (path / index_name).is_file():
      return read_sharded(path / index_name, reader)
  if (path / "model.safetensors").is_file():
    return safetensors_file.read_safetensors(path / "model.safetensors")
  if (path / "pytorch_model.bin").is_file():
    return read_pytorch_bin(path / "pytorch_model.bin")
  raise WeightsFileError(f"No weights in {path}: expected model.safetensors, pytorch_model.bin or a sharded "
                         "index (model.safetensors.index.json).")
