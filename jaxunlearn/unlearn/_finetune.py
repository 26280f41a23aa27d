"""Baselines that only train: ``retrain`` (the oracle) and ``finetune`` (retain set only)."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import make_fit
from jaxunlearn.train import make_optimizer
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._common import UnlearnData
from jaxunlearn.unlearn._common import apply_mask
from jaxunlearn.unlearn._common import optimizer_config
from jaxunlearn.unlearn._common import register


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """Finetune on the retain set: 10 epochs of SGD at lr 0.01 (our defaults add momentum 0.9, weight
  decay 5e-4 and a cosine schedule; preset ``scrub`` is the SCRUB notebooks' plain constant-lr SGD,
  preset ``challenge`` the NeurIPS-2023 starting kit's 1 epoch at lr 1e-3)."""

  epochs: int = 10
  batch_size: int = 128
  optimizer: str = "sgd"
  lr: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "cosine"
  augment: bool = False


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
  """Train from scratch on the retain set (the oracle); defaults should match the original's."""

  epochs: int = 30
  batch_size: int = 128
  optimizer: str = "sgd"
  lr: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "cosine"
  augment: bool = False


def train_on(state: ModelState, data: UnlearnData, index: jax.Array, key: jax.Array, cfg, *,
             mask=None, params=None, batch_stats=None) -> tuple[ModelState, dict]:
  """Supervised training on ``data.x[index]`` starting from ``params`` (default: ``state``'s)."""
  tcfg = optimizer_config(cfg)
  spe = steps_per_epoch(index.shape[0], tcfg.batch_size)
  tx = apply_mask(make_optimizer(tcfg, spe), mask)
  init, fit = make_fit(state.model, tcfg, index.shape[0], tx=tx)
  ts = init(state.params if params is None else params,
            state.batch_stats if batch_stats is None else batch_stats)
  ts, hist = fit(ts, data.x, data.y, index, key)
  return ModelState(ts.params, ts.batch_stats, state.model), {"loss": hist["loss"], "acc": hist["acc"]}


@register("finetune", FinetuneConfig, presets={
    "challenge": dict(epochs=1, lr=1e-3, weight_decay=5e-4),
    # the SCRUB repository's notebooks: plain SGD, constant lr 0.01, 10 epochs
    "scrub": dict(epochs=10, lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant", batch_size=128),
})
def finetune(state: ModelState, data: UnlearnData, key: jax.Array, config: FinetuneConfig = FinetuneConfig(),
             *, mask=None) -> tuple[ModelState, dict]:
  """Continues training on the retain set only (catastrophic forgetting of the forget set).

  Args:
    state: the original model.
    data: train arrays with retain/forget indices.
    key: PRNG key.
    config: optimizer settings.
    mask: optional params-shaped 0/1 pytree; only masked entries change.

  Returns:
    ``(unlearned state, {"loss": [epochs], "acc": [epochs]})``.
  """
  return train_on(state, data, data.retain, key, config, mask=mask)


@register("retrain", RetrainConfig, supports_mask=False)
def retrain(state: ModelState, data: UnlearnData, key: jax.Array, config: RetrainConfig = RetrainConfig(),
            *, mask=None) -> tuple[ModelState, dict]:
  """The oracle: a fresh initialisation (``fold_in(key, 0)``) trained on the retain set only."""
  if mask is not None:
    raise ValueError("retrain trains every parameter from scratch and takes no mask")
  params, stats = state.model.init(jax.random.fold_in(key, 0))
  return train_on(state, data, data.retain, jax.random.fold_in(key, 1), config, params=params,
                  batch_stats=stats)
