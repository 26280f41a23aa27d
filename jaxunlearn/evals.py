"""Per-model extra evaluations of ``jaxunlearn run``: a registry name -> function computing the metric's JSON entry (``--eval NAME``).

``--eval`` options: ``tow`` (tug of war vs the oracle's accuracies), ``mia`` (the simple loss MIA of
SCRUB / the NeurIPS-2023 kit: logistic-regression accuracy on forget vs held-out losses, 0.5 = like
unseen data), ``svc`` (the SVC MIA-efficacy of SalUn / Unlearn-Sparse: share of forget examples an SVC
on softmax confidence, trained on retain vs test, calls non-members; higher = more forgotten), ``zrf``
(ZRF vs a randomly initialised model); ``ic`` (interclass confusion) runs by itself for ``confuse:``
specs. The MIA numbers are different conventions: results.json names each one's in ``mia_convention``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn.train import evaluate

__all__ = ("EVALS", "Eval", "EvalContext", "eval_conventions", "eval_options", "forget_distribution_index",
           "forget_validation_index", "register_eval")


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
  ``option``: chosen with ``--eval NAME``; else it runs whenever it returns an entry.
  ``convention``: the name results.json gives the number's convention (``mia_convention``), for
  metrics that exist in several (membership inference); ``legend``: the line under the printed table
  saying what the number is (None: not a column of the table)."""

  fn: Callable[[EvalContext, dict, dict | None], Any]
  option: bool = True
  convention: str | None = None
  legend: str | None = None


EVALS: dict[str, Eval] = {}  # in the order of the JSON entries


def register_eval(name: str, *, option: bool = True, convention: str | None = None, legend: str | None = None):
  """Decorator: adds ``fn`` to :data:`EVALS` (``jaxunlearn run --eval NAME`` when ``option``)."""

  def deco(fn):
    EVALS[name] = Eval(fn, option, convention, legend)
    return fn

  return deco


def eval_options() -> tuple[str, ...]:
  """The names ``--eval`` accepts."""
  return tuple(n for n, e in EVALS.items() if e.option)


def eval_conventions(names) -> dict[str, str]:
  """``{eval: convention}`` of the chosen evaluations that name one (results.json's ``mia_convention``)."""
  return {n: e.convention for n, e in EVALS.items() if n in names and e.convention is not None}


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


@register_eval("tow", legend="tow: tug of war, prod over splits of (1 - |acc - oracle acc|); 1 = the oracle's accuracies")
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


@register_eval("mia", convention="scrub_logreg_loss",
               legend="mia (scrub_logreg_loss): logistic-regression accuracy telling forget from held-out losses; "
                      "0.5 = like unseen data")
def _mia(ctx: EvalContext, ev: dict, retrain_acc):
  from jaxunlearn.mia import simple_mia

  # forget losses vs held-out losses of the same classes, as in the SCRUB code
  return float(simple_mia(ev["forget"]["losses"], ev["test"]["losses"][ctx.mia_ref], seed=ctx.p.cfg.seed))


@register_eval("svc", convention="svc_mia_efficacy_salun",
               legend="svc (svc_mia_efficacy_salun): share of forget examples an SVC on confidence (retain vs test) "
                      "calls non-members; higher = more forgotten")
def _svc(ctx: EvalContext, ev: dict, retrain_acc):
  """SalUn / Unlearn-Sparse MIA-efficacy on softmax confidence: retain (members) vs the whole test split
  (non-members), applied to the forget set; NaN for a model with non-finite logits."""
  from jaxunlearn.mia import svc_features
  from jaxunlearn.mia import svc_mia_efficacy

  sp = ctx.p.split
  labels = {"retain": sp.y_train[sp.retain], "forget": sp.y_train[sp.forget], "test": ctx.p.ds.y_test}
  if not all(np.isfinite(ev[k]["logits"]).all() for k in labels):
    return float("nan")
  f = {k: svc_features(ev[k]["logits"], y) for k, y in labels.items()}
  return svc_mia_efficacy(f["retain"], f["test"], f["forget"], seed=ctx.p.cfg.seed)


@register_eval("zrf", legend="zrf: 1 - mean JS divergence from a random model's forget predictions; 1 = like random")
def _zrf(ctx: EvalContext, ev: dict, retrain_acc):
  from jaxunlearn import metrics as jmet

  return float(jmet.zrf(ev["forget"]["logits"], ctx.random_logits))
