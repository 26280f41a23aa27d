"""Per-model extra evaluations of ``jaxunlearn run``: a registry name -> function computing the metric's JSON entry (``--eval NAME``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn.train import evaluate

__all__ = ("EVALS", "Eval", "EvalContext", "eval_options", "forget_distribution_index", "forget_validation_index",
           "register_eval")


def forget_distribution_index(y: np.ndarray, sp: jdata.ForgetSplit, min_count: int = 1) -> np.ndarray:
  """Indices of the held-out examples (labels ``y``) of the forget set's distribution: those of the forget
  classes for class-type specs, all of them for ``random:`` and ``confuse:`` -- and all of them when
  fewer than ``min_count`` belong to those classes."""
  if sp.classes and not sp.spec.startswith("confuse:"):
    keep = np.flatnonzero(np.isin(y, sp.classes))
    if keep.size >= max(1, min_count):
      return keep
  return np.arange(len(y))


def forget_validation_index(ds: jdata.Dataset, sp: jdata.ForgetSplit) -> np.ndarray:
  """Indices into the test split of held-out examples of the forget set's distribution (SCRUB+Rewind's
  forget-validation set, the original's held-out reference accuracy; :func:`forget_distribution_index`)."""
  return forget_distribution_index(ds.y_test, sp)


@dataclasses.dataclass(frozen=True)
class Eval:
  """A per-model evaluation: ``fn(ctx, ev, retrain_acc)`` -> its JSON entry (None: not for this
  model). ``ev`` is ``{split: evaluate(...) dict}`` of the model (no further forward pass needed);
  ``retrain_acc`` the oracle's ``{split: acc}`` (None for the original and the oracle itself).
  ``option``: chosen with ``--eval NAME``; else it runs whenever it returns an entry."""

  fn: Callable[[EvalContext, dict, dict | None], Any]
  option: bool = True


EVALS: dict[str, Eval] = {}  # in the order of the JSON entries


def register_eval(name: str, *, option: bool = True):
  """Decorator: adds ``fn`` to :data:`EVALS` (``jaxunlearn run --eval NAME`` when ``option``)."""

  def deco(fn):
    EVALS[name] = Eval(fn, option)
    return fn

  return deco


def eval_options() -> tuple[str, ...]:
  """The names ``--eval`` accepts."""
  return tuple(n for n, e in EVALS.items() if e.option)


class EvalContext:
  """What the evaluations of one job share; called per model, it returns that model's extra entries.

  ``p`` is the job's :class:`jaxunlearn.run.Prepared` (``cfg``, ``ds``, ``split``, ``model``);
  ``key`` the PRNG key of ZRF's randomly initialised model.
  """

  def __init__(self, p, x_forget, key):
    self.p, self.x_forget, self.key = p, x_forget, key
    self._random_logits = None
    # too few held-out examples of those classes for a 10-split attack: all test examples
    self.mia_ref = forget_distribution_index(p.ds.y_test, p.split, min_count=10)

  @property
  def random_logits(self):
    """A randomly initialised model's logits on the forget set (computed once)."""
    if self._random_logits is None:
      params, stats = self.p.model.init(self.key)
      sp = self.p.split
      self._random_logits = evaluate(self.p.model, params, stats, self.x_forget, sp.y_train[sp.forget])["logits"]
    return self._random_logits

  def __call__(self, ev: dict, retrain_acc) -> dict:
    out: dict[str, Any] = {}
    for name, e in EVALS.items():
      if e.option and name not in self.p.cfg.evals:
        continue
      v = e.fn(self, ev, retrain_acc)
      if v is not None:
        out[name] = v
    return out


@register_eval("tow")
def _tow(ctx: EvalContext, ev: dict, retrain_acc):
  from jaxunlearn import metrics as jmet

  if retrain_acc is not None:
    return float(jmet.tow({k: v["acc"] for k, v in ev.items()}, retrain_acc))


@register_eval("ic", option=False)
def _interclass_confusion(ctx: EvalContext, ev: dict, retrain_acc):
  """IC error of ``confuse:`` specs, on the test examples of the two classes and on the forget set."""
  from jaxunlearn import metrics as jmet

  ds, sp = ctx.p.ds, ctx.p.split
  if not sp.spec.startswith("confuse:"):
    return None
  a, b = sp.classes
  ab = np.flatnonzero(np.isin(ds.y_test, sp.classes))
  ic_test = jmet.interclass_confusion(ev["test"]["logits"][ab], ds.y_test[ab], a, b)
  # the correct labels of the confused examples
  ic_forget = jmet.interclass_confusion(ev["forget"]["logits"], ds.y_train[sp.forget], a, b)
  return {"test_error": ic_test.error, "test_count": ic_test.count,
          "forget_error": ic_forget.error, "forget_count": ic_forget.count}


@register_eval("mia")
def _mia(ctx: EvalContext, ev: dict, retrain_acc):
  from jaxunlearn.mia import simple_mia

  # forget losses vs held-out losses of the same classes, as in the SCRUB code
  return float(simple_mia(ev["forget"]["losses"], ev["test"]["losses"][ctx.mia_ref], seed=ctx.p.cfg.seed))


@register_eval("zrf")
def _zrf(ctx: EvalContext, ev: dict, retrain_acc):
  from jaxunlearn import metrics as jmet

  return float(jmet.zrf(ev["forget"]["logits"], ctx.random_logits))
