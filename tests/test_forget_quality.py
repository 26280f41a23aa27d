"""Tests of the NeurIPS-2023 challenge forget quality (jaxunlearn.metrics.forget_quality)."""

import math

import numpy as np
import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxunlearn import metrics

DELTA = 1e-5
FAST = settings(max_examples=25, deadline=None)


def _brute_epsilon(u, r, delta=DELTA):
  """Direct port of the reference rule sweep: every model against every rule.

  Thresholds use the exact-arithmetic form (relative to a data value) documented in the module.
  """
  pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
  pd_, nd_ = np.ptp(pos), np.ptp(neg)
  big, small = max(pd_, nd_), min(pd_, nd_)
  if big == 0 or small / big < 0.01:
    return 50.0
  lo = min(pos.min(), neg.min())
  span = max(pos.max(), neg.max()) - lo
  t = np.linspace(0.0, span, max(2, math.ceil(span * 100)))
  fnr_s = ((pos - lo)[:, None] < t).mean(0)
  fpr_s = ((neg - lo)[:, None] >= t).mean(0)
  peaky, other = (neg, pos) if pd_ >= nd_ else (pos, neg)
  h = 4.0 / 399
  rights, lefts = [], []
  for i in range(400):
    for j in range(400):
      rights.append(small - 2.0 + i * h)
      lefts.append((i + j - 399) * h)
  rights, lefts = np.array(rights), np.array(lefts)

  def inside(z):
    return (lefts <= z[:, None]) & (z[:, None] <= rights)

  fnr = np.concatenate([(~inside(peaky - peaky.min())).mean(0), fnr_s])
  fpr = np.concatenate([inside(other - peaky.min()).mean(0), fpr_s])
  if np.any((fpr == 0) & (fnr == 0)):
    return 50.0
  ok = (fpr > 0) & (fnr > 0)
  with np.errstate(all="ignore"):
    e = np.nanmax([np.log(1 - delta - fpr[ok]) - np.log(fnr[ok]),
                   np.log(1 - delta - fnr[ok]) - np.log(fpr[ok])], axis=0)
  e = e[~np.isnan(e)]
  return float(np.clip(e.max(), 0, 50)) if e.size else 0.0


def test_hand_case_overlap_of_one_model():
  # Medians 1.5 < 4, so retrained is positive. The best rules misclassify exactly one model on
  # each side (FPR = FNR = 1/4); separating perfectly is impossible (2.5 < 3) and every rule
  # with one error rate 0 is discarded. eps = log(1 - delta - 1/4) - log(1/4) ~ 1.0986:
  # with N = 4, bins end at ceil(ln 3) = 2, and eps lies in bin 3 ([1, 1.5)) -> 1/4 point.
  u = np.array([[0.0], [1.0], [2.0], [3.0]])
  r = np.array([[2.5], [3.5], [4.5], [5.5]])
  fq = metrics.forget_quality(u, r)
  eps = math.log(0.75 - DELTA) - math.log(0.25)
  assert fq.epsilons[0] == pytest.approx(eps, abs=1e-12)
  assert fq.max_epsilon == 2.0 and fq.num_models == 4
  assert fq.points[0] == 0.25 and fq.score == 0.25
  fq2 = metrics.forget_quality(u, r, delta=0.1)  # log(0.65 / 0.25) = 0.956 -> bin 2 -> 1/2
  assert fq2.epsilons[0] == pytest.approx(math.log(2.6), abs=1e-12)
  assert fq2.score == 0.5


def test_matches_brute_force_port():
  rng = np.random.default_rng(7)
  n = 12
  cases = [(0.0, 1.0, 2), (0.8, 1.0, 2), (0.0, 0.3, 2), (1.5, 2.0, 2), (0.0, 0.015, 2),
           (1.0, 1.0, 8)]
  u = np.concatenate([rng.normal(size=(n, k)) for _, _, k in cases], axis=1)
  r = np.concatenate([rng.normal(size=(n, k)) * sc + sh for sh, sc, k in cases], axis=1)
  # An example whose mean and median disagree on which side is larger (the median decides).
  u = np.concatenate([u, np.append(np.arange(n - 1.0), 100.0)[:, None]], axis=1)
  r = np.concatenate([r, np.arange(4.0, 4.0 + n)[:, None]], axis=1)
  fq = metrics.forget_quality(u, r)
  expected = [_brute_epsilon(u[:, s], r[:, s]) for s in range(u.shape[1])]
  np.testing.assert_array_equal(fq.epsilons, expected)
  assert np.sum((fq.epsilons > 0) & (fq.epsilons < 50)) >= 15


