"""Selective Synaptic Dampening (SSD) and its label-free variant (LFSSD): shrink the weights that matter
far more to the forget set than to the whole training set. No training.

* SSD: Foster, Schoepf, Brintrup (AAAI 2024), "Fast Machine Unlearning Without Retraining Through
  Selective Synaptic Dampening". Importance = diagonal (empirical) Fisher, ``[]_f`` on the forget set
  and ``[]_D`` on the whole training set D. Where ``[]_f > alpha * []_D``, the weight is multiplied by
  ``beta = min(lambda * []_D / []_f, 1)``; every other weight is left bit-identical.
* LFSSD: Foster, Schoepf, Brintrup (ICLR 2024 Tiny Paper), "Loss-Free Machine Unlearning": the same rule
  with the importance taken from the l2 norm of the model's output (logits) instead of the loss, so no
  labels are needed (:func:`~jaxunlearn.unlearn.importance.output_sensitivity`).

Where we differ from the authors' code (``ssd.py`` of their repository, reused by the DeepUnlearn and
other benchmarks): the code's importance is the square of each MINI-BATCH's mean gradient, averaged over
batches; ours is the per-example Fisher the paper writes (the mean over examples of the squared
per-example gradient), which does not depend on the batch size or on how the batches mix classes.
A consequence worth knowing when setting ``alpha``: D contains the forget set, so per entry
``[]_D >= (n_forget / n) []_f`` and ``[]_f / []_D <= n / n_forget``. Forgetting one class of ten
(``n / n_forget ~ 10``) with the paper's ``alpha = 10`` (set for CIFAR-100, where one class is 1 % of the
data) selects only weights the retain set does not use at all (on the digits, nothing): our default
``alpha`` is 5, and the scale rule (:mod:`jaxunlearn.unlearn.defaults`) takes ``min(10, n / (2
n_forget))``; the metric ``dampened_fraction`` reports how much was selected. D's retain part
may be estimated from a random subset of the retain set (``retain_subset``, weighted by the retain set's
full size: the forget part stays exact). The LFSSD code uses ``|d mean_batch ||f||^2 / d theta|`` (the
Memory Aware Synapses importance, per batch); we default to the per-example square of the gradient of
``||f||_2`` (Fisher-like, so ``alpha`` and ``lambda`` keep SSD's meaning), and give the code's quantity,
per example, as ``output_importance="mas"`` (preset ``lfssd_code``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import check_choice
from jaxunlearn.train import check_int
from jaxunlearn.train import check_real
from jaxunlearn.train import hparam
from jaxunlearn.unlearn import importance
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._fisher import mask_leaves
from jaxunlearn.unlearn._fisher import relative_change
from jaxunlearn.unlearn._registry import register

SSD_PAPER = dict(alpha=10.0, lam=1.0)  # the paper's ResNet18 CIFAR setting (also ViT's lambda)


def dampen(params, forget_imp, full_imp, alpha, lam, mask=None):
  """SSD's selection and dampening, shared by SSD and LFSSD.

  Per entry: selected where ``forget_imp > alpha * full_imp`` (and masked, when a ``mask`` is given);
  a selected weight is multiplied by ``min(lam * full_imp / forget_imp, 1)``, every other weight is
  returned bit-identical (a select, not a product).

  Returns:
    ``(new params, number of selected entries)``.
  """
  m = mask_leaves(mask, params)
  sel = jax.tree.map(lambda f, d, mk: (f > alpha * d) & (mk > 0), forget_imp, full_imp, m)

  def one(p, f, d, s):
    beta = jnp.minimum(lam * d / jnp.where(s, f, 1.0), 1.0)
    return jnp.where(s, (p.astype(jnp.float32) * beta).astype(p.dtype), p)

  new = jax.tree.map(one, params, forget_imp, full_imp, sel)
  count = sum(jnp.sum(s) for s in jax.tree.leaves(sel))
  return new, count


def _full_importance(imp_fn, forget_imp, data: UnlearnData, key: jax.Array, retain_subset: int | None):
  """Importance over all training data D = retain + forget: ``(n_f * []_f + n_r * []_r) / (n_f + n_r)``,
  ``[]_r`` over at most ``retain_subset`` random retain examples (an unbiased estimate of the retain
  mean; exact without a subset)."""
  n_f, n_r = data.forget.shape[0], data.retain.shape[0]
  retain_imp = imp_fn(importance.random_subset(key, data.retain, retain_subset))
  return jax.tree.map(lambda f, r: (n_f * f + n_r * r) / (n_f + n_r), forget_imp, retain_imp)


def _ssd_run(state: ModelState, data: UnlearnData, key, config, hparams, imp_fn, mask):
  forget_imp = imp_fn(data.forget)
  full_imp = _full_importance(imp_fn, forget_imp, data, jax.random.fold_in(key, 0), config.retain_subset)
  params, count = dampen(state.params, forget_imp, full_imp, hparams["alpha"], hparams["lam"], mask)
  total = sum(p.size for p in jax.tree.leaves(state.params))
  metrics = {"dampened_fraction": count / total, "weight_change": relative_change(state.params, params)}
  return ModelState(params, state.batch_stats, state.model), metrics


def _check_common(cfg) -> None:
  check_real(cfg, "alpha", lo=0.0)
  check_real(cfg, "lam", lo=0.0)
  if cfg.retain_subset is not None:
    check_int(cfg, "retain_subset", lo=1)
  check_int(cfg, "chunk_size", lo=1)


def _tune_grid(name):
  """alpha from a quarter to twice the config's (5 log-spaced; above the bound n / n_forget nothing is
  selected, which the scale rule's alpha, half the bound, keeps in range), times lambda / 2, lambda, 2 lambda."""
  return lambda cfg: (f"{name}.alpha=log:{cfg.alpha / 4:.6g}:{cfg.alpha * 2:.6g}:5",
                      f"{name}.lam={cfg.lam / 2:.6g},{cfg.lam:.6g},{cfg.lam * 2:.6g}")


