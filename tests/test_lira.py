"""Tests of LiRA, U-LiRA, the balanced keep mask and evaluate_attack (jaxunlearn.mia)."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from jaxunlearn import data as jdata
from jaxunlearn import mia


def _synthetic(gap, *, n_models=64, n_examples=1000, n_aug=None, seed=0):
  """Gaussian logit confidences: example n has base b_n; training on it adds ``gap``."""
  rng = np.random.default_rng(seed)
  keep = jdata.keep_mask(seed, n_models, n_examples, balance="examples")
  base = rng.normal(0.0, 3.0, size=n_examples)
  extra = () if n_aug is None else (n_aug,)
  noise = rng.normal(size=(n_models, n_examples) + extra)
  shift = (keep * gap).reshape(keep.shape + (1,) * len(extra))
  shadow = base.reshape((1, n_examples) + (1,) * len(extra)) + shift + noise
  target_in = rng.random(n_examples) < 0.5
  tshift = (target_in * gap).reshape((n_examples,) + (1,) * len(extra))
  target = base.reshape((n_examples,) + (1,) * len(extra)) + tshift + rng.normal(
      size=(n_examples,) + extra)
  return target, shadow, keep, target_in


@pytest.mark.parametrize("kwargs", [
    dict(online=True), dict(online=True, fixed_variance=True), dict(online=False),
    dict(online=False, offline_mode="neg_logpdf"), dict(online=False, fixed_variance=True),
])
def test_lira_separates_members_and_is_chance_without_signal(kwargs):
  target, shadow, keep, is_in = _synthetic(4.0)
  scores = mia.lira(target, shadow, keep, **kwargs)
  assert scores.shape == (1000,) and scores.dtype == np.float64
  assert mia.evaluate_attack(scores, is_in)["auc"] > 0.9
  target, shadow, keep, is_in = _synthetic(0.0, seed=1)
  scores = mia.lira(target, shadow, keep, **kwargs)
  assert abs(mia.evaluate_attack(scores, is_in)["auc"] - 0.5) < 0.08


def test_lira_hand_case():
  # One example; IN scores {1, 3}: median 2, std 1. OUT scores {-1, -3}: median -2, std 1.
  shadow = np.array([[1.0], [3.0], [-1.0], [-3.0]])
  keep = np.array([[True], [True], [False], [False]])
  x = np.array([0.5])
  online = mia.lira(x, shadow, keep)
  # log N(0.5; 2, 1) - log N(0.5; -2, 1) = (2.5^2 - 1.5^2) / 2 = 2.
  assert online[0] == pytest.approx(2.0, abs=1e-12)
  assert mia.lira(x, shadow, keep, online=False)[0] == pytest.approx(stats.norm.cdf(2.5))
  assert mia.lira(x, shadow, keep, online=False, offline_mode="neg_logpdf")[0] == pytest.approx(
      2.5**2 / 2 + 0.5 * math.log(2 * math.pi))


def test_lira_uses_median_and_population_std():
  shadow = np.array([[0.0], [1.0], [10.0], [-1.0], [-2.0]])  # IN: {0, 1, 10}; OUT: {-1, -2}
  keep = np.array([[True], [True], [True], [False], [False]])
  x = np.array([2.0])
  sd_in, sd_out = np.std([0.0, 1.0, 10.0]), 0.5
  expected = stats.norm.logpdf(2.0, 1.0, sd_in) - stats.norm.logpdf(2.0, -1.5, sd_out)
  assert mia.lira(x, shadow, keep)[0] == pytest.approx(expected, rel=1e-12)


def test_lira_fixed_variance_pools_all_scores_per_side():
  rng = np.random.default_rng(0)
  shadow = rng.normal(size=(6, 3))
  keep = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 1, 0], [0, 0, 1]], bool)
  x = rng.normal(size=3)
  mu_in = np.array([np.median(shadow[keep[:, n], n]) for n in range(3)])
  mu_out = np.array([np.median(shadow[~keep[:, n], n]) for n in range(3)])
  sd_in, sd_out = np.std(shadow[keep]), np.std(shadow[~keep])
  expected = stats.norm.logpdf(x, mu_in, sd_in) - stats.norm.logpdf(x, mu_out, sd_out)
  np.testing.assert_allclose(mia.lira(x, shadow, keep, fixed_variance=True), expected, rtol=1e-12)


def test_lira_averages_over_augmentations():
  target, shadow, keep, _ = _synthetic(2.0, n_models=16, n_examples=50, n_aug=2)
  for kwargs in (dict(online=True), dict(online=False)):
    both = mia.lira(target, shadow, keep, **kwargs)
    each = [mia.lira(target[:, a], shadow[:, :, a], keep, **kwargs) for a in range(2)]
    np.testing.assert_allclose(both, (each[0] + each[1]) / 2, rtol=1e-12)


def test_lira_bad_input():
  shadow = np.zeros((4, 3)) + np.arange(4)[:, None]
  keep = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
  x = np.zeros(3)
  with pytest.raises(ValueError, match="shadow_in has shape"):
    mia.lira(x, shadow, keep[:, :2])
  with pytest.raises(ValueError, match="target_scores"):
    mia.lira(np.zeros(5), shadow, keep)
  with pytest.raises(ValueError, match="example 2 is in no shadow model"):
    mia.lira(x, shadow, keep)
  assert np.all(np.isfinite(mia.lira(x, shadow, keep, online=False)))  # offline needs no IN
  keep_all = keep.copy()
  keep_all[:, 1] = True
  with pytest.raises(ValueError, match="example 1 is in every shadow model"):
    mia.lira(x, shadow, keep_all, online=False)
  with pytest.raises(ValueError, match="NaN"):
    mia.lira(np.array([0.0, np.nan, 0.0]), shadow, keep, online=False)
  with pytest.raises(ValueError, match="offline_mode"):
    mia.lira(x, shadow, keep, online=False, offline_mode="pdf")


@pytest.mark.parametrize("m,p", [(8, 0.5), (7, 0.5), (10, 0.25), (16, 0.3), (5, 1.0), (10, 0.23)])
def test_keep_mask_is_exactly_balanced(m, p):
  keep = jdata.keep_mask(jax.random.key(3), m, 500, balance="examples", p=p)
  assert keep.dtype == np.bool_ and keep.shape == (m, 500)
  k = sum(i < p * m for i in range(m))  # the reference: keep = order < p * M
  np.testing.assert_array_equal(keep.sum(axis=0), k)
  if 0 < k < m:  # every model gets about p * N examples
    assert np.all(np.abs(keep.sum(axis=1) - 500 * k / m) < 80)


def test_keep_mask_keys():
  a = jdata.keep_mask(0, 8, 100, balance="examples")
  np.testing.assert_array_equal(a, jdata.keep_mask(jax.random.key(0), 8, 100, balance="examples"))
  np.testing.assert_array_equal(a, jdata.keep_mask(0, 8, 100, balance="examples"))
  assert not np.array_equal(a, jdata.keep_mask(1, 8, 100, balance="examples"))
  legacy = jdata.keep_mask(jax.random.PRNGKey(0), 8, 100, balance="examples")
  np.testing.assert_array_equal(legacy.sum(0), 4)
  with pytest.raises(TypeError, match="key"):
    jdata.keep_mask("seed", 8, 100, balance="examples")
  with pytest.raises(ValueError, match="p must be"):
    jdata.keep_mask(0, 8, 100, balance="examples", p=1.5)


def test_ulira_detects_imperfect_unlearning():
  rng = np.random.default_rng(0)
  m, n = 48, 400
  unlearned = jdata.keep_mask(1, m, n, balance="examples")
  base = rng.normal(0, 3, size=n)
  # Unlearned shadow models keep a residual trace of +3 on the example.
  shadow = base + 3.0 * unlearned + rng.normal(size=(m, n))
  # Extra shadow models that trained on the example and kept it (+10): must be excluded.
  kept = base + 10.0 + rng.normal(size=(8, n))
  target_unlearned = rng.random(n) < 0.5
  target = base + 3.0 * target_unlearned + rng.normal(size=n)
  scores = mia.ulira(target, shadow, unlearned)
  assert mia.evaluate_attack(scores, target_unlearned)["auc"] > 0.9
  all_shadow = np.concatenate([shadow, kept])
  all_flags = np.concatenate([unlearned, np.ones((8, n), bool)])
  valid = np.concatenate([np.ones((m, n), bool), np.zeros((8, n), bool)])
  np.testing.assert_allclose(mia.ulira(target, all_shadow, all_flags, shadow_valid=valid), scores,
                             rtol=1e-12)
  with pytest.raises(ValueError, match="shadow_unlearned"):
    mia.ulira(target, shadow, unlearned[:, :10])


def test_evaluate_attack_hand_case():
  scores = np.arange(10, 0, -1.0)
  y = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
  res = mia.evaluate_attack(scores, y)
  assert set(res) == {"auc", "tpr@0.1%", "tpr@1%", "best_accuracy"}
  assert res["tpr@0.1%"] == pytest.approx(0.4) and res["tpr@1%"] == pytest.approx(0.4)
  assert res["best_accuracy"] == pytest.approx(0.8)
  # Members score 10, 9, 7, 6, 4 and non-members 8, 5, 3, 2, 1: 5 + 5 + 4 + 4 + 3 = 21 of the 25
  # member/non-member pairs are ordered correctly, so AUC = 21 / 25 (no ties).
  assert res["auc"] == pytest.approx(0.84, abs=1e-12)


def _reference_plot_py(target, shadow, keep, *, online, fixed_variance):
  """plot.py's LiRA from its description, plainly, per example: target [N, A], shadow [M, N, A]."""
  m, n, a = shadow.shape
  ins = [[shadow[i, j] for i in range(m) if keep[i, j]] for j in range(n)]  # model order
  outs = [[shadow[i, j] for i in range(m) if not keep[i, j]] for j in range(n)]
  k_in = min(len(v) for v in ins)
  k_out = min(len(v) for v in outs)
  ins = np.array([v[:k_in] for v in ins])  # [N, k_in, A]
  outs = np.array([v[:k_out] for v in outs])
  scores = np.zeros(n)
  for j in range(n):
    total = 0.0
    for aug in range(a):
      x = target[j, aug]
      mu_out = np.median(outs[j, :, aug])
      if online:
        mu_in = np.median(ins[j, :, aug])
        if fixed_variance:
          sd_in = sd_out = np.std(ins)  # the IN pool's sigma on both sides
        else:
          sd_in, sd_out = np.std(ins[j, :, aug]), np.std(outs[j, :, aug])
        total += (stats.norm.logpdf(x, mu_in, sd_in + 1e-30)
                  - stats.norm.logpdf(x, mu_out, sd_out + 1e-30))
      else:
        sd_out = np.std(outs) if fixed_variance else np.std(outs[j, :, aug])
        total += -stats.norm.logpdf(x, mu_out, sd_out + 1e-30)
    scores[j] = total / a
  return scores


