"""Post-run checks: NaN models, a collapsed retain accuracy and a forget set not forgotten get one warning line each."""

import json
import math

import jax
import pytest

from jaxunlearn import cli
from jaxunlearn import health
from jaxunlearn import unlearn as jun
from jaxunlearn.train import ModelState
from jaxunlearn.train import evaluate

ORIG = {"retain": 0.99, "forget": 0.99, "test": 0.90}


def _w(acc, *, heldout=0.9, whole_class=True, n=1000, finite=True):
  return health.model_warnings("m", acc, ORIG, heldout_acc=heldout, whole_class=whole_class, n_forget=n,
                               finite=finite)


def test_healthy_models_get_no_warning():
  assert _w({"retain": 0.97, "forget": 0.02, "test": 0.80}) == []            # class forgotten, retain kept
  assert _w({"retain": 0.99, "forget": 0.92, "test": 0.89}, whole_class=False) == []  # random: ~held-out


def test_collapse():
  (w,) = _w({"retain": 0.90, "forget": 0.0, "test": 0.80})
  assert w.startswith("m: retain accuracy collapsed to 90.0% (original 99.0%")
  assert _w({"retain": 0.95, "forget": 0.0, "test": 0.80}) == []  # 4 points below: within the margin


def test_not_forgotten_whole_class_reference_is_zero():
  (w,) = _w({"retain": 0.99, "forget": 0.99, "test": 0.90})
  assert "did not forget" in w and "99.0%" in w and "tolerance 5.0" in w
  assert _w({"retain": 0.99, "forget": 0.06, "test": 0.90}) != []
  assert _w({"retain": 0.99, "forget": 0.04, "test": 0.90}) == []


def test_not_forgotten_random_reference_is_the_originals_heldout_accuracy():
  (w,) = _w({"retain": 0.99, "forget": 0.99, "test": 0.90}, whole_class=False, heldout=0.90)
  assert "did not forget" in w and "held-out" in w and "90.0%" in w
  # a small forget set widens the tolerance to two standard errors: 2 * sqrt(.9 * .1 / 20) = 13.4 points
  assert health.forget_tolerance(0.9, 20) == pytest.approx(2 * math.sqrt(0.09 / 20))
  assert _w({"retain": 0.99, "forget": 0.99, "test": 0.9}, whole_class=False, heldout=0.90, n=20) == []
  assert health.forget_tolerance(0.0, 10) == health.NOOP_MIN_POINTS / 100


def test_nan_model_gets_only_the_nan_warning():
  for kw, acc in (({"finite": False}, {"retain": 0.99, "forget": 0.0, "test": 0.9}),
                  ({}, {"retain": float("nan"), "forget": float("nan"), "test": float("nan")})):
    assert _w(acc, **kw) == [health.nonfinite_warning("m")]
  assert "its accuracies are not results" in health.nonfinite_warning("m")


def test_an_untouched_model_on_a_class_forget_set_is_flagged(mlp_trained, class_data, blobs, key):
  """finetune with a zero learning rate returns the original's weights: nothing is forgotten."""
  x, y, xt, yt = blobs
  cfg = jun.make_config("finetune", {"epochs": "1", "lr": "0"})
  state, _ = jun.make("finetune", cfg)(mlp_trained, class_data, key)

  def accs(st):
    ev = lambda xx, yy: evaluate(st.model, st.params, st.batch_stats, xx, yy)["acc"]  # noqa: E731
    r, f = class_data.retain, class_data.forget
    return {"retain": ev(x[r], y[r]), "forget": ev(x[f], y[f]), "test": ev(xt, yt)}

  orig, acc = accs(mlp_trained), accs(state)
  assert acc == orig and orig["forget"] > 0.5
  ws = health.model_warnings("finetune", acc, orig, heldout_acc=0.0, whole_class=True,
                             n_forget=len(class_data.forget))
  assert len(ws) == 1 and ws[0].startswith("finetune: did not forget")
  # a destroyed copy (all weights zero: a constant predictor) is flagged as a collapse
  zero = ModelState(jax.tree.map(lambda p: p * 0, state.params), state.batch_stats, state.model)
  ws = health.model_warnings("zeroed", accs(zero), orig, heldout_acc=0.0, whole_class=True,
                             n_forget=len(class_data.forget))
  assert any("retain accuracy collapsed" in w for w in ws)


def test_run_records_the_warnings(tmp_path, capsys):
  out = tmp_path / "o"
  code = cli.main(["run", "--model", "mlp", "--width", "0.25", "--epochs", "3", "--train-subset", "200",
                   "--test-subset", "60", "--forget", "class:3", "--method", "finetune", "--method", "lau",
                   "--set", "finetune.epochs=1", "--set", "finetune.lr=1e-12", "--quiet", "--out", str(out)])
  capsys.readouterr()
  assert code == 0
  r = json.loads((out / "results.json").read_text())
  ws = r["warnings"]
  assert any(w.startswith("finetune: did not forget") for w in ws)
  assert not any(w.startswith(("retrain:", "original:")) for w in ws)


def test_hints_of_a_method_without_a_training_loop_name_its_hyperparameters():
  from jaxunlearn import health

  acc, orig = {"retain": 0.3, "forget": 1.0, "test": 0.3}, {"retain": 1.0, "forget": 1.0, "test": 0.98}
  trains = health.model_warnings("finetune", acc, orig, heldout_acc=0.9, whole_class=True, n_forget=100)
  assert any("collapsed" in w and "smaller lr" in w for w in trains)
  assert any("did not forget" in w and "more epochs" in w for w in trains)
  no_loop = health.model_warnings("ssd", acc, orig, heldout_acc=0.9, whole_class=True, n_forget=100, trains=False)
  assert len(no_loop) == 2 and not any("epochs" in w or " lr" in w for w in no_loop)
  assert all("hyperparameters (jaxunlearn tune)" in w for w in no_loop)
