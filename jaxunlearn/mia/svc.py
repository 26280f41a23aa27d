"""The SVC "MIA-efficacy" of Unlearn-Sparse (Jia et al., NeurIPS 2023) and SalUn (Fan et al., ICLR 2024).

An attacker learns to tell training members from non-members on a per-example feature of the model's
prediction: an RBF support-vector classifier (scikit-learn ``SVC(C=3, gamma="auto", kernel="rbf")``,
their setting) is fitted on retain examples (label 1, member) against test examples (label 0,
non-member), then applied to the forget set. MIA-efficacy is the share of forget examples it
predicts as NON-members: higher means the forget set looks more like unseen data (a model retrained
without it scores about what the attack gives test-like examples; the original about 0 when its
training examples are recognisable). This is a different number from the simple loss MIA
(:func:`jaxunlearn.mia.simple_mia`, an accuracy near 0.5 when forgotten); results name each one's
convention (``SVC_CONVENTION``).

The feature: the papers describe the attack as the prediction-confidence-based MIA (Song & Mittal's
"confidence" attack), and the tables of both papers read the ``confidence`` variant of their
evaluation code -- the softmax probability of the example's label. So ``feature="confidence"`` is
the default; ``"entropy"`` (the prediction entropy ``-sum_j p_j log p_j``, which an earlier version
of their code used) is available.

Where we differ from their code: they balance the attacker's training set by taking the FIRST
``|test|`` retain examples; we subsample the larger of the two sides to the smaller one's size at
random (seeded), which avoids any order in the retain set and also works when the test split is the
larger side. The SVC itself is deterministic (libsvm without probability estimates).
"""

from __future__ import annotations

import numpy as np
from sklearn import svm

from jaxunlearn.metrics import as_float64

__all__ = ("FEATURES", "SVC_CONVENTION", "svc_features", "svc_mia_efficacy")

SVC_CONVENTION = "svc_mia_efficacy_salun"
FEATURES = ("confidence", "entropy")
_MIN_PER_SIDE = 2


def svc_features(logits, labels, feature: str = "confidence") -> np.ndarray:
  """The attack's per-example feature from ``logits [N, C]`` and integer ``labels [N]``, float64 ``[N]``.

  ``confidence``: softmax probability of the label; ``entropy``: ``-sum_j p_j log p_j`` of the
  softmax (``0 log 0 = 0``; label-free).
  """
  if feature not in FEATURES:
    raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
  z = as_float64(logits, "logits")
  if z.ndim != 2 or z.shape[1] < 2:
    raise ValueError(f"logits must have shape [N, C] with C >= 2, got shape {z.shape}")
  y = np.asarray(labels)
  if y.shape != (z.shape[0],) or (y.size and not np.issubdtype(y.dtype, np.integer)):
    raise ValueError(f"labels must be integers of shape ({z.shape[0]},), got {y.dtype} {y.shape}")
  if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
    raise ValueError(f"labels must lie in [0, {z.shape[1]}), got range [{y.min()}, {y.max()}]")
  z = z - z.max(axis=1, keepdims=True)
  p = np.exp(z)
  p /= p.sum(axis=1, keepdims=True)
  if feature == "confidence":
    return p[np.arange(len(y)), y]
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def _feature_matrix(x, name: str) -> np.ndarray:
  x = as_float64(x, name)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [N] or [N, D], got shape {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} contains NaN or inf")
  return x


def svc_mia_efficacy(retain, test, forget, *, seed: int = 0) -> float:
  """MIA-efficacy: share of the forget examples an SVC trained on retain (member) vs test (non-member)
  features predicts as non-members.

  Args:
    retain: ``[N_r]`` (or ``[N_r, D]``) features of retain examples, the members.
    test: ``[N_t]`` (or ``[N_t, D]``) features of held-out test examples, the non-members.
    forget: ``[N_f]`` (or ``[N_f, D]``) features of the forget examples, the attack's targets.
    seed: seed of the subsampling that balances retain and test (the larger side is cut to the
      smaller one's size).

  Returns:
    A Python float in [0, 1]; higher = the forget set looks less like training data.
  """
  r, t, f = _feature_matrix(retain, "retain"), _feature_matrix(test, "test"), _feature_matrix(forget, "forget")
  if not r.shape[1] == t.shape[1] == f.shape[1]:
    raise ValueError(f"retain, test and forget features differ in width: {r.shape[1]}, {t.shape[1]}, {f.shape[1]}")
  if min(len(r), len(t)) < _MIN_PER_SIDE:
    raise ValueError(f"svc_mia_efficacy needs at least {_MIN_PER_SIDE} retain and test examples, got "
                     f"{len(r)} and {len(t)}")
  if len(f) == 0:
    raise ValueError("forget has no examples")
  rng = np.random.default_rng(seed)
  n = min(len(r), len(t))
  if len(r) > n:
    r = r[np.sort(rng.permutation(len(r))[:n])]
  if len(t) > n:
    t = t[np.sort(rng.permutation(len(t))[:n])]
  x = np.concatenate([r, t])
  y = np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)])
  clf = svm.SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
  return float(np.mean(clf.predict(f) == 0))
