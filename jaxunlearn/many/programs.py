"""The per-chunk programs of train_many, unlearn_many and predict_many (one model's run, mapped over a chunk):
jitted as one program (``scan`` executor) or run eagerly with each step jitted (``steps`` executor)."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxunlearn.many.engine import MODEL_AXIS
from jaxunlearn.many.strategy import batch_over_models
from jaxunlearn.models import Model
from jaxunlearn.train import make_fit
from jaxunlearn.train import map_batches
from jaxunlearn.train import use_executor


class HostStepped:
  """A per-chunk program run eagerly under the ``steps`` executor, every training step one jitted call
  (see :func:`jaxunlearn.train.resolve_executor`): the chunk's models ``vmap``-ed in lockstep
  (``strategy="vmap"``), or one after another (``"sequential"``: plain, unbatched kernels -- what a
  CPU runs convolutions fastest with; every model reuses the same compiled step programs)."""

  def __init__(self, fn: Callable, strategy: str = "vmap"):
    self.sequential = strategy == "sequential"
    self.fn = fn if self.sequential else jax.vmap(fn, in_axes=(0, None))

  def __call__(self, pm, sh):
    with use_executor("steps"):
      if not self.sequential:
        return self.fn(pm, sh)
      c = jax.tree.leaves(pm)[0].shape[0]
      outs = [self.fn(jax.tree.map(lambda a: a[j], pm), sh) for j in range(c)]
      return jax.tree.map(lambda *a: jnp.stack(a), *outs)


def compile_chunk_program(one: Callable, strategy: str, mesh: Mesh, executor: str = "scan"):
  """``one(per_model, shared)`` of one model mapped over a chunk: one jitted program whose model axis is
  sharded over ``mesh`` (``scan``), or a :class:`HostStepped` program (``steps``; ``vmap`` or ``sequential``)."""
  if executor == "steps":
    return HostStepped(one, strategy)
  fn = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)))


@functools.lru_cache(maxsize=32)
def train_program(model: Model, cfg, k: int, impl: str, strategy: str, mesh: Mesh, fit_factory: Callable = make_fit,
                  executor: str = "scan"):
  """The per-chunk program of :func:`train_many`: ``fit_factory(model, cfg, k)`` gives the
  ``(init, fit)`` pair of one model's run (``jaxunlearn.train.make_fit``, or another trainer's with
  the same contract, e.g. ``jaxunlearn.recipes.make_airbench_fit``)."""
  init, fit = fit_factory(model, cfg, k)

  def one(pm, sh):
    km = jax.random.fold_in(jax.random.wrap_key_data(sh["key"], impl=impl), pm["m"])
    params, stats = model.init(jax.random.fold_in(km, 0))
    ts, hist = fit(init(params, stats), sh["x"], sh["y"], pm["index"], jax.random.fold_in(km, 1))
    return {"params": ts.params, "batch_stats": ts.batch_stats, "metrics": hist}

  return compile_chunk_program(one, strategy, mesh, executor)


@functools.lru_cache(maxsize=32)
def predict_program(model: Model, n: int, batch_size: int, flip: bool, strategy: str, mesh: Mesh):
  """The jitted per-chunk program of :func:`jaxunlearn.many.predict_many`: eval-mode logits ``[c, N, A, C]``."""
  def one(pm, sh):
    params, stats, x = pm["params"], pm["batch_stats"], sh["x"]

    def f(b):
      out = [model.apply(params, stats, b, train=False)[0]]
      if flip:
        out.append(model.apply(params, stats, b[:, :, ::-1, :], train=False)[0])
      return jnp.stack(out, axis=1)  # [B, A, C]

    return map_batches(f, x, batch_size)

  fn = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)))
