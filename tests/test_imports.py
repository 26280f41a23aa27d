"""Imports point one way: data/models -> train -> attacks -> unlearn, train -> recipes; metrics -> mia; all -> many -> orchestration."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "jaxunlearn"

# top-level unit -> the jaxunlearn units it may import
ALLOWED = {
    "atomic": set(),
    "errors": set(),
    "data": {"atomic"},
    "models": set(),
    "metrics": set(),
    "plotting": set(),
    "health": set(),
    "checkpoint": set(),
    "attacks": set(),
    "mia": {"metrics"},
    "train": {"data", "models"},
    "config": {"data", "models", "train", "errors"},
    "evals": {"data", "train", "metrics", "mia"},
    "unlearn": {"data", "models", "train", "attacks"},
    "recipes": {"data", "models", "train"},
    "many": {"data", "models", "train", "unlearn", "metrics", "mia", "checkpoint", "recipes", "atomic", "errors"},
    "saved_models": {"data", "models", "train", "unlearn", "checkpoint", "atomic", "errors"},
    "run": {"data", "models", "train", "unlearn", "metrics", "mia", "plotting", "checkpoint", "atomic", "errors",
            "config", "evals", "saved_models", "health"},
    "studies": {"data", "models", "train", "unlearn", "metrics", "mia", "plotting", "checkpoint", "many",
                "atomic", "errors", "config"},
    "cli": {"data", "models", "train", "unlearn", "errors", "evals", "run", "studies"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _unit(path: pathlib.Path) -> str:
  rel = path.relative_to(PKG)
  return rel.parts[0].removesuffix(".py")


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PKG.parent).with_suffix("")
  parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
  return ".".join(parts)


def _imported_modules(source: str, module: str, is_package: bool = False):
  """Every module an import statement anywhere in ``source`` (also inside functions) names, absolute and
  dotted: ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (c may be a submodule); relative imports are
  resolved against ``module``; ``importlib.import_module("...")`` with a literal name counts too."""
  package = module if is_package else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module
      yield mod
      yield from (f"{mod}.{a.name}" for a in node.names if a.name != "*")
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      yield node.args[0].value


def _units_of(modules):
  return {m.split(".")[1] for m in modules if m.startswith("jaxunlearn.")}


def _imports(path: pathlib.Path):
  """The top-level jaxunlearn units that ``path`` imports."""
  return _units_of(_imported_modules(path.read_text(), _module_name(path), path.name == "__init__.py"))


FILES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_one_way(path):
  unit = _unit(path)
  assert unit in ALLOWED, f"new top-level unit {unit!r}: add it to ALLOWED with its layer"
  bad = {u for u in _imports(path) if u != unit and u not in ALLOWED[unit]}
  assert not bad, f"{path.relative_to(PKG)} ({unit}) imports {sorted(bad)}"


def test_import_parser_sees_every_form():
  """The checks below are only as good as this parser: every spelling of 'unlearn imports mia' is seen."""
  module = "jaxunlearn.unlearn._x"
  forms = ["from jaxunlearn.mia import lira", "from jaxunlearn import mia", "import jaxunlearn.mia.lira as L",
           "from ..mia import lira", "from .. import mia", "from ..mia.simple import *",
           "def f():\n  from jaxunlearn.mia import lira", "import importlib\nimportlib.import_module('jaxunlearn.mia')"]
  for src in forms:
    assert "mia" in _units_of(_imported_modules(src, module)), src
  assert _units_of(_imported_modules("from . import _common\nfrom .masks import x", module)) == {"unlearn"}
  assert _units_of(_imported_modules("from .. import train", "jaxunlearn.unlearn", is_package=True)) == {"train"}
  assert _units_of(_imported_modules("import numpy\nfrom jax import nn", module)) == set()


def _unit_graph():
  graph = {}
  for path in FILES:
    graph.setdefault(_unit(path), set()).update(u for u in _imports(path) if u != _unit(path))
  return graph


def _reachable(graph, start):
  seen, todo = set(), [start]
  while todo:
    for nxt in graph.get(todo.pop(), ()):
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_unlearn_and_mia_never_import_each_other():
  """Parsed from the files in jaxunlearn/unlearn/ and jaxunlearn/mia/: neither imports the other, directly
  or through another jaxunlearn unit (so unlearning never depends on the attack that scores it)."""
  unlearn_files = sorted((PKG / "unlearn").rglob("*.py"))
  mia_files = sorted((PKG / "mia").rglob("*.py"))
  assert {"_scrub.py", "_registry.py", "__init__.py"} <= {p.name for p in unlearn_files}
  assert {"lira.py", "__init__.py"} <= {p.name for p in mia_files}
  for path in unlearn_files:
    assert "mia" not in _imports(path), f"{path.relative_to(PKG)} imports jaxunlearn.mia"
  for path in mia_files:
    assert "unlearn" not in _imports(path), f"{path.relative_to(PKG)} imports jaxunlearn.unlearn"
  graph = _unit_graph()
  assert "train" in graph["unlearn"]  # the parse sees real imports (SCRUB trains)
  assert "mia" not in _reachable(graph, "unlearn"), graph
  assert "unlearn" not in _reachable(graph, "mia"), graph
  for low in ("data", "models", "train", "unlearn", "metrics", "mia", "recipes"):
    assert "many" not in _reachable(graph, low), (low, graph)  # the many-model engine sits on top
