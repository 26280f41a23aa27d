"""ROC curves and the membership-inference summaries built on them.

Plain numpy, float64, outside jit. Convention everywhere: a *higher* score
means "more likely a member" (positive), and an example is predicted positive
when ``score >= threshold``.
"""

from __future__ import annotations

import numpy as np

from jaxunlearn.metrics._utility import as_float64

__all__ = ("auc", "best_threshold_accuracy", "roc_curve", "tpr_at_fpr")


def _check_scores_and_labels(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
  """Validates ``scores`` [N] and ``is_member`` [N]; returns float64 / bool."""
  scores = as_float64(scores, "scores")
  if scores.ndim != 1:
    raise ValueError(f"scores must have shape [N], got shape {scores.shape}")
  if np.isnan(scores).any():
    raise ValueError(
        f"scores contain NaN at index {int(np.flatnonzero(np.isnan(scores))[0])}"
    )
  labels = np.asarray(is_member)
  if labels.shape != scores.shape:
    raise ValueError(
        f"is_member has shape {labels.shape} but scores has shape {scores.shape}"
    )
  if labels.dtype != np.bool_:
    if labels.dtype == object or not (
        np.issubdtype(labels.dtype, np.integer)
        or np.issubdtype(labels.dtype, np.floating)
    ):
      raise TypeError(f"is_member must be bool or 0/1, got dtype {labels.dtype}")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
      raise ValueError(
          f"is_member must be bool or 0/1, got value {labels[bad][0]!r}"
      )
    labels = labels.astype(bool)
  n_pos = int(labels.sum())
  if n_pos == 0 or n_pos == labels.size:
    raise ValueError(
        "is_member must contain both members and non-members, got "
        f"{n_pos} members out of {labels.size}"
    )
  return scores, labels


def roc_curve(scores, is_member) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC curve of a membership score, one point per distinct score.

  Equivalent to ``sklearn.metrics.roc_curve(is_member, scores,
  drop_intermediate=False)``: the first point is (0, 0) at threshold ``+inf``,
  then one point per distinct score value in decreasing order, ending at (1, 1).

  Args:
    scores: [N] real scores, higher = more likely a member. No NaN.
    is_member: [N] bool (or 0/1) ground truth; both classes must occur.

  Returns:
    ``(fpr, tpr, thresholds)``, each [K] float64 with K = 1 + number of
    distinct scores; ``fpr`` and ``tpr`` are non-decreasing and ``thresholds``
    strictly decreasing. Point k counts ``score >= thresholds[k]`` as positive.
  """
  scores, labels = _check_scores_and_labels(scores, is_member)
  order = np.argsort(-scores, kind="stable")
  s = scores[order]
  y = labels[order]
  # Last index of each run of equal scores.
  ends = np.flatnonzero(np.diff(s) != 0)
  ends = np.append(ends, s.size - 1)
  tps = np.cumsum(y, dtype=np.int64)[ends]
  fps = (ends + 1) - tps
  tpr = np.concatenate([[0.0], tps / tps[-1]])
  fpr = np.concatenate([[0.0], fps / fps[-1]])
  thresholds = np.concatenate([[np.inf], s[ends]])
  return fpr, tpr, thresholds


def auc(fpr, tpr) -> float:
  """Area under a ROC curve by the trapezoidal rule.

  Signature as ``sklearn.metrics.auc``: takes the curve, not the scores. Use
  ``auc(*roc_curve(scores, is_member)[:2])`` for the AUC of a score; on the
  full curve this equals ``sklearn.metrics.roc_auc_score`` (ties count 1/2).

  Args:
    fpr: [K] non-decreasing false-positive rates, K >= 2.
    tpr: [K] true-positive rates.

  Returns:
    The area as a Python float.
  """
  fpr = np.asarray(fpr, dtype=np.float64)
  tpr = np.asarray(tpr, dtype=np.float64)
  if fpr.ndim != 1 or fpr.shape != tpr.shape:
    raise ValueError(
        f"fpr and tpr must be 1-D of the same shape, got {fpr.shape} and {tpr.shape}"
    )
  if fpr.size < 2:
    raise ValueError(f"need at least 2 ROC points, got {fpr.size}")
  if np.isnan(fpr).any() or np.isnan(tpr).any():
    raise ValueError("fpr/tpr contain NaN")
  if np.any(np.diff(fpr) < 0):
    raise ValueError("fpr must be non-decreasing (sort the curve by fpr first)")
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def tpr_at_fpr(scores, is_member, fpr: float, *, strict: bool = False) -> float:
  """True-positive rate at a fixed low false-positive rate.

  Returns the TPR of the lowest threshold (= the ROC point with the largest
  FPR) whose FPR is still ``<= fpr`` (default); i.e. the best TPR attainable
  without exceeding the target FPR. With ``strict=True`` the FPR must be
  ``< fpr``, the read-out of the LiRA reference code (tensorflow/privacy
  ``research/mi_lira_2021/plot.py``): the two differ when a ROC point lands
  exactly on the target, e.g. one false positive among 1000 non-members at
  ``fpr=0.001``. Typical targets: 0.001 (0.1 %) and 0.01 (1 %).

  Args:
    scores: [N] real scores, higher = more likely a member.
    is_member: [N] bool ground truth.
    fpr: target false-positive rate in [0, 1] (``(0, 1]`` when ``strict``).
    strict: read at FPR ``< fpr`` instead of ``<= fpr``.

  Returns:
    The TPR as a Python float.
  """
  fpr_target = float(fpr)
  if not 0.0 <= fpr_target <= 1.0:
    raise ValueError(f"fpr must be in [0, 1], got {fpr!r}")
  if strict and fpr_target == 0.0:
    raise ValueError(f"fpr must be > 0 with strict=True (no ROC point has FPR < 0), got {fpr!r}")
  fprs, tprs, _ = roc_curve(scores, is_member)
  # fprs is non-decreasing and fprs[0] == 0, so the index always exists.
  idx = np.searchsorted(fprs, fpr_target, side="left" if strict else "right") - 1
  return float(tprs[idx])


def best_threshold_accuracy(scores, is_member) -> float:
  """Best balanced accuracy over all thresholds, ``max (TPR + 1 - FPR) / 2``.

  Args:
    scores: [N] real scores, higher = more likely a member.
    is_member: [N] bool ground truth.

  Returns:
    The balanced accuracy in [0.5, 1] as a Python float.
  """
  fprs, tprs, _ = roc_curve(scores, is_member)
  return float(np.max((tprs + 1.0 - fprs) / 2.0))
