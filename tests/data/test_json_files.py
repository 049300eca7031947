"""JSON files read through `files.read_json` / `read_json_text` (config.json, run.json, tokenizer.json,
annotations): bounded in size and nesting, each failure naming the file (issue 30)."""
import json

import pytest

from lrr_jax.convert import hf_opt
from lrr_jax import files
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib
from tests import limits

DEEP = 100_000


def deep_json(depth: int, open_: str = "[", close: str = "]") -> str:
  return open_ * depth + close * depth


def test_a_json_file_nested_100k_deep_is_refused_naming_it(tmp_path):
  (tmp_path / "run.json").write_text(deep_json(DEEP))
  limits.assert_refused_quickly(lambda: files.read_json(tmp_path / "run.json"), ValueError,
                                rf"{tmp_path}/run.json nests JSON arrays and objects {DEEP} deep, over the 64")


def test_a_deep_config_json_is_named_by_the_hf_reader(tmp_path):
  (tmp_path / "config.json").write_text('{"model_type": "opt", "x": ' + deep_json(DEEP) + "}")
  with pytest.raises(hf_opt.WeightsFileError, match=rf"{tmp_path}/config.json nests JSON .* {DEEP + 1} deep"):
    hf_opt.read_config(tmp_path)


def test_a_deep_tokenizer_json_is_named(tmp_path):
  (tmp_path / "tokenizer.json").write_text('{"model": ' + deep_json(DEEP, "{\"a\":", "}") + "}")
  with pytest.raises(ValueError, match=rf"{tmp_path}/tokenizer.json nests JSON arrays and objects"):
    tokenizer_lib.load(tmp_path)


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_read(tmp_path):
  value = {"s": "[[[[{{{{\\\"[[[[", "v": json.loads(deep_json(files.MAX_JSON_DEPTH - 1))}
  (tmp_path / "ok.json").write_text(json.dumps(value))
  assert files.read_json(tmp_path / "ok.json", dict) == value
  (tmp_path / "over.json").write_text(deep_json(files.MAX_JSON_DEPTH + 1))
  with pytest.raises(ValueError, match=r"over.json nests JSON arrays and objects 65 deep"):
    files.read_json(tmp_path / "over.json")


def test_size_utf8_and_type_failures_name_the_file(tmp_path):
  (tmp_path / "big.json").write_text(json.dumps(["x" * 100]))
  with pytest.raises(ValueError, match=r"big.json has 104 bytes, over the 50 allowed"):
    files.read_json(tmp_path / "big.json", max_bytes=50)
  (tmp_path / "latin.json").write_bytes(b'["caf\xe9"]')
  with pytest.raises(ValueError, match=r"latin.json is not valid JSON: not UTF-8"):
    files.read_json(tmp_path / "latin.json")
  with pytest.raises(ValueError, match=r"big.json holds a JSON list; expected a JSON object"):
    files.read_json(tmp_path / "big.json", dict)


def test_a_record_with_deep_json_fields_is_named():
  record = {"examples": deep_json(DEEP), "metadata": deep_json(DEEP)}
  with pytest.raises(ValueError, match=r"test record 3's 'examples' field nests JSON"):
    records.read_example(record, "full", "test record 3")
  with pytest.raises(ValueError, match=r"a record's 'metadata' field nests JSON"):
    records.read_metadata(record)
