"""Imports point one way: data/models -> train -> attacks -> unlearn; metrics -> mia; all -> orchestration."""

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
    "checkpoint": set(),
    "attacks": set(),
    "mia": {"metrics"},
    "train": {"data", "models"},
    "config": {"data", "models", "train", "errors"},
    "evals": {"data", "train", "metrics", "mia"},
    "unlearn": {"data", "models", "train", "attacks"},
    "shadow": {"data", "models", "train", "unlearn", "metrics", "mia", "checkpoint"},
    "airbench": {"data", "models", "train", "shadow"},
    "run": {"data", "models", "train", "unlearn", "metrics", "mia", "plotting", "checkpoint", "atomic", "errors",
            "config", "evals"},
    "studies": {"data", "models", "train", "unlearn", "metrics", "mia", "plotting", "checkpoint", "shadow",
                "atomic", "errors", "config"},
    "cli": {"data", "models", "train", "errors", "evals", "run", "studies"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _unit(path: pathlib.Path) -> str:
  rel = path.relative_to(PKG)
  return rel.parts[0].removesuffix(".py")


def _imports(path: pathlib.Path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxunlearn"):
      parts = node.module.split(".")
      if len(parts) > 1:
        yield parts[1]
      else:  # from jaxunlearn import x
        for a in node.names:
          yield a.name
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("jaxunlearn."):
          yield a.name.split(".")[1]


FILES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_one_way(path):
  unit = _unit(path)
  assert unit in ALLOWED, f"new top-level unit {unit!r}: add it to ALLOWED with its layer"
  bad = {u for u in _imports(path) if u != unit and u not in ALLOWED[unit]}
  assert not bad, f"{path.relative_to(PKG)} ({unit}) imports {sorted(bad)}"


def test_unlearn_and_mia_never_import_each_other():
  assert "mia" not in ALLOWED["unlearn"] and "unlearn" not in ALLOWED["mia"]
  assert len(FILES) > 20
