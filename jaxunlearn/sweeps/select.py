"""Selection objectives of ``jaxunlearn tune``: how close each configuration x seed came to what unlearning should give, computed from validation data only (never the test split).

``oracle`` (DeepUnlearn-style, Cadet et al. 2024): the sum of the absolute gaps to the retrained oracle
OF THE SAME SEED in retain, forget and validation accuracy and in the simple MIA score (all fractions).

``no-oracle`` (for users without an oracle; the SCRUB+Rewind idea): the gap between the forget accuracy
and a target -- the model's own accuracy on held-out validation examples of the forget set's
distribution, or 0 for whole-class forgetting (a model that never saw a class does not predict it) --
among the configurations whose retain accuracy stays within ``retain_tolerance`` of the original's
(same seed). A configuration that breaks the tolerance on a seed is infeasible there (objective +inf).

The choice is the configuration with the lowest mean objective over seeds (NaN counts as +inf). A choice at
the end of a numeric axis of three or more values is flagged (:func:`edge_warnings`): the best setting may
lie outside the grid. Whether one configuration beats another beyond the seeds' noise compares them on the
same seeds (:func:`paired_gain`, and :func:`paired_margin`: a one-sided paired t-test).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ("SELECT_MODES", "choose", "edge_warnings", "grid_edges", "objective_no_oracle", "objective_oracle",
           "paired_gain", "paired_margin")

SELECT_MODES = ("oracle", "no-oracle")
ORACLE_TERMS = ("retain", "forget", "val", "mia")


def objective_oracle(acc: Mapping[str, np.ndarray], mia: np.ndarray, oracle_acc: Mapping[str, np.ndarray],
                     oracle_mia: np.ndarray) -> np.ndarray:
  """``[K, S]``: sum over retain / forget / val accuracy and MIA of ``|model - oracle of its seed|``.

  ``acc[split]`` and ``mia`` are ``[K, S]``; ``oracle_acc[split]`` and ``oracle_mia`` are ``[S]``.
  """
  total = np.abs(np.asarray(mia, np.float64) - np.asarray(oracle_mia, np.float64)[None])
  for split in ("retain", "forget", "val"):
    total = total + np.abs(np.asarray(acc[split], np.float64) - np.asarray(oracle_acc[split], np.float64)[None])
  return total


def objective_no_oracle(acc: Mapping[str, np.ndarray], original_retain: np.ndarray, *, whole_class: bool,
                        retain_tolerance: float) -> tuple[np.ndarray, np.ndarray]:
  """``(objective [K, S], feasible [K, S])``: ``|forget - target|`` where the retain accuracy is within
  ``retain_tolerance`` of the original's (same seed), +inf elsewhere; ``target`` is 0 for
  whole-class forgetting and the model's own ``heldout`` accuracy otherwise."""
  forget = np.asarray(acc["forget"], np.float64)
  target = np.zeros_like(forget) if whole_class else np.asarray(acc["heldout"], np.float64)
  feasible = np.asarray(acc["retain"], np.float64) >= np.asarray(original_retain, np.float64)[None] - retain_tolerance
  gap = np.abs(forget - target)
  return np.where(feasible, gap, np.inf), feasible


def choose(objective: np.ndarray) -> int:
  """Index of the configuration with the lowest mean objective over seeds (NaN as +inf; the first
  of equals)."""
  obj = np.where(np.isnan(objective), np.inf, objective)
  with np.errstate(invalid="ignore"):
    mean = obj.mean(axis=1)
  mean = np.where(np.isnan(mean), np.inf, mean)
  return int(np.argmin(mean))


def _number(v) -> float | None:
  if isinstance(v, bool):
    return None
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


def grid_edges(axes, chosen: Mapping) -> list[dict]:
  """The numeric grid axes of 3+ values whose chosen value is their smallest or largest, one dict each:
  ``option``, ``value``, ``end`` (``"smallest"`` / ``"largest"``), ``lo``, ``hi`` and ``proposal``: a log-spaced
  grid one decade either side of the choice (``log:c/10:c*10:5``) where the axis spans a decade or more (a
  learning rate), else None (a factor such as NegGrad+'s alpha in 0.9 .. 0.999 gets none). ``axes``:
  ``(option, values)`` pairs as the grid holds them (strings); ``chosen``: ``{option: value}`` of the choice."""
  out = []
  for opt, values in axes:
    nums = [_number(v) for v in values]
    c = _number(chosen.get(opt))
    if len(set(nums)) < 3 or None in nums or c is None:
      continue
    lo, hi = min(nums), max(nums)
    if c not in (lo, hi):
      continue
    spans_decade = lo > 0 and hi / lo >= 10
    out.append({"option": opt, "value": c, "end": "largest" if c == hi else "smallest", "lo": lo, "hi": hi,
                "proposal": f"log:{c / 10:.6g}:{c * 10:.6g}:5" if spans_decade else None})
  return out


def edge_warnings(method: str, axes, chosen: Mapping) -> list[str]:
  """One line per :func:`grid_edges` entry: the objective was still improving towards the grid's end, so the
  best setting may lie beyond it; the line proposes the wider grid where there is one."""
  return [f"{method}.{e['option']}: the choice {e['value']:g} is the {e['end']} value of its grid ({e['lo']:g} .. "
          f"{e['hi']:g}); the best setting may lie beyond it: widen the grid"
          + (f" (e.g. --grid {method}.{e['option']}={e['proposal']})" if e["proposal"] else "")
          for e in grid_edges(axes, chosen)]


def paired_gain(base, other) -> tuple[float, float]:
  """``(gain, noise)`` of configuration ``other`` over ``base``, both ``[S]`` objectives of the same S seeds (same
  originals and oracles, lower is better): ``gain`` is the mean over seeds of ``base - other``, ``noise`` the
  sample standard deviation (ddof 1) of those differences -- how much the gain moves from seed to seed. ``other``
  beats ``base`` beyond the noise where ``gain > paired_margin(noise, S)``. A non-finite objective (an infeasible or diverged seed)
  counts as +inf: where only ``base`` has one the gain is +inf, where ``other`` has one it is -inf (noise NaN
  in both cases); one seed has no noise estimate (NaN)."""
  a = np.asarray(base, np.float64)
  b = np.asarray(other, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f"paired_gain needs two [S] objectives of the same seeds, got shapes {a.shape} and {b.shape}")
  if not np.isfinite(b).all():
    return -np.inf, np.nan
  if not np.isfinite(a).all():
    return np.inf, np.nan
  d = a - b
  return float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else np.nan


def paired_margin(noise: float, n: int, level: float = 0.05) -> float:
  """The gain a one-sided paired t-test at ``level`` needs over ``n`` seeds whose per-seed gains have sample std
  ``noise`` (:func:`paired_gain`): ``t_{1-level, n-1} * noise / sqrt(n)`` -- 1.686 x noise for 3 seeds, 0.953 x
  for 5 at 5 %. NaN where ``n < 2`` or ``noise`` is not finite (no noise estimate)."""
  if not 0.0 < level < 1.0:
    raise ValueError(f"paired_margin: level must lie in (0, 1), got {level}")
  if n < 2 or not np.isfinite(noise):
    return np.nan
  from scipy import stats  # t quantile in float64
  return float(stats.t.ppf(1.0 - level, n - 1) * noise / np.sqrt(n))
