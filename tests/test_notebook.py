"""The quickstart notebook executes top to bottom (smoke size), shows a visible forgetting effect, and its
install cell installs a real checkout."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "quickstart.ipynb"
ROOT = NB.parents[1]


def _code(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXUNLEARN_SMOKE", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(NB, as_version=4)
  # read the notebook's own numbers back (an extra last cell)
  nb.cells.append(nbformat.v4.new_code_cell(
      "import json; print('ROWS=' + json.dumps({n: {k: float(v) for k, v in r.items()} for n, r in rows.items()}))"))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  outs = [o for c in _code(nb) for o in c.get("outputs", [])]
  errors = [o for o in outs if o.get("output_type") == "error"]
  assert not errors
  outputs = "".join(o.get("text", "") for o in outs)
  assert "ToW(scrub vs retrain)" in outputs
  rows = json.loads(outputs.split("ROWS=")[1].splitlines()[0])
  assert set(rows) == {"original", "retrain", "scrub"}
  # a forgotten class is visible: the oracle never predicts it, the original does
  assert rows["retrain"]["forget"] == 0.0 and rows["original"]["forget"] >= 0.5
  assert rows["retrain"]["test"] < rows["original"]["test"]
  assert any("image/png" in o.get("data", {}) for o in outs)  # the plot is shown


def _install_cell():
  nb = nbformat.read(NB, as_version=4)
  cells = [c for c in _code(nb) if "pip" in c.source]
  assert len(cells) == 1, "one install cell"
  return cells[0].source


def test_quickstart_install_cell_is_real(tmp_path, monkeypatch):
  """No placeholder URL: on a runtime without jaxunlearn the cell pip-installs the checkout it is pointed at, or
  says in one error where it looked."""
  import importlib.util

  src = _install_cell()
  assert "<" not in src and "git+" not in src  # the project names no public URL: no made-up one either
  calls = []
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # a runtime without jaxunlearn
  monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd))
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.setenv("JAXUNLEARN_CHECKOUT", str(tmp_path / "nothing"))
  with pytest.raises(RuntimeError, match="nothing holds no checkout"):
    exec(src, {})
  assert not calls
  monkeypatch.setenv("JAXUNLEARN_CHECKOUT", str(ROOT))
  exec(src, {})
  assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(ROOT)]]
  assert os.path.isfile(ROOT / "pyproject.toml") and str(ROOT) in sys.path
