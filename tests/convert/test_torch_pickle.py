"""The torch-free reader of `torch.save` state dicts: the same arrays as `torch.load` (the reference), and
refusals, each naming the file, of what is not a state dict of tensors."""
import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from lrr_jax.convert import torch_pickle

torch = pytest.importorskip("torch")


def test_tensors_read_as_torch_load_reads_them(tmp_path):
  base = torch.randn(4, 6)
  state = collections.OrderedDict(
      weight=base, transposed=base.t(), strided=base[1:3, ::2], bfloat16=torch.randn(3).bfloat16(),
      half=torch.randn(2, 2).half(), double=torch.randn(2).double(), num_batches_tracked=torch.tensor(7),
      int32=torch.arange(3, dtype=torch.int32), mask=torch.tensor([True, False]), empty=torch.zeros(0, 3),
      parameter=torch.nn.Parameter(torch.randn(2)))
  torch.save(state, tmp_path / "state.pth")
  reference = torch.load(tmp_path / "state.pth", weights_only=True)
  ours = torch_pickle.read_state_dict(tmp_path / "state.pth")
  assert list(ours) == list(reference)
  for name, tensor in reference.items():
    expected = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
    assert ours[name].shape == expected.shape, name
    assert str(ours[name].dtype) == str(tensor.dtype).removeprefix("torch."), name
    np.testing.assert_array_equal(np.asarray(ours[name], expected.dtype), expected, err_msg=name)


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
  target = tmp_path / "made_by_the_pickle"

  class Payload:
    def __reduce__(self):
      return os.mkdir, (str(target),)

  torch.save({"weight": torch.zeros(2), "payload": Payload()}, tmp_path / "evil.pth")
  with pytest.raises(torch_pickle.WeightsFileError, match=r"evil.pth is not a readable state dict: it refers to "
                     r"posix.mkdir, which a state dict of tensors does not need"):
    torch_pickle.read_state_dict(tmp_path / "evil.pth")
  assert not target.exists()


def test_the_legacy_format_and_other_files_are_refused(tmp_path):
  torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
  with pytest.raises(torch_pickle.WeightsFileError, match=r"legacy.pth is not a zip archive.*torch.save"):
    torch_pickle.read_state_dict(tmp_path / "legacy.pth")
  with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
    archive.writestr("readme.txt", "hello")
  with pytest.raises(torch_pickle.WeightsFileError, match=r"other.zip is a zip but not a torch.save archive"):
    torch_pickle.read_state_dict(tmp_path / "other.zip")
  with pytest.raises(torch_pickle.WeightsFileError, match=r"absent.pth is missing"):
    torch_pickle.read_state_dict(tmp_path / "absent.pth")
  torch.save([torch.zeros(2)], tmp_path / "list.pth")
  with pytest.raises(torch_pickle.WeightsFileError, match=r"list.pth holds a list, not a state dict"):
    torch_pickle.read_state_dict(tmp_path / "list.pth")


class _Storage:
  """Stands for storage '0' of `numel` float32 values in a hand-written archive."""

  def __init__(self, numel: int):
    self.numel = numel


class _Tensor:
  """Pickles as torch.save pickles a tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

  def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
    self.args = (storage, offset, size, stride, False, collections.OrderedDict())

  def __reduce__(self):
    return torch._utils._rebuild_tensor_v2, self.args  # pylint: disable=protected-access


class _Pickler(pickle.Pickler):
  def persistent_id(self, obj):
    return ("storage", torch.FloatStorage, "0", "cpu", obj.numel) if isinstance(obj, _Storage) else None


def write_archive(file, state: dict, storage: bytes, byteorder: str = "little") -> None:
  """A torch.save-style zip: archive/data.pkl (pickling `state`), archive/data/0 and archive/byteorder."""
  data = io.BytesIO()
  _Pickler(data, protocol=2).dump(state)
  with zipfile.ZipFile(file, "w") as archive:
    archive.writestr("archive/data.pkl", data.getvalue())
    archive.writestr("archive/byteorder", byteorder)
    archive.writestr("archive/data/0", storage)


def test_big_endian_storages_are_read(tmp_path):
  values = np.arange(6, dtype=">f4")
  write_archive(tmp_path / "big.pth", {"w": _Tensor(_Storage(6), 0, (2, 3), (3, 1))}, values.tobytes(), "big")
  np.testing.assert_array_equal(torch_pickle.read_state_dict(tmp_path / "big.pth")["w"],
                                np.arange(6, dtype=np.float32).reshape(2, 3))


def test_short_storages_and_views_past_their_end_are_refused(tmp_path):
  write_archive(tmp_path / "short.pth", {"w": _Tensor(_Storage(4), 0, (4,), (1,))}, bytes(12))
  with pytest.raises(torch_pickle.WeightsFileError, match=r"short.pth .*storage archive/data/0 has 12 bytes, not "
                     r"the 16 of 4 float32 values"):
    torch_pickle.read_state_dict(tmp_path / "short.pth")
  write_archive(tmp_path / "past.pth", {"w": _Tensor(_Storage(4), 2, (3,), (1,))}, bytes(16))
  with pytest.raises(torch_pickle.WeightsFileError, match=r"past.pth .*a tensor of size \(3,\) \(stride \(1,\), "
                     r"offset 2\) reaches element 4 of a storage of 4"):
    torch_pickle.read_state_dict(tmp_path / "past.pth")
