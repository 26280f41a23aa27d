"""Batched evaluation: logits, per-example losses and accuracy."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.models import Model
from jaxunlearn.train._step import cross_entropy


@functools.partial(jax.jit, static_argnames=("model", "batch_size", "train"))
def _predict(model: Model, params, batch_stats, x, batch_size: int, train: bool = False):
  n = x.shape[0]
  nb = -(-n // batch_size)
  pad = nb * batch_size - n
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  xb = xp.reshape(nb, batch_size, *x.shape[1:])
  logits = jax.lax.map(lambda b: model.apply(params, batch_stats, b, train=train)[0], xb)
  return logits.reshape(nb * batch_size, -1)[:n]


def predict(model: Model, params, batch_stats, x, *, batch_size: int = 1024) -> jax.Array:
  """Eval-mode logits ``float32 [N, num_classes]`` for images ``x [N, H, W, C]``, in batches."""
  x = jnp.asarray(x)
  if x.shape[0] == 0:
    return jnp.zeros((0, model.num_classes), jnp.float32)
  return _predict(model, params, batch_stats, x, min(batch_size, x.shape[0]))


def evaluate(model: Model, params, batch_stats, x, y, *, batch_size: int = 1024) -> dict:
  """Accuracy and losses on ``(x [N, ...], y [N])``.

  Returns:
    ``{"acc": float, "loss": float, "losses": np.ndarray [N], "logits": np.ndarray [N, C]}``.
  """
  logits = predict(model, params, batch_stats, x, batch_size=batch_size)
  y = jnp.asarray(y)
  losses = cross_entropy(logits, y)
  correct = jnp.argmax(logits, -1) == y
  n = max(1, y.shape[0])
  return {"acc": float(jnp.sum(correct)) / n, "loss": float(jnp.sum(losses)) / n,
          "losses": np.asarray(losses), "logits": np.asarray(logits)}
