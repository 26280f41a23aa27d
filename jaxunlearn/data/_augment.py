"""On-device augmentation, used inside jitted training steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def crop_pad(h: int) -> int:
  """The default crop padding of ``h``-pixel images: ``max(1, round(h / 8))`` (4 for 32x32 as in the
  CIFAR recipes, 1 for 8x8 digits, which a 4-pixel shift would push half out of the frame)."""
  return max(1, round(h / 8))


def random_crop_flip(key: jax.Array, x: jax.Array, *, pad: int | None = None, flip: bool = True) -> jax.Array:
  """Random crop after ``pad``-pixel zero padding, and random horizontal flip, per example.

  Args:
    key: a PRNG key.
    x: ``[B, H, W, C]`` images (any dtype).
    pad: padding in pixels (0 disables cropping); default :func:`crop_pad` of the height (was a fixed
      4 pixels: the same for 32x32 images).
    flip: whether to flip half of the images horizontally.

  Returns:
    ``[B, H, W, C]`` augmented images, same dtype.
  """
  b, h, w, _ = x.shape
  pad = crop_pad(h) if pad is None else pad
  k_crop, k_flip = jax.random.split(key)
  if pad > 0:
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offs = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
    x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))(xp, offs)
  if flip:
    do = jax.random.bernoulli(k_flip, 0.5, (b,))
    x = jnp.where(do[:, None, None, None], x[:, :, ::-1, :], x)
  return x
