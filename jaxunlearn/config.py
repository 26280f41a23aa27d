"""JobConfig: the data, model and training settings that ``jaxunlearn run``, ``lira``, ``ulira`` and ``challenge`` share, with their checks."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn import models as jmodels
from jaxunlearn.errors import ConfigError
from jaxunlearn.errors import user_input
from jaxunlearn.train import EXECUTORS
from jaxunlearn.train import OPTIMIZERS
from jaxunlearn.train import TrainConfig

__all__ = ("SEED_LIMIT", "JobConfig", "check_int", "check_out_dir")

SEED_LIMIT = 2**32  # seeds are uint32 for jax.random.key and numpy's generators


def check_int(name: str, v, lo: int, hi: int | None = None, *, allow_none: bool = False) -> None:
  """``v`` is an int in ``[lo, hi)`` (``hi=None``: no upper bound), or None when allowed.

  Raises:
    ConfigError: one line naming ``name`` and the bad value.
  """
  if v is None and allow_none:
    return
  ok = not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= lo and (hi is None or v < hi)
  if not ok:
    bound = f">= {lo}" if hi is None else f"in [{lo}, {'2**32' if hi == SEED_LIMIT else hi})"
    raise ConfigError(f"{name} must be an int {bound}, got {v!r}")


def check_out_dir(out: str, what: str = "output folder") -> Path:
  """Checks (writing nothing that stays) that ``out`` is, or can become, a writable folder; ``what`` names
  it in the error (e.g. ``checkpoint folder``)."""
  p = Path(out)
  if p.exists() and not p.is_dir():
    raise ConfigError(f"{what} {out!r} exists and is not a folder")
  probe = p
  while not probe.exists():
    probe = probe.parent
  try:  # a real probe (os.access says yes to root even on read-only file systems); leaves nothing
    fd, tmp = tempfile.mkstemp(dir=probe, prefix=".jaxunlearn-probe-")
    os.close(fd)
    os.unlink(tmp)
  except OSError as e:
    raise ConfigError(f"{what} {out!r} is not writable ({str(probe)!r}: {e.strerror})") from None
  return p


def _positive(name: str, v) -> None:
  if isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0):
    raise ConfigError(f"{name} must be positive, got {v!r}")


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """Data, network and from-scratch training of a job; every front end's config extends it.

  Its defaults are every front end's (``run``, ``tune``, ``lira``, ``ulira``, ``challenge``).

  Attributes:
    dataset: ``digits`` | ``npz:PATH`` | a tfds name.
    model: a name in ``jaxunlearn.models.MODEL_NAMES``; ``width`` its channel multiplier.
    epochs, batch_size, lr, optimizer, weight_decay, augment: training of every model trained
      from scratch (see :class:`jaxunlearn.train.TrainConfig`).
    train_subset, test_subset: use N random examples of the split (drawn with ``seed``).
    data_dir, download: tfds options.
    cache_dir: where decoded JPEG npz files are cached (default ``$XDG_CACHE_HOME/jaxunlearn``, see
      :func:`jaxunlearn.data.default_cache_dir`).
    seed: the job's seed (in ``[0, 2**32)``).
    progress: progress output on stderr.
    executor: ``auto`` | ``scan`` | ``steps``: how training loops run (one compiled program, or each step
      its own jitted call; ``auto`` steps on CPU for convolutional nets, see
      :func:`jaxunlearn.train.resolve_executor`). Results agree up to float32 rounding.
  """

  dataset: str = "digits"
  model: str = "cnn"
  width: float = 1.0
  epochs: int = 15
  batch_size: int = 64
  lr: float = 0.05
  optimizer: str = "sgd"
  weight_decay: float = 5e-4
  augment: bool = False
  train_subset: int | None = None
  test_subset: int | None = None
  data_dir: str | None = None
  download: bool = False
  cache_dir: str | None = None
  seed: int = 0
  progress: bool = True
  executor: str = "auto"

  def train_config(self) -> TrainConfig:
    return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                       optimizer=self.optimizer, weight_decay=self.weight_decay, augment=self.augment)

  def check(self) -> TrainConfig:
    """Checks the shared fields (nothing loaded, compiled or written); returns the training config.

    Raises:
      ConfigError: one line naming the bad value.
    """
    if self.model not in jmodels.MODEL_NAMES:
      raise ConfigError(f"unknown model {self.model!r}; choose from {', '.join(jmodels.MODEL_NAMES)}")
    _positive("width", self.width)
    if self.optimizer not in OPTIMIZERS:
      raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    check_int("--epochs", self.epochs, 1)
    check_int("--seed", self.seed, 0, SEED_LIMIT)
    check_int("--batch-size", self.batch_size, 1)
    _positive("lr", self.lr)
    check_int("--train-subset", self.train_subset, 1, allow_none=True)
    check_int("--test-subset", self.test_subset, 1, allow_none=True)
    if self.executor not in EXECUTORS:
      raise ConfigError(f"unknown executor {self.executor!r}; choose from {', '.join(EXECUTORS)}")
    with user_input():
      return self.train_config()  # validates the optimizer fields

  def load_data(self) -> jdata.Dataset:
    """The dataset, subsampled to ``train_subset`` / ``test_subset`` with ``seed``."""
    with user_input():
      ds = jdata.load_dataset(self.dataset, data_dir=self.data_dir, download=self.download,
                              cache_dir=self.cache_dir)
      if self.train_subset is not None or self.test_subset is not None:
        ds = ds.subset(self.train_subset, self.test_subset, seed=self.seed)
    return ds

  def create_model(self, ds: jdata.Dataset) -> jmodels.Model:
    """The network for ``ds`` (classes, image shape, normalisation); a model that refuses the data's shape
    (``vit`` needs multiples of 4) is a ConfigError."""
    with user_input():
      return jmodels.create_model(self.model, num_classes=ds.num_classes, input_shape=ds.image_shape,
                                  mean=ds.mean, std=ds.std, width=self.width, flip_ok=ds.flip_ok)


def refuse_saved_reset(method_cfgs, where: str) -> None:
  """One line (ConfigError) when a method config resets to the original's saved initialisation
  (EU-k ``reset=saved``) in a run that cannot give it (``where``), before anything runs."""
  for m, mc in method_cfgs.items():
    if getattr(mc, "reset", "fresh") == "saved":
      raise ConfigError(f"{m}.reset=saved needs the original's initialisation key, which {where} does not give; "
                        f"use --set {m}.reset=fresh")
