"""Pure, jittable training steps and whole runs as ``lax.scan``."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.data import random_crop_flip
from jaxunlearn.models import Model
from jaxunlearn.train._config import TrainConfig
from jaxunlearn.train._config import make_optimizer
from jaxunlearn.train._config import steps_per_epoch
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
  """Mean cross-entropy of the model in train mode on ``batch = (x, y)``."""

  def loss_fn(params, batch_stats, batch, key):
    x, y = batch
    if augment:
      x = random_crop_flip(key, x)
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


def epoch_batches(key: jax.Array, index: jax.Array, batch_size: int) -> jax.Array:
  """A random permutation of ``index`` ([N]) cut into ``[steps, batch]`` (last partial batch dropped)."""
  n = index.shape[0]
  bs = max(1, min(batch_size, n))
  spe = steps_per_epoch(n, bs)
  perm = jax.random.permutation(key, index)
  return perm[: spe * bs].reshape(spe, bs)


def make_epoch(step, batch_size: int):
  """``epoch(state, x, y, index, key, epoch) -> (state, metrics[steps])``: one pass over ``index``.

  Batches are gathered on device from the full arrays ``x``/``y`` by the indices in ``index``;
  the permutation key is ``fold_in(key, epoch)`` and step i's key ``fold_in(that, i)``.
  """

  def epoch_fn(state, x, y, index, key, epoch):
    ekey = jax.random.fold_in(key, epoch)
    batches = epoch_batches(ekey, index, batch_size)

    def body(st, inp):
      i, idx = inp
      return step(st, (x[idx], y[idx]), jax.random.fold_in(ekey, i + 1))

    return jax.lax.scan(body, state, (jnp.arange(batches.shape[0]), batches))

  return epoch_fn


def make_fit(model: Model, cfg: TrainConfig, num_examples: int, *, tx=None, loss_fn: LossFn | None = None):
  """A pure whole-run function, nested ``lax.scan`` over epochs and steps.

  Args:
    model: the network.
    cfg: training configuration.
    num_examples: size of the index set each run trains on (static).
    tx: optimizer (default: ``make_optimizer(cfg, ...)``).
    loss_fn: override of the supervised loss.

  Returns:
    ``(init, fit)``: ``init(params, batch_stats) -> TrainState`` and
    ``fit(state, x, y, index, key) -> (state, metrics)`` where ``index`` is ``int32 [num_examples]``
    and metrics hold ``loss``/``acc`` per epoch (mean over steps). ``jax.vmap(fit)`` trains many models.
  """
  spe = steps_per_epoch(num_examples, cfg.batch_size)
  tx = tx if tx is not None else make_optimizer(cfg, spe)
  loss_fn = loss_fn or supervised_loss(model, augment=cfg.augment, label_smoothing=cfg.label_smoothing)
  epoch_fn = make_epoch(make_step(loss_fn, tx), cfg.batch_size)

  def init(params, batch_stats):
    return TrainState.create(params, batch_stats, tx)

  def fit(state, x, y, index, key):
    def body(st, e):
      st, m = epoch_fn(st, x, y, index, key, e)
      return st, jax.tree.map(jnp.mean, m)
    return jax.lax.scan(body, state, jnp.arange(cfg.epochs))

  fit.epoch_fn = epoch_fn  # for drivers that loop over epochs in Python (progress bars)
  fit.tx = tx
  return init, fit
