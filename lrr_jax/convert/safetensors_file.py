"""Read a .safetensors file into NumPy arrays (bfloat16 and float8 through ml_dtypes), validated as the
reference reader (the `safetensors` Rust crate) validates it.

The format: 8 bytes, the header's length N (little-endian u64); N bytes of UTF-8 JSON, an object
`{name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, "__metadata__": {str: str}}`; then the
data section, which the tensors' [begin, end) byte ranges must tile exactly: no overlaps, no gaps, nothing after.
Stricter in one point, as the format's README asks: a JSON key given twice is refused (the reference keeps
the last).
"""
import collections
import json
import math
import os
import pathlib
from typing import Any

import ml_dtypes
import numpy as np

PathLike = str | os.PathLike
MAX_HEADER_BYTES = 100_000_000  # the reference refuses larger headers
DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16, "I32": np.int32,
    "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F32": np.float32, "F64": np.float64, "C64": np.complex64, "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E8M0": ml_dtypes.float8_e8m0fnu,
    "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz, "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
}  # the reference's sub-byte F4 / F6_* pack several values per byte, which NumPy cannot view


class WeightsFileError(ValueError):
  """A weights file (or its index or config) that cannot be read; the message names the file and the tensor or
  key at fault."""


def read_safetensors(file: PathLike) -> dict[str, np.ndarray]:
  """All tensors of one .safetensors file: name -> array, memory-mapped read-only where the file has data."""
  file = pathlib.Path(file)
  header, data_start = _read_header(file)
  data_size = file.stat().st_size - data_start
  entries = {name: _tensor_entry(file, name, info, data_size) for name, info in header.items()
             if name != "__metadata__"}
  _check_tiling(file, entries, data_size)
  data = (np.memmap(file, dtype=np.uint8, mode="r", offset=data_start) if data_size
          else np.zeros(0, np.uint8))  # NumPy cannot map zero bytes: every tensor is then empty
  return {name: data[begin:end].view(dtype).reshape(shape)
          for name, (dtype, shape, (begin, end)) in entries.items()}


def _read_header(file: pathlib.Path) -> tuple[dict[str, Any], int]:
  """(the header's JSON object, the byte where the data section starts)."""
  if not file.is_file():
    raise WeightsFileError(f"{file} is missing.")
  file_size = file.stat().st_size
  with open(file, "rb") as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise WeightsFileError(f"{file} is not a safetensors file: it has {file_size} bytes, fewer than the 8 "
                             "of the header length.")
    header_size = int.from_bytes(prefix, "little")
    if header_size > MAX_HEADER_BYTES:
      raise WeightsFileError(f"{file}: the header length {header_size} is over the {MAX_HEADER_BYTES:,} bytes "
                             "allowed; the file is corrupt or not safetensors.")
    if 8 + header_size > file_size:
      raise WeightsFileError(f"{file} is truncated or corrupt: its header length {header_size} runs past the "
                             f"end of the {file_size}-byte file.")
    raw = f.read(header_size)
  try:
    header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
  except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise WeightsFileError(f"{file} has a corrupt safetensors header (not a UTF-8 JSON object): {e}") from e
  if not isinstance(header, dict):
    raise WeightsFileError(f"{file} has a corrupt safetensors header (not a UTF-8 JSON object): it is a JSON "
                           f"{type(header).__name__}.")
  _check_metadata(file, header.get("__metadata__"))
  return header, 8 + header_size


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  """A JSON object as a dict; the format forbids a key twice (Python would keep the last silently)."""
  repeated = sorted(k for k, n in collections.Counter(k for k, _ in pairs).items() if n > 1)
  if repeated:
    raise ValueError(f"keys {repeated} appear more than once")
  return dict(pairs)


def _check_metadata(file: pathlib.Path, metadata: Any) -> None:
  """`__metadata__` is absent, null or an object of strings, as the reference requires."""
  if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str)
                                                                       for v in metadata.values())):
    raise WeightsFileError(f"{file}: __metadata__ must be a JSON object of strings, not {metadata!r:.200}.")


def _is_index(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entry(file: pathlib.Path, name: str, info: Any,
                  data_size: int) -> tuple[np.dtype, tuple[int, ...], tuple[int, int]]:
  """(dtype, shape, (begin, end)) of one header entry, each field checked; `end` within the data section."""
  where = f"{file}: tensor {name!r}"
  if not isinstance(info, dict):
    raise WeightsFileError(f"{where}: the header entry must be an object, not {info!r:.200}.")
  missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
  if missing:
    raise WeightsFileError(f"{where} has no {', '.join(missing)} in the header.")
  dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
  if not isinstance(dtype, str) or dtype not in DTYPES:
    raise WeightsFileError(f"{where} has dtype {dtype!r:.50}, which is not one we read ({', '.join(DTYPES)}).")
  if not (isinstance(shape, list) and all(_is_index(d) for d in shape)):
    raise WeightsFileError(f"{where} has shape {shape!r:.200}; expected a list of non-negative integers.")
  if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_index(o) for o in offsets)
          and offsets[0] <= offsets[1]):
    raise WeightsFileError(f"{where} has data_offsets {offsets!r:.200}; expected [begin, end], two "
                           "non-negative integers with begin <= end.")
  begin, end = offsets
  if end > data_size:
    raise WeightsFileError(f"{file} is truncated or corrupt: tensor {name!r} ends at byte {end} of a "
                           f"{data_size}-byte data section.")
  dtype = np.dtype(DTYPES[dtype]).newbyteorder("<")
  expected = math.prod(shape) * dtype.itemsize
  if end - begin != expected:
    raise WeightsFileError(f"{where} has {end - begin} bytes (data_offsets {offsets}), but shape {shape} of "
                           f"{info['dtype']} needs {expected}.")
  return dtype, tuple(shape), (begin, end)


def _check_tiling(file: pathlib.Path, entries: dict[str, tuple[Any, Any, tuple[int, int]]],
                  data_size: int) -> None:
  """The tensors' byte ranges, in order, cover [0, data_size) exactly once (the reference's rule: no byte of
  the data section is shared or left out)."""
  covered, previous = 0, None
  for name, (begin, end) in sorted(((n, e[2]) for n, e in entries.items()), key=lambda item: item[1]):
    if begin < covered:
      raise WeightsFileError(f"{file}: tensor {name!r} (bytes [{begin}, {end})) overlaps tensor {previous!r}, "
                             f"which ends at byte {covered}.")
    if begin > covered:
      raise WeightsFileError(f"{file}: bytes [{covered}, {begin}) of the data section, before tensor {name!r}, "
                             "belong to no tensor.")
    covered, previous = end, name
  if covered != data_size:
    raise WeightsFileError(f"{file}: bytes [{covered}, {data_size}) at the end of the data section belong to "
                           "no tensor.")
