"""Tests of jaxunlearn.metrics: accuracy, ToW, ZRF, IC, logit confidence and ROC summaries."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxunlearn import metrics
from jaxunlearn import mia


# ----------------------------------------------------------------------------- accuracy, ToW


def test_accuracy_from_logits_and_predictions():
  logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
  labels = np.array([0, 1, 1, 2])
  assert metrics.accuracy(logits, labels) == pytest.approx(0.5)
  assert metrics.accuracy(np.array([0, 1, 2, 0]), labels) == pytest.approx(0.5)


def test_accuracy_leading_axes_broadcast_labels():
  # [M, N, C] logits with [N] labels: averaged over models and examples.
  logits = np.zeros((2, 3, 2))
  logits[0, :, 0] = 1.0  # model 0 predicts 0 everywhere
  logits[1, :, 1] = 1.0  # model 1 predicts 1 everywhere
  labels = np.array([0, 0, 1])
  assert metrics.accuracy(logits, labels) == pytest.approx(3 / 6)
  assert metrics.accuracy(np.array([[0, 0, 0], [1, 1, 1]]), labels) == pytest.approx(3 / 6)
  with pytest.raises(ValueError, match="broadcast"):
    metrics.accuracy(logits, np.array([0, 1]))


def test_accuracy_gaps_are_signed_differences():
  gaps = metrics.accuracy_gaps({"retain": 0.9, "forget": 0.8, "test": 0.7},
                               {"retain": 0.95, "forget": 0.6, "test": 0.7})
  assert gaps == pytest.approx({"retain": -0.05, "forget": 0.2, "test": 0.0})


def test_tow_hand_case():
  u = {"forget": 0.9, "retain": 0.95, "test": 0.80}
  r = {"forget": 0.7, "retain": 0.97, "test": 0.85}
  assert metrics.tow(u, r) == pytest.approx(0.8 * 0.98 * 0.95)
  assert metrics.tow(r, r) == pytest.approx(1.0)
  # Arrays (one accuracy per model) are averaged first.
  u_arr = {"forget": [0.8, 1.0], "retain": [0.95, 0.95], "test": [0.8, 0.8]}
  assert metrics.tow(u_arr, r) == pytest.approx(0.8 * 0.98 * 0.95)


def test_tow_rejects_percentages_and_missing_splits():
  with pytest.raises(ValueError, match="fraction"):
    metrics.tow({"forget": 90.0, "retain": 0.9, "test": 0.9},
                {"forget": 0.9, "retain": 0.9, "test": 0.9})
  with pytest.raises(ValueError, match="missing"):
    metrics.tow({"forget": 0.9, "retain": 0.9}, {"forget": 0.9, "retain": 0.9, "test": 0.9})


# ----------------------------------------------------------------------------- ZRF


def test_zrf_identical_is_one_and_disjoint_one_hot_is_one_minus_ln2():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 5))
  assert metrics.zrf(logits, logits) == pytest.approx(1.0, abs=1e-12)
  a = np.array([[1e4, 0.0, 0.0], [0.0, 1e4, 0.0]])  # one-hot on class 0 / 1
  b = np.array([[0.0, 0.0, 1e4], [1e4, 0.0, 0.0]])  # one-hot on a different class
  assert metrics.zrf(a, b) == pytest.approx(1.0 - math.log(2.0), abs=1e-12)


def test_zrf_hand_case_uniform_vs_one_hot():
  # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4):
  # KL(p||m) = 1/2 ln(4/3), KL(q||m) = ln(4/3), JS = 3/4 ln(4/3).
  u = np.array([[0.0, 0.0], [3.0, 1.0]])
  r = np.array([[1e4, 0.0], [3.0, 1.0]])
  expected = 1.0 - (0.75 * math.log(4 / 3) + 0.0) / 2
  assert metrics.zrf(u, r) == pytest.approx(expected, abs=1e-12)


def test_zrf_shape_mismatch():
  with pytest.raises(ValueError, match="shape"):
    metrics.zrf(np.zeros((3, 2)), np.zeros((4, 2)))


# ----------------------------------------------------------------------------- IC


def test_interclass_confusion_hand_case():
  labels = np.array([0, 0, 0, 1, 1, 2, 2])
  preds = np.array([1, 1, 2, 0, 1, 0, 2])
  ic = metrics.interclass_confusion(preds, labels, 0, 1)
  # A/B examples: indices 0..4; wrong: 0 (0->1), 1 (0->1), 2 (0->2), 3 (1->0). Index 5 (2->0)
  # is not an A/B example. Asymmetric: cm[0][1] = 2, cm[1][0] = 1.
  assert ic.error == pytest.approx(4 / 5)
  assert ic.count == 3 and ic.a_as_b == 2 and ic.b_as_a == 1 and ic.num_examples == 5
  logits = np.eye(3)[preds] * 5.0
  assert metrics.interclass_confusion(logits, labels, 0, 1) == ic
  # Swapping A and B swaps the directional counts only.
  ic2 = metrics.interclass_confusion(preds, labels, 1, 0)
  assert ic2.a_as_b == ic.b_as_a == 1 and ic2.b_as_a == ic.a_as_b == 2
  assert ic2.error == ic.error and ic2.count == ic.count and ic2.num_examples == ic.num_examples


def test_interclass_confusion_bad_input():
  with pytest.raises(ValueError, match="differ"):
    metrics.interclass_confusion([0, 1], [0, 1], 1, 1)
  with pytest.raises(ValueError, match="no examples labelled 3 or 4"):
    metrics.interclass_confusion([0, 1], [0, 1], 3, 4)


# ----------------------------------------------------------------------------- logit confidence


def test_logit_confidence_hand_case():
  logits = np.log(np.array([[1.0, 2.0, 3.0]]))  # p = (1/6, 2/6, 3/6)
  assert metrics.logit_confidence(logits, [2])[0] == pytest.approx(0.0, abs=1e-12)
  assert metrics.logit_confidence(logits, [0])[0] == pytest.approx(-math.log(5.0))
  assert metrics.logit_confidence(logits, [1])[0] == pytest.approx(math.log(2 / 4))


def test_logit_confidence_extreme_logits_finite_with_correct_sign():
  logits = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
  conf = metrics.logit_confidence(logits, [0, 1, 0])
  assert np.all(np.isfinite(conf))
  saturated = -math.log(1e-45)
  assert conf[0] == pytest.approx(saturated)  # certain and right
  assert conf[1] == pytest.approx(-saturated)  # certain and wrong
  assert conf[2] == pytest.approx(-saturated)
  big = metrics.logit_confidence(np.array([[3e38, -3e38]], dtype=np.float32), [0])
  assert np.isfinite(big[0]) and big[0] > 100


def test_logit_confidence_broadcasting():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 6, 5)) * 3  # [M, N, C]
  labels = rng.integers(0, 5, size=6)  # [N]
  conf = metrics.logit_confidence(logits, labels)
  assert conf.shape == (4, 6) and conf.dtype == np.float64
  for m in range(4):
    np.testing.assert_allclose(conf[m], metrics.logit_confidence(logits[m], labels))
  aug = rng.normal(size=(6, 2, 5))  # [N, A, C] takes labels[:, None]
  conf_aug = metrics.logit_confidence(aug, labels[:, None])
  assert conf_aug.shape == (6, 2)
  np.testing.assert_allclose(conf_aug[:, 1], metrics.logit_confidence(aug[:, 1], labels))
  with pytest.raises(ValueError, match="broadcast"):
    metrics.logit_confidence(aug, labels)


def test_logit_confidence_bad_input():
  with pytest.raises(ValueError, match="NaN"):
    metrics.logit_confidence(np.array([[np.nan, 0.0]]), [0])
  with pytest.raises(ValueError, match="class 2"):
    metrics.logit_confidence(np.zeros((1, 2)), [2])


# ----------------------------------------------------------------------------- ROC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_and_auc_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, size=300).astype(bool)
  scores = rng.normal(size=300) + y
  if seed == 2:
    scores = np.round(scores)  # many ties
  fpr, tpr, thr = metrics.roc_curve(scores, y)
  sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr)
  np.testing.assert_allclose(tpr, sk_tpr)
  np.testing.assert_allclose(thr[1:], sk_thr[1:])
  assert thr[0] == np.inf
  assert metrics.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)


def test_tpr_at_fpr_and_best_accuracy_hand_case():
  scores = np.arange(10, 0, -1.0)
  y = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
  # ROC: (0,.2) (0,.4) (.2,.4) (.2,.6) (.2,.8) (.4,.8) (.4,1) (.6,1) (.8,1) (1,1).
  assert metrics.tpr_at_fpr(scores, y, 0.0) == pytest.approx(0.4)
  assert metrics.tpr_at_fpr(scores, y, 0.1) == pytest.approx(0.4)
  assert metrics.tpr_at_fpr(scores, y, 0.2) == pytest.approx(0.8)
  assert metrics.tpr_at_fpr(scores, y, 0.39) == pytest.approx(0.8)
  assert metrics.tpr_at_fpr(scores, y, 0.4) == pytest.approx(1.0)
  assert metrics.best_threshold_accuracy(scores, y) == pytest.approx(0.8)
  assert metrics.auc(*metrics.roc_curve(scores, y)[:2]) == pytest.approx(
      skm.roc_auc_score(y, scores))


def test_tpr_at_fpr_strict_reads_below_the_target():
  # 10 members, 1000 non-members; exactly one false positive (FPR 1/1000) before the last 5 members.
  scores = np.concatenate([np.full(5, 3.0), [2.0], np.full(5, 1.0), np.zeros(999)])
  y = np.concatenate([np.ones(5), [0], np.ones(5), np.zeros(999)]).astype(bool)
  assert metrics.tpr_at_fpr(scores, y, 0.001) == pytest.approx(1.0)  # FPR <= 0.1 %
  assert metrics.tpr_at_fpr(scores, y, 0.001, strict=True) == pytest.approx(0.5)  # FPR < 0.1 %
  assert mia.evaluate_attack(scores, y)["tpr@0.1%"] == pytest.approx(1.0)
  assert mia.evaluate_attack(scores, y, strict=True)["tpr@0.1%"] == pytest.approx(0.5)
  # the LiRA reference's read-out, tpr[where(fpr < target)[-1]] on sklearn's curve, on random data
  rng = np.random.default_rng(7)
  for _ in range(20):
    yr = rng.random(3000) < 0.4
    s = np.round(rng.normal(size=3000) + yr, 1)  # ties
    fpr, tpr, _ = skm.roc_curve(yr, s)
    for target in (0.001, 0.01, 0.1):
      want = tpr[np.where(fpr < target)[0][-1]]
      assert metrics.tpr_at_fpr(s, yr, target, strict=True) == pytest.approx(want, abs=1e-15)
  with pytest.raises(ValueError, match="strict"):
    metrics.tpr_at_fpr(scores, y, 0.0, strict=True)


def test_best_threshold_accuracy_matches_brute_force():
  rng = np.random.default_rng(3)
  y = rng.integers(0, 2, size=200).astype(bool)
  s = rng.normal(size=200) + 0.5 * y
  brute = max(((s >= t) & y).sum() / y.sum() / 2 + ((s < t) & ~y).sum() / (~y).sum() / 2
              for t in np.append(s, np.inf))
  assert metrics.best_threshold_accuracy(s, y) == pytest.approx(brute)


def test_roc_bad_input():
  with pytest.raises(ValueError, match="NaN"):
    metrics.roc_curve([0.1, np.nan], [0, 1])
  with pytest.raises(ValueError, match="both"):
    metrics.roc_curve([0.1, 0.2], [1, 1])
  with pytest.raises(ValueError, match="shape"):
    metrics.roc_curve([0.1, 0.2, 0.3], [0, 1])
  with pytest.raises(ValueError, match="fpr must be in"):
    metrics.tpr_at_fpr([0.1, 0.2], [0, 1], 1.5)
  with pytest.raises(ValueError, match="non-decreasing"):
    metrics.auc([0.0, 1.0, 0.5], [0.0, 1.0, 1.0])


def test_bfloat16_and_jax_arrays_are_accepted():
  import jax.numpy as jnp

  logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]], dtype=jnp.bfloat16)
  labels = jnp.array([0, 1, 1])
  assert metrics.accuracy(logits, labels) == pytest.approx(2 / 3)
  conf = metrics.logit_confidence(logits, labels)
  np.testing.assert_allclose(conf, [2.0, 1.0, -4.0], rtol=1e-6)
  with pytest.raises(TypeError, match="dtype"):
    metrics.roc_curve(np.array(["a", "b"]), [0, 1])


def test_as_float64_accepts_numbers_and_names_the_bad_dtype():
  import ml_dtypes
  got = metrics.as_float64(np.array([1, 2], ml_dtypes.bfloat16), "x")
  assert got.dtype == np.float64 and got.tolist() == [1.0, 2.0]
  assert metrics.as_float64([True, False], "x").tolist() == [1.0, 0.0]
  for bad, dtype in ((np.array(["a"]), "<U1"), (np.array([1j]), "complex128"), (np.array([None]), "object")):
    with pytest.raises(TypeError, match=f"scores must be a real numeric array, got dtype {dtype}"):
      metrics.as_float64(bad, "scores")
