"""Training configuration and optimizer factory."""

from __future__ import annotations

import dataclasses
import math

import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant", "linear")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train one model.

  Attributes:
    epochs: passes over the training index set.
    batch_size: examples per step (clamped to the set size when the set is smaller).
    optimizer: ``sgd`` (heavy-ball momentum, PyTorch semantics), ``adam`` (L2 weight decay added
      to the gradient, like ``torch.optim.Adam``) or ``adamw`` (decoupled).
    lr: peak learning rate.
    momentum: SGD momentum.
    nesterov: Nesterov momentum for SGD.
    weight_decay: L2 coefficient.
    schedule: ``cosine`` (to ``final_lr_frac * lr``), ``step`` (times ``decay_factor`` at each of
      ``decay_epochs``, i.e. in epoch e (1-based) lr = lr0 * factor^#{d < e}), ``constant`` or ``linear``
      (to ``final_lr_frac * lr``).
    final_lr_frac: end of the cosine / linear schedule as a fraction of ``lr``.
    decay_epochs: epochs after which the step schedule decays.
    decay_factor: step schedule factor.
    warmup_epochs: linear warm-up from 0 (fractions allowed).
    augment: random crop (4-pixel padding) and horizontal flip on device.
    label_smoothing: cross-entropy label smoothing.
  """

  epochs: int = 10
  batch_size: int = 128
  optimizer: str = "sgd"
  lr: float = 0.1
  momentum: float = 0.9
  nesterov: bool = False
  weight_decay: float = 5e-4
  schedule: str = "cosine"
  final_lr_frac: float = 0.0
  decay_epochs: tuple[int, ...] = ()
  decay_factor: float = 0.1
  warmup_epochs: float = 0.0
  augment: bool = False
  label_smoothing: float = 0.0

  def __post_init__(self):
    if not (isinstance(self.epochs, int) and self.epochs >= 0):
      raise ValueError(f"epochs must be a non-negative int, got {self.epochs!r}")
    if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
      raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
    for name in ("lr", "weight_decay", "momentum", "warmup_epochs", "final_lr_frac"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")
    object.__setattr__(self, "decay_epochs", tuple(int(e) for e in self.decay_epochs))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the last partial batch is dropped; a set smaller than a batch is one)."""
  return max(1, num_examples // max(1, min(batch_size, num_examples)))


def make_schedule(cfg: TrainConfig, spe: int) -> optax.Schedule:
  """Learning-rate schedule over optimizer steps, ``spe`` steps per epoch."""
  total = max(1, cfg.epochs * spe)
  warm = int(round(cfg.warmup_epochs * spe))
  if cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(cfg.lr, max(1, total - warm), alpha=cfg.final_lr_frac)
  elif cfg.schedule == "linear":
    main = optax.linear_schedule(cfg.lr, cfg.lr * cfg.final_lr_frac, max(1, total - warm))
  elif cfg.schedule == "step":
    bounds: dict[int, float] = {}
    for e in cfg.decay_epochs:
      b = max(0, e * spe - warm)
      bounds[b] = bounds.get(b, 1.0) * cfg.decay_factor
    main = optax.piecewise_constant_schedule(cfg.lr, bounds)
  else:
    main = optax.constant_schedule(cfg.lr)
  if warm <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm), main], [warm])


def make_optimizer(cfg: TrainConfig, spe: int) -> optax.GradientTransformation:
  """The optax optimizer of ``cfg`` for a run with ``spe`` steps per epoch."""
  lr = make_schedule(cfg, spe)
  if cfg.optimizer == "sgd":
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                       optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  if cfg.optimizer == "adam":
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(lr))
  return optax.adamw(lr, weight_decay=cfg.weight_decay)
