"""Baselines that only train: ``retrain`` (the oracle) and ``finetune`` (retain set only)."""

from __future__ import annotations

import dataclasses

import jax

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_bool
from jaxunlearn.train import check_real
from jaxunlearn.train import hparam
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._base import ce_loss
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._base import drive
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._registry import register


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """Finetune on the retain set: 10 epochs of SGD at lr 0.01 (our defaults add momentum 0.9, weight
  decay 5e-4 and a cosine schedule; preset ``scrub`` is the SCRUB notebooks' large-scale plain
  constant-lr SGD, ``scrub_small`` their small-scale variant (the same SGD plus ``anchor`` 0.05 -- the
  notebooks' ``0.5 * weight_decay * ||w - w_orig||^2`` with weight decay 0.1 -- and the model in eval
  mode), ``challenge`` the NeurIPS-2023 starting kit's 1 epoch at lr 1e-3).

  Attributes:
    anchor: coefficient of a pull ``anchor * ||w - w_original||^2`` to the original weights
      (hyperparameter; 0: none).
    train_mode: the model in train mode (BatchNorm on batch statistics, updated); False: eval mode, as
      the SCRUB small-scale notebooks run their baselines.
  """

  epochs: int = 10
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  augment: bool = False
  anchor: float = hparam(0.0)
  train_mode: bool = True

  def __post_init__(self):
    check_loop_fields(self)
    check_real(self, "anchor", lo=0.0)
    check_bool(self, "train_mode")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
  """Train from scratch on the retain set (the oracle); defaults should match the original's."""

  epochs: int = 30
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  augment: bool = False

  def __post_init__(self):
    check_loop_fields(self)


def train_on(state: ModelState, data: UnlearnData, index: jax.Array, key: jax.Array, cfg, hparams, *,
             mask=None, params=None, batch_stats=None, loss_fn=None, grad_scale=None) -> tuple[ModelState, dict]:
  """Supervised training on ``data.x[index]`` starting from ``params`` (default: ``state``'s), gradients
  multiplied by ``grad_scale`` before the optimizer where given (:func:`~jaxunlearn.unlearn._base.drive`).

  Returns ``(state, {"loss": [epochs], "acc": [epochs]})``.
  """
  spe = steps_per_epoch(index.shape[0], cfg.batch_size)
  loss_fn = loss_fn or ce_loss(state.model, data, cfg.augment)
  plan = lambda k, e: epoch_batches(k, index, cfg.batch_size).map(lambda i: {"idx": i})  # noqa: E731
  new, hist = drive(state, key, cfg, hparams, loss_fn, plan, spe, mask=mask, params=params,
                    batch_stats=batch_stats, grad_scale=grad_scale)
  return new, {"loss": hist["loss"], "acc": hist["acc"]}


@register("finetune", FinetuneConfig, presets={
    "challenge": dict(epochs=1, lr=1e-3, weight_decay=5e-4),
    # the SCRUB repository's notebooks: plain SGD, constant lr 0.01, 10 epochs
    "scrub": dict(epochs=10, lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant", batch_size=128),
    # their small-scale notebooks: the same SGD, a pull to the original weights, the model in eval mode
    "scrub_small": dict(epochs=10, lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant", batch_size=128,
                        anchor=0.05, train_mode=False),
})
def finetune(state: ModelState, data: UnlearnData, key: jax.Array, config: FinetuneConfig, hparams, *,
             mask=None) -> tuple[ModelState, dict]:
  """Continues training on the retain set only (catastrophic forgetting of the forget set).

  Returns:
    ``(unlearned state, {"loss": [epochs], "acc": [epochs]})``.
  """
  loss_fn = ce_loss(state.model, data, config.augment, train=config.train_mode,
                    anchor=(hparams["anchor"], state.params))
  return train_on(state, data, data.retain, key, config, hparams, mask=mask, loss_fn=loss_fn)


@register("retrain", RetrainConfig, supports_mask=False)
def retrain(state: ModelState, data: UnlearnData, key: jax.Array, config: RetrainConfig, hparams, *,
            mask=None) -> tuple[ModelState, dict]:
  """The oracle: a fresh initialisation (``fold_in(key, 0)``) trained on the retain set only."""
  del mask
  params, stats = state.model.init(jax.random.fold_in(key, 0))
  return train_on(state, data, data.retain, jax.random.fold_in(key, 1), config, hparams, params=params,
                  batch_stats=stats)
