"""Execute the colabs on a run and keep their outputs, so that they can be read without running them.

  LRR_WORKDIR=workdirs/cater_demo .venv/bin/python colabs/execute.py                    # all four, in place
  LRR_WORKDIR=workdirs/cater_demo .venv/bin/python colabs/execute.py colabs/model.ipynb

Each notebook runs headless (nbclient, from the test extra) from the repository root with this interpreter's
`python3` kernel, as `tests/colabs` runs them; a cell that fails raises and leaves the file as it was.
"""
import os
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
# This environment's kernel spec (argv `python`, which jupyter_client replaces by sys.executable) first.
KERNEL_PATH = os.pathsep.join([str(pathlib.Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")])


def execute(path: pathlib.Path, timeout: int = 1800) -> None:
  """Run the notebook at `path` top to bottom and write it back with its outputs."""
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
  client.execute(env={**os.environ, "JUPYTER_PATH": KERNEL_PATH.rstrip(os.pathsep),
                      "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
  nbformat.write(notebook, path)


def main(argv: list[str]) -> None:
  paths = [pathlib.Path(a) for a in argv[1:]] or sorted((ROOT / "colabs").glob("*.ipynb"))
  for path in paths:
    print(f"{path}: executing on {os.environ.get('LRR_WORKDIR', 'workdirs/cater_demo')}", flush=True)
    execute(path)


if __name__ == "__main__":
  main(sys.argv)
