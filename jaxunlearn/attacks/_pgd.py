"""Projected gradient ascent (PGD; Madry et al. 2018) on inputs or features, L-inf or L2."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

NORMS = ("linf", "l2")


def _per_example_norm(v: jax.Array) -> jax.Array:
  """L2 norm of each example (leading axis), shaped to broadcast against ``v``."""
  n = jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))
  return n.reshape((-1,) + (1,) * (v.ndim - 1))


def _project(delta: jax.Array, eps, norm: str) -> jax.Array:
  if norm == "linf":
    return optax.projections.projection_linf_ball(delta, eps)
  return jax.vmap(lambda d: optax.projections.projection_l2_ball(d, eps))(delta)


def _clip(x, clip_min, clip_max):
  if clip_min is not None:
    x = jnp.maximum(x, jnp.asarray(clip_min, x.dtype))
  if clip_max is not None:
    x = jnp.minimum(x, jnp.asarray(clip_max, x.dtype))
  return x


@functools.partial(jax.jit, static_argnames=("loss_fn", "steps", "norm", "random_start"))
def pgd(loss_fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array | None = None, *,
        eps, step_size, steps: int, norm: str = "linf", clip_min=None, clip_max=None,
        random_start: bool = False) -> jax.Array:
  """Projected gradient ASCENT of ``loss_fn`` in the ``eps``-ball around ``x``.

  Each of the ``steps`` iterations (a ``lax.fori_loop``) takes

  * L-inf: ``x_adv + step_size * sign(grad)``;
  * L2: ``x_adv + step_size * grad / ||grad||`` with the norm taken per example (leading axis);

  then projects ``x_adv - x`` onto the ball with :mod:`optax.projections`
  (``projection_linf_ball`` on the whole delta, ``projection_l2_ball`` per example via ``vmap``)
  and clamps ``x_adv`` into ``[clip_min, clip_max]``.

  Pure and jittable (``loss_fn``, ``steps``, ``norm`` and ``random_start`` are static; pass a
  function defined once, e.g. with ``functools.partial``, to avoid recompiling, or call ``pgd``
  inside your own jitted function, where a closure is fine).

  Args:
    loss_fn: ``x_adv [B, ...] -> loss``: a scalar, or per-example losses ``[B]`` (summed).
    x: clean inputs or features ``float [B, ...]`` (integer inputs are cast to float32).
    key: PRNG key; needed only for ``random_start``.
    eps: radius of the ball (scalar).
    step_size: ascent step (scalar).
    steps: number of iterations (static).
    norm: ``"linf"`` or ``"l2"``.
    clip_min, clip_max: ``None``, scalars, or arrays broadcastable to ``x`` (e.g. per-feature
      ``[D]`` bounds), the valid range of the inputs.
    random_start: start from a uniform point of the L-inf ball, or (L2) a random direction scaled
      to a radius ``eps * u`` with ``u ~ U(0, 1)``, instead of ``x``.

  Returns:
    ``x_adv`` with ``x``'s shape (float), inside the ball and the clip range; no gradient flows back
    to ``x`` through it.
  """
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
  if not (isinstance(steps, int) and steps >= 0):
    raise ValueError(f"steps must be a non-negative int, got {steps!r}")
  if random_start and key is None:
    raise ValueError("random_start needs a PRNG key")
  x = jax.lax.stop_gradient(x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32))
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(step_size, x.dtype)

  def total_loss(z):
    out = loss_fn(z)
    return jnp.sum(out)

  if random_start:
    if norm == "linf":
      delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    else:
      k1, k2 = jax.random.split(key)
      d = jax.random.normal(k1, x.shape, x.dtype)
      d = d / jnp.maximum(_per_example_norm(d), 1e-12)
      u = jax.random.uniform(k2, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
      delta = d * eps * u
    x_adv = _clip(x + _project(delta, eps, norm), clip_min, clip_max)
  else:
    x_adv = x

  def body(_, z):
    g = jax.grad(total_loss)(z)
    if norm == "linf":
      z = z + step_size * jnp.sign(g)
    else:
      z = z + step_size * g / jnp.maximum(_per_example_norm(g), 1e-12)
    z = x + _project(z - x, eps, norm)
    return _clip(z, clip_min, clip_max)

  x_adv = jax.lax.fori_loop(0, steps, body, x_adv)
  return jax.lax.stop_gradient(x_adv)
