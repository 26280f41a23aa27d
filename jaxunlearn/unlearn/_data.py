"""The data an unlearning method sees (:class:`UnlearnData`, validated on the host) and the host check
of a model's weights."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.data import validate_split
from jaxunlearn.train import ModelState


@flax.struct.dataclass
class UnlearnData:
  """The training data an unlearning method sees, on device.

  Attributes:
    x: ``[N, H, W, C]`` train images (uint8 or float in [0, 1]).
    y: ``int32 [N]`` labels the original model was trained on.
    retain: ``int32 [R]`` indices of the retain set.
    forget: ``int32 [F]`` indices of the forget set.
    x_val: ``[V, H, W, C]`` forget-validation images (held out, same distribution as the forget set;
      used by SCRUB+Rewind) or ``None``.
    y_val: ``int32 [V]`` or ``None``.
    num_classes: number of classes (static).
    init_key: the PRNG key the original model was initialised from (``model.init(init_key)`` gives its
      initial weights), or ``None``; EU-k's ``reset="saved"`` needs it.
  """

  x: jax.Array
  y: jax.Array
  retain: jax.Array
  forget: jax.Array
  x_val: Any = None
  y_val: Any = None
  num_classes: int = flax.struct.field(pytree_node=False, default=0)
  init_key: Any = None

  @classmethod
  def create(cls, x, y, retain, forget, *, num_classes: int, x_val=None, y_val=None, init_key=None) -> "UnlearnData":
    """Validates (before anything is compiled) and moves the arrays to the device."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4:
      raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
      raise TypeError(f"images must be uint8 or float, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
      raise ValueError("images contain NaN or inf")
    if y.shape != (x.shape[0],):
      raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(f"labels out of range [0, {num_classes}): min {y.min()}, max {y.max()}")
    validate_split(retain, forget, x.shape[0])
    if (x_val is None) != (y_val is None):
      raise ValueError("give both x_val and y_val or neither")
    if x_val is not None:
      xv, yv = np.asarray(x_val), np.asarray(y_val)
      if xv.ndim != 4 or xv.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_val must be [V, {', '.join(map(str, x.shape[1:]))}], got shape {xv.shape}")
      if yv.shape != (xv.shape[0],):
        raise ValueError(f"y_val must have shape ({xv.shape[0]},), got {yv.shape}")
      if yv.size and (yv.min() < 0 or yv.max() >= num_classes):
        raise ValueError(f"y_val out of range [0, {num_classes}): min {yv.min()}, max {yv.max()}")
    val = {} if x_val is None else {"x_val": jnp.asarray(x_val), "y_val": jnp.asarray(y_val, jnp.int32)}
    if init_key is not None and not (isinstance(init_key, jax.Array)
                                     and jax.dtypes.issubdtype(init_key.dtype, jax.dtypes.prng_key)):
      raise TypeError(f"init_key must be a typed PRNG key (jax.random.key), got {type(init_key).__name__}")
    return cls(jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(retain, jnp.int32),
               jnp.asarray(forget, jnp.int32), num_classes=int(num_classes), init_key=init_key, **val)


def check_finite_params(state: ModelState) -> None:
  """Raises ValueError if a parameter holds NaN or inf (host check before compiling)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    a = np.asarray(leaf)
    if not np.isfinite(a).all():
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} contains NaN or inf")