@pytest.mark.parametrize("online,fixed_variance", [(True, False), (True, True), (False, False),
                                                   (False, True)])
def test_lira_reference_convention_matches_plain_reimplementation(online, fixed_variance):
  rng = np.random.default_rng(5)
  m, n, a = 11, 40, 2
  keep = rng.random((m, n)) < 0.5  # uneven membership: counts differ between examples
  keep[0, :] = True
  keep[1, :] = False
  keep[2, :] = True
  keep[3, :] = False
  shadow = rng.normal(size=(m, n, a)) + 2.0 * keep[:, :, None] + rng.normal(size=(1, n, 1))
  target = rng.normal(size=(n, a)) + rng.normal(size=(n, 1))
  assert len(set(keep.sum(0))) > 2
  expected = _reference_plot_py(target, shadow, keep, online=online,
                                fixed_variance=fixed_variance)
  got = mia.lira(target, shadow, keep, online=online, fixed_variance=fixed_variance,
                 convention="reference")
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
  # ours uses every model: different scores on uneven membership
  ours = mia.lira(target, shadow, keep, online=online, fixed_variance=fixed_variance,
                  offline_mode="neg_logpdf")
  assert np.max(np.abs(ours - expected)) > 1e-3


def test_lira_reference_convention_on_even_membership():
  # every example in exactly half the models: only the fixed-variance online sigma and the
  # offline default differ
  target, shadow, keep, _ = _synthetic(2.0, n_models=8, n_examples=30, n_aug=2)
  np.testing.assert_array_equal(keep.sum(0), 4)
  for kw in (dict(online=True), dict(online=False, offline_mode="neg_logpdf"),
             dict(online=False, offline_mode="cdf"),
             dict(online=False, fixed_variance=True, offline_mode="neg_logpdf")):
    np.testing.assert_allclose(mia.lira(target, shadow, keep, convention="reference", **kw),
                               mia.lira(target, shadow, keep, **kw), rtol=1e-12)
  ref_fixed = mia.lira(target, shadow, keep, fixed_variance=True, convention="reference")
  ours_fixed = mia.lira(target, shadow, keep, fixed_variance=True)
  assert np.max(np.abs(ref_fixed - ours_fixed)) > 1e-3
  # the reference's fixed sigma is the IN pool's on both sides
  sd = np.std(shadow[keep])
  mu_in = np.stack([np.median(shadow[keep[:, j], j], 0) for j in range(30)])
  mu_out = np.stack([np.median(shadow[~keep[:, j], j], 0) for j in range(30)])
  expected = np.mean(stats.norm.logpdf(target, mu_in, sd) - stats.norm.logpdf(target, mu_out, sd), -1)
  np.testing.assert_allclose(ref_fixed, expected, rtol=1e-12)
  # offline default: reference = negative log-likelihood under OUT, ours = the one-sided cdf
  np.testing.assert_allclose(mia.lira(target, shadow, keep, online=False, convention="reference"),
                             mia.lira(target, shadow, keep, online=False, offline_mode="neg_logpdf"),
                             rtol=1e-12)
  np.testing.assert_allclose(mia.lira(target, shadow, keep, online=False),
                             mia.lira(target, shadow, keep, online=False, offline_mode="cdf"),
                             rtol=1e-12)


