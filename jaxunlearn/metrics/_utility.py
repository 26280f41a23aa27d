"""Utility and forgetting metrics on model outputs: accuracy, ToW, ZRF, IC, logit confidence.

Plain numpy in float64, outside jit. Logits are ``[..., C]`` with the class axis last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from scipy import special

__all__ = (
    "InterclassConfusion", "accuracy", "accuracy_gaps", "interclass_confusion",
    "logit_confidence", "tow", "zrf",
)

_SPLITS = ("retain", "forget", "test")


def as_float64(x, name: str) -> np.ndarray:
  """``x`` as a float64 numpy array; accepts bool/int/float and ml_dtypes floats (e.g. bfloat16).

  Raises:
    TypeError: naming ``name`` and the dtype, for anything else (strings, objects, complex).
  """
  x = np.asarray(x)
  if x.dtype.kind in "biuf" or (x.dtype.kind == "V" and x.dtype.names is None):
    try:
      return x.astype(np.float64)
    except (TypeError, ValueError):
      pass
  raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")


def _as_logits(logits, name: str = "logits") -> np.ndarray:
  logits = as_float64(logits, name)
  if logits.ndim < 1 or logits.shape[-1] < 2:
    raise ValueError(f"{name} must have shape [..., C] with C >= 2, got shape {logits.shape}")
  if np.isnan(logits).any():
    raise ValueError(f"{name} contain NaN")
  return logits


def _as_labels(labels, num_classes: int | None, name: str = "labels") -> np.ndarray:
  labels = np.asarray(labels)
  if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
    if labels.dtype != object and np.issubdtype(labels.dtype, np.floating) and labels.size and (
        np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))):
      labels = labels.astype(np.int64)
    else:
      raise TypeError(f"{name} must be integer class ids, got dtype {labels.dtype}")
  if labels.size and labels.min() < 0:
    raise ValueError(f"{name} must be >= 0, got {int(labels.min())}")
  if num_classes is not None and labels.size and labels.max() >= num_classes:
    raise ValueError(f"{name} contain class {int(labels.max())} but there are only "
                     f"{num_classes} classes")
  return labels.astype(np.int64)


def _predictions(logits_or_preds, labels: np.ndarray, name: str
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Integer predictions and labels broadcast to one shape.

  A floating array (incl. bfloat16) is logits ``[..., C]`` (argmax over the last axis); an
  integer array is predictions ``[...]``. ``labels`` broadcast against the prediction shape (numpy rules).
  """
  x = np.asarray(logits_or_preds)
  if x.dtype.kind in "iu":
    preds = x.astype(np.int64)
  elif x.dtype.kind in "fV":
    preds = np.argmax(_as_logits(x, name), axis=-1)
  else:
    raise TypeError(f"{name} must be float logits [..., C] or integer predictions, got dtype "
                    f"{x.dtype}")
  try:
    preds, labels = np.broadcast_arrays(preds, labels)
  except ValueError:
    raise ValueError(f"labels of shape {labels.shape} do not broadcast to the predictions' shape "
                     f"{preds.shape} ({name} has shape {x.shape})") from None
  return preds, labels


def accuracy(logits, labels) -> float:
  """Fraction of correct top-1 predictions.

  Args:
    logits: float ``[..., C]`` logits (argmax over the last axis), or integer ``[...]``
      predictions.
    labels: integer labels broadcastable (numpy rules) to the prediction shape
      ``logits.shape[:-1]``; e.g. ``[N]`` labels for ``[M, N, C]`` logits of M models.

  Returns:
    The accuracy as a fraction in [0, 1] (Python float), averaged over all leading axes.
  """
  preds, labels = _predictions(logits, _as_labels(labels, None), "logits")
  if labels.size == 0:
    raise ValueError("accuracy of an empty set: labels has size 0")
  return float(np.mean(preds == labels))


