"""KLOM, the KL divergence of margins (Georgiev et al. 2024, "Attribute-to-Delete: Machine Unlearning via Datamodel Matching", App. E.1).

Per example, the margins of N unlearned models and of M oracle models (retrained without the forget
set, over seeds) are two samples; KLOM is the KL divergence between their histograms. Zero means the
unlearned models' outputs on that example are distributed like the oracles'; it is summarised over
the examples of each split (forget / retain / validation) by percentiles.

The convention (``KLOM_CONVENTION``) follows the paper's definition and the authors' benchmark code
(RoyRin/data-unlearning-bench, ``compute_binned_KL_div`` / ``kl_from_margins``):

* margin = ``z_y - logsumexp_{j != y} z_j`` (the datamodels margin, ``log p_y - log(1 - p_y)``), not
  the correct logit minus the largest other logit;
* margins clipped to ``[-100, 100]``; per example ``bins = 20`` equal bins over the POOLED range
  ``[min, max]`` of both samples (a zero-width range becomes ``[min, min + 1]``);
* direction ``KL(unlearned || oracle)``; the oracle histogram is floored at ``eps = 1e-5`` in the
  bins where the unlearned histogram is positive and then renormalised to sum 1 (their
  ``scipy.stats.entropy(pk, qk)`` renormalises ``qk``). So an example is at most
  ``log(1 + 1/eps)`` (~11.51, one unlearned bin the oracles never reach).

Where we differ from their code: they bin with ``np.digitize`` against the ``linspace`` edges,
which leaves samples equal to the pooled maximum out of both histograms (``digitize`` returns
``bins + 1`` for them); we count them in the last bin, as ``np.histogram`` does. They require
``N == M``; we allow different model counts (each histogram is normalised by its own count).
"""

from __future__ import annotations

import numpy as np

from jaxunlearn.metrics._utility import _as_labels
from jaxunlearn.metrics._utility import _as_logits
from jaxunlearn.metrics._utility import as_float64

__all__ = ("KLOM_BINS", "KLOM_CLIP", "KLOM_CONVENTION", "KLOM_EPS", "KLOM_PERCENTILES", "klom", "klom_summary",
           "margins")

KLOM_BINS = 20
KLOM_EPS = 1e-5
KLOM_CLIP = 100.0
KLOM_PERCENTILES = (5, 25, 50, 75, 95, 99)
KLOM_CONVENTION = "georgiev2024_kl_unlearned_oracle_margin_hist20_pooled_eps1e-5_clip100"


def margins(logits, labels) -> np.ndarray:
  """Margins ``z_y - logsumexp_{j != y} z_j`` in float64 (KLOM's margin; equals ``log p_y - log(1 - p_y)``).

  Computed stably (the other logits' maximum is subtracted inside the logsumexp), without the
  ``1e-45`` floor of :func:`jaxunlearn.metrics.logit_confidence`, so the value is exact in float64
  far beyond that function's +-103.6 saturation.

  Args:
    logits: ``[..., C]`` logits, C >= 2.
    labels: integer labels broadcastable to ``logits.shape[:-1]`` (``[N]`` for ``[M, N, C]``).

  Returns:
    ``float64`` array of shape ``logits.shape[:-1]``.
  """
  logits = _as_logits(logits)
  c = logits.shape[-1]
  labels = _as_labels(labels, c)
  try:
    labels = np.broadcast_to(labels, logits.shape[:-1])
  except ValueError:
    raise ValueError(f"labels of shape {labels.shape} do not broadcast to logits.shape[:-1] = "
                     f"{logits.shape[:-1]}") from None
  if np.isinf(logits).any():
    raise ValueError("logits contain inf")
  onehot = np.arange(c) == labels[..., None]
  correct = np.sum(np.where(onehot, logits, 0.0), axis=-1)
  others = np.where(onehot, -np.inf, logits)
  top = np.max(others, axis=-1, keepdims=True)
  lse = top[..., 0] + np.log(np.sum(np.exp(others - top), axis=-1))
  return correct - lse


