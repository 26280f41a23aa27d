"""The simple loss-based membership-inference attack of the NeurIPS-2023 starting kit and SCRUB.

A logistic regression on per-example losses tries to tell forget examples (label 1) from test
examples (label 0); its cross-validated accuracy is the attack score. About 0.5 means the forget
set looks like unseen data, as for a model retrained without it.
"""

from __future__ import annotations

import numpy as np
from sklearn import linear_model
from sklearn import model_selection

from jaxunlearn.metrics import as_float64

__all__ = ("simple_mia",)

_MIN_PER_SIDE = 5


def _losses(x, name: str) -> np.ndarray:
  x = as_float64(x, name)
  if x.ndim != 1:
    raise ValueError(f"{name} must have shape [N], got shape {x.shape}")
  if np.isnan(x).any():
    raise ValueError(f"{name} contains NaN")
  if x.size < _MIN_PER_SIDE:
    raise ValueError(f"{name} has {x.size} losses; simple_mia needs at least {_MIN_PER_SIDE}")
  return x


def simple_mia(forget_losses, test_losses, *, n_splits: int = 10, test_size: float = 0.2,
               seed: int = 0) -> float:
  """Loss-based MIA accuracy of forget vs test examples (challenge starting kit / SCRUB).

  The larger side is subsampled (seeded, without replacement) to the size of the smaller one,
  losses are clipped to [-100, 100], and a scikit-learn ``LogisticRegression`` is scored by
  ``cross_val_score`` accuracy over ``StratifiedShuffleSplit(n_splits, test_size,
  random_state=seed)``.

  Args:
    forget_losses: ``[N_forget]`` per-example cross-entropy losses on the forget set (label 1).
    test_losses: ``[N_test]`` per-example losses on held-out test examples (label 0).
    n_splits: number of random train/test splits.
    test_size: fraction of the balanced set held out in each split.
    seed: seed of the subsampling and of the splits.

  Returns:
    Mean attack accuracy over the splits, a Python float in [0, 1]; about 0.5 for a model that
    never trained on the forget set.
  """
  forget = _losses(forget_losses, "forget_losses")
  test = _losses(test_losses, "test_losses")
  if isinstance(n_splits, (bool, np.bool_)) or not isinstance(n_splits, (int, np.integer)) or (
      n_splits < 1):
    raise ValueError(f"n_splits must be a positive int, got {n_splits!r}")
  if not 0.0 < float(test_size) < 1.0:
    raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
  rng = np.random.default_rng(seed)
  n = min(forget.size, test.size)
  if forget.size > n:
    forget = forget[rng.permutation(forget.size)[:n]]
  if test.size > n:
    test = test[rng.permutation(test.size)[:n]]
  x = np.clip(np.concatenate([test, forget]), -100.0, 100.0).reshape(-1, 1)
  y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
  cv = model_selection.StratifiedShuffleSplit(n_splits=int(n_splits), test_size=float(test_size),
                                              random_state=seed)
  scores = model_selection.cross_val_score(linear_model.LogisticRegression(), x, y, cv=cv,
                                           scoring="accuracy")
  return float(np.mean(scores))
