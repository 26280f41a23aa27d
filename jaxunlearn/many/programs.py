"""The per-chunk programs of train_many, unlearn_many and predict_many (one model's run, mapped over a chunk):
jitted as one program (``scan`` executor) or run eagerly with each step jitted (``steps`` executor)."""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxunlearn.many.engine import MODEL_AXIS
from jaxunlearn.many.strategy import batch_over_models
from jaxunlearn.models import Model
from jaxunlearn.train import make_fit
from jaxunlearn.train import SCORING_PRECISION
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


_LOG_1E45 = float(np.log(np.float64(1e-45)))
# a donated chunk also holds inputs no output can reuse (model numbers, index lists): expected, not news
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


def device_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Logit-scaled confidence ``log(p_y + 1e-45) - log(sum_{j != y} p_j + 1e-45)`` in float32, jittable.

  The same quantity as :func:`jaxunlearn.metrics.logit_confidence` (float64 numpy, the LiRA and
  challenge code's formula), written so float32 loses nothing: with log-probabilities
  ``lp = z - logsumexp(z)``, ``log(p + 1e-45) = logaddexp(lp, log 1e-45)``, and the wrong classes'
  log-probability is a ``logsumexp`` over them. No probability is formed, so nothing underflows or
  cancels; the saturation at about +-103.6 is the reference's. ``labels`` broadcast against
  ``logits.shape[:-1]``.
  """
  z = logits.astype(jnp.float32)
  onehot = jnp.arange(z.shape[-1]) == jnp.asarray(labels)[..., None]
  lse = jax.nn.logsumexp(z, axis=-1)
  lp_true = jnp.sum(jnp.where(onehot, z, 0.0), axis=-1) - lse
  lp_wrong = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, z), axis=-1) - lse
  return jnp.logaddexp(lp_true, _LOG_1E45) - jnp.logaddexp(lp_wrong, _LOG_1E45)


def compile_chunk_program(one: Callable, strategy: str, mesh: Mesh, executor: str = "scan", *, donate: bool = False):
  """``one(per_model, shared)`` of one model mapped over a chunk: one jitted program whose model axis is
  sharded over ``mesh`` (``scan``), or a :class:`HostStepped` program (``steps``; ``vmap`` or ``sequential``).

  ``donate``: the per-model inputs' buffers are donated to the outputs (:class:`ChunkedRun` places a fresh
  copy of every chunk's inputs on the device, so nothing else holds them): an unlearning chunk's weights
  in and out then share memory instead of coexisting."""
  if executor == "steps":
    return HostStepped(one, strategy)
  fn = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)), donate_argnums=(0,) if donate else ())


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
def predict_program(model: Model, n: int, batch_size: int, flip: bool, strategy: str, mesh: Mesh, *,
                    confidence: bool = False):
  """The jitted per-chunk program of :func:`jaxunlearn.many.predict_many`: eval-mode logits ``[c, N, A, C]``,
  or with ``confidence`` (``sh["y"]`` given) their logit-scaled confidences ``float32 [c, N, A]``
  (:func:`device_confidence`), computed on the device so the ``C``-times larger logits never leave it."""
  def one(pm, sh):
    params, stats = pm["params"], pm["batch_stats"]

    def f(b):
      x = b["x"]
      out = [model.apply(params, stats, x, train=False)[0]]
      if flip:
        out.append(model.apply(params, stats, x[:, :, ::-1, :], train=False)[0])
      logits = jnp.stack(out, axis=1)  # [B, A, C]
      return device_confidence(logits, b["y"][:, None]) if confidence else logits

    with jax.default_matmul_precision(SCORING_PRECISION):  # scored outputs: full float32 on every backend
      return map_batches(f, {k: sh[k] for k in (("x", "y") if confidence else ("x",))}, batch_size)

  fn = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)))