def _check_accs(accs, name: str) -> dict[str, float]:
  if not isinstance(accs, Mapping):
    raise TypeError(f"{name} must be a mapping with keys {_SPLITS}, got {type(accs).__name__}")
  missing = [s for s in _SPLITS if s not in accs]
  if missing:
    raise ValueError(f"{name} is missing split(s) {missing}; expected keys {_SPLITS}")
  out = {}
  for s in _SPLITS:
    v = float(np.mean(np.asarray(accs[s], dtype=np.float64)))
    if not 0.0 <= v <= 1.0:
      raise ValueError(f"{name}[{s!r}] = {v!r} is not a fraction in [0, 1] "
                       "(pass accuracies as fractions, not percentages)")
    out[s] = v
  return out


def accuracy_gaps(acc_unlearned: Mapping, acc_retrain: Mapping) -> dict[str, float]:
  """Signed accuracy differences ``unlearned - retrain`` per split.

  Args:
    acc_unlearned: mapping with keys ``"retain"``, ``"forget"``, ``"test"`` to accuracy
      fractions (scalars, or arrays that are averaged, e.g. one entry per model).
    acc_retrain: the same for the retrained-from-scratch reference.

  Returns:
    ``{"retain": d, "forget": d, "test": d}`` with ``d = acc_unlearned[s] - acc_retrain[s]``.
  """
  u = _check_accs(acc_unlearned, "acc_unlearned")
  r = _check_accs(acc_retrain, "acc_retrain")
  return {s: u[s] - r[s] for s in _SPLITS}


def tow(acc_unlearned: Mapping, acc_retrain: Mapping) -> float:
  """Tug-of-war (ToW) score of an unlearned model against the retrained reference.

  ``ToW = prod_{s in {forget, retain, test}} (1 - |acc_s(unlearned) - acc_s(retrain)|)``, with
  accuracies as fractions; 1 means indistinguishable accuracies on every split.

  Args:
    acc_unlearned: mapping with keys ``"forget"``, ``"retain"``, ``"test"`` to fractions in
      [0, 1] (scalars, or arrays that are averaged).
    acc_retrain: the same for the retrained model.

  Returns:
    ToW in [0, 1] as a Python float.
  """
  gaps = accuracy_gaps(acc_unlearned, acc_retrain)
  return float(np.prod([1.0 - abs(gaps[s]) for s in ("forget", "retain", "test")]))


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - np.max(logits, axis=-1, keepdims=True)
  p = np.exp(z)
  return p / np.sum(p, axis=-1, keepdims=True)


def zrf(unlearned_logits, random_model_logits) -> float:
  """Zero Retrain Forgetting score (Chundawat et al., 2023).

  ``ZRF = 1 - mean_i JS(softmax(u_i), softmax(r_i))`` over the forget set, with the
  Jensen-Shannon divergence ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2``, ``m = (p + q) / 2``,
  in natural log (nats), so ``JS`` lies in [0, ln 2] and ZRF in [1 - ln 2, 1] (a subset of
  [0, 1]). ZRF = 1 when the unlearned model behaves like a randomly initialised one.

  Args:
    unlearned_logits: ``[..., C]`` logits of the unlearned model on the forget set.
    random_model_logits: ``[..., C]`` logits of a randomly initialised model, same shape.

  Returns:
    ZRF as a Python float.
  """
  u = _as_logits(unlearned_logits, "unlearned_logits")
  r = _as_logits(random_model_logits, "random_model_logits")
  if u.shape != r.shape:
    raise ValueError(f"unlearned_logits has shape {u.shape} but random_model_logits has "
                     f"shape {r.shape}")
  if u.size == 0:
    raise ValueError("zrf of an empty forget set")
  p, q = _softmax(u), _softmax(r)
  m = 0.5 * (p + q)
  js = 0.5 * np.sum(special.rel_entr(p, m), axis=-1) + 0.5 * np.sum(special.rel_entr(q, m), axis=-1)
  js = np.clip(js, 0.0, np.log(2.0))
  return float(1.0 - np.mean(js))


