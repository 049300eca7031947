"""The safetensors reader against the reference `safetensors` package: files it writes load identically, and
each malformed file is refused with an error naming the file and the tensor or field at fault."""
import json

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from lrr_jax.convert import safetensors_file


def encode(header, data: bytes = b"", header_length: int | None = None) -> bytes:
  """A safetensors file's bytes: the header (an object, or raw bytes) and the data section as given."""
  raw = header if isinstance(header, bytes) else json.dumps(header).encode()
  return (len(raw) if header_length is None else header_length).to_bytes(8, "little") + raw + data


def f32(begin: int, count: int, dtype: str = "F32") -> dict:
  return {"dtype": dtype, "shape": [count], "data_offsets": [begin, begin + 4 * count]}


GOOD_HEADER = {"a": f32(0, 2), "b": {"dtype": "I8", "shape": [3], "data_offsets": [8, 11]}}
GOOD_DATA = bytes(11)

# (id, the file's bytes, what the message must say besides the file, whether the reference refuses it too)
BAD_FILES = [
    ("header_length_2_62", encode(b"{}", header_length=2**62), "header length 4611686018427387904 is over",
     True),
    ("header_length_past_the_end", encode(b"{}", header_length=1000), "header length 1000 runs past", True),
    ("header_a_json_list", encode([1, 2]), "not a UTF-8 JSON object", True),
    ("header_not_json", encode(b'{"a": {'), "not a UTF-8 JSON object", True),
    ("header_not_utf8", encode(b'{"\xff\xfe": 1}'), "not a UTF-8 JSON object", True),
    ("duplicate_tensor_name", encode(b'{"a": %s, "a": %s}' % (json.dumps(f32(0, 2)).encode(),
                                                             json.dumps(f32(0, 2)).encode()), bytes(8)),
     r"\['a'\] appear more than once", False),  # the format forbids it; the reference keeps the last
    ("metadata_not_strings", encode({"__metadata__": {"format": 1}, **GOOD_HEADER}, GOOD_DATA), "__metadata__",
     True),
    ("entry_not_an_object", encode({"a": [0, 8]}, bytes(8)), "tensor 'a': the header entry must be an object",
     True),
    ("entry_without_dtype", encode({"a": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
     "tensor 'a' has no dtype", True),
    ("unknown_dtype", encode({"a": f32(0, 2, dtype="F17")}, bytes(8)), "tensor 'a' has dtype 'F17'", True),
    ("sub_byte_dtype", encode({"a": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, bytes(1)),
     "tensor 'a' has dtype 'F4'", False),  # the reference knows F4; NumPy cannot view packed nibbles
    ("shape_negative", encode({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),
     r"tensor 'a' has shape \[-2\]", True),
    ("shape_float", encode({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, bytes(8)),
     r"tensor 'a' has shape \[2.0\]", True),
    ("shape_string", encode({"a": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, bytes(8)),
     "tensor 'a' has shape '2'", True),
    ("string_offsets", encode({"a": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}, bytes(8)),
     r"tensor 'a' has data_offsets \['0', '8'\]", True),
    ("negative_offsets", encode({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, bytes(8)),
     r"tensor 'a' has data_offsets \[-8, 0\]", True),
    ("three_offsets", encode({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}}, bytes(8)),
     r"tensor 'a' has data_offsets \[0, 4, 8\]", True),
    ("begin_after_end", encode({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8)),
     r"tensor 'a' has data_offsets \[8, 0\]", True),
    ("end_beyond_the_file", encode({"a": f32(0, 2)}, bytes(4)), "truncated or corrupt: tensor 'a' ends at byte 8",
     True),
    ("overlapping_tensors", encode({"a": f32(0, 2), "b": f32(4, 2)}, bytes(12)),
     r"tensor 'b' \(bytes \[4, 12\)\) overlaps tensor 'a'", True),
    ("same_bytes_twice", encode({"a": f32(0, 2), "b": f32(0, 2)}, bytes(8)), "overlaps tensor", True),
    ("gap_between_tensors", encode({"a": f32(0, 2), "b": f32(12, 1)}, bytes(16)),
     r"bytes \[8, 12\) of the data section, before tensor 'b', belong to no tensor", True),
    ("gap_before_the_first", encode({"a": f32(4, 1)}, bytes(8)), r"bytes \[0, 4\).*before tensor 'a'", True),
    ("trailing_bytes", encode(GOOD_HEADER, GOOD_DATA + bytes(5)), r"bytes \[11, 16\) at the end", True),
    ("length_not_matching_shape", encode({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                         bytes(8)), r"tensor 'a' has 8 bytes .* needs 12", True),
    ("empty_file", b"", "has 0 bytes, fewer than the 8", True),
    ("seven_byte_file", bytes(7), "has 7 bytes, fewer than the 8", True),
]


@pytest.mark.parametrize("raw, message, reference_refuses", [case[1:] for case in BAD_FILES],
                         ids=[case[0] for case in BAD_FILES])
def test_a_malformed_file_is_refused_naming_the_file_and_the_fault(tmp_path, raw, message, reference_refuses):
  file = tmp_path / "model.safetensors"
  file.write_bytes(raw)
  with pytest.raises(safetensors_file.WeightsFileError, match=message) as error:
    safetensors_file.read_safetensors(file)
  assert str(file) in str(error.value)
  try:
    safetensors.deserialize(raw)
    refused = False
  except safetensors.SafetensorError:
    refused = True
  assert refused == reference_refuses


@pytest.mark.parametrize("header", [GOOD_HEADER, b" " + json.dumps(GOOD_HEADER).encode() + b"   "],
                         ids=["plain", "padded_with_spaces"])
def test_the_header_the_bad_cases_start_from_is_read_as_the_reference_reads_it(tmp_path, header):
  file = tmp_path / "good.safetensors"
  file.write_bytes(encode(header, GOOD_DATA))
  ours = {k: (v.shape, v.dtype.name) for k, v in safetensors_file.read_safetensors(file).items()}
  reference = {k: (tuple(v["shape"]), v["dtype"]) for k, v in safetensors.deserialize(file.read_bytes())}
  assert ours == {"a": ((2,), "float32"), "b": ((3,), "int8")}
  assert reference == {"a": ((2,), "F32"), "b": ((3,), "I8")}


def test_a_missing_file_is_named(tmp_path):
  with pytest.raises(safetensors_file.WeightsFileError, match="nowhere.safetensors is missing"):
    safetensors_file.read_safetensors(tmp_path / "nowhere.safetensors")


def test_numpy_files_written_by_the_reference_load_identically(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {f"t_{np.dtype(d).name}": (rng.standard_normal((3, 5)) * 50).astype(d)
             for d in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8,
                       np.uint16, np.uint32, np.uint64, np.complex64)}
  tensors.update(mask=rng.random((4, 1, 2)) > 0.5, scalar=np.array(3.5, np.float32),
                 empty=np.zeros((0, 7), np.float32), odd=np.arange(3, dtype=np.int8))  # odd: unaligned after
  file = tmp_path / "numpy.safetensors"
  safetensors.numpy.save_file(tensors, file, metadata={"format": "np"})
  ours, reference = safetensors_file.read_safetensors(file), safetensors.numpy.load_file(file)
  assert sorted(ours) == sorted(reference) == sorted(tensors)
  for name, value in reference.items():
    assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, name
    np.testing.assert_array_equal(ours[name], value)


def test_a_file_of_only_empty_tensors_has_no_data_section(tmp_path):
  file = tmp_path / "empty.safetensors"
  safetensors.numpy.save_file({"a": np.zeros((0, 3), np.float32), "b": np.zeros((2, 0), np.int8)}, file)
  ours = safetensors_file.read_safetensors(file)
  assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {"a": ((0, 3), np.float32), "b": ((2, 0), np.int8)}


def test_torch_bfloat16_and_float8_files_load_identically(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  values = torch.randn(4, 6) * 3
  tensors = {"bf16": values.to(torch.bfloat16), "f8_e4m3": values.to(torch.float8_e4m3fn),
             "f8_e5m2": values.to(torch.float8_e5m2), "f32": values}
  file = tmp_path / "torch.safetensors"
  safetensors.torch.save_file(tensors, file)
  ours = safetensors_file.read_safetensors(file)
  expected_dtypes = {"bf16": ml_dtypes.bfloat16, "f8_e4m3": ml_dtypes.float8_e4m3fn,
                     "f8_e5m2": ml_dtypes.float8_e5m2, "f32": np.float32}
  for name, tensor in safetensors.torch.load_file(file).items():
    assert ours[name].dtype == expected_dtypes[name] and ours[name].shape == tuple(tensor.shape), name
    np.testing.assert_array_equal(ours[name].astype(np.float32), tensor.float().numpy())


def test_mutated_headers_are_accepted_or_refused_as_the_reference_does(tmp_path):
  """Random one-character edits of a real file's header (digits for digits, so that shapes and offsets change,
  and arbitrary bytes): ours reads exactly the files the reference reads, the same tensors, and refuses the
  rest with a WeightsFileError, never another exception."""
  file = tmp_path / "real.safetensors"
  safetensors.numpy.save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(
      5, dtype=np.int16), "s": np.array(7, np.uint8)}, file)
  raw = file.read_bytes()
  header_end = 8 + int.from_bytes(raw[:8], "little")
  rng = np.random.default_rng(0)
  digits = [i for i in range(8, header_end) if chr(raw[i]).isdigit()]
  outcomes = set()
  for trial in range(300):
    at = int(rng.choice(digits)) if trial % 2 else int(rng.integers(8, header_end))
    new = ord(str(rng.integers(10))) if trial % 2 else int(rng.integers(256))
    mutated = raw[:at] + bytes([new]) + raw[at + 1:]
    file.write_bytes(mutated)
    try:
      reference = {k: (v["dtype"], v["shape"], bytes(v["data"])) for k, v in safetensors.deserialize(mutated)}
    except safetensors.SafetensorError:
      reference = None
    try:
      ours = {k: (v.shape, v.tobytes()) for k, v in safetensors_file.read_safetensors(file).items()}
    except safetensors_file.WeightsFileError:
      ours = None
    assert (ours is None) == (reference is None), (at, new)
    if ours is not None:
      assert ours == {k: (tuple(shape), data) for k, (_, shape, data) in reference.items()}, (at, new)
    outcomes.add(ours is None)
  assert outcomes == {True, False}
