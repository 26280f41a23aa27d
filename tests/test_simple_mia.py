"""Tests of the simple loss-based MIA (jaxunlearn.mia.simple_mia)."""

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
  forget = rng.normal(1.0, 1.0, size=300)
  test = rng.normal(1.5, 1.0, size=200)
  a = mia.simple_mia(forget, test, seed=3)
  assert a == mia.simple_mia(forget, test, seed=3)
  assert 0.0 <= a <= 1.0
  # Huge or infinite losses are clipped to [-100, 100] instead of breaking the regression.
  wild = np.concatenate([forget, [np.inf, 1e30]])
  assert 0.0 <= mia.simple_mia(wild, test, n_splits=3) <= 1.0


def test_bad_input():
  with pytest.raises(ValueError, match="NaN"):
    mia.simple_mia(np.array([0.1, np.nan] * 5), np.ones(10))
  with pytest.raises(ValueError, match="at least 5"):
    mia.simple_mia(np.ones(3), np.ones(10))
  with pytest.raises(ValueError, match=r"shape \[N\]"):
    mia.simple_mia(np.ones((5, 2)), np.ones(10))
  with pytest.raises(ValueError, match="n_splits"):
    mia.simple_mia(np.ones(10), np.ones(10), n_splits=0)
