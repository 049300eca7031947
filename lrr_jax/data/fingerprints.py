"""Fingerprints of a run's inputs, so that a changed input is noticed rather than silently used.

run.json records, per input (the tokenizer, the pretrained OPT and ResNet weights, the dataset), its path and a
fingerprint; resuming, evaluating again and loading the run compare them with the files as they are now and
refuse a changed input, naming it (`InputChanged`), unless told to accept it. Files are hashed whole (sha256,
read in 1 MiB blocks); a folder's fingerprint hashes each file's name and digest. A dataset is fingerprinted by
its metadata files (`dataset_info.json`, `features.json`: hashed) and the names and sizes of its record files,
not their bytes: hashing gigabytes of frames at every start would cost minutes.
"""
import hashlib
from typing import Mapping

from lrr_jax import files

BLOCK = 1 << 20
METADATA_SUFFIXES = (".json", ".txt")  # a dataset's small files, hashed whole


class InputChanged(ValueError):
  """An input of the run differs from the one its run.json recorded."""


def file_digest(path: files.PathLike) -> str:
  """'sha256:<hex>' of a file's bytes (local or gs://), read in blocks, never whole."""
  digest = hashlib.sha256()
  with files.as_path(path).open("rb") as f:
    while block := f.read(BLOCK):
      digest.update(block)
  return f"sha256:{digest.hexdigest()}"


def _files_below(path) -> list:
  """Every file below a folder (local or gs://: epath has no recursive glob there), sorted by relative name."""
  found, folders = [], [path]
  while folders:
    for child in folders.pop().iterdir():
      (folders if child.is_dir() else found).append(child)
  return sorted(found, key=lambda p: str(p.relative_to(path)))


def tree_digest(path: files.PathLike) -> str:
  """A file's `file_digest`, or a folder's: sha256 over each file's relative name and digest."""
  path = files.as_path(path)
  if path.is_file():
    return file_digest(path)
  if not path.is_dir():
    raise FileNotFoundError(f"{path} is missing.")
  digest = hashlib.sha256()
  for child in _files_below(path):
    digest.update(f"{child.relative_to(path)}\0{file_digest(child)}\n".encode())
  return f"sha256:{digest.hexdigest()}"


def dataset_digest(path: files.PathLike) -> str:
  """A prepared dataset folder's fingerprint: its metadata files' bytes, its other files' names and sizes."""
  path = files.as_path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"{path} is missing.")
  digest = hashlib.sha256()
  for child in _files_below(path):
    name = str(child.relative_to(path))
    if child.name == "tokenizer.json":  # an input of its own, named as the tokenizer when it changes
      continue
    content = file_digest(child) if child.name.endswith(METADATA_SUFFIXES) else f"{child.stat().length} bytes"
    digest.update(f"{name}\0{content}\n".encode())
  return f"dataset-sha256:{digest.hexdigest()}"


def fingerprint(inputs: Mapping[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
  """{name: {"path", "digest"}} of inputs given as {name: (path, kind)}; kind 'file' or 'tree' (`tree_digest`),
  'dataset' (`dataset_digest`)."""
  measure = {"file": tree_digest, "tree": tree_digest, "dataset": dataset_digest}
  return {name: {"path": str(path), "digest": measure[kind](path)} for name, (path, kind) in inputs.items()}


def changes(recorded: Mapping[str, Mapping[str, str]], current: Mapping[str, Mapping[str, str]]) -> list[str]:
  """What differs between two `fingerprint`s, one phrase per input both have (an input added or dropped is a
  change of config, which `config_checks.check_resume` names)."""
  found = []
  for name in sorted(recorded.keys() & current.keys()):
    before, now = recorded[name], current[name]
    if before["digest"] != now["digest"]:
      moved = "" if before["path"] == now["path"] else f"; it was {before['path']}"
      found.append(f"{name} {now['path']} changed ({before['digest'][:22]}... -> {now['digest'][:22]}...{moved})")
  return found


def check(recorded: Mapping[str, Mapping[str, str]] | None, current: Mapping[str, Mapping[str, str]],
          where: str, accept: bool = False, how_to_accept: str = "--accept_changed_inputs") -> list[str]:
  """The changes between `recorded` (None: not recorded, nothing to compare) and `current`; raise
  InputChanged naming them unless `accept`."""
  found = changes(recorded, current) if recorded is not None else []
  if found and not accept:
    raise InputChanged(f"The inputs of {where} changed since they were recorded: {'; '.join(found)}. Restore "
                       f"them, or pass {how_to_accept} to use them as they are now.")
  return found
