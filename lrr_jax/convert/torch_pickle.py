"""Read a state dict saved by `torch.save` (the zip format of torch >= 1.6: torchvision's `*.pth`,
`pytorch_model.bin`) into NumPy arrays, without torch.

The zip holds `<name>/data.pkl`, a pickle whose tensors refer to storages `<name>/data/<key>` (raw bytes in the
order `<name>/byteorder` names). Like `torch.load(weights_only=True)`, the unpickler builds only what a state
dict of tensors needs (dicts, `OrderedDict`, tensors and parameters over typed storages); any other object
the pickle names is refused, so a malicious file cannot run code.
"""
import collections
import io
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from lrr_jax.convert import safetensors_file

PathLike = str | os.PathLike
WeightsFileError = safetensors_file.WeightsFileError
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *unused_args: Any) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2`: the strided view of `storage` (1-D) as a new contiguous array."""
  if not (isinstance(storage, np.ndarray) and storage.ndim == 1 and isinstance(size, tuple)
          and isinstance(stride, tuple) and len(size) == len(stride)
          and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
    raise ValueError(f"a tensor has offset {offset!r:.50}, size {size!r:.100} and stride {stride!r:.100}")
  if 0 in size:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise ValueError(f"a tensor of size {tuple(size)} (stride {tuple(stride)}, offset {offset}) reaches "
                     f"element {last} of a storage of {storage.size}")
  itemsize = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), [s * itemsize for s in stride]).copy()


def _rebuild_parameter(data: np.ndarray, *unused_args: Any) -> np.ndarray:
  """`torch._utils._rebuild_parameter`: an `nn.Parameter` is its data."""
  return data


# What the pickle may name. A storage type stands for itself, as an (immutable) string.
ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
           ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
           ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
           **{("torch", name): name for name in STORAGE_DTYPES}}


class _StateDictUnpickler(pickle.Unpickler):
  """Builds only what `ALLOWED` names; storages are read from the zip on first use."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(io.BytesIO(data))
    self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
    self.storages = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in ALLOWED:
      raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a state dict of tensors does not "
                                   "need (refused: unpickling it could run code)")
    return ALLOWED[(module, name)]

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], str)
            and pid[1] in STORAGE_DTYPES
            and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
      raise pickle.UnpicklingError(f"it has a persistent id {pid!r:.100}, not a typed storage")
    _, storage_type, key, _, numel = pid
    if key not in self.storages:
      dtype = np.dtype(STORAGE_DTYPES[storage_type]).newbyteorder("<" if self.byteorder == "little" else ">")
      name = f"{self.prefix}data/{key}"
      try:
        size = self.archive.getinfo(name).file_size
      except KeyError as e:
        raise pickle.UnpicklingError(f"its storage {name} is missing") from e
      if size != numel * dtype.itemsize:
        raise pickle.UnpicklingError(f"its storage {name} has {size} bytes, not the {numel * dtype.itemsize} "
                                     f"of {numel} {dtype.name} values")
      self.storages[key] = np.frombuffer(self.archive.read(name), dtype).astype(dtype.newbyteorder("="))
    return self.storages[key]


def _archive_prefix(file: PathLike, archive: zipfile.ZipFile) -> str:
  """The folder that holds data.pkl (torch names it after the file it first saved to)."""
  pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    raise WeightsFileError(f"{file} is a zip but not a torch.save archive: expected one <name>/data.pkl, found "
                           f"{pickles[:3]}.")
  return pickles[0][:-len("data.pkl")]


def read_state_dict(file: PathLike) -> dict[str, np.ndarray]:
  """Tensor name -> array of a `torch.save`d state dict (bfloat16 through ml_dtypes).

  Raises:
    WeightsFileError: a missing file, the pre-1.6 (non-zip) format, a pickle naming anything but tensors,
      storages that are missing or too short, or entries that are not tensors (e.g. a training checkpoint
      that wraps the state dict with an epoch count).
  """
  if not os.path.isfile(file):
    raise WeightsFileError(f"{file} is missing.")
  if not zipfile.is_zipfile(file):
    raise WeightsFileError(f"{file} is not a zip archive, so not a torch.save (>= 1.6) state dict; a file in "
                           "torch's legacy format can be re-saved with torch.save(torch.load(f), f) or as "
                           ".safetensors.")
  with zipfile.ZipFile(file) as archive:
    prefix = _archive_prefix(file, archive)
    names = set(archive.namelist())
    byteorder = archive.read(f"{prefix}byteorder").decode() if f"{prefix}byteorder" in names else "little"
    if byteorder not in ("little", "big"):
      raise WeightsFileError(f"{file}: {prefix}byteorder is {byteorder!r:.50}, not 'little' or 'big'.")
    try:
      state = _StateDictUnpickler(archive.read(f"{prefix}data.pkl"), archive, prefix, byteorder).load()
    except Exception as e:  # pylint: disable=broad-except  # a corrupt pickle raises many kinds
      raise WeightsFileError(f"{file} is not a readable state dict: {e}") from e
  if not isinstance(state, dict):
    raise WeightsFileError(f"{file} holds a {type(state).__name__}, not a state dict of tensors.")
  not_tensors = [name for name, value in state.items() if not isinstance(value, np.ndarray)]
  if not_tensors:
    raise WeightsFileError(f"{file}: entries {not_tensors[:5]} are not tensors; expected a state dict "
                           "(name -> tensor).")
  return dict(state)
