"""Figures for reports: log-log ROC curves, epsilon histograms, accuracy bars, hyperparameter sweeps and intervals.

Uses matplotlib's object-oriented API on the Agg canvas (no pyplot, no global state, no display
needed). Every function writes one image (format from the path's suffix, e.g. ``.png``),
creates the parent directories and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ("dataset_label", "plot_accuracy_bars", "plot_epsilon_hist", "plot_intervals", "plot_roc", "plot_sweep")


def _new_figure(figsize) -> Figure:
  fig = Figure(figsize=figsize, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path, dpi: int) -> str:
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, dpi=dpi)
  return path


def _check_mapping(x, name: str) -> None:
  if not isinstance(x, Mapping):
    raise TypeError(f"{name} must be a dict, got {type(x).__name__}")
  if not x:
    raise ValueError(f"{name} is empty: nothing to plot")


def plot_roc(curves: Mapping, path, *, title: str = "ROC", min_rate: float = 1e-5,
             figsize=(4.5, 4.0), dpi: int = 150) -> str:
  """Log-log ROC curves with the chance diagonal, as in the LiRA paper.

  Args:
    curves: ``{name: (fpr, tpr)}`` with ``fpr``, ``tpr`` ``[K]`` arrays (e.g. the first two
      outputs of ``jaxunlearn.metrics.roc_curve``). The legend shows each curve's AUC.
    path: output image path; parent directories are created.
    title: axes title.
    min_rate: lower limit of both log axes (rates of 0 are not drawn on log axes).
    figsize: figure size in inches.
    dpi: resolution.

  Returns:
    ``path`` as a string.
  """
  _check_mapping(curves, "curves")
  fig = _new_figure(figsize)
  ax = fig.add_subplot()
  for name, curve in curves.items():
    try:
      fpr, tpr = curve
    except (TypeError, ValueError):
      raise ValueError(f"curves[{name!r}] must be a pair (fpr, tpr)") from None
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape:
      raise ValueError(f"curves[{name!r}]: fpr and tpr must be 1-D of one shape, got "
                       f"{fpr.shape} and {tpr.shape}")
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)) if fpr.size > 1 else float("nan")
    ax.plot(fpr, tpr, label=f"{name} (AUC={area:.3f})")
  ax.plot([min_rate, 1.0], [min_rate, 1.0], ls="--", color="gray", lw=1)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlim(min_rate, 1.0)
  ax.set_ylim(min_rate, 1.0)
  ax.set_xlabel("False positive rate")
  ax.set_ylabel("True positive rate")
  ax.set_title(title)
  ax.legend(fontsize=8, loc="lower right")
  return _save(fig, path, dpi)


def plot_epsilon_hist(epsilons: Mapping, path, *, title: str = "Per-example epsilon",
                      bin_width: float = 0.5, max_epsilon: float | None = None,
                      figsize=(5.0, 3.5), dpi: int = 150) -> str:
  """Overlaid histograms of per-example epsilons (e.g. ``ForgetQuality.epsilons``).

  Args:
    epsilons: ``{name: [N_forget] epsilons}``.
    path: output image path; parent directories are created.
    title: axes title.
    bin_width: histogram bin width (0.5 = the forget-quality bins).
    max_epsilon: if given (e.g. ``ForgetQuality.max_epsilon``), a dashed line marks where
      examples stop earning points.
    figsize: figure size in inches.
    dpi: resolution.

  Returns:
    ``path`` as a string.
  """
  _check_mapping(epsilons, "epsilons")
  if not bin_width > 0:
    raise ValueError(f"bin_width must be > 0, got {bin_width!r}")
  arrays = {}
  for name, e in epsilons.items():
    e = np.asarray(e, dtype=np.float64).ravel()
    if np.isnan(e).any():
      raise ValueError(f"epsilons[{name!r}] contains NaN")
    arrays[name] = e
  finite = np.concatenate([e[np.isfinite(e)] for e in arrays.values()] + [np.zeros(1)])
  top = max(float(finite.max()), 0.0) + bin_width
  bins = np.arange(0.0, top + bin_width, bin_width)
  fig = _new_figure(figsize)
  ax = fig.add_subplot()
  for name, e in arrays.items():
    ax.hist(np.clip(e, 0.0, bins[-1]), bins=bins, alpha=0.5, label=name)
  if max_epsilon is not None:
    ax.axvline(float(max_epsilon), ls="--", color="gray", lw=1, label="last bin")
  ax.set_xlabel("epsilon")
  ax.set_ylabel("examples")
  ax.set_title(title)
  ax.legend(fontsize=8)
  return _save(fig, path, dpi)


def dataset_label(dataset: str) -> str:
  """A dataset spec for a figure title: ``npz:/long/path/cifar10.npz`` -> ``npz:cifar10.npz`` (the folder says
  nothing about the data and makes titles unreadable); other specs unchanged."""
  kind, sep, rest = str(dataset).rpartition(":")
  return f"{kind}{sep}{os.path.basename(rest.rstrip(os.sep)) or rest}"


# bars shorter than this fraction of the accuracy axis are drawn at it, so a 0 shows (its label gives the value)
_MIN_BAR = 0.012


def _label(v: float, finite: bool, present: bool, pct: bool) -> str:
  if not present:
    return ""
  if not finite:
    return "nan"
  if pct:
    return f"{100 * v:.1f}"
  return f"{v:.3f}" if abs(v) < 10 else f"{v:.3g}"


def _bar_group(ax, values, names, groups, *, errors=None, pct: bool, top: float, present=None) -> None:
  """Grouped bars ``values[i, j]`` (method i, group j) with a value label on each bar; a non-finite value
  gets no bar and the label ``nan``, one not ``present`` neither; a bar too short to see is drawn at
  ``_MIN_BAR * top``."""
  x = np.arange(len(groups))
  width = 0.8 / len(names)
  rotate = len(names) > 3
  present = np.ones(values.shape, bool) if present is None else present
  for i, m in enumerate(names):
    v = values[i]
    finite = np.isfinite(v)
    v0 = np.where(finite, v, 0.0)
    shown = np.where(finite, np.where(np.abs(v0) < _MIN_BAR * top, _MIN_BAR * top, v0), 0.0)
    err = None if errors is None else [e if np.isfinite(e) else 0.0 for e in errors[i]]
    bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, shown, width, label=str(m), yerr=err, capsize=2,
                  color=f"C{i % 10}")
    labels = [_label(val, f, p, pct) for val, f, p in zip(v, finite, present[i])]
    ax.bar_label(bars, labels, padding=1, fontsize=6 if rotate else 7, rotation=90 if rotate else 0)
  ax.set_xticks(x, [str(g) for g in groups])


def _accuracy_matrix(results: Mapping, splits) -> np.ndarray:
  """``[methods, splits]`` mean accuracies (fractions) of ``{method: {split: acc}}``, checked."""
  _check_mapping(results, "results")
  values = np.zeros((len(results), len(splits)))
  for i, (m, accs) in enumerate(results.items()):
    if not isinstance(accs, Mapping):
      raise TypeError(f"results[{m!r}] must be a dict of split -> accuracy, got "
                      f"{type(accs).__name__}")
    for j, s in enumerate(splits):
      if s not in accs:
        raise ValueError(f"results[{m!r}] has no {s!r} accuracy")
      v = float(np.mean(np.asarray(accs[s], dtype=np.float64)))
      if not 0.0 <= v <= 1.0:
        raise ValueError(f"results[{m!r}][{s!r}] = {v!r} is not a fraction in [0, 1]")
      values[i, j] = v
  return values


def plot_accuracy_bars(results: Mapping, path, *, title: str = "Accuracy",
                       splits=("retain", "forget", "test"), figsize=None,
                       dpi: int = 150, errors: Mapping | None = None, scores: Mapping | None = None,
                       score_errors: Mapping | None = None) -> str:
  """Grouped bars of per-split accuracy for several methods, each bar labelled with its value (in %), and
  optionally a second panel of other per-method numbers (e.g. ``jaxunlearn run --eval`` values).

  A bar too short to see (an accuracy of 0) is drawn at 1.2 % of the axis; its label gives the value.

  Args:
    results: ``{method: {"retain": acc, "forget": acc, "test": acc}}`` with accuracies as
      fractions in [0, 1] (scalars, or arrays that are averaged).
    path: output image path; parent directories are created.
    title: figure title.
    splits: the splits to draw, one bar per method within each split group.
    figsize: figure size in inches (default: wider with a scores panel).
    dpi: resolution.
    errors: optional ``{method: {split: std}}`` drawn as error bars (e.g. over seeds).
    scores: optional ``{score: {method: value}}`` (e.g. ``{"mia": {"retrain": 0.5, "scrub": 0.52}}``),
      drawn in a panel of their own, one group per score, labelled with 3 significant digits; a
      method without a value for a score has no bar there, a non-finite value shows ``nan``.
    score_errors: optional ``{score: {method: std}}`` error bars of ``scores``.

  Returns:
    ``path`` as a string.
  """
  methods = list(results)
  values = _accuracy_matrix(results, splits)
  scores = dict(scores or {})
  for k, per in scores.items():
    if not isinstance(per, Mapping):
      raise TypeError(f"scores[{k!r}] must be a dict of method -> value, got {type(per).__name__}")
    extra = set(per) - set(methods)
    if extra:
      raise ValueError(f"scores[{k!r}] names methods not in results: {sorted(map(str, extra))}")
  fig = _new_figure(figsize or ((10.5, 3.8) if scores else (7.5, 3.8)))
  if scores:
    ax, ax_s = fig.subplots(1, 2, width_ratios=[len(splits), max(len(scores), 1.5)])
  else:
    ax, ax_s = fig.add_subplot(), None
  err = None
  if errors is not None:
    err = [[float(errors[m].get(s, 0.0)) if m in errors else 0.0 for s in splits] for m in methods]
  _bar_group(ax, values, methods, splits, errors=err, pct=True, top=1.0)
  ax.set_ylim(0.0, 1.12)  # room for the labels above a 100 % bar
  ax.set_yticks(np.linspace(0.0, 1.0, 6), [f"{t:.0f}" for t in np.linspace(0, 100, 6)])
  ax.set_ylabel("accuracy (%)")
  if ax_s is not None:
    names = list(scores)

    def val(table, k, m):
      if table is None or k not in table or m not in table[k] or table[k][m] is None:
        return np.nan
      return float(np.mean(np.asarray(table[k][m], dtype=np.float64)))

    present = np.array([[m in scores[k] for k in names] for m in methods]).reshape(len(methods), len(names))
    sv = np.array([[val(scores, k, m) for k in names] for m in methods]).reshape(len(methods), len(names))
    se = None if score_errors is None else [[val(score_errors, k, m) for k in names] for m in methods]
    finite = sv[np.isfinite(sv)]
    top = max(1.0, float(finite.max()) if finite.size else 1.0)
    lo = min(0.0, float(finite.min()) if finite.size else 0.0)
    _bar_group(ax_s, sv, methods, names, errors=se, pct=False, top=top - lo, present=present)
    ax_s.set_ylim(lo, lo + 1.12 * (top - lo))
    ax_s.set_ylabel("value")
    ax_s.set_title("other metrics", fontsize=9)
  fig.suptitle(title)
  (ax_s or ax).legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
  return _save(fig, path, dpi)


def plot_accuracy_panels(results: Mapping, path, *, title: str = "Accuracy", splits=("retain", "forget", "test"),
                         errors: Mapping | None = None, reference: str | None = "retrain", dpi: int = 150) -> str:
  """Accuracy per split for MANY methods: one panel of horizontal bars per split, methods top to bottom
  in the given order, each bar labelled ``mean ± std`` (in %), the ``reference`` model's accuracy as a
  dashed line (e.g. the oracle). Readable where :func:`plot_accuracy_bars`' grouped bars are not (20+
  methods).

  Args:
    results: ``{method: {split: accuracy}}`` with fractions in [0, 1].
    path: output image path.
    title: figure title.
    splits: one panel each.
    errors: optional ``{method: {split: std}}`` (fractions) drawn as error bars and in the labels.
    reference: the method drawn as a dashed line in every panel (None: none; absent: none).
    dpi: resolution.

  Returns:
    ``path`` as a string.
  """
  methods = list(results)
  values = _accuracy_matrix(results, splits)
  fig = _new_figure((3.6 * len(splits) + 1.5, 0.28 * len(methods) + 1.2))
  axes = fig.subplots(1, len(splits), sharey=True)
  axes = np.atleast_1d(axes)
  y = np.arange(len(methods))
  for j, (ax, sp) in enumerate(zip(axes, splits)):
    v = values[:, j]
    e = np.array([float((errors or {}).get(m, {}).get(sp, 0.0)) for m in methods])
    colors = ["0.45" if m == reference else "C0" for m in methods]
    ax.barh(y, 100 * np.maximum(v, 0.006), xerr=100 * e if errors else None, color=colors, capsize=2,
            error_kw={"elinewidth": 0.8})
    for i in range(len(methods)):
      lab = f"{100 * v[i]:.1f}" + (f" ± {100 * e[i]:.1f}" if errors else "")
      ax.text(min(100 * (v[i] + e[i]) + 1.5, 101), y[i], lab, va="center", fontsize=7)
    if reference in results:
      ax.axvline(100 * v[methods.index(reference)], color="k", ls="--", lw=0.8)
    ax.set_xlim(0, 130)
    ax.set_xticks([0, 20, 40, 60, 80, 100])
    ax.set_xlabel(f"{sp} accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
  axes[0].set_yticks(y, methods)
  axes[0].invert_yaxis()
  fig.suptitle(title)
  return _save(fig, path, dpi)


def plot_sweep(values: Mapping, series: Mapping, path, *, objective: tuple | None = None, chosen: int | None = None,
               title: str = "Sweep", figsize=None, dpi: int = 150) -> str:
  """One row per swept hyperparameter: the selection objective (left) and accuracies (right) of every
  configuration against that hyperparameter's value, mean +- std over seeds.

  Args:
    values: ``{hyperparameter: [K] values}`` of the K configurations (a log axis when the values are
      positive and span more than a factor of 10).
    series: ``{label: ([K] mean, [K] std)}`` accuracies (fractions) drawn on the right.
    path: output image path.
    objective: ``([K] mean, [K] std)`` of the objective (lower is better), drawn on the left.
    chosen: index of the chosen configuration (a star).
    title: figure title.
  """
  _check_mapping(values, "values")
  _check_mapping(series, "series")
  names = list(values)
  fig = _new_figure(figsize or (8.0, 2.8 * len(names)))
  axes = fig.subplots(len(names), 2, squeeze=False)
  for row, h in enumerate(names):
    v = np.asarray(values[h], np.float64)
    log = bool(np.all(v > 0) and v.max() / v.min() > 10)
    panels = [(axes[row, 0], {"objective": objective} if objective is not None else {}), (axes[row, 1], series)]
    for ax, ser in panels:
      for label, (mean, std) in ser.items():
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        ax.errorbar(v, mean, yerr=std, fmt="o", ms=4, capsize=2, label=label, alpha=0.8)
        if chosen is not None:
          ax.plot([v[chosen]], [mean[chosen]], marker="*", ms=12, color="k", ls="none")
      if log:
        ax.set_xscale("log")
      ax.set_xlabel(h)
    axes[row, 0].set_ylabel("objective (lower is better)")
    axes[row, 1].set_ylabel("accuracy")
    axes[row, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.suptitle(title + ("  (* chosen)" if chosen is not None else ""))
  return _save(fig, path, dpi)


def plot_intervals(points: Mapping, intervals: Mapping, path, *, title: str = "", xlabel: str = "",
                   dpi: int = 130) -> str:
  """One row per name of ``points`` (its order, first at the top): the point (dot) and ``intervals[name] =
  (lo, hi)`` (a bar drawn on its own: a percentile interval, e.g. of a rank, need not contain the point)."""
  _check_mapping(points, "points")
  _check_mapping(intervals, "intervals")
  names = list(points)
  fig = _new_figure((6.5, 0.3 * len(names) + 1.2))
  ax = fig.add_subplot()
  y = np.arange(len(names))[::-1]
  ax.hlines(y, [intervals[n][0] for n in names], [intervals[n][1] for n in names], color="C0")
  ax.plot([points[n] for n in names], y, "o", ms=4, color="C0")
  ax.set_yticks(y, names)
  ax.set_xlabel(xlabel)
  ax.set_title(title)
  ax.grid(axis="x", alpha=0.3)
  return _save(fig, path, dpi)
