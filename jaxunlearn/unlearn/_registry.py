"""The method registry and factory: ``make(name, config)`` returns a pure method whose continuous
hyperparameters are data (a pytree of float32 scalars that ``jax.vmap`` maps over).

A method is registered with :func:`register` on its implementation
``impl(state, data, key, config, hparams, *, mask) -> (state, metrics)``, where ``config`` is a frozen,
hashable dataclass of the DISCRETE settings (epochs, batch sizes, optimizer kind, ...) and ``hparams``
a dict of traced float32 scalars holding every CONTINUOUS one (the config's fields declared with
:func:`jaxunlearn.train.hparam`, its ``optim``'s ``lr``/``momentum``/``weight_decay``/... flattened in).
The config's own values of those fields are the defaults of :attr:`Method.hparams`.

    scrub = make("scrub", preset="large")
    state, metrics = jax.jit(scrub)(original, data, key)                  # one program
    grid = {"lr": jnp.array([1e-4, 5e-4, 1e-3])}
    many = jax.vmap(scrub, in_axes=(None, None, None, 0))(original, data, key, grid)   # 3 runs, one program
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxunlearn.train import as_hparams
from jaxunlearn.train import hparam_fields


@dataclasses.dataclass(frozen=True, eq=False)
class MethodSpec:
  """A registered method: its implementation, config class, named presets and mask support."""

  name: str
  impl: Callable
  config_cls: type
  presets: Mapping[str, Mapping[str, Any]]
  supports_mask: bool = True
  fn: Callable | None = None  # the module-level convenience function ``name(state, data, key, config=None, *, mask=None)``
  # ``tune_grid(config) -> ("name.option=VALUES", ...)``: the grid ``tune --tuned`` sweeps (None: 5 learning
  # rates around the config's, :func:`jaxunlearn.sweeps.default_grid`); methods without an optimizer need one
  tune_grid: Callable | None = None
  # ``check_model(model)``: raises ValueError (one line) when the method cannot run on ``model`` (a
  # ``jaxunlearn.models.Model``), e.g. CT on a model without convolutions; run / tune / the studies call it
  # (:func:`check_model`) before anything trains
  check_model: Callable | None = None


METHODS: dict[str, MethodSpec] = {}


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


class Method:
  """A configured unlearning method: a pure function of ``(state, data, key, hparams)``.

  Attributes:
    name: the registered name.
    config: the frozen config (discrete settings; also the hyperparameters' defaults).
    hparams: ``{name: float32 scalar}``, the continuous hyperparameters' defaults.
  """

  def __init__(self, spec: MethodSpec, config):
    if not isinstance(config, spec.config_cls):
      raise TypeError(f"config for {spec.name!r} must be a {spec.config_cls.__name__}, got {type(config).__name__}")
    self.spec = spec
    self.config = config
    self._defaults = hparam_fields(config)

  @property
  def name(self) -> str:
    return self.spec.name

  @property
  def supports_mask(self) -> bool:
    return self.spec.supports_mask

  @property
  def hparams(self) -> dict[str, jax.Array]:
    return as_hparams(self._defaults)

  def hparams_with(self, **values) -> dict[str, jax.Array]:
    """The default hyperparameters with some replaced (``method.hparams_with(lr=1e-3)``)."""
    self._check_names(values)
    return as_hparams({**self._defaults, **values})

  def _check_names(self, values: Mapping) -> None:
    unknown = sorted(set(values) - set(self._defaults))
    if unknown:
      raise ValueError(f"method {self.name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
                       f"hyperparameters: {', '.join(sorted(self._defaults)) or 'none'}")

  def __call__(self, state, data, key, hparams: Mapping | None = None, *, mask=None):
    """Runs the method: ``(state, metrics)``.

    Args:
      state: the original model (a ``ModelState``).
      data: an :class:`~jaxunlearn.unlearn.UnlearnData`.
      key: PRNG key.
      hparams: ``{name: scalar}`` for some or all of :attr:`hparams` (missing ones take the
        config's values); traced under ``jax.jit`` / ``jax.vmap``.
      mask: optional params-shaped 0/1 pytree restricting which entries change.
    """
    hp = dict(self._defaults)
    if hparams is not None:
      self._check_names(hparams)
      hp.update(hparams)
    if mask is not None:
      if not self.supports_mask:
        raise ValueError(f"{self.name} takes no mask")
      check_mask(mask, state.params)
    return self.spec.impl(state, data, key, self.config, as_hparams(hp), mask=mask)

  def __repr__(self) -> str:
    return f"Method({self.name!r}, {self.config!r})"

  def __eq__(self, other) -> bool:
    return isinstance(other, Method) and (self.name, self.config) == (other.name, other.config)

  def __hash__(self) -> int:
    return hash((self.name, self.config))


def trains(config) -> bool:
  """Whether a method configured by ``config`` runs a training loop (it has an optimizer, ``config.optim``);
  Fisher forgetting, SSD, LFSSD and influence do not."""
  return hasattr(config, "optim")


def get_method(name: str) -> MethodSpec:
  """The registered :class:`MethodSpec` of ``name`` (ValueError listing the names otherwise)."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
  return METHODS[name]


def make(name: str, config=None, *, preset: str | None = None, overrides: Mapping[str, str] | None = None) -> Method:
  """The :class:`Method` ``name`` with ``config`` (default: its defaults, or a named preset with string
  overrides applied, as :func:`make_config`)."""
  spec = get_method(name)
  if config is None:
    config = make_config(name, overrides, preset=preset)
  elif preset is not None or overrides:
    raise ValueError("give either a config or a preset/overrides, not both")
  return Method(spec, config)


def check_model(name: str, model) -> None:
  """Raises ValueError (one line) when method ``name`` refuses ``model`` (its ``check_model``, if any)."""
  spec = get_method(name)
  if spec.check_model is not None:
    spec.check_model(model)


def register(name: str, config_cls: type, *, presets: Mapping | None = None, supports_mask: bool = True,
             tune_grid: Callable | None = None, check_model: Callable | None = None):
  """Decorator adding a method implementation to :data:`METHODS` under its CLI name.

  The implementation is ``impl(state, data, key, config, hparams, *, mask) -> (state, metrics)``.
  ``tune_grid(config)`` returns the ``--grid`` entries ``tune`` sweeps by default (e.g.
  ``("ssd.alpha=log:1:100:5",)``); without it, 5 learning rates around the config's.
  ``check_model(model)`` raises ValueError when the method cannot run on a model (checked by
  :func:`check_model` before anything trains; the method itself should refuse too).
  Returns the convenience function ``fn(state, data, key, config=None, *, mask=None)`` (the method at
  ``config``'s hyperparameters; ``jax.jit(fn, static_argnames="config")`` compiles it), which is what
  the method modules export under the method's name.
  """
  if name in METHODS:
    raise ValueError(f"method {name!r} is registered twice")

  def deco(impl):
    @functools.wraps(impl)
    def fn(state, data, key, config=None, *, mask=None):
      return make(name, config)(state, data, key, mask=mask)

    fn.__doc__ = impl.__doc__
    spec = MethodSpec(name, impl, config_cls, dict(presets or {}), supports_mask, fn, tune_grid, check_model)
    hparam_fields(config_cls())  # a config whose hyperparameter names collide fails here, at import
    METHODS[name] = spec
    return fn

  return deco


# ---------------------------------------------------------------------------------------------
# Configs from strings (command line, presets)
# ---------------------------------------------------------------------------------------------

def _coerce(value: str, typ, what: str):
  """``value`` (a string) as type ``typ`` (bool, int, float, str, tuple of ints, Optional / Union)."""
  origin = typing.get_origin(typ)
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(typ)
    if type(None) in args and value.strip().lower() in ("none", "null", ""):
      return None
    errors = []
    for a in args:
      if a is type(None):
        continue
      try:
        return _coerce(value, a, what)
      except ValueError as e:
        errors.append(str(e))
    raise ValueError(f"{what}={value!r}: expected {' or '.join(getattr(a, '__name__', str(a)) for a in args)}")
  if typ is bool:
    if value.lower() in ("1", "true", "yes", "on"):
      return True
    if value.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"{what}={value!r}: expected true/false")
  if origin is tuple:
    try:
      return tuple(int(v) for v in value.strip("()[] ").split(",") if v.strip())
    except ValueError:
      raise ValueError(f"{what}={value!r}: expected comma-separated integers") from None
  for t in (int, float, str):
    if typ is t:
      try:
        return t(value)
      except ValueError:
        raise ValueError(f"{what}={value!r}: expected {t.__name__}") from None
  raise ValueError(f"{what}: cannot set a field of type {typ} from the command line")


def option_names(config_cls: type) -> dict[str, tuple[str | None, Any]]:
  """``{option: (nested field or None, type)}``: a config's fields, nested configs' fields flattened."""
  out: dict[str, tuple[str | None, Any]] = {}
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    typ = hints.get(f.name)
    if dataclasses.is_dataclass(typ):
      sub = typing.get_type_hints(typ)
      for g in dataclasses.fields(typ):
        out.setdefault(g.name, (f.name, sub.get(g.name)))
    else:
      out[f.name] = (None, typ)
  return out


def replace(config, **values):
  """``dataclasses.replace`` that also routes the fields of nested configs (e.g. ``lr`` into
  ``config.optim``): ``replace(ScrubConfig(), lr=1e-3, epochs=3)``."""
  names = option_names(type(config))
  top, nested = {}, {}
  for k, v in values.items():
    if k not in names:
      raise ValueError(f"{type(config).__name__} has no option {k!r}; options: {', '.join(sorted(names))}")
    parent = names[k][0]
    if parent is None:
      top[k] = v
    else:
      nested.setdefault(parent, {})[k] = v
  for parent, kw in nested.items():
    top[parent] = dataclasses.replace(getattr(config, parent), **kw)
  return dataclasses.replace(config, **top)


def make_config(name: str, overrides: Mapping[str, str] | None = None, *, preset: str | None = None):
  """The config of method ``name``: its defaults (or a named preset) with string overrides applied.

  Args:
    name: method name.
    overrides: ``{"alpha": "0.5", "lr": "1e-3"}``, as given on the command line with
      ``--set name.alpha=0.5`` (optimizer fields are addressed by their own names).
    preset: a named setting (e.g. SCRUB's ``small`` / ``large`` / ``privacy``).
  """
  spec = get_method(name)
  cfg = spec.config_cls()
  if preset is not None:
    if preset not in spec.presets:
      raise ValueError(f"method {name!r} has no preset {preset!r}; presets: {', '.join(spec.presets) or 'none'}")
    cfg = replace(cfg, **spec.presets[preset])
  if overrides:
    names = option_names(spec.config_cls)
    kw = {}
    for k, v in overrides.items():
      if k not in names:
        raise ValueError(f"method {name!r} has no option {k!r}; options: {', '.join(sorted(names))}")
      kw[k] = _coerce(str(v), names[k][1], f"{name}.{k}")
    try:
      cfg = replace(cfg, **kw)
    except ValueError as e:
      raise ValueError(f"{name}: {e}") from None
  return cfg
