"""Fingerprints of a run's inputs (`lrr_jax.data.fingerprints`): streamed hashes equal hashlib's, a changed file
changes its folder's and dataset's fingerprint, and a change is refused naming the input."""
import hashlib

import pytest

from lrr_jax import files
from lrr_jax.data import fingerprints


def test_a_file_is_hashed_in_blocks_as_a_whole(tmp_path, monkeypatch):
  data = bytes(range(256)) * 1000
  (tmp_path / "weights.bin").write_bytes(data)
  monkeypatch.setattr(fingerprints, "BLOCK", 4096)  # many blocks
  assert fingerprints.file_digest(tmp_path / "weights.bin") == f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_a_folder_and_a_dataset_change_with_their_files(tmp_path):
  (tmp_path / "opt" / "sub").mkdir(parents=True)
  (tmp_path / "opt" / "config.json").write_text("{}")
  (tmp_path / "opt" / "sub" / "model.safetensors").write_bytes(b"abc")
  before = fingerprints.tree_digest(tmp_path / "opt")
  (tmp_path / "opt" / "sub" / "model.safetensors").write_bytes(b"abd")
  assert fingerprints.tree_digest(tmp_path / "opt") != before

  data = tmp_path / "data"
  data.mkdir()
  (data / "dataset_info.json").write_text('{"splits": 1}')
  (data / "x-train.array_record-00000-of-00001").write_bytes(b"1234")
  (data / "tokenizer.json").write_text("a")
  before = fingerprints.dataset_digest(data)
  (data / "tokenizer.json").write_text("b")  # an input of its own
  assert fingerprints.dataset_digest(data) == before
  (data / "x-train.array_record-00000-of-00001").write_bytes(b"12345")
  assert fingerprints.dataset_digest(data) != before
  with pytest.raises(FileNotFoundError, match="gone is missing"):
    fingerprints.dataset_digest(tmp_path / "gone")


def test_a_changed_input_is_refused_naming_it_unless_accepted(tmp_path):
  (tmp_path / "tokenizer.json").write_text("one")
  inputs = {"tokenizer": (str(tmp_path / "tokenizer.json"), "file")}
  recorded = fingerprints.fingerprint(inputs)
  assert fingerprints.check(recorded, fingerprints.fingerprint(inputs), "run") == []
  assert fingerprints.check(None, recorded, "run") == []  # a run.json from before fingerprints
  (tmp_path / "tokenizer.json").write_text("two")
  with pytest.raises(fingerprints.InputChanged, match=f"inputs of run changed .*tokenizer {tmp_path}/tokenizer.json "
                     r"changed \(sha256:.*--accept_changed_inputs"):
    fingerprints.check(recorded, fingerprints.fingerprint(inputs), "run")
  assert len(fingerprints.check(recorded, fingerprints.fingerprint(inputs), "run", accept=True)) == 1


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
  files.write_atomic(tmp_path / "results.json", "{}")
  assert (tmp_path / "results.json").read_text() == "{}"
  (tmp_path / "folder.json").mkdir()
  with pytest.raises(OSError, match=f"Cannot write {tmp_path / 'folder.json'}"):
    files.write_atomic(tmp_path / "folder.json", "{}")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json", "results.json"]  # no temporary left


@pytest.mark.slow
def test_a_cached_gs_file_is_fetched_again_when_replaced_on_the_bucket(gcs, tmp_path, monkeypatch):
  monkeypatch.setenv(files.CACHE_ENV, str(tmp_path / "cache"))
  remote = files.as_path(f"{gcs}/cache_test/opt")
  (remote / "config.json").write_text('{"v": 1}')
  assert (files.localize(remote) / "config.json").read_text() == '{"v": 1}'
  assert (files.localize(remote) / "config.json").read_text() == '{"v": 1}'  # from the cache
  (remote / "config.json").write_text('{"v": 2}')  # replaced on the bucket: a new generation
  assert (files.localize(remote) / "config.json").read_text() == '{"v": 2}'
