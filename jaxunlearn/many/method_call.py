"""How unlearn_many resolves and calls an unlearning method: the one place that knows the method API."""

from __future__ import annotations

import functools

import jax
from jax.sharding import Mesh

from jaxunlearn.many.programs import compile_chunk_program
from jaxunlearn.models import Model
from jaxunlearn.train import ModelState


def resolve_method(method, config=None):
  """The configured :class:`~jaxunlearn.unlearn.Method` of a registered name, a registered function
  (``unlearn.scrub``) or a ``Method`` (from ``unlearn.make``), with ``config`` (default: its defaults)."""
  from jaxunlearn.unlearn import METHODS, Method, make  # noqa: PLC0415

  if isinstance(method, Method):
    if config is not None and config != method.config:
      raise ValueError(f"method {method.name!r} is already configured; do not pass a config too")
    return method
  if isinstance(method, str):
    return make(method, config)
  if callable(method):
    for spec in METHODS.values():
      if spec.fn is method:
        return make(spec.name, config)
    raise ValueError(f"{getattr(method, '__name__', method)!r} is not a registered method: register it with "
                     "jaxunlearn.unlearn.register (then it runs under unlearn_many like every method)")
  raise TypeError(f"method must be a registered name, function or Method, got {type(method).__name__}")


@functools.lru_cache(maxsize=32)
def unlearn_program(method, model: Model, num_classes: int, impl: str, has_mask: bool, strategy: str, mesh: Mesh,
                    executor: str = "scan", stacked: bool = False):
  """The jitted per-chunk program of :func:`jaxunlearn.many.unlearn_many`: ``method`` on each model of a
  chunk, with that model's key ``fold_in(key, m)`` and hyperparameters (per-model ones override shared).
  ``stacked``: the weights are per-model inputs, donated to the unlearned weights (one copy on the device)."""
  from jaxunlearn.unlearn import UnlearnData  # noqa: PLC0415

  def one(pm, sh):
    both = {**sh, **pm}  # per-model entries (params, retain, ...) where given, else shared ones
    km = jax.random.fold_in(jax.random.wrap_key_data(sh["key"], impl=impl), both["m"])  # shared when all equal
    state = ModelState(both["params"], both["batch_stats"], model)
    data = UnlearnData(sh["x"], sh["y"], both["retain"], both["forget"], sh["x_val"], sh["y_val"],
                       num_classes=num_classes)
    hparams = {**sh["hparams"], **pm["hparams"]}
    new, metrics = method(state, data, km, hparams, mask=sh["mask"] if has_mask else None)
    return {"params": new.params, "batch_stats": new.batch_stats, "metrics": metrics}

  return compile_chunk_program(one, strategy, mesh, executor, donate=stacked)
