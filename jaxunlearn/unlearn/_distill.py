"""Distillation distances shared by SCRUB and Bad Teacher (temperature-scaled KL between logits)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def distill_kl(student_logits: jax.Array, teacher_logits: jax.Array, temperature=1.0) -> jax.Array:
  """Per-example ``KL(softmax(teacher / T) || softmax(student / T))``, ``[B]`` from logits ``[B, C]``.

  Computed from log-softmaxes (stable); no ``T^2`` factor. ``temperature`` may be traced.
  """
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(t) * (t - s), axis=-1)


def scrub_distance(student_logits: jax.Array, teacher_logits: jax.Array, temperature) -> jax.Array:
  """SCRUB's distance ``T^2 * KL(teacher || student)`` at temperature ``T``, averaged over the batch.

  Args:
    student_logits: ``[B, C]``.
    teacher_logits: ``[B, C]`` (treated as constants by the caller).
    temperature: ``T`` (may be traced).

  Returns:
    A scalar.
  """
  return temperature ** 2 * jnp.mean(distill_kl(student_logits, teacher_logits, temperature))
