"""Files of runs, datasets and checkpoints, local or on an object store (`gs://...`), with errors that name them.

Every path a user gives (workdir, data_dir, tokenizer, a Hugging Face or torchvision checkpoint) may be local or
`gs://`: `as_path` turns it into an `etils.epath.Path`, which reads and writes both (through gcsfs when
TensorFlow is absent). Readers that need a local file (ArrayRecord's C++ reader, memory-mapped safetensors)
`localize` it first: a remote file or folder is copied once into a local cache and read from there; the cache is
keyed by the remote objects' generations, so a file replaced on the bucket is fetched again.
"""
import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Iterable

from etils import epath
import numpy as np

PathLike = str | os.PathLike
CACHE_ENV = "LRR_JAX_CACHE"  # where remote files are cached (default: <tmp>/lrr_jax_cache)
MAX_JSON_BYTES = 2**30  # a JSON file's size (the largest annotation files pass more)
MAX_JSON_DEPTH = 64  # arrays and objects within each other (config, run, tokenizer and annotation files: < 10)


def as_path(path: PathLike) -> epath.Path:
  """`path` as an epath.Path: `gs://` stays remote; a local path is expanded (`~`) and made absolute."""
  text = os.fspath(path)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(pathlib.Path(text).expanduser().absolute())


def is_remote(path: PathLike) -> bool:
  return "://" in os.fspath(path)


def read_json(path: PathLike, expect: type | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
  """The JSON value in `path`. A missing file, one over `max_bytes`, text that is not UTF-8 or not JSON or nested
  over MAX_JSON_DEPTH, or (with `expect`, e.g. `dict`) a value of another type raises an error naming the file."""
  path = as_path(path)
  return _loads(read_json_text(path, max_bytes), str(path), expect)


def read_json_text(path: PathLike, max_bytes: int = MAX_JSON_BYTES) -> str:
  """The text of the JSON file `path` (for a parser of its own, e.g. a tokenizer's), checked for size, UTF-8
  and nesting (`check_json_depth`) with errors naming the file."""
  path = as_path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing.")
  with path.open("rb") as f:
    size = f.seek(0, os.SEEK_END)
    if size > max_bytes:
      raise ValueError(f"{path} has {size:,} bytes, over the {max_bytes:,} allowed for this JSON file.")
    f.seek(0)
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: not UTF-8: {e}") from e
  check_json_depth(data, str(path))
  return text


def parse_json(text: str | bytes, source: str, expect: type | None = None) -> Any:
  """`json.loads(text)`, nested at most MAX_JSON_DEPTH deep and (with `expect`) of that type; errors name
  `source` (a file, or a record's field)."""
  check_json_depth(text, source)
  return _loads(text, source, expect)


def _loads(text: str | bytes, source: str, expect: type | None) -> Any:
  try:
    value = json.loads(text)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{source} is not valid JSON: {e}") from e
  if expect is not None and not isinstance(value, expect):
    raise ValueError(f"{source} holds a JSON {type(value).__name__}; expected a JSON "
                     f"{ {dict: 'object', list: 'array'}.get(expect, expect.__name__)}.")
  return value


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: linear, no backtracking
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_json_depth(text: str | bytes, source: str, max_depth: int = MAX_JSON_DEPTH) -> None:
  """ValueError naming `source` if the JSON `text` nests arrays and objects over `max_depth` deep (Python's
  parser would raise a bare RecursionError from ~1000; code that walks the value, sooner). Strings are skipped;
  the brackets left are counted by NumPy: a tenth of the time `json.loads` takes."""
  data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
  brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
  if len(brackets) <= max_depth:
    return
  codes = np.frombuffer(brackets, np.uint8)
  depth = np.cumsum(((codes >> 1) & 1).astype(np.int32) * 2 - 1)  # '[' and '{' have bit 1 set, ']' and '}' not
  if depth.max() > max_depth:
    raise ValueError(f"{source} nests JSON arrays and objects {int(depth.max())} deep, over the {max_depth} "
                     "allowed.")


def append_lines(path: PathLike, lines: Iterable[str]) -> None:
  """Append lines to a text file; an object store has no append, so there the file is rewritten whole. A last
  line cut short by a killed writer (no newline) is dropped first, so that it does not run into the new ones."""
  text = "".join(f"{line}\n" for line in lines)
  if not text:
    return
  path = as_path(path)
  if not is_remote(path):
    with open(path, "ab+") as f:
      _drop_cut_line(f)
      f.write(text.encode())
    return
  old = path.read_text() if path.exists() else ""
  path.write_text(old[:old.rfind("\n") + 1] + text)


def _drop_cut_line(f) -> None:
  """Truncate an open binary file after its last newline (nothing if it ends with one or is empty)."""
  size = f.seek(0, os.SEEK_END)
  if not size:
    return
  f.seek(max(0, size - 65536))
  tail = f.read()
  if tail.endswith(b"\n"):
    return
  cut = tail.rfind(b"\n")
  f.truncate(size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else size))


