"""Pure, jittable training steps: the supervised loss and one optimizer step on it."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.data import random_crop_flip
from jaxunlearn.models import Model
from jaxunlearn.train._state import TrainState

Batch = tuple[jax.Array, jax.Array]
# loss_fn(params, batch_stats, batch, key) -> (loss, (new_batch_stats, metrics))
LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy ``[B]`` from logits ``[B, C]`` and int labels ``[B]``."""
  n = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, n, dtype=jnp.float32)
  if label_smoothing:
    onehot = optax.smooth_labels(onehot, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)


def supervised_loss(model: Model, *, augment: bool = False, label_smoothing: float = 0.0) -> LossFn:
  """Mean cross-entropy of the model in train mode on ``batch = (x, y)``; ``augment``: random crop,
  and horizontal flip when ``model.flip_ok`` (False for digits datasets)."""

  def loss_fn(params, batch_stats, batch, key):
    x, y = batch
    if augment:
      x = random_crop_flip(key, x, flip=model.flip_ok)
    logits, new_stats = model.apply(params, batch_stats, x, train=True)
    losses = cross_entropy(logits, y, label_smoothing)
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    return losses.mean(), (new_stats, {"loss": losses.mean(), "acc": acc})

  return loss_fn


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation):
  """A pure step ``(state, batch, key) -> (state, metrics)`` minimising ``loss_fn`` with ``tx``."""

  def step(state: TrainState, batch, key: jax.Array):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (new_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, new_stats, opt_state), metrics

  return step


def make_train_step(model: Model, tx: optax.GradientTransformation, *, augment: bool = False,
                    label_smoothing: float = 0.0):
  """``train_step(state, batch, key) -> (state, metrics)`` for supervised cross-entropy training.

  ``batch`` is ``(x [B, H, W, C], y [B])``; metrics are the batch's mean ``loss`` and ``acc``.
  """
  return make_step(supervised_loss(model, augment=augment, label_smoothing=label_smoothing), tx)