def test_matches_brute_force_port_where_single_thresholds_and_orientation_matter():
  # With N = 64 models, these examples are ones whose epsilon comes from a single-threshold
  # rule (not an interval), including two where the median- and mean-larger sides differ.
  rng = np.random.default_rng(2)
  u = rng.normal(size=(64, 30))[:, [4, 23]]
  r = (rng.normal(size=(64, 30)) + 0.1)[:, [4, 23]]
  rng = np.random.default_rng(13)
  u = np.hstack([u, rng.normal(size=(64, 6))[:, [1, 4, 5]]])
  r = np.hstack([r, (rng.normal(size=(64, 6)) + 1.0)[:, [1, 4, 5]]])
  fq = metrics.forget_quality(u, r)
  expected = [_brute_epsilon(u[:, s], r[:, s]) for s in range(u.shape[1])]
  np.testing.assert_array_equal(fq.epsilons, expected)


def test_disjoint_sides_score_zero():
  rng = np.random.default_rng(0)
  u = rng.normal(size=(64, 20))
  r = rng.normal(size=(64, 20)) + 20.0
  fq = metrics.forget_quality(u, r)
  assert fq.score == 0.0
  np.testing.assert_array_equal(fq.epsilons, 50.0)


def test_degenerate_inputs_capped():
  rng = np.random.default_rng(0)
  const = np.full((16, 3), 2.0)
  fq = metrics.forget_quality(const, const)
  np.testing.assert_array_equal(fq.epsilons, 50.0)
  assert fq.score == 0.0
  # One side constant, or 100x narrower than the other: capped at 50.
  assert metrics.forget_quality(const, rng.normal(size=(16, 3))).epsilons.tolist() == [50.0] * 3
  # A sample 250x narrower than the other, overlapping it (no rule separates them): the cap.
  wide = np.append(np.linspace(-1.0, 1.0, 15), 0.3)[:, None]
  narrow = np.linspace(-0.004, 0.004, 16)[:, None]
  assert metrics.forget_quality(narrow, wide).epsilons[0] == 50.0
  assert metrics.forget_quality(narrow * 100, wide).epsilons[0] < 50.0


def test_two_models_earn_no_points():
  # N = 2: bins end at ceil(ln 1) = 0, so even epsilon 0 earns nothing.
  fq = metrics.forget_quality(np.array([[0.0], [0.5]]), np.array([[0.25], [0.75]]))
  assert fq.epsilons[0] == 0.0 and fq.max_epsilon == 0.0 and fq.score == 0.0


def test_score_decreases_with_mean_shift():
  rng = np.random.default_rng(0)
  n_models, n_examples = 512, 100
  scores = {}
  for shift in (0.0, 0.5, 1.0, 3.0):
    u = rng.normal(size=(n_models, n_examples))
    r = rng.normal(size=(n_models, n_examples)) + shift
    scores[shift] = metrics.forget_quality(u, r).score
  assert scores[0.0] > scores[0.5] > scores[1.0] > scores[3.0]
  assert scores[0.0] > 2 * scores[1.0]
  assert scores[3.0] < 0.02
  assert scores[0.0] > 0.1


def test_points_follow_bins():
  rng = np.random.default_rng(1)
  u = rng.normal(size=(512, 30))
  r = rng.normal(size=(512, 30)) + np.linspace(0, 2, 30)
  fq = metrics.forget_quality(u, r)
  assert fq.max_epsilon == 7.0  # ceil(ln 511)
  expected = np.where(fq.epsilons < 7.0, 2.0 / 2.0 ** (np.floor(fq.epsilons / 0.5) + 1), 0.0)
  np.testing.assert_array_equal(fq.points, expected)
  assert fq.score == pytest.approx(expected.mean())
  assert len(set(fq.points.tolist())) > 2


def test_challenge_score():
  assert metrics.challenge_score(0.5, 0.9, 1.0, 0.8, 0.8) == pytest.approx(0.45)
  fq = metrics.forget_quality(np.array([[0.0], [1.0], [2.0], [3.0]]),
                              np.array([[2.5], [3.5], [4.5], [5.5]]))
  assert metrics.challenge_score(fq, [0.8, 1.0], 0.9, 0.5, [0.5, 0.5]) == pytest.approx(0.25)
  with pytest.raises(ValueError, match="fraction"):
    metrics.challenge_score(0.5, 90.0, 95.0, 0.8, 0.8)
  with pytest.raises(ValueError, match="retain_acc_r is 0"):
    metrics.challenge_score(0.5, 0.5, 0.0, 0.8, 0.8)