@dataclasses.dataclass(frozen=True)
class InterclassConfusion:
  """Result of the interclass-confusion (IC) test for two classes A and B.

  Attributes:
    error: fraction of the A and B examples predicted outside their own class (any other
      class counts as an error).
    count: ``cm[A][B] + cm[B][A]``, the number of A examples predicted B plus B examples
      predicted A.
    a_as_b: ``cm[A][B]``.
    b_as_a: ``cm[B][A]``.
    num_examples: number of examples labelled A or B.
  """

  error: float
  count: int
  a_as_b: int
  b_as_a: int
  num_examples: int


def interclass_confusion(logits_or_preds, labels, class_a: int, class_b: int
                         ) -> InterclassConfusion:
  """Interclass-confusion test of the resolving-confusion setting (Goel et al., 2022).

  Args:
    logits_or_preds: float ``[N, C]`` logits, or integer ``[N]`` predictions.
    labels: ``[N]`` true (unconfused) labels.
    class_a: first confused class.
    class_b: second confused class (``!= class_a``).

  Returns:
    An ``InterclassConfusion`` with the IC error (fraction of A/B examples predicted outside
    their own class) and the count ``cm[A][B] + cm[B][A]``.
  """
  labels = _as_labels(labels, None)
  preds, labels = _predictions(logits_or_preds, labels, "logits_or_preds")
  for name, c in (("class_a", class_a), ("class_b", class_b)):
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 0:
      raise ValueError(f"{name} must be a non-negative int, got {c!r}")
  if class_a == class_b:
    raise ValueError(f"class_a and class_b must differ, got {class_a} twice")
  in_ab = (labels == class_a) | (labels == class_b)
  n = int(in_ab.sum())
  if n == 0:
    raise ValueError(f"no examples labelled {class_a} or {class_b}")
  a_as_b = int(np.sum((labels == class_a) & (preds == class_b)))
  b_as_a = int(np.sum((labels == class_b) & (preds == class_a)))
  wrong = int(np.sum(in_ab & (preds != labels)))
  return InterclassConfusion(error=wrong / n, count=a_as_b + b_as_a, a_as_b=a_as_b,
                             b_as_a=b_as_a, num_examples=n)


def logit_confidence(logits, labels) -> np.ndarray:
  """Logit-scaled confidence ``log p_y - log sum_{j != y} p_j`` (the LiRA / challenge score).

  Computed stably in float64 as in the LiRA and NeurIPS-2023 challenge code: subtract the
  max logit, softmax, zero the true class to sum the others, and add 1e-45 inside both logs.
  The result is finite for any finite logits (about +-103.6 at saturation).

  Broadcasting: ``labels`` must broadcast against ``logits.shape[:-1]`` with numpy's rules
  (trailing axes aligned). So ``[M, N, C]`` logits (M models) take ``[N]`` labels, and
  ``[N, A, C]`` logits (A augmentations per example) take ``[N, 1]`` labels
  (``labels[:, None]``) or ``[N, A]`` labels.

  Args:
    logits: ``[..., C]`` logits.
    labels: integer labels broadcastable to ``logits.shape[:-1]``.

  Returns:
    ``float64`` array of shape ``logits.shape[:-1]``.
  """
  logits = _as_logits(logits)
  num_classes = logits.shape[-1]
  labels = _as_labels(labels, num_classes)
  batch = logits.shape[:-1]
  try:
    labels = np.broadcast_to(labels, batch)
  except ValueError:
    raise ValueError(f"labels of shape {labels.shape} do not broadcast to logits.shape[:-1] = "
                     f"{batch} (for [N, A, C] logits pass labels[:, None])") from None
  if np.isinf(logits).any():
    raise ValueError("logits contain inf")
  z = logits - np.max(logits, axis=-1, keepdims=True)
  probs = np.exp(z)
  probs /= np.sum(probs, axis=-1, keepdims=True)
  onehot = np.arange(num_classes) == labels[..., None]
  p_true = np.sum(np.where(onehot, probs, 0.0), axis=-1)
  p_wrong = np.sum(np.where(onehot, 0.0, probs), axis=-1)
  return np.log(p_true + 1e-45) - np.log(p_wrong + 1e-45)
