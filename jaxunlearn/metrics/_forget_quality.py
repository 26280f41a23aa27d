"""Forget quality of the NeurIPS-2023 Machine Unlearning challenge.

Follows the challenge's metric write-up ("Machine_Unlearning_Metric.pdf", Kaggle NeurIPS 2023
Machine Unlearning challenge; Triantafillou et al., "Are we making progress in unlearning?
Findings from the first NeurIPS unlearning competition", 2024) and its reference implementation
``metric.py`` in google-deepmind/unlearning_evaluation, re-implemented in vectorised float64 numpy
(sorted samples + ``searchsorted`` instead of one comparison per model and rule).

Per forget example, the N unlearned and N retrained models' logit confidences are two samples.
A family of decision rules tries to tell them apart; every rule's false-positive / false-negative
rates bound an (epsilon, delta) "unlearning" guarantee, and the example's epsilon is the largest
bound. Small epsilons earn points, and the forget quality is the mean of the points.

Threshold grids are computed relative to a data value of the example (the pooled minimum for
single thresholds, the peakier side's minimum for intervals). This changes nothing in exact
arithmetic, resolves the rule/data ties the reference leaves to float rounding as exact
arithmetic would, and makes the result exactly invariant to adding a constant to both sides
whenever that addition is exact in float64.

Against the reference's own outputs (tests/test_forget_quality.py, golden values from
``metric.py``) the per-example epsilons agree to ~1e-6 and the scores exactly, except where we
differ on purpose: the reference's float32 single thresholds (quantised at large offsets) and
its float ``linspace`` interval left ends (an ulp either side of a data value that exact
arithmetic puts them on); and for two equal constant samples, where the reference raises, the
epsilon here is 0 (identical distributions).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxunlearn.metrics._utility import as_float64

__all__ = ("EPSILON_CAP", "ForgetQuality", "challenge_score", "forget_quality")

EPSILON_CAP = 50.0
_THRESHOLDS_PER_UNIT = 100
_BUFFER = 2.0
_BUCKET = 0.5
_MIN_RANGE_RATIO = 0.01
# Interval-rule grid (see _example_epsilon): n right ends and, per right end, n left ends.
_N_GRID = int(np.ceil(2 * _BUFFER * _THRESHOLDS_PER_UNIT))
_H = 2 * _BUFFER / (_N_GRID - 1)
_RIGHT_STEPS = np.arange(_N_GRID) * _H  # r_i - (w - B)
_LEFT = np.arange(-(_N_GRID - 1), _N_GRID) * _H  # [2n - 1]; l_ij = _LEFT[i + j]
_LEFT_INDEX = np.add.outer(np.arange(_N_GRID), np.arange(_N_GRID)).astype(np.intp)  # [n, n]


@dataclasses.dataclass(frozen=True, eq=False)
class ForgetQuality:
  """Result of :func:`forget_quality`.

  Attributes:
    score: forget quality in [0, 1], the mean of ``points``; higher is better.
    epsilons: ``float64 [N_forget]`` per-example epsilon in [0, 50].
    points: ``float64 [N_forget]`` per-example points: ``2 / 2**n`` for an epsilon in bin
      ``n = floor(eps / 0.5) + 1`` below ``max_epsilon``, else 0.
    max_epsilon: ``ceil(ln(N - 1))``, the end of the last bin (N = number of models).
    num_models: N, the number of models per side.
    delta: the delta of the (epsilon, delta) bound.
  """

  score: float
  epsilons: np.ndarray
  points: np.ndarray
  max_epsilon: float
  num_models: int
  delta: float


def _check_confs(x, name: str) -> np.ndarray:
  x = as_float64(x, name)
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [N_models, N_forget], got shape {x.shape}")
  if np.isnan(x).any():
    raise ValueError(f"{name} contains NaN")
  if np.isinf(x).any():
    raise ValueError(f"{name} contains inf")
  return x


def _rule_epsilons(fp: np.ndarray, fn: np.ndarray, log_rate: np.ndarray, log_comp: np.ndarray
                   ) -> float:
  """Max epsilon over rules given integer FP / FN counts (same number N of models per side).

  Args:
    fp: ``int [K]`` false-positive counts of K rules.
    fn: ``int [K]`` false-negative counts.
    log_rate: ``[N + 1]`` ``log(k / N)``.
    log_comp: ``[N + 1]`` ``log(1 - delta - k / N)``, -inf where the argument is <= 0.

  Returns:
    The max epsilon (not clipped): inf if a rule has FP = FN = 0, -inf if every rule is
    discarded.
  """
  if np.any((fp == 0) & (fn == 0)):
    return np.inf
  keep = (fp != 0) & (fn != 0)
  if not keep.any():
    return -np.inf
  # eps(fp, fn) = max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR) is
  # non-increasing in both counts, so its max over the rules is attained at the smallest FN of
  # each FP value: evaluate only those (at most N + 1) pairs. A pair with both terms -inf (the
  # reference's NaN, FPR = FNR = 1) stays -inf, i.e. discarded.
  n1 = log_rate.size
  min_fn = np.full(n1, n1, dtype=np.int32)
  np.minimum.at(min_fn, fp[keep].astype(np.intp), fn[keep].astype(np.int32))
  fps = np.flatnonzero(min_fn < n1)
  fns = min_fn[fps]
  eps = np.maximum(log_comp[fps] - log_rate[fns], log_comp[fns] - log_rate[fps])
  return float(eps.max())


def _example_epsilon(u: np.ndarray, r: np.ndarray, log_rate: np.ndarray, log_comp: np.ndarray
                     ) -> float:
  """Epsilon of one forget example from its unlearned [N] and retrained [N] confidences."""
  # The positive side is the one with the larger median (ties: unlearned).
  if np.median(r) > np.median(u):
    pos, neg = np.sort(r), np.sort(u)
  else:
    pos, neg = np.sort(u), np.sort(r)
  n = pos.size
  pos_diff = pos[-1] - pos[0]
  neg_diff = neg[-1] - neg[0]
  largest = max(pos_diff, neg_diff)
  smallest = min(pos_diff, neg_diff)
  if largest == 0.0:
    # Both sides constant. Equal constants are two identical distributions: no rule can tell
    # them apart, so epsilon is 0 (as for any two identical samples). The reference computes
    # 0 / 0 = NaN here, so its range-ratio test is False and its sweep runs; every rule then has
    # exactly one error rate 0 and is discarded, and it raises instead of returning a value.
    # Different constants are separated perfectly by a single threshold (FPR = FNR = 0), which
    # gives the cap in the reference too.
    return 0.0 if pos[0] == neg[0] else EPSILON_CAP
  if smallest / largest < _MIN_RANGE_RATIO:
    # One side is (nearly) constant and the other is not: the reference returns the cap to be
    # safe.
    return EPSILON_CAP

  # (i) Single thresholds t over [lo, hi] of the pooled values, predicting positive iff
  # value >= t. Relative to lo: t_k = k * (hi - lo) / (n_thr - 1), first and last exact.
  lo = min(pos[0], neg[0])
  span = max(pos[-1], neg[-1]) - lo
  n_thr = max(2, int(np.ceil(span * _THRESHOLDS_PER_UNIT)))
  t = np.linspace(0.0, span, n_thr)
  fn_single = np.searchsorted(pos - lo, t, side="left").astype(np.int32)  # positives below t
  fp_single = n - np.searchsorted(neg - lo, t, side="left").astype(np.int32)  # negatives >= t

  # (ii) Interval rules predicting the peakier side (smaller range, width w) inside [l, r]. In
  # the reference, r runs over linspace(min_p + w - B, max_p + B) (a span of exactly 2B, hence
  # 2B * 100 points, step h = 2B / (n - 1)) and, for each r, l over
  # linspace(r - w - B, r - w + B) with the same count and step, so relative to min_p:
  # r_i = w - B + i h and l_ij = (i + j - (n - 1)) h. Computing them in this form puts the
  # thresholds that coincide with min_p exactly on it (the reference leaves that tie to float
  # rounding), and leaves only 2n - 1 distinct left ends.
  if pos_diff >= neg_diff:
    peaky, other = neg, pos
  else:
    peaky, other = pos, neg
  anchor = peaky[0]
  right = (smallest - _BUFFER) + _RIGHT_STEPS  # [n_grid]

  def _inside(sorted_vals):  # -> int32 [n_grid * n_grid] counts in [l_ij, r_i]
    z = sorted_vals - anchor
    le_r = np.searchsorted(z, right, side="right").astype(np.int32)
    lt_l = np.searchsorted(z, _LEFT, side="left").astype(np.int32)
    return np.maximum(le_r[:, None] - lt_l[_LEFT_INDEX], 0).ravel()

  tp_double = _inside(peaky)
  fn_double = n - tp_double
  fp_double = _inside(other)

  fp_all = np.concatenate([fp_single, fp_double])
  fn_all = np.concatenate([fn_single, fn_double])
  eps = _rule_epsilons(fp_all, fn_all, log_rate, log_comp)
  if eps == -np.inf:
    # Every rule had exactly one zero error rate (not covered by the reference, which asserts):
    # no usable evidence of a difference.
    return 0.0
  return float(np.clip(eps, 0.0, EPSILON_CAP))


def forget_quality(unlearned, retrained, *, delta: float = 1e-5) -> ForgetQuality:
  """Forget quality of the NeurIPS-2023 unlearning challenge.

  For each forget example s, with ``u = unlearned[:, s]`` and ``r = retrained[:, s]``:

  1. The positive side is the one (``u`` or ``r``) with the larger median.
  2. If both samples are constant, ``eps_s = 0`` when the two constants are equal (identical
     distributions) and 50 (the cap) when they differ (perfectly separable). Otherwise, if
     ``min(range) / max(range) < 0.01`` for the two samples' ranges (max - min), ``eps_s = 50``.
     (The reference caps the second case, and the first case's different constants through its
     rule sweep; it raises on equal constants, where it computes 0 / 0.)
  3. Decision rules: (i) single thresholds ``t``, 100 per unit over [min, max] of the pooled
     values (at least 2), predicting positive iff ``value >= t``; (ii) interval rules that
     predict the peakier side (smaller range, width ``w``) inside ``[l, r]``: right ends from
     ``min_peaky + w - 2`` to ``max_peaky + 2`` at 100 per unit and, for each, 400 left ends in
     ``[r - w - 2, r - w + 2]``.
  4. Per rule, with FPR / FNR the fractions of the N models of each side:
     ``eps = max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)`` clipped at
     0; FPR = FNR = 0 gives infinity; a rule with exactly one of them 0 is discarded.
     ``eps_s = max over rules``, clipped to [0, 50] (0 if every rule is discarded).
  5. Bins of width 0.5 cover ``[0, ceil(ln(N - 1)))``; an epsilon in bin ``n = 1, 2, ...``
     earns ``2 / 2**n`` points (1, 1/2, 1/4, ...), beyond the last bin 0.
  6. ``score = mean points over examples``.

  Reference: the challenge metric write-up (Machine_Unlearning_Metric.pdf) and
  google-deepmind/unlearning_evaluation ``metric.py``.

  Args:
    unlearned: ``[N_models, N_forget]`` logit confidences (see ``logit_confidence``) of the
      forget examples under N independently unlearned models.
    retrained: ``[N_models, N_forget]`` the same under N models retrained without the forget
      set. Same shape as ``unlearned``; N >= 2.
    delta: the delta of the (epsilon, delta) bound, in (0, 1).

  Returns:
    A ``ForgetQuality`` with ``.score``, ``.epsilons`` [N_forget] and ``.points`` [N_forget].
  """
  u = _check_confs(unlearned, "unlearned")
  r = _check_confs(retrained, "retrained")
  if u.shape != r.shape:
    raise ValueError(f"unlearned has shape {u.shape} but retrained has shape {r.shape}; "
                     "both must be [N_models, N_forget]")
  n_models, n_examples = u.shape
  if n_models < 2:
    raise ValueError(f"forget_quality needs at least 2 models per side, got {n_models}")
  if n_examples < 1:
    raise ValueError("forget_quality needs at least 1 forget example, got 0")
  delta = float(delta)
  if not 0.0 < delta < 1.0:
    raise ValueError(f"delta must be in (0, 1), got {delta!r}")

  rates = np.arange(n_models + 1, dtype=np.float64) / n_models
  with np.errstate(divide="ignore", invalid="ignore"):
    log_rate = np.log(rates)  # -inf at 0
    comp = 1.0 - delta - rates
    log_comp = np.where(comp > 0, np.log(np.where(comp > 0, comp, 1.0)), -np.inf)
    epsilons = np.array(
        [_example_epsilon(u[:, s], r[:, s], log_rate, log_comp) for s in range(n_examples)],
        dtype=np.float64)

  max_epsilon = float(np.ceil(np.log(n_models - 1))) if n_models > 2 else 0.0
  points = np.where(epsilons < max_epsilon, 0.5 ** np.floor(epsilons / _BUCKET), 0.0)
  epsilons.setflags(write=False)
  points.setflags(write=False)
  return ForgetQuality(score=float(points.mean()), epsilons=epsilons, points=points,
                       max_epsilon=max_epsilon, num_models=n_models, delta=delta)


def _mean_fraction(x, name: str) -> float:
  v = as_float64(x, name)
  if v.size == 0:
    raise ValueError(f"{name} is empty")
  if np.isnan(v).any():
    raise ValueError(f"{name} contains NaN")
  v = float(v.mean())
  if not 0.0 <= v <= 1.0:
    raise ValueError(f"{name} = {v!r} is not a fraction in [0, 1] "
                     "(pass accuracies as fractions, not percentages)")
  return v


def challenge_score(fq, retain_acc_u, retain_acc_r, test_acc_u, test_acc_r) -> float:
  """Final NeurIPS-2023 challenge score ``F * (RA_u / RA_r) * (TA_u / TA_r)``.

  As in the challenge write-up (Machine_Unlearning_Metric.pdf): the forget quality F is scaled
  by the unlearned models' retain and test accuracy relative to the retrained models', each
  accuracy averaged over models.

  Args:
    fq: the forget quality, a float in [0, 1] or a ``ForgetQuality``.
    retain_acc_u: retain accuracy of the unlearned models, a fraction or ``[N_models]`` array.
    retain_acc_r: retain accuracy of the retrained models (> 0).
    test_acc_u: test accuracy of the unlearned models.
    test_acc_r: test accuracy of the retrained models (> 0).

  Returns:
    The score as a Python float.
  """
  if isinstance(fq, ForgetQuality):
    fq = fq.score
  fq = float(fq)
  if not 0.0 <= fq <= 1.0:
    raise ValueError(f"fq must be in [0, 1], got {fq!r}")
  ra_u = _mean_fraction(retain_acc_u, "retain_acc_u")
  ra_r = _mean_fraction(retain_acc_r, "retain_acc_r")
  ta_u = _mean_fraction(test_acc_u, "test_acc_u")
  ta_r = _mean_fraction(test_acc_r, "test_acc_r")
  if ra_r == 0.0:
    raise ValueError("retain_acc_r is 0: the ratio RA_u / RA_r is undefined")
  if ta_r == 0.0:
    raise ValueError("test_acc_r is 0: the ratio TA_u / TA_r is undefined")
  return fq * (ra_u / ra_r) * (ta_u / ta_r)
