"""The layers of `lrr_jax` (HOUSE_STYLE: files -> data -> model -> train / inference -> evaluation) hold: no
module imports one of a higher layer. Commands (modules that run `app.run`) and `experiment` are entry points,
the top layer."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "lrr_jax"
LAYERS = {"models": 0, "data": 0, "train": 1, "convert": 1, "inference": 2, "evaluation": 3}
TOP = 4


def module_name(path: pathlib.Path) -> str:
  return ".".join(("lrr_jax",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def layer(module: str, source: str = "") -> int:
  """A module's layer: its subpackage's, or the top for commands, `experiment` and the package root."""
  parts = module.split(".")
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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
  source = path.read_text()
  own = layer(module_name(path), source)
  upward = [m for m in lrr_imports(ast.parse(source)) if layer(m) > own]
  assert not upward, f"{module_name(path)} (layer {own}) imports {upward} from a higher layer"


def test_the_rule_itself_catches_upward_imports():
  assert layer("lrr_jax.models.lrr") < layer("lrr_jax.train.trainer") < layer("lrr_jax.inference.search")
  assert layer("lrr_jax.inference.search") < layer("lrr_jax.evaluation.evaluator") < layer("lrr_jax.experiment")
  tree = ast.parse("from lrr_jax.inference import generate\nimport lrr_jax.evaluation.cater")
  assert lrr_imports(tree) == {"lrr_jax.inference.generate", "lrr_jax.evaluation.cater"}
  assert len(MODULES) > 40
