"""Read a state dict saved by `torch.save` (the zip format of torch >= 1.6: torchvision's `*.pth`,
`pytorch_model.bin`) into NumPy arrays, without torch.

The zip holds `<name>/data.pkl`, a pickle whose tensors refer to storages `<name>/data/<key>` (raw bytes in the
order `<name>/byteorder` names). Like `torch.load(weights_only=True)`, the unpickler builds only what a state
dict of tensors needs (dicts, `OrderedDict`, tensors and parameters over typed storages); any other object
the pickle names is refused, so a malicious file cannot run code.
"""
import collections
import io
import math
import os
import pickle
import sys
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from lrr_jax.convert import pickle_limits
from lrr_jax.convert import safetensors_file

PathLike = str | os.PathLike
WeightsFileError = safetensors_file.WeightsFileError
MAX_PICKLE_BYTES = 256 * 2**20  # data.pkl (a state dict of 10k tensors: ~1 MB)
MAX_COMPRESSION = 32  # a compressed entry's size over its stored size (torch.save stores; weights barely shrink)
MAX_DIMS = 64
MAX_EXPANDED_BYTES = 2**20  # a tensor larger than its storage (an expanded view) is copied out up to this
CHUNK_BYTES = 4 * 2**20
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *unused_args: Any) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2`: the strided view of `storage` (1-D) as a new contiguous array. A tensor
  with more elements than its storage (overlapping strides, e.g. an expanded view) is refused unless small:
  copying it would make a few bytes of file into any amount of memory."""
  if not (isinstance(storage, np.ndarray) and storage.ndim == 1 and isinstance(size, tuple)
          and isinstance(stride, tuple) and len(size) == len(stride) <= MAX_DIMS
          and all(type(v) is int and v >= 0 for v in (offset, *size, *stride))):  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f"a tensor has offset {_short(offset)}, size {_short(size)} and stride {_short(stride)}")
  if 0 in size:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise ValueError(f"a tensor of size {tuple(size)} (stride {tuple(stride)}, offset {offset}) reaches "
                     f"element {last} of a storage of {storage.size}")
  numel = math.prod(size)
  if numel > storage.size and numel * storage.dtype.itemsize > MAX_EXPANDED_BYTES:
    raise ValueError(f"a tensor of size {tuple(size)} (stride {tuple(stride)}) has {numel} elements, more than "
                     f"the {storage.size} of its storage (overlapping strides), and over "
                     f"{MAX_EXPANDED_BYTES} bytes copied out")
  itemsize = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), [s * itemsize for s in stride]).copy()


def _short(value: Any) -> str:
  """repr of a value from the file, cut (a bounded pickle's objects are small, but not short)."""
  text = repr(value)
  return text if len(text) <= 100 else text[:100] + "..."


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

  def __init__(self, data: bytes, archive: "_Archive"):
    super().__init__(io.BytesIO(data))
    self.archive = archive
    self.storages = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in ALLOWED:
      raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a state dict of tensors does not "
                                   "need (refused: unpickling it could run code)")
    return ALLOWED[(module, name)]

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], str)
            and pid[1] in STORAGE_DTYPES
            and isinstance(pid[2], str) and type(pid[4]) is int and pid[4] >= 0):  # pylint: disable=unidiomatic-typecheck
      raise pickle.UnpicklingError(f"it has a persistent id {_short(pid)}, not a typed storage")
    _, storage_type, key, _, numel = pid
    if key not in self.storages:
      self.storages[key] = self.archive.read_storage(key, np.dtype(STORAGE_DTYPES[storage_type]), numel)
    return self.storages[key]


class _Archive:
  """A torch.save zip whose entries are read with their sizes checked first and streamed into place."""

  def __init__(self, file: PathLike, archive: zipfile.ZipFile):
    self.file, self.zip = file, archive
    self.prefix = _archive_prefix(file, archive)
    self.file_bytes = os.path.getsize(file)
    name = f"{self.prefix}byteorder"
    self.byteorder = self.read_bytes(name, 16).decode("ascii", "replace") if name in archive.NameToInfo else "little"
    if self.byteorder not in ("little", "big"):
      raise WeightsFileError(f"{file}: {name} is {self.byteorder!r:.50}, not 'little' or 'big'.")

  def entry(self, name: str, max_bytes: int) -> zipfile.ZipInfo:
    """The entry `name`, refused if missing, larger than `max_bytes`, or declaring more bytes than the file
    could hold (its compressed size past the file's, or compressed over MAX_COMPRESSION times)."""
    try:
      info = self.zip.getinfo(name)
    except KeyError as e:
      raise pickle.UnpicklingError(f"its entry {name} is missing") from e
    if info.file_size > max_bytes:
      raise pickle.UnpicklingError(f"its entry {name} declares {info.file_size} bytes, over the {max_bytes} "
                                   "it may hold")
    if info.compress_size > self.file_bytes or info.file_size > MAX_COMPRESSION * info.compress_size + 4096:
      raise pickle.UnpicklingError(
          f"its entry {name} declares {info.file_size} bytes from {info.compress_size} compressed, in a file of "
          f"{self.file_bytes} (over {MAX_COMPRESSION}x compression: refused as a zip bomb)")
    return info

  def read_into(self, info: zipfile.ZipInfo, out: memoryview) -> None:
    """Decompress `info` into `out` (its declared size) chunk by chunk: never whole in a second buffer."""
    with self.zip.open(info) as stream:
      done = 0
      while done < len(out):
        chunk = stream.read(min(CHUNK_BYTES, len(out) - done))
        if not chunk:
          raise pickle.UnpicklingError(f"its entry {info.filename} ends after {done} of its {len(out)} bytes")
        out[done:done + len(chunk)] = chunk
        done += len(chunk)

  def read_bytes(self, name: str, max_bytes: int) -> bytes:
    info = self.entry(name, max_bytes)
    out = bytearray(info.file_size)
    self.read_into(info, memoryview(out))
    return bytes(out)

  def read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
    """Storage `key`: `numel` values of `dtype`, in the archive's byte order, as a native array."""
    name = f"{self.prefix}data/{key}"
    info = self.entry(name, numel * dtype.itemsize)
    if info.file_size != numel * dtype.itemsize:
      raise pickle.UnpicklingError(f"its storage {name} has {info.file_size} bytes, not the "
                                   f"{numel * dtype.itemsize} of {numel} {dtype.name} values")
    storage = np.empty(numel, dtype)
    self.read_into(info, memoryview(storage.view(np.uint8)))
    if self.byteorder != sys.byteorder and dtype.itemsize > 1:
      storage.byteswap(inplace=True)
    return storage


def _archive_prefix(file: PathLike, archive: zipfile.ZipFile) -> str:
  """The folder that holds data.pkl (torch names it after the file it first saved to)."""
  pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    raise WeightsFileError(f"{file} is a zip but not a torch.save archive: expected one <name>/data.pkl, found "
                           f"{pickles[:3]}.")
  return pickles[0][:-len("data.pkl")]


def read_state_dict(file: PathLike) -> dict[str, np.ndarray]:
  """Tensor name -> array of a `torch.save`d state dict (bfloat16 through ml_dtypes).

  The pickle is checked first (`pickle_limits`: nesting, expanded size, memo) and every entry's declared size
  against the file's, so that a small file cannot ask for unbounded time or memory.

  Raises:
    WeightsFileError: a missing file, the pre-1.6 (non-zip) format, a pickle naming anything but tensors or
      over the limits, storages that are missing, too short or zip bombs, or entries that are not tensors (e.g.
      a training checkpoint that wraps the state dict with an epoch count).
  """
  if not os.path.isfile(file):
    raise WeightsFileError(f"{file} is missing.")
  if not zipfile.is_zipfile(file):
    raise WeightsFileError(f"{file} is not a zip archive, so not a torch.save (>= 1.6) state dict; a file in "
                           "torch's legacy format can be re-saved with torch.save(torch.load(f), f) or as "
                           ".safetensors.")
  with zipfile.ZipFile(file) as zip_file:
    try:
      archive = _Archive(file, zip_file)
      data = archive.read_bytes(f"{archive.prefix}data.pkl", MAX_PICKLE_BYTES)
      pickle_limits.check(data)
      state = _StateDictUnpickler(data, archive).load()
    except WeightsFileError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # a corrupt pickle raises many kinds
      raise WeightsFileError(f"{file} is not a readable state dict: {e}") from e
  return _tensors(file, state)


def _tensors(file: PathLike, state: Any) -> dict[str, np.ndarray]:
  """`state` if a dict of arrays, else an error naming what it holds."""
  if not isinstance(state, dict):
    raise WeightsFileError(f"{file} holds a {type(state).__name__}, not a state dict of tensors.")
  not_tensors = [name for name, value in state.items() if not isinstance(value, np.ndarray)]
  if not_tensors:
    raise WeightsFileError(f"{file}: entries {_short(not_tensors[:5])} are not tensors; expected a state dict "
                           "(name -> tensor).")
  return dict(state)
