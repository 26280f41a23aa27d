"""train_airbench_many: train_many with the airbench94 recipe's fit, plus the run's timings and schedule."""

from __future__ import annotations

import jax
import numpy as np

from jaxunlearn.many.api import train_many
from jaxunlearn.models import Model
from jaxunlearn.models import create_airbench
from jaxunlearn.recipes import AirbenchConfig
from jaxunlearn.recipes import make_airbench_fit
from jaxunlearn.train import ModelState


def train_airbench_many(key, x, y, keep_mask, cfg: AirbenchConfig = AirbenchConfig(), *,
                        model: Model | None = None, num_classes: int | None = None,
                        chunk_size: int | None = None, strategy: str = "vmap", devices=None,
                        progress: bool = True, unbalanced: str = "error") -> tuple[ModelState, dict]:
  """Trains M airbench models from scratch, model m on ``x[keep_mask[m]]``, in one compiled program.

  ``train_many(key, (x, y), keep_mask, cfg, model=model, fit_factory=make_airbench_fit, ...)``
  (same keys, chunking, sharding and strategies), with the default model and a summary of the run.

  Args:
    key: PRNG key (or int seed).
    x: ``uint8 [N, H, W, C]`` training images.
    y: ``int [N]`` labels.
    keep_mask: ``bool [M, N]`` (see :func:`jaxunlearn.data.keep_mask`).
    cfg: the recipe.
    model: the network (default ``create_airbench(num_classes, x.shape[1:])``).
    num_classes: for the default model (default ``max(y) + 1``, at least 2).
    chunk_size, strategy, devices, progress, unbalanced: as in :func:`jaxunlearn.many.train_many`.

  Returns:
    ``(states, info)``: a stacked ``ModelState`` (leading axis M) and ``{"loss": [M, E], "acc": [M, E]``
    (numpy, per-epoch train-mode means), ``"compile_seconds"``, ``"train_seconds"`` (after
    compilation, all chunks), ``"models_per_hour"``, ``"total_steps"``, ``"steps_per_epoch"``,
    ``"batch_size"``, ``"chunk_size"``, ``"strategy"`` (the one used), ``"strategy_probe"`` (what
    ``"auto"`` measured, else None)}``.
  """
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  y = np.asarray(y)
  if x.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
  if y.shape != (x.shape[0],):
    raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
  if model is None:
    nc = int(num_classes) if num_classes is not None else max(2, int(y.max()) + 1)
    model = create_airbench(nc, tuple(x.shape[1:]))
  info: dict = {}
  states, metrics = train_many(key, (x, y), keep_mask, cfg, model=model, fit_factory=make_airbench_fit,
                               chunk_size=chunk_size, strategy=strategy, devices=devices, unbalanced=unbalanced,
                               progress=progress, desc="airbench", info=info)
  _, fit = make_airbench_fit(model, cfg, int(np.asarray(keep_mask).sum(1).max()))
  info.update(loss=np.asarray(metrics["loss"]), acc=np.asarray(metrics["acc"]),
              models_per_hour=np.shape(keep_mask)[0] / max(info["train_seconds"], 1e-9) * 3600.0,
              total_steps=fit.total_steps, steps_per_epoch=fit.steps_per_epoch, batch_size=fit.batch_size)
  return states, info
