"""Tests of jaxunlearn.plotting: each figure is written as a non-empty PNG."""

import numpy as np
import pytest

from jaxunlearn import metrics
from jaxunlearn import plotting

_PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
  with open(path, "rb") as f:
    head = f.read(8)
  return head == _PNG


def test_plot_roc(tmp_path):
  rng = np.random.default_rng(0)
  y = rng.random(200) < 0.5
  s = rng.normal(size=200) + y
  fpr, tpr, _ = metrics.roc_curve(s, y)
  path = tmp_path / "a" / "b" / "roc.png"
  out = plotting.plot_roc({"lira": (fpr, tpr), "chance": ([0, 1], [0, 1])}, path, title="t")
  assert out == str(path) and path.stat().st_size > 1000 and _is_png(path)


def test_plot_epsilon_hist(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "eps" / "hist.png"
  out = plotting.plot_epsilon_hist(
      {"scrub": rng.uniform(0, 8, 100), "retrain": np.append(rng.uniform(0, 3, 99), 50.0)},
      path, max_epsilon=7.0)
  assert out == str(path) and path.stat().st_size > 1000 and _is_png(path)


def test_plot_accuracy_bars(tmp_path):
  path = tmp_path / "bars.png"
  out = plotting.plot_accuracy_bars(
      {"retrain": {"retain": 1.0, "forget": 0.8, "test": 0.8},
       "scrub": {"retain": [0.99, 0.97], "forget": 0.83, "test": 0.79}}, path)
  assert out == str(path) and path.stat().st_size > 1000 and _is_png(path)


def test_plot_bad_input(tmp_path):
  with pytest.raises(ValueError, match="empty"):
    plotting.plot_roc({}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="forget"):
    plotting.plot_accuracy_bars({"m": {"retain": 1.0, "test": 0.9}}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="NaN"):
    plotting.plot_epsilon_hist({"m": [np.nan]}, tmp_path / "x.png")
