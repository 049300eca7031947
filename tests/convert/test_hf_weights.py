"""Reading a Hugging Face model directory's weights: sharded indexes are validated, shards stay inside the
directory, and each fault names the index file and the entry."""
import json

import numpy as np
import pytest
import safetensors.numpy

from lrr_jax.convert import hf_weights

SHARDS = {"model-00001-of-00002.safetensors": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)},
          "model-00002-of-00002.safetensors": {"b": np.ones(4, np.int8), "c": np.zeros((), np.float16)}}
WEIGHT_MAP = {name: shard for shard, tensors in SHARDS.items() for name in tensors}
INDEX = "model.safetensors.index.json"


@pytest.fixture
def sharded(tmp_path):
  """A directory with two shards written by the reference `safetensors` and an index that lists them."""
  for shard, tensors in SHARDS.items():
    safetensors.numpy.save_file(tensors, tmp_path / shard)
  (tmp_path / INDEX).write_text(json.dumps({"metadata": {"total_size": 34}, "weight_map": WEIGHT_MAP}))
  return tmp_path


def test_sharded_safetensors_are_read_whole(sharded):
  tensors = hf_weights.read_weights(sharded)
  expected = {name: value for shard in SHARDS.values() for name, value in shard.items()}
  assert sorted(tensors) == sorted(expected)
  for name, value in expected.items():
    assert tensors[name].dtype == value.dtype
    np.testing.assert_array_equal(tensors[name], value)


# (id, the index file's bytes, what the message must say besides the index file)
BAD_INDEXES = [
    ("malformed_json", b'{"weight_map": {', "is not valid JSON"),
    ("not_utf8", b'{"weight_map": {"a": "\xff"}}', "is not valid JSON"),
    ("a_json_list", b'["model-00001-of-00002.safetensors"]', "holds a JSON list"),
    ("without_weight_map", json.dumps({"metadata": {}}).encode(), "has no weight_map object"),
    ("weight_map_a_list", json.dumps({"weight_map": list(WEIGHT_MAP)}).encode(), "has no weight_map object"),
    ("shard_not_a_string", json.dumps({"weight_map": {**WEIGHT_MAP, "a": 1}}).encode(),
     r"weight_map\['a'\] is 1, not a shard file name"),
    ("absolute_shard", json.dumps({"weight_map": {**WEIGHT_MAP, "a": "/etc/x.safetensors"}}).encode(),
     r"weight_map\['a'\] = '/etc/x.safetensors' is not a file inside"),
    ("parent_shard", json.dumps({"weight_map": {**WEIGHT_MAP, "a": "../x.safetensors"}}).encode(),
     r"weight_map\['a'\] = '../x.safetensors' is not a file inside"),
    ("parent_inside_a_subfolder", json.dumps({"weight_map": {**WEIGHT_MAP, "a": "sub/../../x.safetensors"}}
                                            ).encode(), r"weight_map\['a'\] = 'sub/../../x.safetensors'"),
    ("empty_shard_name", json.dumps({"weight_map": {**WEIGHT_MAP, "a": ""}}).encode(),
     r"weight_map\['a'\] = '' is not a file inside"),
    ("missing_shard", json.dumps({"weight_map": {**WEIGHT_MAP, "a": "model-00003.safetensors"}}).encode(),
     r"lists shards that are missing .*\['model-00003.safetensors'\]"),
    ("tensor_not_in_its_shard", json.dumps({"weight_map": {**WEIGHT_MAP, "z": "model-00002-of-00002.safetensors"}}
                                          ).encode(), r"tensor 'z' is listed in shard model-00002"),
    ("tensor_in_another_shard", json.dumps({"weight_map": {**WEIGHT_MAP, "a": "model-00002-of-00002.safetensors"}}
                                          ).encode(), r"tensor 'a' is listed in shard model-00002"),
]


@pytest.mark.parametrize("index, message", [case[1:] for case in BAD_INDEXES], ids=[c[0] for c in BAD_INDEXES])
def test_a_bad_index_is_refused_naming_the_index_and_the_entry(sharded, index, message):
  (sharded / INDEX).write_bytes(index)
  with pytest.raises(hf_weights.WeightsFileError, match=message) as error:
    hf_weights.read_weights(sharded)
  assert str(sharded / INDEX) in str(error.value)


def test_a_tensor_in_two_shards_is_refused(sharded):
  safetensors.numpy.save_file({**SHARDS["model-00002-of-00002.safetensors"], "a": np.zeros(1, np.float32)},
                              sharded / "model-00002-of-00002.safetensors")
  with pytest.raises(hf_weights.WeightsFileError, match="tensor 'a' is in both model-00001.* and model-00002"):
    hf_weights.read_weights(sharded)


def test_a_corrupt_shard_is_named(sharded):
  (sharded / "model-00002-of-00002.safetensors").write_bytes(bytes(7))
  with pytest.raises(hf_weights.WeightsFileError, match="model-00002-of-00002.safetensors is not a safetensors"):
    hf_weights.read_weights(sharded)


def test_a_corrupt_pytorch_bin_is_named(tmp_path):
  (tmp_path / "pytorch_model.bin").write_bytes(b"not a zip or a pickle")
  with pytest.raises(hf_weights.WeightsFileError, match="pytorch_model.bin is not a zip archive, so not a torch.save"):
    hf_weights.read_weights(tmp_path)


def test_a_pytorch_bin_that_is_not_a_state_dict_is_named(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  torch.save([torch.ones(2)], tmp_path / "pytorch_model.bin")
  with pytest.raises(hf_weights.WeightsFileError, match="pytorch_model.bin holds a list, not a state dict"):
    hf_weights.read_weights(tmp_path)