def test_lira_reference_convention_hand_case():
  # OUT counts: example 0 has 3 OUT models, example 1 has 2 -> the reference keeps the first 2.
  shadow = np.array([[5.0, 0.0], [0.0, 7.0], [2.0, 9.0], [4.0, 1.0], [9.0, 3.0]])
  keep = np.array([[1, 0], [0, 1], [0, 1], [0, 1], [1, 0]], bool)
  x = np.array([1.0, 1.0])
  ref = mia.lira(x, shadow, keep, online=False, convention="reference")
  # example 0: OUT {0, 2} (not 4): median 1, std 1 -> -log N(1; 1, 1)
  assert ref[0] == pytest.approx(0.5 * math.log(2 * math.pi), rel=1e-12)
  ours = mia.lira(x, shadow, keep, online=False, offline_mode="neg_logpdf")
  assert ours[0] == pytest.approx(-stats.norm.logpdf(1.0, 2.0, np.std([0.0, 2.0, 4.0])), rel=1e-12)


def test_lira_conventions_bad_input():
  shadow = np.arange(8.0).reshape(4, 2)
  keep = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
  with pytest.raises(ValueError, match="convention"):
    mia.lira(np.zeros(2), shadow, keep, convention="paper")
  with pytest.raises(ValueError, match="statistic"):
    mia.ulira(np.zeros(2), shadow, keep, statistic="mode")


