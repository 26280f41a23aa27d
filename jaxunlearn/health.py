"""Post-run checks of an unlearned model: non-finite weights, a collapsed retain accuracy, a forget set not forgotten.

Each check gives one warning line naming the model and the numbers (accuracies in %):

* NON-FINITE: weights or accuracies NaN/inf; the accuracies are not results (never print them as 0 %).
* COLLAPSE: retain accuracy more than :data:`COLLAPSE_POINTS` points below the original's.
* NOT FORGOTTEN: forget accuracy above a reference by more than a tolerance. The reference is 0 for
  whole-class forgetting (a model that never saw a class does not predict it) and otherwise the
  ORIGINAL model's accuracy on held-out examples of the forget set's distribution (``heldout_acc``,
  see :func:`jaxunlearn.evals.forget_validation_index`): a model that forgot the examples should do on
  them about as well as on unseen ones. Tolerance ``max(NOOP_MIN_POINTS points, NOOP_STDERRS *
  sqrt(p (1 - p) / n_forget))`` with ``p`` the reference: a fixed margin, widened to two standard
  errors of a forget-set accuracy when the forget set is small.
"""

from __future__ import annotations

import math
from typing import Mapping

__all__ = ("COLLAPSE_POINTS", "NOOP_MIN_POINTS", "NOOP_STDERRS", "forget_tolerance", "model_warnings",
           "nonfinite_warning")

COLLAPSE_POINTS = 5.0    # retain accuracy this many points below the original's: collapse
NOOP_MIN_POINTS = 5.0    # forget accuracy at least this many points above the reference: not forgotten
NOOP_STDERRS = 2.0       # ... or this many standard errors of the forget accuracy, if more


def nonfinite_warning(name: str) -> str:
  """The warning of a model whose weights or accuracies are NaN/inf."""
  return f"{name}: weights became NaN/inf (lr too large?); its accuracies are not results"


def forget_tolerance(reference: float, n_forget: int) -> float:
  """The margin (a fraction) above ``reference`` that a forget accuracy may reach:
  ``max(NOOP_MIN_POINTS / 100, NOOP_STDERRS * sqrt(p (1 - p) / n_forget))``, ``p = reference``."""
  p = min(max(reference, 0.0), 1.0)
  se = math.sqrt(p * (1.0 - p) / max(1, n_forget))
  return max(NOOP_MIN_POINTS / 100.0, NOOP_STDERRS * se)


def _finite(acc: Mapping[str, float]) -> bool:
  return all(v is not None and math.isfinite(v) for v in acc.values())


def model_warnings(name: str, acc: Mapping[str, float], original: Mapping[str, float], *, heldout_acc: float,
                   whole_class: bool, n_forget: int, finite: bool = True, trains: bool = True) -> list[str]:
  """The warnings about unlearned model ``name`` (empty when healthy).

  Args:
    name: the model's name.
    acc: its accuracies ``{"retain", "forget", "test"}`` (fractions).
    original: the original model's accuracies (same keys).
    heldout_acc: the original's accuracy on held-out examples of the forget set's distribution.
    whole_class: the forget set is every example of one or more classes (reference 0).
    n_forget: size of the forget set (the standard error of its accuracy).
    finite: whether the model's weights are finite.
    trains: whether the method trains (has an optimizer): the hints name epochs and the learning rate;
      else (Fisher forgetting, SSD, influence) its strength hyperparameters.

  Returns:
    One line per problem found; a non-finite model gets only that warning.
  """
  if not finite or not _finite(acc):
    return [nonfinite_warning(name)]
  out = []
  r, r0 = acc["retain"], original.get("retain")
  if r0 is not None and math.isfinite(r0) and 100 * (r0 - r) > COLLAPSE_POINTS:
    out.append(f"{name}: retain accuracy collapsed to {100 * r:.1f}% (original {100 * r0:.1f}%, more than "
               f"{COLLAPSE_POINTS:g} points below); " + ("try fewer epochs or a smaller lr" if trains else
                                                         "try a weaker setting of its hyperparameters (jaxunlearn tune)"))
  ref = 0.0 if whole_class else heldout_acc
  if ref is not None and math.isfinite(ref):
    tol = forget_tolerance(ref, n_forget)
    f = acc["forget"]
    if f - ref > tol:
      what = "0% for a whole forgotten class" if whole_class else f"the original's {100 * ref:.1f}% on held-out data"
      out.append(f"{name}: did not forget: forget accuracy {100 * f:.1f}% is {100 * (f - ref):.1f} points above "
                 f"{what} (tolerance {100 * tol:.1f}); " + ("try more epochs or a larger lr" if trains else
                                                            "try a stronger setting of its hyperparameters (jaxunlearn tune)"))
  return out
