"""Batched evaluation: one chunked map over a leading axis, logits, per-example losses and accuracy."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.models import Model
from jaxunlearn.train._step import cross_entropy


def map_batches(fn: Callable, xs, batch_size: int):
  """``fn`` applied to chunks of ``batch_size`` along the leading axis of ``xs`` (a pytree), traceable.

  The last chunk is padded (with zeros) to a full batch; outputs are cut back to the ``N`` real rows.
  ``fn(chunk) -> pytree`` whose leaves have a leading ``[batch_size]`` axis. This is the one
  "pad, reshape, ``lax.map``, slice" evaluator of the package (predictions, error rates, features).

  Returns:
    ``fn``'s outputs for all ``N`` rows (leading axis ``N``).
  """
  n = jax.tree.leaves(xs)[0].shape[0]
  bs = max(1, min(batch_size, n))
  nb = -(-n // bs)
  pad = nb * bs - n

  def prep(a):
    a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
    return a.reshape(nb, bs, *a.shape[1:])

  out = jax.lax.map(fn, jax.tree.map(prep, xs))
  return jax.tree.map(lambda o: o.reshape(nb * bs, *o.shape[2:])[:n], out)


# Matmuls and convolutions whose outputs are scored (accuracy, LiRA, forget quality) run in full float32:
# a TPU's default float32 matmul is one bfloat16 pass and GPUs may use TF32 (10-bit mantissa), which would
# make the scores depend on the accelerator. Training keeps the backend's default (speed).
SCORING_PRECISION = "highest"


@functools.partial(jax.jit, static_argnames=("model", "batch_size", "train"))
def _predict(model: Model, params, batch_stats, x, batch_size: int, train: bool = False):
  with jax.default_matmul_precision(SCORING_PRECISION):
    return map_batches(lambda b: model.apply(params, batch_stats, b, train=train)[0], x, batch_size)


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