@pytest.mark.parametrize("m,p", [(7, 0.5), (10, 0.25), (5, 0.5), (10, 0.29), (8, 0.5), (100, 0.29)])
def test_keep_mask_reference_convention_floors(m, p):
  ref = jdata.keep_mask(jax.random.key(4), m, 300, balance="examples", p=p, convention="reference")
  ours = jdata.keep_mask(jax.random.key(4), m, 300, balance="examples", p=p)
  np.testing.assert_array_equal(ref.sum(0), int(p * m))  # train.py: order < int(pkeep * M)
  np.testing.assert_array_equal(ours.sum(0), math.ceil(round(p * m, 9)))
  assert (ref.sum(0)[0] < ours.sum(0)[0]) == (p * m != round(p * m))  # differ iff p*M not integral
  assert np.all(ref <= ours)  # the same draw: the reference's k models are ours' first k


def test_keep_mask_convention_bad_input():
  with pytest.raises(ValueError, match="convention"):
    jdata.keep_mask(0, 8, 100, balance="examples", convention="floor")
  with pytest.raises(ValueError, match="balance='examples'"):
    jdata.keep_mask(0, 8, 100, convention="reference")


def test_ulira_mean_statistic_matches_plain_computation():
  rng = np.random.default_rng(11)
  m, n, a = 9, 25, 2
  unlearned = rng.random((m, n)) < 0.5
  unlearned[0], unlearned[1] = True, False
  shadow = rng.exponential(size=(m, n, a)) + 1.0 * unlearned[:, :, None]  # skewed: mean != median
  target = rng.normal(size=(n, a))
  for online in (True, False):
    expected = np.zeros(n)
    for j in range(n):
      for aug in range(a):
        ins = [shadow[i, j, aug] for i in range(m) if unlearned[i, j]]
        outs = [shadow[i, j, aug] for i in range(m) if not unlearned[i, j]]
        lp_out = stats.norm.logpdf(target[j, aug], np.mean(outs), np.std(outs) + 1e-30)
        if online:
          lp_in = stats.norm.logpdf(target[j, aug], np.mean(ins), np.std(ins) + 1e-30)
          expected[j] += (lp_in - lp_out) / a
        else:
          expected[j] += stats.norm.cdf(target[j, aug], np.mean(outs), np.std(outs) + 1e-30) / a
    got = mia.ulira(target, shadow, unlearned, online=online, statistic="mean")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    median = mia.ulira(target, shadow, unlearned, online=online)
    assert np.max(np.abs(median - expected)) > 1e-3


def test_ulira_mean_and_median_agree_on_symmetric_scores():
  rng = np.random.default_rng(12)
  n = 20
  unlearned = np.array([[1] * n, [1] * n, [0] * n, [0] * n, [0] * n], bool)
  centre_in, centre_out = rng.normal(size=n) + 1.0, rng.normal(size=n)
  d_in, d_out = rng.random(n), rng.random(n)
  shadow = np.stack([centre_in + d_in, centre_in - d_in, centre_out - d_out, centre_out,
                     centre_out + d_out])  # each side symmetric about its centre
  target = rng.normal(size=n)
  np.testing.assert_allclose(mia.ulira(target, shadow, unlearned, statistic="mean"),
                             mia.ulira(target, shadow, unlearned), rtol=1e-9)
