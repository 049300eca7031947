"""Every colab runs headless on a tiny run and shows what it promises; committed notebooks carry either no
outputs or those of one complete run (`colabs/execute.py`).

The kernel is the `python3` spec of this interpreter's environment: `JUPYTER_PATH` puts `<sys.prefix>/share/jupyter`
(where ipykernel installs its spec, argv `python`, which jupyter_client replaces by `sys.executable`) ahead of any
user-level spec, and a test checks that the kernel command really is this interpreter.
"""
import os
import pathlib
import sys

from jupyter_client import manager
import nbformat
from nbclient import NotebookClient
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
KERNEL_ENV = {"JUPYTER_PATH": os.pathsep.join([str(pathlib.Path(sys.prefix) / "share" / "jupyter"),
                                               os.environ.get("JUPYTER_PATH", "")]).rstrip(os.pathsep),
              "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
# Smaller budgets than the notebooks' defaults, set after their parameters cell (as papermill does).
OVERRIDES = {
    "data.ipynb": "NUM_VIDEOS = 1",
    "model.ipynb": "NUM_TOKENS = 3",
    "stage_search.ipynb": "NUM_CANDIDATES = 2\nMAX_STEP_TOKENS = 6",
    "training_curves.ipynb": "",
}


@pytest.fixture(scope="module")
def run_dir(tiny_run):
  """The shared tiny run (tests/conftest.py): metrics every step, checkpoints at steps 2 and 4."""
  workdir, _ = tiny_run
  assert sorted(p.name for p in (workdir / "ckpt").iterdir() if p.name.isdigit()) == ["2", "4"]
  return workdir


def execute(name: str, workdir: pathlib.Path) -> nbformat.NotebookNode:
  """Run colabs/<name> from the repository root with LRR_WORKDIR=workdir and the test's smaller budgets."""
  nb = nbformat.read(ROOT / "colabs" / name, as_version=4)
  parameters = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  if OVERRIDES[name]:
    nb.cells.insert(parameters + 1, nbformat.v4.new_code_cell(OVERRIDES[name]))
  client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
  client.execute(env={**os.environ, **KERNEL_ENV, "LRR_WORKDIR": str(workdir)})
  return nb


def outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
  """Every output of `mime` ('text' for streams, 'text/markdown', 'image/png', ...) in cell order."""
  found = []
  for cell in nb.cells:
    for output in cell.get("outputs", []):
      if mime == "text" and output.output_type == "stream":
        found.append(output.text)
      elif mime in output.get("data", {}):
        found.append(output.data[mime])
  return found


def test_there_are_the_four_colabs():
  assert [p.name for p in NOTEBOOKS] == ["data.ipynb", "model.ipynb", "stage_search.ipynb", "training_curves.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_a_complete_run_or_none_and_a_parameters_cell(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  counts = [c.execution_count for c in code]
  if any(count is not None for count in counts):  # outputs of one run, top to bottom, without errors
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: rerun it with colabs/execute.py"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{path.name}: a cell failed"
  else:
    assert all(not c.outputs for c in code), f"{path.name}: outputs without a run"
  setup = code[0].source  # first: install the package where it is missing (Colab)
  assert 'find_spec("lrr_jax") is None' in setup and "%pip install --quiet {LRR_JAX_SOURCE}" in setup, path.name
  parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1 and 'os.environ.get("LRR_WORKDIR"' in parameters[0].source, path.name
  assert nb.metadata.kernelspec.name == "python3"


def test_the_python3_kernel_is_this_interpreter(monkeypatch):
  for key, value in KERNEL_ENV.items():
    monkeypatch.setenv(key, value)
  command = manager.KernelManager(kernel_name="python3").format_kernel_cmd()
  assert pathlib.Path(command[0]).resolve() == pathlib.Path(sys.executable).resolve(), command


def test_data_colab_shows_videos_and_rationales(run_dir):
  nb = execute("data.ipynb", run_dir)
  text = "".join(outputs(nb, "text"))
  for piece in ("<SUMMARY>", "<CAPTION>", "<REASONING>", "<CONCLUSION>", "<detect>", "<track>", "frames 0-7",
                "light on", "query 3 (potential)"):
    assert piece in text, piece
  assert len(outputs(nb, "image/png")) >= 2 and outputs(nb, "image/gif")  # CATER and ACRE strips, the GIF
  assert (run_dir / "colabs" / "cater_0.gif").stat().st_size > 1000
  assert "| frame | action | snitch cell |" in "".join(outputs(nb, "text/markdown"))


def test_model_colab_draws_attention_maps_per_block(run_dir):
  nb = execute("model.ipynb", run_dir)
  text = "".join(outputs(nb, "text"))
  assert "Total:" in text and "decoder/cross_attention_0/attention/q_proj/kernel" in text  # clu overview
  markdown = "".join(outputs(nb, "text/markdown"))
  assert "### cross_attention_0" in markdown and "### cross_attention_1" in markdown
  assert "tanh(attention gate)" in markdown
  assert len(outputs(nb, "image/png")) == 3  # the example's frames, then one map figure per block


def test_stage_search_colab_tabulates_every_stage(run_dir):
  nb = execute("stage_search.ipynb", run_dir)
  markdown = "".join(outputs(nb, "text/markdown"))
  for stage in ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION"):
    assert markdown.count(f"**{stage}**") == 2, stage  # judged, then by likelihood
  assert "judge wins" in markdown and "Judge's knockout" in markdown and "| score |" in markdown
  assert "tokens sampled" in markdown and "answer" in "".join(outputs(nb, "text"))


def test_training_curves_colab_plots_the_logged_scalars(run_dir):
  nb = execute("training_curves.ipynb", run_dir)
  assert len(outputs(nb, "image/png")) == 1
  text = "".join(outputs(nb, "text"))
  assert "loss: same in the event files" in text.replace("  ", "") and "DIFFERS" not in text
  markdown = "".join(outputs(nb, "text/markdown"))
  assert "| loss | 1-4 (4) |" in markdown and "| top1 |" in markdown
