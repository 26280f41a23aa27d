"""How the models of one chunk share a device: ``vmap`` (lockstep), ``sequential`` or groups of ``G``."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

STRATEGIES = ("vmap", "sequential", "auto")  # or an int G >= 1: groups of G models in lockstep


def check_strategy(strategy, *, allow_auto: bool = True):
  """The normalised strategy: ``"vmap"``, ``"sequential"``, ``"auto"`` or an int group size ``G >= 1``.

  Accepts the int as a string too (``"8"``, as it comes from a command line).

  Raises:
    ValueError: naming the bad value.
  """
  if isinstance(strategy, str) and strategy.strip().isdigit():
    strategy = int(strategy)
  if isinstance(strategy, (int, np.integer)) and not isinstance(strategy, (bool, np.bool_)):
    if strategy < 1:
      raise ValueError(f"strategy group size must be >= 1, got {strategy}")
    return int(strategy)
  names = STRATEGIES if allow_auto else tuple(s for s in STRATEGIES if s != "auto")
  if strategy not in names:
    extra = "" if allow_auto else " ('auto' is chosen by train_many / choose_strategy)"
    raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(names)} or an int group size{extra}")
  return strategy


def batch_over_models(one: Callable, strategy, num_devices: int) -> Callable:
  """``one(per_model, shared)`` mapped over the leading axis of every leaf of ``per_model``.

  ``vmap``: one batched program over all models. Otherwise the chunk is split into
  ``num_devices`` contiguous groups (one per device under the model sharding) and each runs
  ``lax.map`` over its models, ``G`` at a time (``"sequential"``: ``G = 1``); ``G`` at least a
  device's share is plain ``vmap``.
  """
  strategy = check_strategy(strategy, allow_auto=False)
  vm = jax.vmap(one, in_axes=(0, None))
  if strategy == "vmap":
    return vm
  g = 1 if strategy == "sequential" else strategy

  def grouped(per_model, shared):
    c = jax.tree.leaves(per_model)[0].shape[0]
    per_device = c // num_devices
    if g >= per_device:
      return vm(per_model, shared)
    split = jax.tree.map(lambda a: a.reshape(num_devices, per_device, *a.shape[1:]), per_model)
    inner = lambda pm: jax.lax.map(lambda p: one(p, shared), pm, batch_size=g if g > 1 else None)
    out = jax.vmap(inner)(split)
    return jax.tree.map(lambda a: a.reshape(c, *a.shape[2:]), out)

  return grouped
