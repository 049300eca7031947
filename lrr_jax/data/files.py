"""Reading the JSON files of releases, checkpoints and runs, with errors that name the file."""
import json
import os
import pathlib
from typing import Any


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
  """The JSON value in `path`. A missing file, text that is not UTF-8 or not JSON, or (with `expect`, e.g.
  `dict`) a value of another type raises an error that names the file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing.")
  try:
    value = json.loads(path.read_bytes().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e
  if expect is not None and not isinstance(value, expect):
    raise ValueError(f"{path} holds a JSON {type(value).__name__}; expected a JSON "
                     f"{ {dict: 'object', list: 'array'}.get(expect, expect.__name__)}.")
  return value
