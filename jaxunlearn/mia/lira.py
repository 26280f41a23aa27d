"""LiRA (Carlini et al., 2022) and U-LiRA (Hayes et al., 2024) per-example membership attacks.

Plain numpy / scipy in float64, outside jit. Follows the reference LiRA code
(tensorflow/privacy ``research/mi_lira_2021/plot.py``; ``convention="reference"`` reproduces it
where our default differs, see :func:`lira`): per example, the shadow models'
logit confidences (see ``jaxunlearn.metrics.logit_confidence``) on the example are split by
whether the model trained on it ("in") or not ("out"); each side is summarised by its *median*
and (population) standard deviation per augmentation, and the target model's confidence is
scored by a Gaussian likelihood ratio (online) or a one-sided test against "out" (offline),
averaged over augmentations. Convention: a higher score means "more likely a member".
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from jaxunlearn.metrics import auc
from jaxunlearn.metrics import as_float64
from jaxunlearn.metrics import best_threshold_accuracy
from jaxunlearn.metrics import roc_curve
from jaxunlearn.metrics import tpr_at_fpr

__all__ = ("evaluate_attack", "lira", "ulira")

_SIGMA_EPS = 1e-30
_OFFLINE_MODES = ("cdf", "neg_logpdf")
_CONVENTIONS = ("ours", "reference")
_STATISTICS = ("median", "mean")


def _as_float(x, name: str) -> np.ndarray:
  x = as_float64(x, name)
  if np.isnan(x).any():
    raise ValueError(f"{name} contains NaN")
  if np.isinf(x).any():
    raise ValueError(f"{name} contains inf")
  return x


def _as_mask(x, name: str, shape: tuple[int, ...]) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.bool_:
    if x.dtype == object or not (np.issubdtype(x.dtype, np.integer)
                                 or np.issubdtype(x.dtype, np.floating)):
      raise TypeError(f"{name} must be a bool array, got dtype {x.dtype}")
    bad = ~np.isin(x, (0, 1))
    if bad.any():
      raise ValueError(f"{name} must be bool (or 0/1), got value {x[bad][0]!r}")
    x = x.astype(bool)
  if x.shape != shape:
    raise ValueError(f"{name} has shape {x.shape} but shadow_scores needs [M, N] = {shape}")
  return x


def _masked_center_std(scores: np.ndarray, sel: np.ndarray, statistic: str = "median"
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Median (or mean) and population std over the models axis of ``scores`` [M, N, A] where ``sel`` [M, N].

  Every column must have at least one selected model. Returns two [N, A] arrays.
  """
  sel3 = np.broadcast_to(sel[:, :, None], scores.shape)
  n = sel.sum(axis=0)[:, None]  # [N, 1]
  s = np.sort(np.where(sel3, scores, np.inf), axis=0)  # selected values first, ascending
  lo = np.take_along_axis(s, np.broadcast_to(((n - 1) // 2)[None], (1,) + s.shape[1:]), 0)[0]
  hi = np.take_along_axis(s, np.broadcast_to((n // 2)[None], (1,) + s.shape[1:]), 0)[0]
  median = (lo + hi) / 2.0
  mean = np.sum(np.where(sel3, scores, 0.0), axis=0) / n
  var = np.sum(np.where(sel3, (scores - mean[None]) ** 2, 0.0), axis=0) / n
  return (median if statistic == "median" else mean), np.sqrt(var)


def _first_k(sel: np.ndarray, k: int) -> np.ndarray:
  """``sel`` [M, N] keeping, per column, only its first ``k`` True entries in model order."""
  return sel & (np.cumsum(sel, axis=0) <= k)


def _lira(target_scores, shadow_scores, member, valid, *, member_name, online, fixed_variance,
          offline_mode, convention, statistic) -> np.ndarray:
  if convention not in _CONVENTIONS:
    raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
  if statistic not in _STATISTICS:
    raise ValueError(f"statistic must be one of {_STATISTICS}, got {statistic!r}")
  if offline_mode is None:
    offline_mode = "cdf" if convention == "ours" else "neg_logpdf"
  if offline_mode not in _OFFLINE_MODES:
    raise ValueError(f"offline_mode must be one of {_OFFLINE_MODES}, got {offline_mode!r}")
  target = _as_float(target_scores, "target_scores")
  shadow = _as_float(shadow_scores, "shadow_scores")
  if target.ndim not in (1, 2):
    raise ValueError(f"target_scores must have shape [N] or [N, A], got shape {target.shape}")
  squeeze = target.ndim == 1
  if squeeze:
    target = target[:, None]
  if shadow.ndim == 2 and squeeze:
    shadow = shadow[:, :, None]
  if shadow.ndim != 3 or shadow.shape[1:] != target.shape:
    want = "[M, N]" if squeeze else "[M, N, A]"
    got_t = target.shape[:1] if squeeze else target.shape
    raise ValueError(f"shadow_scores has shape {np.shape(shadow_scores)} but target_scores has "
                     f"shape {got_t}; expected shadow_scores of shape {want}")
  m, n_ex, _ = shadow.shape
  member = _as_mask(member, member_name, (m, n_ex))
  valid = (np.ones((m, n_ex), dtype=bool) if valid is None
           else _as_mask(valid, "shadow_valid", (m, n_ex)))
  sel_in = member & valid
  sel_out = ~member & valid
  n_out = sel_out.sum(axis=0)
  if (n_out == 0).any():
    j = int(np.flatnonzero(n_out == 0)[0])
    raise ValueError(f"example {j} is in every shadow model per {member_name} (no OUT model); "
                     "LiRA needs at least one OUT model per example")
  if online:
    n_in = sel_in.sum(axis=0)
    if (n_in == 0).any():
      j = int(np.flatnonzero(n_in == 0)[0])
      raise ValueError(f"example {j} is in no shadow model per {member_name} (no IN model); "
                       "online LiRA needs at least one IN model per example")
  reference = convention == "reference"
  if reference:  # plot.py: the first min-count OUT (and, online, IN) models of every example
    sel_out = _first_k(sel_out, int(n_out.min()))
    if online:
      sel_in = _first_k(sel_in, int(n_in.min()))
  mu_out, sd_out = _masked_center_std(shadow, sel_out, statistic)
  if fixed_variance:  # plot.py online: the IN pool's sigma on both sides
    pool = sel_in if (reference and online) else sel_out
    sd_out = np.full_like(sd_out, np.std(shadow[pool]))
  sd_out = sd_out + _SIGMA_EPS
  if online:
    mu_in, sd_in = _masked_center_std(shadow, sel_in, statistic)
    if fixed_variance:
      sd_in = np.full_like(sd_in, np.std(shadow[sel_in]))
    sd_in = sd_in + _SIGMA_EPS
    per_aug = (stats.norm.logpdf(target, mu_in, sd_in)
               - stats.norm.logpdf(target, mu_out, sd_out))
  elif offline_mode == "cdf":
    per_aug = stats.norm.cdf(target, mu_out, sd_out)
  else:
    per_aug = -stats.norm.logpdf(target, mu_out, sd_out)
  return np.mean(per_aug, axis=-1)


def lira(target_scores, shadow_scores, shadow_in, *, online: bool = True,
         fixed_variance: bool = False, offline_mode: str | None = None, shadow_valid=None,
         convention: str = "ours", statistic: str = "median") -> np.ndarray:
  """LiRA membership scores of a target model's examples (Carlini et al., 2022).

  Per example n (and augmentation a): ``mu_in``, ``mu_out`` are the MEDIANS (``statistic="mean"``:
  means) of the shadow scores of the models that were / were not trained on n, ``sigma_in``,
  ``sigma_out`` their (population, ddof=0, about the mean) standard deviations plus 1e-30. With
  ``fixed_variance`` each side uses one global sigma: the std of all its scores pooled over models,
  examples and augmentations.

  * online: ``log N(x; mu_in, sigma_in) - log N(x; mu_out, sigma_out)``.
  * offline, ``offline_mode="cdf"`` (default of ``convention="ours"``): the one-sided test of the
    LiRA paper, ``Pr[Z < x]`` for ``Z ~ N(mu_out, sigma_out)``.
  * offline, ``offline_mode="neg_logpdf"`` (default of ``convention="reference"``):
    ``-log N(x; mu_out, sigma_out)``, the negative log-likelihood under the OUT Gaussian that the
    reference code ranks by (two-sided: large when x is far from "out" on either side).

  The per-augmentation scores are averaged over the A augmentations. Higher = more likely a
  member.

  ``convention="reference"`` reproduces ``research/mi_lira_2021/plot.py`` of tensorflow/privacy
  (written from its description, not its code). When every example is in the same number of
  shadow models (e.g. exactly half, as the reference's masks) both conventions give identical
  scores for the same ``offline_mode``, except online with ``fixed_variance``. They differ in
  four points, and ``"ours"`` (the default) is kept where it is the better estimator:

  1. Uneven membership: the reference keeps, per example, only the first ``k_in`` IN and the first
     ``k_out`` OUT models in model order, ``k_in`` / ``k_out`` the minimum over examples of the
     IN / OUT counts (offline: OUT only). Ours uses all of them (more data per example, but not
     comparable to the reference's numbers when counts differ).
  2. Fixed variance, online: the reference uses the std of the pooled IN scores for BOTH sides
     (``sigma_out = sigma_in``); ours pools each side separately (OUT sigma from OUT scores).
     Offline the reference pools the OUT scores, as ours does (assumption: its offline variant
     has no IN side).
  3. Offline default: the reference ranks by ``-log N(x; mu_out, sigma_out)``; ours by the paper's
     one-sided ``"cdf"`` test (a member scores *above* "out"; being far *below* it is not evidence
     of membership). An explicit ``offline_mode`` overrides either default.
  4. The keep mask: see ``jaxunlearn.data.keep_mask(..., convention=...)`` (floor vs ceil of p*M).

  Both conventions use the median for ``mu`` and the population std about the mean for ``sigma``
  (as the reference does); ``statistic="mean"`` changes ``mu`` only. Assumptions of the
  "reference" convention: the selection is made after ``shadow_valid`` (the reference has no
  validity mask), model order is the order of axis 0 of ``shadow_scores``, and the pooled fixed
  sigma is the std about the global mean of the selected scores over models, examples and
  augmentations. Examples with no OUT (online: no IN) model raise instead of yielding NaN.

  Args:
    target_scores: ``[N]`` or ``[N, A]`` logit confidences of the target model (A augmented
      queries per example, e.g. an image and its mirror).
    shadow_scores: ``[M, N]`` (with ``[N]`` targets) or ``[M, N, A]`` logit confidences of M
      shadow models.
    shadow_in: ``bool [M, N]``, True where shadow model m was trained on example n.
    online: use the IN models too (likelihood ratio); else the offline test.
    fixed_variance: one global sigma per side instead of per-example sigmas.
    offline_mode: ``"cdf"`` or ``"neg_logpdf"``, the offline score (ignored when online);
      default None: ``"cdf"`` for ``convention="ours"``, ``"neg_logpdf"`` for ``"reference"``.
    shadow_valid: optional ``bool [M, N]``; False excludes model m from example n's statistics.
    convention: ``"ours"`` (default) or ``"reference"`` (see above).
    statistic: ``"median"`` (default, as the reference) or ``"mean"``, the centre ``mu``.

  Returns:
    ``float64 [N]`` membership scores.

  Raises:
    ValueError: on shape mismatches, NaN/inf scores, an unknown ``offline_mode`` /
      ``convention`` / ``statistic``, an example with no OUT model, or (online) no IN model.
  """
  return _lira(target_scores, shadow_scores, shadow_in, shadow_valid, member_name="shadow_in",
               online=online, fixed_variance=fixed_variance, offline_mode=offline_mode,
               convention=convention, statistic=statistic)


def ulira(target_scores, shadow_scores, shadow_unlearned, *, online: bool = True,
          fixed_variance: bool = False, offline_mode: str | None = None, shadow_valid=None,
          statistic: str = "median", convention: str = "ours") -> np.ndarray:
  """U-LiRA: the per-example LiRA test for unlearning (Hayes et al., 2024).

  Identical to :func:`lira` except for what "in" means: the "in" distribution of example n is
  that of shadow models that were trained on n and then unlearned it
  (``shadow_unlearned[m, n]`` True); "out" is that of shadow models that never saw n (e.g.
  retrained without it). Shadow models that trained on n and kept it belong to neither: exclude
  them with ``shadow_valid``. A high score means the target's unlearned example still looks
  like "trained then unlearned" rather than "never seen", i.e. imperfect unlearning; evaluate
  with :func:`evaluate_attack` against the ground truth of which target examples were
  unlearned.

  ``statistic``: our default centres each Gaussian at the MEDIAN of its shadow scores (as LiRA's
  reference code); DeepUnlearn's ``consolidate_predictions.py`` uses MEANS: pass
  ``statistic="mean"``. The two agree exactly when every example's IN and OUT scores are
  symmetric about their centre (e.g. two models per side). Sigma is the population std about
  the mean either way. DeepUnlearn also scores in-sample (as we read its description: the scored
  model's own output is among the scores the Gaussians are fitted on); this function never
  excludes anything itself, so in-sample scoring is had by passing shadow scores that include
  the target model (``jaxunlearn.mia.lira_attacks`` is leave-one-out instead). Not reproduced
  beyond these two points.

  Args:
    target_scores: ``[N]`` or ``[N, A]`` logit confidences of the target model.
    shadow_scores: ``[M, N]`` or ``[M, N, A]`` logit confidences of M shadow models.
    shadow_unlearned: ``bool [M, N]``, True where model m trained on and then unlearned n.
    online: use the unlearned ("in") models too; else the offline test against "out" only.
    fixed_variance: one global sigma per side instead of per-example sigmas.
    offline_mode: ``"cdf"`` or ``"neg_logpdf"`` (see :func:`lira`).
    shadow_valid: optional ``bool [M, N]``; False excludes model m from example n's statistics.
    statistic: ``"median"`` (default) or ``"mean"`` (DeepUnlearn), the centre of each Gaussian.
    convention: ``"ours"`` or ``"reference"`` (LiRA's reference code, see :func:`lira`).

  Returns:
    ``float64 [N]`` scores; higher = more likely unlearned (rather than never trained on).
  """
  return _lira(target_scores, shadow_scores, shadow_unlearned, shadow_valid,
               member_name="shadow_unlearned", online=online, fixed_variance=fixed_variance,
               offline_mode=offline_mode, convention=convention, statistic=statistic)


def evaluate_attack(scores, is_member, *, strict: bool = False) -> dict[str, float]:
  """Standard membership-inference summary of an attack's scores.

  Args:
    scores: ``[N]`` attack scores, higher = more likely a member.
    is_member: ``bool [N]`` ground truth (both classes present).
    strict: read the TPRs at FPR ``< target`` (the LiRA reference's read-out) instead of our
      default FPR ``<= target`` (see ``jaxunlearn.metrics.tpr_at_fpr``).

  Returns:
    ``{"auc", "tpr@0.1%", "tpr@1%", "best_accuracy"}``: ROC AUC, TPR at FPR <= 0.001 and
    <= 0.01 (``strict``: < 0.001 and < 0.01) and the best balanced accuracy over thresholds, as
    Python floats.
  """
  fpr, tpr, _ = roc_curve(scores, is_member)
  return {
      "auc": auc(fpr, tpr),
      "tpr@0.1%": tpr_at_fpr(scores, is_member, 0.001, strict=strict),
      "tpr@1%": tpr_at_fpr(scores, is_member, 0.01, strict=strict),
      "best_accuracy": best_threshold_accuracy(scores, is_member),
  }
