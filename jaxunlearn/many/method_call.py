"""How unlearn_many resolves and calls an unlearning method: the one place that knows the method API.

NOTE for the merge with the method-API redesign: :func:`resolve_method` and the ``fn(state, data,
km, config, **kw)`` call in :func:`unlearn_program` are deliberately unchanged from the old
``jaxunlearn/shadow.py`` (``_resolve_method`` / ``_unlearn_program``); adapt them here.
"""

from __future__ import annotations

import functools

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxunlearn.many.engine import MODEL_AXIS
from jaxunlearn.many.strategy import batch_over_models
from jaxunlearn.models import Model
from jaxunlearn.train import ModelState


def resolve_method(method):
  """``(name, fn, config_cls)`` of a registered method name, a ``Method`` or a method function."""
  from jaxunlearn.unlearn import METHODS, Method, get_method

  if isinstance(method, str):
    m = get_method(method)
    return m.name, m.fn, m.config_cls
  if isinstance(method, Method):
    return method.name, method.fn, method.config_cls
  if callable(method):
    for m in METHODS.values():
      if m.fn is method:
        return m.name, m.fn, m.config_cls
    return getattr(method, "__name__", "custom"), method, None
  raise TypeError(f"method must be a registered name or a function, got {type(method).__name__}")


@functools.lru_cache(maxsize=32)
def unlearn_program(fn, model: Model, config, num_classes: int, impl: str, has_mask: bool,
                     strategy: str, mesh: Mesh):
  """The jitted per-chunk program of :func:`jaxunlearn.many.unlearn_many`: ``fn`` on each model of a chunk."""
  from jaxunlearn.unlearn import UnlearnData

  def one(pm, sh):
    both = {**sh, **pm}  # per-model entries (params, retain, ...) where given, else shared ones
    km = jax.random.fold_in(jax.random.wrap_key_data(sh["key"], impl=impl), pm["m"])
    state = ModelState(both["params"], both["batch_stats"], model)
    data = UnlearnData(sh["x"], sh["y"], both["retain"], both["forget"], sh["x_val"], sh["y_val"],
                       num_classes=num_classes)
    kw = {"mask": sh["mask"]} if has_mask else {}
    new, metrics = fn(state, data, km, config, **kw)
    return {"params": new.params, "batch_stats": new.batch_stats, "metrics": metrics}

  fn_b = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn_b, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)))
