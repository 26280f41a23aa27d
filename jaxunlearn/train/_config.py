"""How to train one model (:class:`TrainConfig`) and how many steps an epoch takes."""

from __future__ import annotations

import dataclasses

from jaxunlearn.train._checks import check_bool
from jaxunlearn.train._checks import check_int
from jaxunlearn.train._checks import check_real
from jaxunlearn.train._optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train one model: epochs, batch size, augmentation and the optimizer settings.

  The optimizer fields are :class:`OptimConfig`'s, kept flat here for a short command line
  (``TrainConfig(epochs=15, lr=0.05)``); :attr:`optim` returns them as an :class:`OptimConfig`.

  Attributes:
    epochs: passes over the training index set.
    batch_size: examples per step (clamped to the set size when the set is smaller).
    optimizer, lr, momentum, nesterov, weight_decay, schedule, final_lr_frac, decay_epochs,
      decay_factor, warmup_epochs: see :class:`OptimConfig`.
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
    check_int(self, "epochs", lo=0)
    check_int(self, "batch_size", lo=1)
    check_bool(self, "augment")
    check_real(self, "label_smoothing", lo=0.0, hi=1.0, hi_open=True)
    object.__setattr__(self, "decay_epochs", tuple(self.decay_epochs))
    _ = self.optim  # validates the optimizer fields

  @property
  def optim(self) -> OptimConfig:
    """The optimizer fields as an :class:`OptimConfig`."""
    names = {f.name for f in dataclasses.fields(OptimConfig)}
    return OptimConfig(**{k: getattr(self, k) for k in names})


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_last: bool = False) -> int:
  """Steps per epoch: every batch, the last partial one included, as PyTorch's ``DataLoader`` does
  (``drop_last``: full batches only, as airbench's loader). A set smaller than a batch is one batch."""
  bs = max(1, min(batch_size, num_examples))
  return max(1, num_examples // bs if drop_last else -(-num_examples // bs))
