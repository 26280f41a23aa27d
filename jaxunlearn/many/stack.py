"""Stacked model states: many ``ModelState`` of one model as one state with a leading model axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.models import Model
from jaxunlearn.train import ModelState


def stack_states(states) -> ModelState:
  """Stacks a list of ``ModelState`` of one model into one state with a leading model axis."""
  states = list(states)
  if not states:
    raise ValueError("no states to stack")
  model = states[0].model
  if any(s.model != model for s in states):
    raise ValueError("states to stack belong to different models")
  params = jax.tree.map(lambda *a: jnp.stack(a), *[s.params for s in states])
  stats = jax.tree.map(lambda *a: jnp.stack(a), *[s.batch_stats for s in states])
  return ModelState(params, stats, model)


def take(states: ModelState, m: int) -> ModelState:
  """Model ``m`` of a stacked state."""
  return ModelState(jax.tree.map(lambda a: a[m], states.params),
                    jax.tree.map(lambda a: a[m], states.batch_stats), states.model)


def _single_shapes(model: Model):
  p, s = jax.eval_shape(model.init, jax.random.key(0))
  return p, s


def num_models_of(states: ModelState) -> int | None:
  """M for a stacked state, ``None`` for a single (unstacked) one.

  Raises:
    ValueError: if the leaves are neither the model's shapes nor those with one leading axis.
  """
  p1, s1 = _single_shapes(states.model)
  one = [tuple(x.shape) for x in jax.tree.leaves((p1, s1))]
  got = [tuple(np.shape(x)) for x in jax.tree.leaves((states.params, states.batch_stats))]
  if len(one) != len(got):
    raise ValueError(f"state has {len(got)} arrays but model {states.model.name!r} has {len(one)}")
  if got == one:
    return None
  ms = {g[0] for g in got if len(g) >= 1}
  if len(ms) == 1 and all(g[1:] == o for g, o in zip(got, one)):
    return int(ms.pop())
  raise ValueError("state's shapes match neither one model nor a stack of models "
                   f"(first array {got[0]} vs model's {one[0]})")
