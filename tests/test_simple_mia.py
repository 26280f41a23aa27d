"""Tests of the simple loss-based MIA (jaxunlearn.mia.simple_mia)."""

import math

import numpy as np
import pytest

from jaxunlearn import mia


def test_identical_distributions_give_chance():
  rng = np.random.default_rng(0)
  forget = rng.exponential(1.0, size=500)
  test = rng.exponential(1.0, size=800)  # unbalanced: the larger side is subsampled
  assert abs(mia.simple_mia(forget, test) - 0.5) < 0.1


def test_separated_distributions_are_detected():
  rng = np.random.default_rng(0)
  forget = rng.exponential(0.05, size=400)  # trained-on: low loss
  test = rng.exponential(0.05, size=300) + 2.0
  assert mia.simple_mia(forget, test) > 0.9


def test_seeded_and_clipped():
  rng = np.random.default_rng(1)
  forget = rng.normal(1.0, 1.0, size=1500)
  test = rng.normal(1.5, 1.0, size=1000)
  a = mia.simple_mia(forget, test, seed=3)
  assert a == mia.simple_mia(forget, test, seed=3)
  # Balanced classes from two unit-variance Gaussians 0.5 apart: the Bayes-optimal accuracy is
  # Phi(0.5 / 2) ~ 0.599, and a 1-D logistic regression is a threshold, so it gets close to it.
  # With 1000 examples per side the CV accuracy varies by ~0.012 (sd over data seeds), so the
  # band is about 3 sd; chance (0.5) or a flipped attack (~0.4) is far outside it.
  bayes = 0.5 * (1.0 + math.erf(0.25 / math.sqrt(2.0)))
  assert abs(a - bayes) < 0.04, (a, bayes)
  # Huge or infinite losses are clipped to [-100, 100] instead of breaking the regression. With
  # 1000 losses per side there is no subsampling, so replacing two forget losses keeps the same
  # splits: the wild losses act exactly as 100, and barely move the accuracy.
  clean = mia.simple_mia(forget[:1000], test, n_splits=3)
  wild = mia.simple_mia(np.concatenate([forget[:998], [np.inf, 1e30]]), test, n_splits=3)
  at_clip = mia.simple_mia(np.concatenate([forget[:998], [100.0, 100.0]]), test, n_splits=3)
  assert wild == at_clip
  assert abs(wild - clean) < 0.02, (wild, clean)


def test_bad_input():
  with pytest.raises(ValueError, match="NaN"):
    mia.simple_mia(np.array([0.1, np.nan] * 5), np.ones(10))
  with pytest.raises(ValueError, match="at least 5"):
    mia.simple_mia(np.ones(3), np.ones(10))
  with pytest.raises(ValueError, match=r"shape \[N\]"):
    mia.simple_mia(np.ones((5, 2)), np.ones(10))
  with pytest.raises(ValueError, match="n_splits"):
    mia.simple_mia(np.ones(10), np.ones(10), n_splits=0)
