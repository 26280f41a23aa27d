"""Optimizer settings (:class:`OptimConfig`) and the optax optimizer they build, with every continuous
value (learning rate, momentum, weight decay, ...) optionally a traced hyperparameter."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.train._checks import check_bool
from jaxunlearn.train._checks import check_choice
from jaxunlearn.train._checks import check_int_tuple
from jaxunlearn.train._checks import check_real

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant", "linear")
HPARAM = "hparam"


def hparam(default: float):
  """A dataclass field holding a continuous hyperparameter: it becomes part of a method's ``hparams``
  pytree (a traced float32 scalar that ``jax.vmap`` can map over) instead of a static setting."""
  return dataclasses.field(default=default, metadata={HPARAM: True})


def hparam_fields(cfg) -> dict[str, float]:
  """``{name: value}`` of the continuous hyperparameters of a config dataclass, nested configs
  (e.g. ``optim``) flattened into the same namespace (names must not collide)."""
  out: dict[str, float] = {}
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    if f.metadata.get(HPARAM):
      out[f.name] = float(v)
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
      for k, sub in hparam_fields(v).items():
        if k in out:
          raise ValueError(f"{type(cfg).__name__}: hyperparameter {k!r} is declared twice")
        out[k] = sub
  return out


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """How an optimizer updates the weights; shared by training and every unlearning method.

  Attributes:
    optimizer: ``sgd`` (heavy-ball momentum, PyTorch semantics), ``adam`` (L2 weight decay added to the
      gradient, like ``torch.optim.Adam``) or ``adamw`` (decoupled).
    lr: peak learning rate (hyperparameter).
    momentum: SGD momentum (hyperparameter; ignored by Adam).
    weight_decay: L2 coefficient (hyperparameter).
    nesterov: Nesterov momentum for SGD.
    schedule: ``cosine`` (to ``final_lr_frac * lr``), ``step`` (times ``decay_factor`` after each of
      ``decay_epochs``: in 1-based epoch e, lr = lr0 * factor^#{d < e}), ``constant`` or ``linear`` (to
      ``final_lr_frac * lr``).
    final_lr_frac: end of the cosine / linear schedule as a fraction of ``lr`` (hyperparameter).
    decay_epochs: epochs after which the step schedule decays.
    decay_factor: step schedule factor (hyperparameter).
    warmup_epochs: linear warm-up from 0 (fractions allowed; static: it sets a step count).
  """

  optimizer: str = "sgd"
  lr: float = hparam(0.1)
  momentum: float = hparam(0.9)
  weight_decay: float = hparam(5e-4)
  nesterov: bool = False
  schedule: str = "cosine"
  final_lr_frac: float = hparam(0.0)
  decay_epochs: tuple[int, ...] = ()
  decay_factor: float = hparam(0.1)
  warmup_epochs: float = 0.0

  def __post_init__(self):
    check_choice(self, "optimizer", OPTIMIZERS)
    check_choice(self, "schedule", SCHEDULES)
    for name in ("lr", "momentum", "weight_decay", "final_lr_frac", "decay_factor", "warmup_epochs"):
      check_real(self, name)
    check_bool(self, "nesterov")
    check_int_tuple(self, "decay_epochs")


def _values(optim: OptimConfig, hparams: Mapping | None) -> dict:
  """The continuous values: traced ``hparams`` where given, else the config's floats."""
  vals = hparam_fields(optim)
  if hparams:
    vals.update({k: hparams[k] for k in vals if k in hparams})
  return vals


def step_decay(lr, factor, boundaries) -> optax.Schedule:
  """``lr * factor ** #{b in boundaries : count >= b}`` (boundaries in optimizer steps; traceable
  ``lr`` / ``factor``, unlike ``optax.piecewise_constant_schedule`` which checks its scales in Python)."""
  bounds = sorted(int(b) for b in boundaries)

  def schedule(count):
    v = jnp.asarray(lr, jnp.float32)
    for b in bounds:
      v = jnp.where(count >= b, v * factor, v)
    return v

  return schedule


def make_schedule(optim, spe: int, epochs: int | None = None, *, hparams: Mapping | None = None) -> optax.Schedule:
  """Learning-rate schedule over optimizer steps, ``spe`` steps per epoch, ``epochs`` epochs.

  ``optim`` is an :class:`OptimConfig` (then ``epochs`` is required) or a ``TrainConfig`` (its
  ``epochs`` are used). ``hparams`` may override the continuous values with traced scalars.
  """
  if epochs is None:
    epochs = optim.epochs
  optim = getattr(optim, "optim", optim)
  v = _values(optim, hparams)
  lr = v["lr"]
  total = max(1, epochs * spe)
  warm = int(round(optim.warmup_epochs * spe))
  if optim.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, max(1, total - warm), alpha=v["final_lr_frac"])
  elif optim.schedule == "linear":
    main = optax.linear_schedule(lr, lr * v["final_lr_frac"], max(1, total - warm))
  elif optim.schedule == "step":
    main = step_decay(lr, v["decay_factor"], [max(0, e * spe - warm) for e in optim.decay_epochs])
  else:
    main = optax.constant_schedule(lr)
  if warm <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def make_optimizer(optim, spe: int, epochs: int | None = None, *,
                   hparams: Mapping | None = None) -> optax.GradientTransformation:
  """The optax optimizer of ``optim`` (an :class:`OptimConfig` or a ``TrainConfig``) for a run with
  ``spe`` steps per epoch; ``hparams`` may hold traced values of its continuous settings."""
  if epochs is None:
    epochs = optim.epochs
  optim = getattr(optim, "optim", optim)
  v = _values(optim, hparams)
  lr = make_schedule(optim, spe, epochs, hparams=hparams)
  if optim.optimizer == "sgd":
    return optax.chain(optax.add_decayed_weights(v["weight_decay"]),
                       optax.sgd(lr, momentum=v["momentum"], nesterov=optim.nesterov))
  if optim.optimizer == "adam":
    return optax.chain(optax.add_decayed_weights(v["weight_decay"]), optax.adam(lr))
  return optax.adamw(lr, weight_decay=v["weight_decay"])


def as_hparams(values: Mapping) -> dict[str, jax.Array]:
  """``{name: float32 scalar array}`` (the pytree form of hyperparameters)."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