def _margin_matrix(x, name: str) -> np.ndarray:
  x = as_float64(x, name)
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [N_models, N_examples], got shape {x.shape}")
  if x.shape[0] < 1:
    raise ValueError(f"{name} has no models")
  if np.isnan(x).any():
    raise ValueError(f"{name} contains NaN")
  return x


def _histograms(x: np.ndarray, lo: np.ndarray, width: np.ndarray, bins: int) -> np.ndarray:
  """Per-example bin probabilities ``[E, bins]`` of ``x [N, E]``: bin ``floor(bins (v - lo) / width)``,
  the pooled maximum in the last bin."""
  n, e = x.shape
  idx = np.floor((x - lo) / width * bins).astype(np.int64)
  idx = np.clip(idx, 0, bins - 1)
  flat = (np.arange(e)[None, :] * bins + idx).ravel()
  return np.bincount(flat, minlength=e * bins).reshape(e, bins) / n


def klom(unlearned_margins, oracle_margins, *, bins: int = KLOM_BINS, eps: float = KLOM_EPS,
         clip: float = KLOM_CLIP) -> np.ndarray:
  """Per-example KLOM: ``KL(hist(unlearned) || hist(oracle))`` of the margins over models.

  Args:
    unlearned_margins: ``[N, E]`` margins (:func:`margins`) of N unlearned models on E examples.
    oracle_margins: ``[M, E]`` margins of M oracle (retrained) models on the same examples.
    bins: histogram bins over each example's pooled range.
    eps: floor of the oracle histogram where the unlearned one is positive (then renormalised).
    clip: margins are clipped to ``[-clip, clip]`` first.

  Returns:
    ``float64 [E]``, each in ``[0, log(1 + 1/eps)]``; 0 for identical histograms.
  """
  u = _margin_matrix(unlearned_margins, "unlearned_margins")
  o = _margin_matrix(oracle_margins, "oracle_margins")
  if u.shape[1] != o.shape[1]:
    raise ValueError(f"unlearned_margins and oracle_margins cover different examples: {u.shape[1]} vs {o.shape[1]}")
  if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
    raise ValueError(f"bins must be a positive int, got {bins!r}")
  if not (isinstance(eps, (int, float, np.floating)) and 0.0 < eps < 1.0):
    raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
  if not (isinstance(clip, (int, float, np.floating)) and clip > 0):
    raise ValueError(f"clip must be positive, got {clip!r}")
  u, o = np.clip(u, -clip, clip), np.clip(o, -clip, clip)
  lo = np.minimum(u.min(0), o.min(0))
  hi = np.maximum(u.max(0), o.max(0))
  width = np.where(hi > lo, hi - lo, 1.0)
  p = _histograms(u, lo, width, int(bins))
  q = _histograms(o, lo, width, int(bins))
  q = np.where(p > 0, np.maximum(q, eps), q)
  q = q / q.sum(-1, keepdims=True)
  pos = p > 0  # there q >= eps / (1 + bins * eps) > 0
  ratio = np.where(pos, p, 1.0) / np.where(pos, q, 1.0)
  return np.maximum(np.sum(np.where(pos, p * np.log(ratio), 0.0), axis=-1), 0.0)


def klom_summary(values, percentiles=KLOM_PERCENTILES) -> dict:
  """``{"p5": ..., "p95": ..., "mean": ...}`` of per-example KLOM values (numpy's linear percentiles).

  The paper's figures and the authors' tables read the 95th percentile (``p95``) of each split; an
  empty split gives NaN entries.
  """
  v = as_float64(values, "values").ravel()
  if v.size == 0:
    return {**{f"p{p:g}": float("nan") for p in percentiles}, "mean": float("nan")}
  return {**{f"p{p:g}": float(np.percentile(v, p)) for p in percentiles}, "mean": float(np.mean(v))}