@dataclasses.dataclass(frozen=True)
class SsdConfig:
  """SSD settings.

  Attributes:
    alpha: selection weighting: dampen where the forget importance exceeds ``alpha`` times the full
      importance (hyperparameter; 5 here, because the per-example Fisher ratio of a forget set that is
      a tenth of the data is at most 10, see the module docstring; the paper's 10 in preset ``ssd_paper``).
    lam: dampening constant ``lambda``: a selected weight is multiplied by ``min(lam * []_D / []_f, 1)``
      (hyperparameter; 1, the paper's).
    retain_subset: D's retain part from at most this many random retain examples (None: all, as the
      paper).
    chunk_size: examples per chunk of per-example gradients.

  Presets: ``ssd_paper`` (ResNet18 on CIFAR: alpha 10, lambda 1), ``ssd_paper_vit`` (ViT, full class:
  alpha 5, lambda 1).
  """

  alpha: float = hparam(5.0)
  lam: float = hparam(1.0)
  retain_subset: int | None = None
  chunk_size: int = 64

  def __post_init__(self):
    _check_common(self)


@register("ssd", SsdConfig, presets={"ssd_paper": SSD_PAPER, "ssd_paper_vit": dict(alpha=5.0, lam=1.0)},
          tune_grid=_tune_grid("ssd"))
def ssd(state: ModelState, data: UnlearnData, key: jax.Array, config: SsdConfig, hparams, *,
        mask=None) -> tuple[ModelState, dict]:
  """SSD: dampen the weights whose forget Fisher exceeds ``alpha`` times their full-data Fisher.

  Importances: :func:`~jaxunlearn.unlearn.importance.diag_fisher` with the true labels (the empirical
  Fisher, eval mode) on the forget set and on D = retain + forget (its retain part from
  ``retain_subset`` random retain examples drawn with ``fold_in(key, 0)`` when set). Then
  :func:`dampen`. With a ``mask`` only masked entries may be dampened.

  Returns:
    ``(state, metrics)``: ``dampened_fraction`` (dampened entries / all parameter entries; 0 means the
    model is returned unchanged) and ``weight_change`` (``||w_new - w|| / ||w||``).
  """
  imp_fn = lambda idx: importance.diag_fisher(state, data, idx, labels="true", chunk_size=config.chunk_size)  # noqa: E731
  return _ssd_run(state, data, key, config, hparams, imp_fn, mask)


@dataclasses.dataclass(frozen=True)
class LfssdConfig:
  """Label-free SSD settings (as :class:`SsdConfig`, importance from the output norm).

  Attributes:
    alpha: selection weighting (hyperparameter; 5, as SSD's here; the paper uses SSD's settings).
    lam: dampening constant (hyperparameter; 1).
    output_importance: ``"squared"``, the mean over examples of ``(d ||f(x)||_2 / d theta)^2``, or
      ``"mas"``, of ``|d ||f(x)||_2^2 / d theta|`` (the authors' code's quantity, per example; see
      :func:`~jaxunlearn.unlearn.importance.output_sensitivity`).
    retain_subset: D's retain part from at most this many random retain examples (None: all).
    chunk_size: examples per chunk of per-example gradients.

  Presets: ``lfssd_paper`` (alpha 10, lambda 1, as SSD's on CIFAR), ``lfssd_code`` (the same with
  ``output_importance="mas"``).
  """

  alpha: float = hparam(5.0)
  lam: float = hparam(1.0)
  output_importance: str = "squared"
  retain_subset: int | None = None
  chunk_size: int = 64

  def __post_init__(self):
    _check_common(self)
    check_choice(self, "output_importance", importance.OUTPUT_FORMS)


@register("lfssd", LfssdConfig,
          presets={"lfssd_paper": SSD_PAPER, "lfssd_code": dict(SSD_PAPER, output_importance="mas")},
          tune_grid=_tune_grid("lfssd"))
def lfssd(state: ModelState, data: UnlearnData, key: jax.Array, config: LfssdConfig, hparams, *,
          mask=None) -> tuple[ModelState, dict]:
  """Label-free SSD: :func:`ssd` with :func:`~jaxunlearn.unlearn.importance.output_sensitivity` as the
  importance. The labels ``data.y`` are never read.

  Returns:
    ``(state, metrics)`` as :func:`ssd`.
  """
  imp_fn = lambda idx: importance.output_sensitivity(state, data, idx, form=config.output_importance,  # noqa: E731
                                                     chunk_size=config.chunk_size)
  return _ssd_run(state, data, key, config, hparams, imp_fn, mask)