def write_atomic(path: PathLike, text: str) -> None:
  """Write a text file whole or not at all: locally a temporary file beside it, renamed over it; on an object
  store one object write (which is atomic). Errors (OSError) name the path."""
  path = as_path(path)
  if is_remote(path):
    path.write_text(text)
    return
  temp = pathlib.Path(path).with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    temp.write_text(text)
    os.replace(temp, path)
  except OSError as e:
    temp.unlink(missing_ok=True)
    raise OSError(e.errno, f"Cannot write {path}: {e.strerror or e}") from e


def cache_root() -> pathlib.Path:
  return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path(tempfile.gettempdir()) / "lrr_jax_cache")


def localize(path: PathLike) -> pathlib.Path:
  """A local path to read `path` from: itself if local, else a cached copy of the remote file or folder
  (copied once; a partial copy is never used: it is written beside and renamed when complete)."""
  if not is_remote(path):
    return pathlib.Path(as_path(path))
  remote = as_path(path)
  if not remote.exists():
    raise FileNotFoundError(f"{remote} is missing.")
  key = hashlib.sha256(f"{remote}\0{remote_version(remote)}".encode()).hexdigest()[:16]
  local = cache_root() / key / remote.name
  if not local.exists():
    fetch(remote, local)
  return local


def remote_version(remote: epath.Path) -> str:
  """What changes when a remote file, or any file below a remote folder, is replaced: each object's
  generation (GCS), else its MD5, ETag, or size and time; a cached copy is keyed by it, never by the name alone."""
  import fsspec  # pylint: disable=g-import-not-at-top
  fs, root = fsspec.core.url_to_fs(str(remote))
  fs.invalidate_cache(root)
  found = fs.find(root, detail=True, withdirs=False)
  found = found or {root: fs.info(root)}

  def version(info: dict) -> str:
    for key in ("generation", "md5Hash", "ETag", "etag"):
      if info.get(key):
        return str(info[key])
    return f"{info.get('size')}-{info.get('updated', info.get('mtime', info.get('LastModified')))}"
  return hashlib.sha256("".join(f"{name}\0{version(info)}\n" for name, info in sorted(found.items())).encode()
                        ).hexdigest()


def fetch(remote: epath.Path, local: pathlib.Path) -> None:
  """Copy `remote` (a file or folder) to `local` whole or not at all: into a partial copy beside it, renamed
  when complete (another process on this machine may win the race; its copy is kept)."""
  partial = local.with_name(local.name + f".partial-{os.getpid()}")
  shutil.rmtree(partial, ignore_errors=True)
  copy_tree(remote, epath.Path(partial))
  try:
    partial.rename(local)
  except OSError:  # another process on this host finished its copy first
    shutil.rmtree(partial, ignore_errors=True)


def copy_tree(source: epath.Path, destination: epath.Path) -> None:
  """Copy a file, or a folder and everything below it, between any two places epath reaches."""
  if source.is_file():
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(source.read_bytes())
    return
  destination.mkdir(parents=True, exist_ok=True)
  for child in source.iterdir():
    copy_tree(child, destination / child.name)
