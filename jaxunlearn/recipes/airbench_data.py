"""Data-side pieces of the airbench recipe: patch-whitening filters and the translate / alternating-flip augmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxunlearn.models import Model

FLIP_MODES = ("alternate", "random", "none")


# ---------------------------------------------------------------------------------------------
# Whitening
# ---------------------------------------------------------------------------------------------

def _patches(x: jax.Array, k: int) -> jax.Array:
  """All ``k x k`` patches (stride 1, no padding) ``[B, H-k+1, W-k+1, k*k*C]`` in (i, j, c) order."""
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  cols = [x[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)]
  return jnp.concatenate(cols, axis=-1)


def whitening_params(x_uint8, model: Model | None = None, *, eps: float = 5e-4, kernel_size: int = 2,
                     chunk: int = 256, mean=None, std=None) -> dict:
  """The frozen first layer: a patch-whitening convolution computed from images.

  With ``C`` the covariance of the (normalised) ``k x k x C`` patches of ``x`` and ``C = U diag(l) U^T``,
  the filters are the columns of ``W = U diag(1 / sqrt(l + eps))`` (largest eigenvalue first)
  followed by ``-W``, so ``W^T C W = diag(l / (l + eps)) ~ I``: the first ``k*k*C`` outputs are
  whitened patches. The bias ``-mu^T [W, -W]`` centres them (``mu``: mean patch). Pure and
  jittable (the covariance is accumulated over chunks of ``chunk`` images).

  Args:
    x_uint8: images ``[N, H, W, C]`` (uint8, or float in [0, 1]).
    model: normalise with this model's ``mean`` / ``std`` (as ``Model.apply`` does).
    eps: eigenvalue regulariser.
    kernel_size: ``k``.
    chunk: images per accumulation step.
    mean, std: normalisation when no model is given (default: none, ``x / 255``).

  Returns:
    ``{"kernel": float32 [k, k, C, 2 k^2 C], "bias": float32 [2 k^2 C]}`` (Flax layout).
  """
  x = jnp.asarray(x_uint8)
  if x.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
  n, c = x.shape[0], x.shape[-1]
  k = int(kernel_size)
  if n < 1 or x.shape[1] < k or x.shape[2] < k:
    raise ValueError(f"need at least one image of at least {k}x{k} pixels, got shape {x.shape}")
  if model is not None:
    norm = model.normalize
  else:
    m0 = jnp.zeros((c,), jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
    s0 = jnp.ones((c,), jnp.float32) if std is None else jnp.asarray(std, jnp.float32)

    def norm(b):
      b = b.astype(jnp.float32) / 255.0 if b.dtype == jnp.uint8 else b.astype(jnp.float32)
      return (b - m0) / s0

  d = k * k * c
  cs = max(1, min(int(chunk), n))
  nb = -(-n // cs)
  pad = nb * cs - n
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  valid = (jnp.arange(nb * cs) < n).reshape(nb, cs).astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST

  def body(acc, inp):
    xb, vb = inp
    p = _patches(norm(xb), k)                              # [cs, h, w, d]
    p = p * vb[:, None, None, None]
    p = p.reshape(-1, d)
    return (acc[0] + p.sum(0), acc[1] + jnp.dot(p.T, p, precision=hi)), None

  init = (jnp.zeros((d,), jnp.float32), jnp.zeros((d, d), jnp.float32))
  (s1, s2), _ = jax.lax.scan(body, init, (xp.reshape(nb, cs, *x.shape[1:]), valid))
  count = n * (x.shape[1] - k + 1) * (x.shape[2] - k + 1)
  mu = s1 / count
  cov = (s2 - count * jnp.outer(mu, mu)) / max(1, count - 1)
  cov = 0.5 * (cov + cov.T)
  evals, evecs = jnp.linalg.eigh(cov)
  evals, evecs = evals[::-1], evecs[:, ::-1]
  w = evecs / jnp.sqrt(jnp.maximum(evals, 0.0) + eps)[None, :]
  w = jnp.concatenate([w, -w], axis=1)                      # [d, 2d]
  return {"kernel": w.reshape(k, k, c, 2 * d), "bias": -jnp.dot(mu, w, precision=hi)}


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

def alternating_flips(start: jax.Array, epoch) -> jax.Array:
  """Alternating flip: example i is flipped in epoch e iff ``start[i] XOR (e odd)``.

  ``start`` (bool, one per training example, drawn once per run) is the flip of epoch 0; every
  later epoch flips exactly the examples the previous epoch did not.
  """
  return jnp.logical_xor(start, (jnp.asarray(epoch) % 2) == 1)


def epoch_plan(epoch_key: jax.Array, start: jax.Array, epoch, batch_size: int, num_steps: int
               ) -> tuple[jax.Array, jax.Array]:
  """The batches of one epoch and their alternating-flip bits.

  Args:
    epoch_key: the epoch's key (a permutation of the K training positions is drawn from it).
    start: ``bool [K]`` flip bits of epoch 0 (one per position in the model's index set).
    epoch: the epoch number.
    batch_size, num_steps: static; ``num_steps * batch_size <= K``.

  Returns:
    ``(positions int32 [num_steps, batch_size], flips bool [num_steps, batch_size])``: positions in
    the index set, and whether each is flipped (:func:`alternating_flips`).
  """
  k = start.shape[0]
  pos = jax.random.permutation(epoch_key, k)[: num_steps * batch_size].reshape(num_steps, batch_size)
  return pos, alternating_flips(start, epoch)[pos]


def translate(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
  """Random translation by up to ``pad`` pixels per axis (reflection padding), per example."""
  if pad <= 0:
    return x
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  offs = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
  return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(xp, offs)


def flip_where(x: jax.Array, flip: jax.Array) -> jax.Array:
  """Images ``x [B, H, W, C]`` mirrored (horizontal flip) where ``flip [B]`` is True."""
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
