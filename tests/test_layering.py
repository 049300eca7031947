"""The layers of `lrr_jax` (HOUSE_STYLE: files -> data -> model -> train / inference -> evaluation) hold: no
module imports one of a higher layer. `lrr_jax.files` (the path layer) is the bottom; the package's own modules
(`run_config`, `config_checks`, `run_objects`, `run_records`, `run_inference`) and its commands (`main`, `infer`,
`prepare`, `scaling`, `probe`: the only modules that run `app.run`) are the top layer. Config files
(`configs/*.py`) import no library code: reading one imports no JAX."""
import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "lrr_jax"
BOTTOM = -1  # lrr_jax.files
LAYERS = {"models": 0, "data": 0, "train": 1, "convert": 1, "inference": 2, "evaluation": 3}
TOP = 4


def module_name(path: pathlib.Path) -> str:
  return ".".join(("lrr_jax",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def layer(module: str, source: str = "") -> int:
  """A module's layer: its subpackage's, or the top for commands and the package's own modules."""
  parts = module.split(".")
  if module == "lrr_jax.files":
    return BOTTOM
  if "app.run(" in source or len(parts) < 3:
    return TOP
  return LAYERS[parts[1]]


def lrr_imports(tree: ast.AST) -> set[str]:
  """The lrr_jax modules a module imports (`from lrr_jax.x import y` counts as lrr_jax.x.y when y is a module)."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("lrr_jax")}
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lrr_jax"):
      found |= {f"{node.module}.{a.name}" for a in node.names}
  return found


MODULES = sorted(PACKAGE.rglob("*.py"))
CONFIGS = sorted((PACKAGE.parent / "configs").glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
  source = path.read_text()
  own = layer(module_name(path), source)
  upward = [m for m in lrr_imports(ast.parse(source)) if layer(m) > own]
  assert not upward, f"{module_name(path)} (layer {own}) imports {upward} from a higher layer"


def test_commands_live_at_the_top_of_the_package():
  commands = sorted(module_name(p) for p in MODULES if "app.run(" in p.read_text())
  assert commands == ["lrr_jax.infer", "lrr_jax.main", "lrr_jax.prepare", "lrr_jax.probe", "lrr_jax.scaling"]


def test_the_rule_itself_catches_upward_imports():
  assert layer("lrr_jax.files") < layer("lrr_jax.data.records") == layer("lrr_jax.models.lrr")
  assert layer("lrr_jax.models.lrr") < layer("lrr_jax.train.trainer") < layer("lrr_jax.inference.search")
  assert layer("lrr_jax.inference.search") < layer("lrr_jax.evaluation.evaluator") < layer("lrr_jax.run_objects")
  tree = ast.parse("from lrr_jax.inference import generate\nimport lrr_jax.evaluation.cater")
  assert lrr_imports(tree) == {"lrr_jax.inference.generate", "lrr_jax.evaluation.cater"}
  assert len(MODULES) > 40


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_files_import_nothing_from_the_library(path):
  imported = {a.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
              for a in node.names} | {node.module or "" for node in ast.walk(ast.parse(path.read_text()))
                                       if isinstance(node, ast.ImportFrom)}
  assert not [m for m in imported if m.startswith("lrr_jax")], f"{path.name} imports {sorted(imported)}"


def test_reading_every_config_imports_no_jax():
  code = ("import sys\nfrom configs import acre, cater, common, released\n"
          "[m.get_config() for m in (acre, cater, released)]\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'lrr_jax', 'flax')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=PACKAGE.parent)
  assert out.stdout.strip() == "[]", out.stdout
