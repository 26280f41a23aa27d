"""Shared pieces of the training-based methods: epochs/batch-size checks, a cross-entropy loss on
index rows, and the driver that runs a loss through the one training loop under a method's
optimizer, hyperparameters and mask."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jaxunlearn.data import random_crop_flip
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainState
from jaxunlearn.train import check_bool
from jaxunlearn.train import check_int
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import make_optimizer
from jaxunlearn.train import make_step
from jaxunlearn.train import run_epochs
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn.masks import apply_mask
from jaxunlearn.unlearn.masks import scale_gradients


def check_loop_fields(cfg, *batch_fields: str) -> None:
  """The checks every training-based config shares: ``epochs >= 0``, batch sizes ``>= 1``,
  ``augment`` a bool (where the config has one)."""
  check_int(cfg, "epochs", lo=0)
  for f in ("batch_size",) + batch_fields:
    check_int(cfg, f, lo=1)
  if hasattr(cfg, "augment"):
    check_bool(cfg, "augment")


def images(x: jax.Array, key: jax.Array, augment: bool, flip: bool = True) -> jax.Array:
  """``x``, randomly cropped (and flipped, when ``flip``: pass the model's ``flip_ok``) with ``key``
  when ``augment``."""
  return random_crop_flip(key, x, flip=flip) if augment else x


def ce_loss(model, data: UnlearnData, augment: bool, sign: float = 1.0, *, train: bool = True, anchor=None):
  """Mean cross-entropy (times ``sign``) on ``row = {"idx": [B]}`` or ``{"idx", "y"}``.

  ``train``: the model in train mode (BatchNorm batch statistics, updated) or eval mode (running
  statistics, unchanged). ``anchor = (coef, params0)`` adds ``coef * ||params - params0||^2`` (a pull
  to the original weights; :func:`anchor_penalty`).

  Returns ``loss_fn(params, batch_stats, row, key) -> (loss, (new_batch_stats, {"loss", "ce", "acc"}))``.
  """

  def loss_fn(params, stats, row, key):
    idx = row["idx"]
    y = row["y"] if "y" in row else data.y[idx]
    logits, new_stats = model.apply(params, stats, images(data.x[idx], key, augment, model.flip_ok), train=train)
    ce = jnp.mean(cross_entropy(logits, y))
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    loss = sign * ce + anchor_penalty(params, anchor)
    return loss, (new_stats, {"loss": loss, "ce": ce, "acc": acc})

  return loss_fn


def anchor_penalty(params, anchor):
  """``coef * sum ||params - params0||^2`` for ``anchor = (coef, params0)``; 0.0 for ``None``. With
  ``coef`` 0 the loss and its gradient are unchanged exactly (adding 0.0)."""
  if anchor is None:
    return 0.0
  coef, params0 = anchor
  sq = sum(jnp.sum(jnp.square(a - b)) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params0)))
  return coef * sq


def drive(state: ModelState, key: jax.Array, config, hparams: Mapping, loss_fn, plan, spe: int, *,
          mask=None, params=None, batch_stats=None, epochs: int | None = None,
          grad_scale=None) -> tuple[ModelState, dict]:
  """Runs ``epochs`` epochs of ``make_step(loss_fn, tx)`` over the rows that ``plan`` lays out.

  Args:
    state: supplies the model and (by default) the starting weights.
    key: PRNG key of the run (keys per :func:`jaxunlearn.train.run_epochs`).
    config: method config with ``optim`` and ``epochs``.
    hparams: the method's hyperparameters (traced ``lr``, ``momentum``, ``weight_decay``, ...).
    loss_fn: ``(params, batch_stats, row, key) -> (loss, (new_batch_stats, metrics))``.
    plan: ``(k_perm, epoch) -> rows``, a pytree whose leaves have a leading ``[spe]`` axis.
    spe: steps per epoch (static; sets the optimizer schedule).
    mask: optional params-shaped 0/1 pytree for :func:`~jaxunlearn.unlearn.apply_mask`.
    params, batch_stats: starting weights (default ``state``'s).
    epochs: number of epochs (default ``config.epochs``).
    grad_scale: optional params-shaped pytree multiplying the gradients before the optimizer
      (:func:`~jaxunlearn.unlearn.masks.scale_gradients`; MSG's small gradients).

  Returns:
    ``(state, metrics)`` with each metric averaged over the steps of an epoch, ``[epochs]``.
  """
  epochs = config.epochs if epochs is None else epochs
  tx = apply_mask(scale_gradients(make_optimizer(config.optim, spe, epochs, hparams=hparams), grad_scale), mask)
  ts0 = TrainState.create(state.params if params is None else params,
                          state.batch_stats if batch_stats is None else batch_stats, tx)
  ts, hist = run_epochs(make_step(loss_fn, tx), ts0, key, epochs, plan)
  return ModelState(ts.params, ts.batch_stats, state.model), hist
