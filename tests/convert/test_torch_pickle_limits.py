"""Small files that ask for a lot, refused by the torch-pickle reader fast and small (issue 30): shared tuples
nested as a dict key or a tensor size, a stride-0 tensor over one float, a memo index of millions, and zips
that declare far more than they hold. Each file is at most a few KB and is built here."""
import collections
import io
import struct
import zipfile

import numpy as np
import pytest

from lrr_jax.convert import torch_pickle
from tests import limits
from tests.convert.test_torch_pickle import _Pickler, _Storage, _Tensor, write_archive

pytest.importorskip("torch")
Error = torch_pickle.WeightsFileError


def write_pickle(file, data: bytes) -> None:
  """An archive whose data.pkl is `data`, as written (no storages)."""
  with zipfile.ZipFile(file, "w") as archive:
    archive.writestr("archive/data.pkl", data)


def shared_tuples(depth: int, memo: bool) -> bytes:
  """Opcodes of t = (t, t) applied `depth` times to (): `depth` * 2-3 bytes, 2**depth tuples expanded. The two
  references are a DUP, or a memo put and get."""
  level = b"q\x00h\x00\x86" if memo else b"2\x86"  # BINPUT 0, BINGET 0, TUPLE2 / DUP, TUPLE2
  return b")" + level * depth


@pytest.mark.parametrize("depth", [24, 64])
@pytest.mark.parametrize("memo", [False, True], ids=["dup", "memo"])
def test_nested_shared_tuples_as_a_dict_key_are_refused(tmp_path, depth, memo):
  data = b"\x80\x02}" + shared_tuples(depth, memo) + b"K\x01s."  # {bomb: 1}
  write_pickle(tmp_path / "key.pth", data)
  assert (tmp_path / "key.pth").stat().st_size < 4096
  limits.assert_refused_quickly(lambda: torch_pickle.read_state_dict(tmp_path / "key.pth"), Error,
                                r"key.pth is not a readable state dict: .*(expands to more than|nest more than)")


@pytest.mark.parametrize("depth", [24, 64])
def test_nested_shared_tuples_as_a_tensor_size_are_refused(tmp_path, depth):
  size = ()
  for _ in range(depth):
    size = (size, size)
  write_archive(tmp_path / "size.pth", {"w": _Tensor(_Storage(1), 0, size, (1,))}, bytes(4))
  assert (tmp_path / "size.pth").stat().st_size < 4096
  limits.assert_refused_quickly(lambda: torch_pickle.read_state_dict(tmp_path / "size.pth"), Error,
                                r"size.pth is not a readable state dict: .*(expands to more than|nest more than)")


def test_a_stride_0_tensor_larger_than_its_storage_is_refused(tmp_path):
  write_archive(tmp_path / "stride0.pth", {"w": _Tensor(_Storage(1), 0, (400_000_000,), (0,))}, bytes(4))
  assert (tmp_path / "stride0.pth").stat().st_size < 1024
  limits.assert_refused_quickly(lambda: torch_pickle.read_state_dict(tmp_path / "stride0.pth"), Error,
                                r"stride0.pth .*400000000 elements, more than the 1 of its storage")


def test_a_small_expanded_tensor_is_read_as_torch_reads_it(tmp_path):
  write_archive(tmp_path / "expanded.pth", {"w": _Tensor(_Storage(2), 0, (3, 2), (0, 1))},
                np.array([1, 2], "<f4").tobytes())
  np.testing.assert_array_equal(torch_pickle.read_state_dict(tmp_path / "expanded.pth")["w"], [[1, 2]] * 3)


def test_a_memo_index_of_millions_is_refused(tmp_path):
  write_pickle(tmp_path / "memo.pth", b"\x80\x02Nr" + struct.pack("<I", 20_000_000) + b".")  # LONG_BINPUT
  limits.assert_refused_quickly(lambda: torch_pickle.read_state_dict(tmp_path / "memo.pth"), Error,
                                r"memo.pth is not a readable state dict: it writes memo entry 20000000")


def storage_pickle(numel: int) -> bytes:
  data = io.BytesIO()
  _Pickler(data, protocol=2).dump({"w": _Tensor(_Storage(numel), 0, (numel,), (1,))})
  return data.getvalue()


def test_a_zip_of_zeros_declaring_64_mib_is_refused_unread(tmp_path):
  with zipfile.ZipFile(tmp_path / "zeros.pth", "w", zipfile.ZIP_DEFLATED) as archive:
    archive.writestr("archive/data.pkl", storage_pickle(2**24))
    archive.writestr("archive/data/0", bytes(2**26))
  assert (tmp_path / "zeros.pth").stat().st_size < 100_000
  limits.assert_refused_quickly(lambda: torch_pickle.read_state_dict(tmp_path / "zeros.pth"), Error,
                                r"zeros.pth .*entry archive/data/0 declares 67108864 bytes from \d+ compressed.*"
                                r"zip bomb")


def declare_size(file, name: str, size: int) -> None:
  """Rewrite the uncompressed size the zip's headers give for `name` (local header and central directory)."""
  data = bytearray(file.read_bytes())
  with zipfile.ZipFile(file) as archive:
    offset = archive.getinfo(name).header_offset
  struct.pack_into("<I", data, offset + 22, size)
  entry = data.index(b"PK\x01\x02")
  while data[entry + 46:entry + 46 + len(name)] != name.encode():
    entry = data.index(b"PK\x01\x02", entry + 4)
  struct.pack_into("<I", data, entry + 24, size)
  file.write_bytes(bytes(data))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_a_zip_declaring_1_gib_in_a_few_kb_is_refused_unread(tmp_path, method):
  with zipfile.ZipFile(tmp_path / "liar.pth", "w", method) as archive:
    archive.writestr("archive/data.pkl", storage_pickle(2**28))
    archive.writestr("archive/data/0", bytes(1024))
  declare_size(tmp_path / "liar.pth", "archive/data/0", 2**30)
  assert zipfile.ZipFile(tmp_path / "liar.pth").getinfo("archive/data/0").file_size == 2**30
  assert (tmp_path / "liar.pth").stat().st_size < 4096
  limits.assert_refused_quickly(lambda: torch_pickle.read_state_dict(tmp_path / "liar.pth"), Error,
                                r"liar.pth .*entry archive/data/0 declares 1073741824 bytes")


def test_a_storage_shorter_than_its_header_says_is_refused(tmp_path):
  with zipfile.ZipFile(tmp_path / "cut.pth", "w", zipfile.ZIP_DEFLATED) as archive:
    archive.writestr("archive/data.pkl", storage_pickle(256))
    archive.writestr("archive/data/0", bytes(512))
  declare_size(tmp_path / "cut.pth", "archive/data/0", 1024)
  with pytest.raises(Error, match=r"cut.pth is not a readable state dict: .*archive/data/0"):
    torch_pickle.read_state_dict(tmp_path / "cut.pth")


def test_a_shared_storage_and_a_tied_tensor_still_read(tmp_path):
  storage = _Storage(6)
  tied = _Tensor(storage, 0, (2, 3), (3, 1))
  write_archive(tmp_path / "tied.pth", collections.OrderedDict(a=tied, b=tied, c=_Tensor(storage, 3, (3,), (1,))),
                np.arange(6, dtype="<f4").tobytes())
  state = torch_pickle.read_state_dict(tmp_path / "tied.pth")
  np.testing.assert_array_equal(state["b"], np.arange(6).reshape(2, 3))
  np.testing.assert_array_equal(state["c"], [3, 4, 5])
  assert list(state) == ["a", "b", "c"]
