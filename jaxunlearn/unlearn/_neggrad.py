"""Gradient-ascent baselines: NegGrad (ascent on the forget set) and NegGrad+ (descent on the retain
set minus ascent on the forget set)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_bool
from jaxunlearn.train import check_real
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import cycled_batches
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import hparam
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._base import anchor_penalty
from jaxunlearn.unlearn._base import ce_loss
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._base import drive
from jaxunlearn.unlearn._base import images
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._registry import register

_CONSTANT_SGD = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="constant")


@dataclasses.dataclass(frozen=True)
class NegGradConfig:
  """Gradient ascent on the forget set.

  These are our defaults (the SGD settings of the finetune baseline, constant rate, 5 epochs); the
  SCRUB and Unlearn-Sparse (Jia et al., NeurIPS 2023) code bases tune the learning rate and epochs per
  setting (gradient ascent diverges if run long with a large learning rate). Preset ``salun_paper``:
  SalUn's GA (lr 1e-4, batch 256).

  Attributes:
    epochs: passes over the forget set.
    batch_size: forget batch size.
    optim: optimizer (see ``OptimConfig``).
    augment: random crop + flip.
  """

  epochs: int = 5
  batch_size: int = 128
  optim: OptimConfig = _CONSTANT_SGD
  augment: bool = False

  def __post_init__(self):
    check_loop_fields(self)


@register("neggrad", NegGradConfig, presets={"salun_paper": dict(lr=1e-4, batch_size=256)})
def neggrad(state: ModelState, data: UnlearnData, key: jax.Array, config: NegGradConfig, hparams, *,
            mask=None) -> tuple[ModelState, dict]:
  """NegGrad: minimises ``-CE`` on forget batches (gradient ascent on the forget loss).

  Returns:
    ``(state, metrics)``: per-epoch ``loss`` (``-CE``), ``ce`` (forget CE before each step, train mode)
    and ``acc`` (forget batch accuracy), each ``[epochs]``.
  """
  spe = steps_per_epoch(data.forget.shape[0], config.batch_size)
  plan = lambda k, e: epoch_batches(k, data.forget, config.batch_size).map(lambda i: {"idx": i})  # noqa: E731
  return drive(state, key, config, hparams, ce_loss(state.model, data, config.augment, -1.0), plan, spe, mask=mask)


@dataclasses.dataclass(frozen=True)
class NegGradPlusConfig:
  """NegGrad+ (the SCRUB paper's stronger NegGrad): ``alpha * CE_retain - (1 - alpha) * CE_forget``.

  The defaults are ours (as :class:`NegGradConfig`). The SCRUB repository's notebooks use plain SGD
  (lr 0.01, no momentum, no weight decay) with ``alpha`` 0.95 for 10 epochs at small scale
  (retain / forget batches 128 / 64; there the loss adds ``0.5 * 0.1 * ||w - w_orig||^2`` and the
  model runs in eval mode: ``anchor`` 0.05, ``train_mode`` False), 0.9999 for 10 epochs at large
  scale (batches 128 / 32) and 0.9999 for 5 epochs in the privacy runs (batches 32 / 16): presets
  ``small``, ``large`` and ``privacy``.

  Attributes:
    epochs: passes over the retain set.
    alpha: weight of the retain loss; ``1 - alpha`` weighs the negated forget loss (hyperparameter).
    batch_size: retain batch size.
    forget_batch_size: forget batch size.
    optim: optimizer (see ``OptimConfig``).
    augment: random crop + flip.
    anchor: coefficient of a pull ``anchor * ||w - w_original||^2`` to the original weights
      (hyperparameter; 0: none).
    train_mode: the model in train mode (BatchNorm on batch statistics, updated); False: eval mode.
  """

  epochs: int = 5
  alpha: float = hparam(0.99)
  batch_size: int = 128
  forget_batch_size: int = 128
  optim: OptimConfig = _CONSTANT_SGD
  augment: bool = False
  anchor: float = hparam(0.0)
  train_mode: bool = True

  def __post_init__(self):
    check_loop_fields(self, "forget_batch_size")
    check_real(self, "alpha", lo=0.0, hi=1.0)
    check_real(self, "anchor", lo=0.0)
    check_bool(self, "train_mode")


_SCRUB_SGD = dict(optimizer="sgd", lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant")
NEGGRAD_PLUS_PRESETS = {
    "small": dict(_SCRUB_SGD, alpha=0.95, epochs=10, batch_size=128, forget_batch_size=64, anchor=0.05,
                  train_mode=False),
    "large": dict(_SCRUB_SGD, alpha=0.9999, epochs=10, batch_size=128, forget_batch_size=32),
    "privacy": dict(_SCRUB_SGD, alpha=0.9999, epochs=5, batch_size=32, forget_batch_size=16),
}


@register("neggrad_plus", NegGradPlusConfig, presets=NEGGRAD_PLUS_PRESETS)
def neggrad_plus(state: ModelState, data: UnlearnData, key: jax.Array, config: NegGradPlusConfig, hparams, *,
                 mask=None) -> tuple[ModelState, dict]:
  """NegGrad+: each step descends ``alpha * CE(retain batch) - (1 - alpha) * CE(forget batch)``.

  An epoch iterates over the retain batches (a permutation of the retain set); step ``i`` pairs retain
  batch ``i`` with forget batch ``i`` of :func:`~jaxunlearn.train.cycled_batches` over the forget set
  (fresh permutations, cycled as often as needed). The student runs in train mode on the retain batch,
  then on the forget batch (two forward passes; BatchNorm statistics updated by both, in that order).

  Returns:
    ``(state, metrics)``: per-epoch ``loss``, ``retain_ce``, ``forget_ce``, ``retain_acc``,
    ``forget_acc``, each ``[epochs]``.
  """
  model, alpha, aug, train = state.model, hparams["alpha"], config.augment, config.train_mode
  anchor = (hparams["anchor"], state.params)
  spe = steps_per_epoch(data.retain.shape[0], config.batch_size)

  def plan(k, e):
    kr, kf = jax.random.split(k)
    retain = epoch_batches(kr, data.retain, config.batch_size).map(lambda i: {"r": i})
    return retain.attach(f=cycled_batches(kf, data.forget, config.forget_batch_size, spe))

  def loss_fn(params, stats, row, key):
    kr, kf = jax.random.split(key)
    yr, yf = data.y[row["r"]], data.y[row["f"]]
    lr_, stats = model.apply(params, stats, images(data.x[row["r"]], kr, aug, model.flip_ok), train=train)
    lf_, stats = model.apply(params, stats, images(data.x[row["f"]], kf, aug, model.flip_ok), train=train)
    ce_r, ce_f = jnp.mean(cross_entropy(lr_, yr)), jnp.mean(cross_entropy(lf_, yf))
    loss = alpha * ce_r - (1.0 - alpha) * ce_f + anchor_penalty(params, anchor)
    return loss, (stats, {"loss": loss, "retain_ce": ce_r, "forget_ce": ce_f,
                          "retain_acc": jnp.mean(jnp.argmax(lr_, -1) == yr),
                          "forget_acc": jnp.mean(jnp.argmax(lf_, -1) == yf)})

  return drive(state, key, config, hparams, loss_fn, plan, spe, mask=mask)
