"""KLOM (jaxunlearn.metrics.klom / margins / klom_summary) against a direct per-example computation and analytic cases."""

import math

import numpy as np
import pytest
from scipy import special
from scipy import stats

from jaxunlearn import metrics

LOG_MAX = math.log(1 + 1 / metrics.KLOM_EPS)  # one unlearned bin the oracles never reach


def _direct_klom(u, o, bins=20, eps=1e-5, clip=100.0):
  """One example at a time: explicit edges, a Python scan for each sample's bin, scipy's entropy
  (which renormalises the floored oracle histogram)."""
  out = []
  for e in range(u.shape[1]):
    a = [min(max(float(v), -clip), clip) for v in u[:, e]]
    b = [min(max(float(v), -clip), clip) for v in o[:, e]]
    lo, hi = min(a + b), max(a + b)
    if hi <= lo:
      hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)

    def hist(vals):
      counts = [0] * bins
      for v in vals:
        for i in range(bins):
          if edges[i] <= v < edges[i + 1] or (i == bins - 1 and v == edges[-1]):
            counts[i] += 1
            break
      return np.array(counts, float) / len(vals)

    p, q = hist(a), hist(b)
    q = np.where(p > 0, np.maximum(q, eps), q)
    out.append(stats.entropy(p, q))
  return np.array(out)


def test_klom_matches_a_direct_per_example_computation():
  rng = np.random.default_rng(0)
  n, m, e = 12, 9, 40
  shift = rng.normal(0, 1.5, e)  # some examples alike, some apart
  u = rng.normal(0, 1, (n, e)) + shift
  o = rng.normal(0, 1, (m, e))
  o[:, -5:] = u[:m, -5:]  # near-identical samples
  u[:, :3] *= 400  # beyond the clip
  got = metrics.klom(u, o)
  want = _direct_klom(u, o)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  assert got.max() > 10 and got.min() < 2  # near-disjoint and near-identical examples both covered
  # other settings too
  np.testing.assert_allclose(metrics.klom(u, o, bins=7, eps=1e-3, clip=50.0),
                             _direct_klom(u, o, bins=7, eps=1e-3, clip=50.0), rtol=1e-12, atol=1e-12)


def test_klom_identical_samples_are_zero():
  rng = np.random.default_rng(1)
  u = rng.normal(0, 3, (10, 25))
  np.testing.assert_allclose(metrics.klom(u, u.copy()), 0.0, atol=1e-12)
  # same histogram from a permuted sample; a constant example (zero-width range) too
  u[:, 0] = 4.0
  np.testing.assert_allclose(metrics.klom(u, u[::-1]), 0.0, atol=1e-12)


def test_klom_disjoint_is_the_eps_bounded_maximum():
  # every unlearned margin 5, every oracle margin -5: one bin each, the oracle floored to eps there
  u, o = np.full((8, 3), 5.0), np.full((8, 3), -5.0)
  np.testing.assert_allclose(metrics.klom(u, o), LOG_MAX, rtol=1e-12)
  # unlearned spread evenly over k = 2 bins the oracles never reach: log((1 + k eps) / (k eps))
  u2 = np.array([[4.0], [4.0], [5.0], [5.0]])
  o2 = np.array([[-5.0], [-5.0], [-5.0], [-5.0]])
  eps = metrics.KLOM_EPS
  assert metrics.klom(u2, o2)[0] == pytest.approx(math.log((1 + 2 * eps) / (2 * eps)), rel=1e-12)
  # the bound holds for any samples
  rng = np.random.default_rng(2)
  v = metrics.klom(rng.normal(3, 1, (5, 200)), rng.normal(-3, 0.1, (7, 200)))
  assert np.all(v >= 0) and np.all(v <= LOG_MAX + 1e-12)


def test_klom_direction_is_unlearned_given_oracle():
  # unlearned on 2 bins, oracle on 1 of them: KL(u || o) = 0.5 log(0.5 Z / 1) + 0.5 log(0.5 Z / eps)
  u = np.array([[0.0], [1.0]])
  o = np.array([[0.0], [0.0]])
  eps = metrics.KLOM_EPS
  z = 1 + eps
  want = 0.5 * math.log(0.5 * z) + 0.5 * math.log(0.5 * z / eps)
  assert metrics.klom(u, o)[0] == pytest.approx(want, rel=1e-12)
  # the reverse: the oracle bin the unlearned models miss costs nothing
  assert metrics.klom(o, u)[0] == pytest.approx(math.log(2.0), rel=1e-12)


def test_klom_counts_the_pooled_maximum():
  # the maximum sits in the last bin (the authors' np.digitize leaves it out): here the unlearned
  # sample {0, 1} and oracle {0, 0} differ only by it
  assert metrics.klom(np.array([[0.0], [1.0]]), np.array([[0.0], [0.0]]))[0] > 1.0


def test_klom_bad_input():
  with pytest.raises(ValueError, match="shape"):
    metrics.klom(np.zeros(4), np.zeros((4, 1)))
  with pytest.raises(ValueError, match="different examples"):
    metrics.klom(np.zeros((3, 4)), np.zeros((3, 5)))
  with pytest.raises(ValueError, match="NaN"):
    metrics.klom(np.full((3, 2), np.nan), np.zeros((3, 2)))
  with pytest.raises(ValueError, match="bins"):
    metrics.klom(np.zeros((3, 2)), np.zeros((3, 2)), bins=0)
  with pytest.raises(ValueError, match="eps"):
    metrics.klom(np.zeros((3, 2)), np.zeros((3, 2)), eps=0.0)


def test_margins_are_correct_logit_minus_logsumexp_of_the_others():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 5, (4, 6, 5))
  y = rng.integers(0, 5, 6)
  got = metrics.margins(logits, y)
  want = np.empty((4, 6))
  for m in range(4):
    for i in range(6):
      others = [logits[m, i, j] for j in range(5) if j != y[i]]
      want[m, i] = logits[m, i, y[i]] - special.logsumexp(others)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  # = log p_y - log(1 - p_y); and exact where logit_confidence saturates
  p = special.softmax(logits, -1)[np.arange(4)[:, None], np.arange(6), y]
  np.testing.assert_allclose(got, np.log(p) - np.log1p(-p), rtol=1e-8, atol=1e-8)
  assert metrics.margins(np.array([[500.0, 0.0, 0.0]]), [0])[0] == pytest.approx(500 - math.log(2), rel=1e-12)
  assert metrics.margins(np.array([[0.0, 500.0]]), [0])[0] == -500.0


def test_klom_summary_percentiles():
  s = metrics.klom_summary(np.arange(101.0))
  assert s == {"p5": 5.0, "p25": 25.0, "p50": 50.0, "p75": 75.0, "p95": 95.0, "p99": 99.0, "mean": 50.0}
  assert all(math.isnan(v) for v in metrics.klom_summary(np.zeros(0)).values())