def test_bad_input():
  x = np.zeros((8, 3))
  with pytest.raises(ValueError, match="at least 2 models"):
    metrics.forget_quality(np.zeros((1, 3)), np.zeros((1, 3)))
  with pytest.raises(ValueError, match=r"shape \(8, 3\) but retrained has shape \(8, 4\)"):
    metrics.forget_quality(x, np.zeros((8, 4)))
  with pytest.raises(ValueError, match="NaN"):
    metrics.forget_quality(x, np.where(np.eye(8, 3) > 0, np.nan, 0.0))
  with pytest.raises(ValueError, match=r"\[N_models, N_forget\]"):
    metrics.forget_quality(np.zeros(8), np.zeros(8))
  with pytest.raises(ValueError, match="delta"):
    metrics.forget_quality(x, x, delta=0.0)


# ----------------------------------------------------------------------------- properties

# Two sides of one shape with values on a 1/8 grid, so that adding an integer is exact.
_shape = st.tuples(st.integers(8, 16), st.integers(1, 3))
_grid = _shape.flatmap(lambda shape: st.tuples(
    hnp.arrays(np.int64, shape, elements=st.integers(-40, 40)),
    hnp.arrays(np.int64, shape, elements=st.integers(-40, 40)),
))


@FAST
@given(_grid, st.randoms(use_true_random=False), st.integers(-1000, 1000))
def test_invariances(data, rnd, const):
  u, r = data[0] / 8.0, data[1] / 8.0
  fq = metrics.forget_quality(u, r)
  n_models, n_examples = u.shape
  # Permuting each side's models independently.
  pu = list(range(n_models))
  pr = list(range(n_models))
  rnd.shuffle(pu)
  rnd.shuffle(pr)
  np.testing.assert_array_equal(metrics.forget_quality(u[pu], r[pr]).epsilons, fq.epsilons)
  # Permuting examples permutes the epsilons.
  pe = list(range(n_examples))
  rnd.shuffle(pe)
  np.testing.assert_array_equal(metrics.forget_quality(u[:, pe], r[:, pe]).epsilons,
                                fq.epsilons[pe])
  # Adding a constant to both sides (exact on this grid).
  np.testing.assert_array_equal(metrics.forget_quality(u + const, r + const).epsilons,
                                fq.epsilons)
  # Swapping the roles of unlearned and retrained (the positive side is chosen by median).
  if not np.any(np.median(u, 0) == np.median(r, 0)):
    np.testing.assert_array_equal(metrics.forget_quality(r, u).epsilons, fq.epsilons)


def _spread_of_epsilons():
  """[12, 11, 2]: shifted normals plus one identical pair, with points 0, 1/16, ..., 1/2, 1."""
  rng = np.random.default_rng(4)
  shifts = np.array([0.0, 0.0, 0.0, 0.2, 0.4, 0.7, 1.0, 1.5, 2.0, 4.0])
  x = np.stack([rng.normal(size=(12, 10)), rng.normal(size=(12, 10)) + shifts], -1).round(2)
  same = np.repeat(rng.normal(size=(12, 1, 1)).round(2), 2, axis=-1)
  return np.concatenate([x, same], axis=1)


@FAST
@given(hnp.arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 3), st.just(2)),
                  elements=st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, 1.0]))))
@example(_spread_of_epsilons())
@example(np.array([[[0.0, 0.0]], [[1.0, 1.0]]]))  # N = 2: eps = 0 is beyond ceil(ln 1) = 0
def test_never_nan(x):
  fq = metrics.forget_quality(x[..., 0], x[..., 1])
  assert np.all(np.isfinite(fq.epsilons)) and math.isfinite(fq.score)
  # The score is the mean of the challenge's points, recomputed here from the epsilons: bins of
  # width 0.5 cover [0, ceil(ln(N - 1))); bin n = 1, 2, ... earns 2 / 2**n, beyond them 0.
  n_models = x.shape[0]
  last = math.ceil(math.log(n_models - 1))
  points = []
  for eps in fq.epsilons.tolist():
    n = int(eps // 0.5) + 1
    points.append(2.0 / 2**n if eps < last else 0.0)
  assert fq.max_epsilon == last
  np.testing.assert_array_equal(fq.points, points)
  assert fq.score == pytest.approx(sum(points) / len(points), rel=1e-12, abs=0)
