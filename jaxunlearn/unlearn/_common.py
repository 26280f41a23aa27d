"""What every unlearning method shares: the data bundle, configs, masks and the method registry."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.data import validate_split
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainConfig


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
  """

  x: jax.Array
  y: jax.Array
  retain: jax.Array
  forget: jax.Array
  x_val: Any = None
  y_val: Any = None
  num_classes: int = flax.struct.field(pytree_node=False, default=0)

  @classmethod
  def create(cls, x, y, retain, forget, *, num_classes: int, x_val=None, y_val=None) -> "UnlearnData":
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
    return cls(jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(retain, jnp.int32),
               jnp.asarray(forget, jnp.int32), num_classes=int(num_classes), **val)


def optimizer_config(cfg, **extra) -> TrainConfig:
  """A TrainConfig from a method config's optimizer fields (epochs, batch_size, lr, ...)."""
  names = {f.name for f in dataclasses.fields(TrainConfig)}
  kw = {k: getattr(cfg, k) for k in names if hasattr(cfg, k)}
  kw.update(extra)
  return TrainConfig(**kw)


def apply_mask(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """Restricts ``tx`` to the masked entries: updates are multiplied by ``mask`` (a params-shaped
  pytree of 0/1 arrays, or of bools per leaf), so unmasked parameters stay bit-identical.

  Leaves whose mask is a Python/numpy bool are frozen whole with ``optax.transforms.freeze``;
  array masks are applied elementwise after the optimizer (momentum and weight decay included).
  """
  if mask is None:
    return tx
  leaves = jax.tree.leaves(mask)
  if all(isinstance(m, (bool, np.bool_)) for m in leaves):
    frozen = jax.tree.map(lambda m: not m, mask)
    return optax.chain(tx, optax.transforms.freeze(frozen))

  def zero_unmasked(updates, params=None):
    del params
    # a select, not a product: inf/NaN updates (gradient ascent) must not leak into frozen entries
    return jax.tree.map(lambda u, m: jnp.where(jnp.asarray(m) > 0, u, jnp.zeros_like(u)), updates, mask)

  return optax.chain(tx, optax.stateless(zero_unmasked))


def check_finite_params(state: ModelState) -> None:
  """Raises ValueError if a parameter holds NaN or inf (host check before compiling)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    a = np.asarray(leaf)
    if not np.isfinite(a).all():
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} contains NaN or inf")


# ---------------------------------------------------------------------------------------------
# Method registry
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Method:
  """A registered unlearning method: ``fn(state, data, key, config, *, mask=None) -> (state, metrics)``."""

  name: str
  fn: Callable
  config_cls: type
  presets: dict = dataclasses.field(default_factory=dict)
  supports_mask: bool = True


METHODS: dict[str, Method] = {}


def validate_config(config, config_cls: type | None = None) -> None:
  """Checks a method config's values (one-line ValueError/TypeError naming the field).

  Runs in Python (also at trace time inside ``jax.jit``, where configs are static), so bad values
  fail before anything is compiled.
  """
  if config_cls is not None and not isinstance(config, config_cls):
    raise TypeError(f"config must be a {config_cls.__name__}, got {type(config).__name__}")
  cls = type(config).__name__
  for f in dataclasses.fields(config):
    v = getattr(config, f.name)
    what = f"{cls}.{f.name}={v!r}"
    if isinstance(v, bool) or v is None or isinstance(v, str):
      continue
    if isinstance(v, tuple):
      if not all(isinstance(e, (int, np.integer)) and e >= 0 for e in v):
        raise ValueError(f"{what}: expected non-negative integers")
      continue
    if not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
      raise ValueError(f"{what}: expected a finite number")
    if "fraction" in f.name and not 0.0 < v <= 1.0:
      raise ValueError(f"{what}: must lie in (0, 1]")
    if (f.name == "k" or "batch" in f.name) and not (float(v).is_integer() and v >= 1):
      raise ValueError(f"{what}: must be an integer >= 1")
    if ("epochs" in f.name or "steps" in f.name) and not (float(v).is_integer() and v >= 0):
      raise ValueError(f"{what}: must be an integer >= 0")
    if v < 0:
      raise ValueError(f"{what}: must be >= 0")
  if any(f.name == "optimizer" for f in dataclasses.fields(config)):
    try:
      optimizer_config(config)  # optimizer / schedule names and the shared numeric checks
    except ValueError as e:
      raise ValueError(f"{cls}: {e}") from None


def check_mask(mask, params) -> None:
  """A localisation mask must have the parameters' tree structure (leaves: arrays broadcastable to
  the parameter, or Python bools)."""
  if jax.tree.structure(mask) != jax.tree.structure(params):
    missing = sorted({jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
                     - {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(mask)})
    raise ValueError(f"mask does not match the parameters' structure (e.g. missing {missing[:3]})")
  for (path, m), p in zip(jax.tree_util.tree_leaves_with_path(mask), jax.tree.leaves(params)):
    shape = np.shape(m)
    if shape and shape != tuple(p.shape):
      raise ValueError(f"mask{jax.tree_util.keystr(path)} has shape {shape}, parameter has {tuple(p.shape)}")


def register(name: str, config_cls: type, *, presets: dict | None = None, supports_mask: bool = True):
  """Decorator adding a method to :data:`METHODS` under its CLI name.

  The registered (and returned) function validates ``config`` and ``mask`` first, in Python, so
  bad values give one clear error before anything is traced further or compiled.
  """

  def deco(fn):
    @functools.wraps(fn)
    def method(state, data, key, config=None, *, mask=None):
      config = config_cls() if config is None else config
      validate_config(config, config_cls)
      if mask is not None:
        check_mask(mask, state.params)
      return fn(state, data, key, config, mask=mask)

    METHODS[name] = Method(name, method, config_cls, dict(presets or {}), supports_mask)
    return method

  return deco


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
  return METHODS[name]


def _coerce(value: str, typ, what: str):
  origin = typing.get_origin(typ)
  if typ is bool or typ == "bool":
    if value.lower() in ("1", "true", "yes", "on"):
      return True
    if value.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"{what}={value!r}: expected true/false")
  if origin is tuple or typ in ("tuple[int, ...]",):
    return tuple(int(v) for v in value.strip("()[] ").split(",") if v.strip())
  for t in (int, float, str):
    if typ is t or typ == t.__name__:
      try:
        return t(value)
      except ValueError:
        raise ValueError(f"{what}={value!r}: expected {t.__name__}") from None
  return value


def make_config(name: str, overrides: dict[str, str] | None = None, *, preset: str | None = None):
  """The config of method ``name``: its defaults (or a named preset) with string overrides applied.

  Args:
    name: method name.
    overrides: ``{"alpha": "0.5"}``, as given on the command line with ``--set name.alpha=0.5``.
    preset: a named setting (e.g. SCRUB's ``small`` / ``large`` / ``privacy``).
  """
  m = get_method(name)
  cfg = m.config_cls()
  if preset is not None:
    if preset not in m.presets:
      raise ValueError(f"method {name!r} has no preset {preset!r}; presets: {', '.join(m.presets) or 'none'}")
    cfg = dataclasses.replace(cfg, **m.presets[preset])
  if overrides:
    hints = typing.get_type_hints(m.config_cls)
    fields = {f.name for f in dataclasses.fields(m.config_cls)}
    kw = {}
    for k, v in overrides.items():
      if k not in fields:
        raise ValueError(f"method {name!r} has no option {k!r}; options: {', '.join(sorted(fields))}")
      kw[k] = _coerce(str(v), hints.get(k, str), f"{name}.{k}")
    cfg = dataclasses.replace(cfg, **kw)
  validate_config(cfg, m.config_cls)
  return cfg
