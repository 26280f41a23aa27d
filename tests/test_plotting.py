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


def _capture(monkeypatch):
  """The figures the plotting functions save, for inspecting what they draw."""
  figs = []
  real = plotting._save
  monkeypatch.setattr(plotting, "_save", lambda fig, path, dpi: figs.append(fig) or real(fig, path, dpi))
  return figs


def _bars(ax):
  from matplotlib.patches import Rectangle

  return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_accuracy_bars_are_labelled_show_zeros_and_other_scores(tmp_path, monkeypatch):
  """97 vs 100 readable (value labels), a 0 accuracy visible, and --eval-style numbers in a panel of their own."""
  figs = _capture(monkeypatch)
  path = plotting.plot_accuracy_bars(
      {"retrain": {"retain": 1.0, "forget": 0.0, "test": 0.97},
       "scrub": {"retain": 0.97, "forget": 0.0, "test": 0.955}}, tmp_path / "bars.png", title="digits / cnn",
      scores={"mia": {"retrain": 0.5, "scrub": 0.62}, "tow": {"scrub": 0.9}, "svc": {"retrain": float("nan")}})
  assert _is_png(path)
  fig = figs[0]
  ax, ax_s = fig.axes[:2]
  labels = [t.get_text() for t in ax.texts]
  assert labels == ["100.0", "0.0", "97.0", "97.0", "0.0", "95.5"]  # retrain's bars, then scrub's
  heights = [b.get_height() for b in _bars(ax)]
  assert heights[1] > 0.005 and heights[4] > 0.005  # the zeros are drawn, not left out
  assert heights[0] == 1.0 and heights[2] == pytest.approx(0.97)  # other bars at their values
  assert fig._suptitle.get_text() == "digits / cnn"
  # the scores panel: one group per score; no bar where a model has no value, "nan" where it is NaN
  assert [t.get_text() for t in ax_s.get_xticklabels()] == ["mia", "tow", "svc"]
  assert [t.get_text() for t in ax_s.texts] == ["0.500", "", "nan", "0.620", "0.900", ""]
  s_heights = [b.get_height() for b in _bars(ax_s)]
  assert s_heights[0] == 0.5 and s_heights[3] == 0.62 and s_heights[4] == 0.9
  with pytest.raises(ValueError, match="not in results"):
    plotting.plot_accuracy_bars({"a": {"retain": 1, "forget": 1, "test": 1}}, tmp_path / "x.png",
                                scores={"mia": {"b": 0.5}})


def test_dataset_label_drops_folders():
  assert plotting.dataset_label("npz:/work/shared/data/fashion_mnist.npz") == "npz:fashion_mnist.npz"
  assert plotting.dataset_label("npz:~/x.npz") == "npz:x.npz"
  assert plotting.dataset_label("digits") == "digits" and plotting.dataset_label("cifar10") == "cifar10"


def test_run_plot_has_eval_scores_and_a_short_title(tmp_path, monkeypatch):
  """jaxunlearn run's accuracy.png: the --eval numbers of the table beside the accuracies, the title without the
  data file's folder."""
  from types import SimpleNamespace

  from jaxunlearn import run

  figs = _capture(monkeypatch)
  acc = {"retain": 1.0, "forget": 0.9, "test": 0.95}
  results = {"dataset": "npz:/very/long/folder/fashion_mnist.npz", "model": "cnn", "forget": "class:3",
             "models": {"original": {"acc": acc, "mia": 0.7, "zrf": 0.4},
                        "retrain": {"acc": dict(acc, forget=0.0), "mia": 0.5, "zrf": 0.5},
                        "scrub": {"acc": dict(acc, forget=0.0), "tow": 0.99, "mia": 0.52, "zrf": 0.6,
                                  "ic": {"test_error": 0.1}}}}
  run.write_outputs(SimpleNamespace(out=tmp_path), results)
  assert _is_png(tmp_path / "accuracy.png")
  fig = figs[0]
  assert fig._suptitle.get_text() == "npz:fashion_mnist.npz / cnn / forget class:3"
  ax_s = fig.axes[1]
  assert [t.get_text() for t in ax_s.get_xticklabels()] == ["tow", "mia", "zrf"]  # the table's columns, not ic
  assert "0.990" in [t.get_text() for t in ax_s.texts]


def test_seeds_plot_has_eval_scores_with_error_bars(tmp_path, monkeypatch):
  """--seeds S: the same panel from the mean ± std over seeds (IC's counts are not among them)."""
  from types import SimpleNamespace

  from jaxunlearn.sweeps import seeds

  figs = _capture(monkeypatch)
  acc, std = {"retain": 1.0, "forget": 0.0, "test": 0.9}, {"retain": 0.0, "forget": 0.0, "test": 0.01}
  results = {"dataset": "npz:/a/b/c.npz", "model": "mlp", "forget": "class:3", "seeds": 3,
             "models": {"retrain": {"acc": acc, "acc_std": std, "evals": {"mia": 0.5, "ic.test_count": 40.0},
                                    "evals_std": {"mia": 0.02, "ic.test_count": 0.0}},
                        "scrub": {"acc": acc, "acc_std": std, "evals": {"mia": 0.55, "tow": 0.97},
                                  "evals_std": {"mia": 0.03, "tow": 0.01}}}}
  seeds.write_seeds(SimpleNamespace(out=tmp_path), results)
  fig = figs[0]
  assert fig._suptitle.get_text() == "npz:c.npz / mlp / forget class:3 (3 seeds)"
  ax_s = fig.axes[1]
  assert [t.get_text() for t in ax_s.get_xticklabels()] == ["mia", "tow"]
  assert [t.get_text() for t in ax_s.texts] == ["0.500", "", "0.550", "0.970"]


def test_accuracy_panels_draw_many_methods_and_refuse_non_fractions(tmp_path):
  # one horizontal-bar panel per split for 20+ methods (the benchmark's tables), labelled mean ± std
  res = {f"m{i}": {"retain": 0.9, "forget": i / 30, "test": 0.8} for i in range(24)}
  errs = {m: {"retain": 0.01, "forget": 0.02, "test": 0.0} for m in res}
  p = plotting.plot_accuracy_panels({"retrain": {"retain": 0.9, "forget": 0.0, "test": 0.8}, **res},
                                    tmp_path / "a.png", errors=errs)
  from PIL import Image
  w, h = Image.open(p).size
  assert h > 600 and w > h  # tall enough for 25 rows, three panels side by side
  with pytest.raises(ValueError, match=r"results\['m0'\]\['test'\] = 80.0 is not a fraction"):
    plotting.plot_accuracy_panels({"m0": {"retain": 0.9, "forget": 0.0, "test": 80.0}}, tmp_path / "b.png")
