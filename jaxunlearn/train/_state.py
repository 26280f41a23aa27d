"""Pure pytree states: a trained model (ModelState) and what a training step updates (TrainState)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxunlearn.models import Model


@flax.struct.dataclass
class ModelState:
  """A trained model: parameters, BatchNorm statistics and (static) the model they belong to."""

  params: Any
  batch_stats: Any
  model: Model = flax.struct.field(pytree_node=False)

  def apply(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits ``[B, num_classes]`` in eval mode (train=False) or train mode (stats discarded)."""
    return self.model.apply(self.params, self.batch_stats, x, train=train)[0]

  @classmethod
  def create(cls, model: Model, key: jax.Array) -> "ModelState":
    params, stats = model.init(key)
    return cls(params, stats, model)


@flax.struct.dataclass
class TrainState:
  """What a training step updates. ``step`` counts optimizer steps taken."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @classmethod
  def create(cls, params, batch_stats, tx) -> "TrainState":
    return cls(jnp.zeros((), jnp.int32), params, batch_stats, tx.init(params))
