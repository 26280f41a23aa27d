"""The SVC MIA-efficacy of SalUn / Unlearn-Sparse (jaxunlearn.mia.svc_mia_efficacy, svc_features, ``run --eval svc``)."""

import json

import numpy as np
import pytest
from scipy import special
from scipy import stats

from jaxunlearn import cli
from jaxunlearn import mia


def _separable(rng, n_r=300, n_t=300):
  """Members confident (0.9-1), non-members not (0.1-0.5)."""
  return rng.uniform(0.9, 1.0, n_r), rng.uniform(0.1, 0.5, n_t)


def test_forget_like_test_is_forgotten_like_retain_is_not():
  rng = np.random.default_rng(0)
  retain, test = _separable(rng)
  # a wrong label convention (members = 0) or returning the member share flips both
  assert mia.svc_mia_efficacy(retain, test, rng.uniform(0.1, 0.5, 200)) > 0.97
  assert mia.svc_mia_efficacy(retain, test, rng.uniform(0.9, 1.0, 200)) < 0.03


def test_efficacy_is_the_share_predicted_non_member():
  rng = np.random.default_rng(1)
  retain, test = _separable(rng)
  forget = np.array([0.97] * 7 + [0.25] * 3)  # deep inside each cluster
  assert mia.svc_mia_efficacy(retain, test, forget) == pytest.approx(0.3)
  assert mia.svc_mia_efficacy(retain[:, None], test[:, None], forget[:, None]) == pytest.approx(0.3)


def test_retain_and_test_are_balanced():
  # members and non-members from ONE distribution: a balanced attacker is a coin flip on the forget
  # set; fitted on 20x more members, an SVC would call (nearly) everything a member (efficacy ~0)
  rng = np.random.default_rng(2)
  retain, test, forget = rng.uniform(0, 1, 4000), rng.uniform(0, 1, 200), rng.uniform(0, 1, 400)
  assert 0.2 < mia.svc_mia_efficacy(retain, test, forget) < 0.8
  # either side may be the larger one
  assert 0.2 < mia.svc_mia_efficacy(test, retain, forget) < 0.8
  # seeded: the subsample (and so the result) depends on the seed only
  a = [mia.svc_mia_efficacy(retain, test, forget, seed=s) for s in (0, 0, 1)]
  assert a[0] == a[1]


def test_svc_features_confidence_and_entropy():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, (20, 5))
  y = rng.integers(0, 5, 20)
  p = special.softmax(logits, axis=1)
  np.testing.assert_allclose(mia.svc_features(logits, y), p[np.arange(20), y], rtol=1e-12)
  np.testing.assert_allclose(mia.svc_features(logits, y, "entropy"), stats.entropy(p, axis=1), rtol=1e-10)
  # a one-hot softmax has zero entropy (0 log 0 = 0), not NaN
  assert mia.svc_features(np.array([[1000.0, 0.0]]), [0], "entropy")[0] == 0.0


def test_bad_input():
  with pytest.raises(ValueError, match="feature"):
    mia.svc_features(np.zeros((2, 3)), [0, 1], "loss")
  with pytest.raises(ValueError, match="labels"):
    mia.svc_features(np.zeros((2, 3)), [0, 3])
  with pytest.raises(ValueError, match="NaN"):
    mia.svc_mia_efficacy([np.nan, 1.0], [0.0, 0.1], [0.5])
  with pytest.raises(ValueError, match="at least"):
    mia.svc_mia_efficacy([1.0], [0.0, 0.1], [0.5])
  with pytest.raises(ValueError, match="width"):
    mia.svc_mia_efficacy(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((3, 2)))


def test_run_eval_svc_through_the_cli(tmp_path, capsys):
  out, saved = tmp_path / "o", tmp_path / "models"
  code = cli.main(["run", "--model", "mlp", "--width", "0.25", "--epochs", "3", "--train-subset", "300",
                   "--test-subset", "100", "--forget", "class:3", "--method", "finetune", "--set", "finetune.epochs=1",
                   "--eval", "mia", "--eval", "svc", "--quiet", "--save-models", str(saved), "--out", str(out)])
  stdout = capsys.readouterr().out
  assert code == 0
  r = json.loads((out / "results.json").read_text())
  assert r["mia_convention"] == {"mia": "scrub_logreg_loss", "svc": "svc_mia_efficacy_salun"}
  svc = {name: m["svc"] for name, m in r["models"].items()}
  assert set(svc) == {"original", "retrain", "finetune"} and all(0.0 <= v <= 1.0 for v in svc.values())
  # the oracle never saw class 3: its forget set looks unseen, the original's less so
  assert svc["retrain"] > svc["original"]
  # the JSON's number is the attack on the saved model's own outputs: retain vs the whole test split
  from jaxunlearn import run
  from jaxunlearn.train import evaluate

  p = run.prepare(run.RunConfig(model="mlp", width=0.25, epochs=3, train_subset=300, test_subset=100,
                                forget="class:3", out=str(tmp_path / "unused")))
  state = run.load_model(saved / "finetune", p.model)
  sp = p.split
  feats = {k: mia.svc_features(evaluate(p.model, state.params, state.batch_stats, x, y)["logits"], y)
           for k, x, y in (("retain", p.ds.x_train[sp.retain], sp.y_train[sp.retain]),
                           ("forget", p.ds.x_train[sp.forget], sp.y_train[sp.forget]),
                           ("test", p.ds.x_test, p.ds.y_test))}
  assert svc["finetune"] == mia.svc_mia_efficacy(feats["retain"], feats["test"], feats["forget"], seed=0)
  # the printed table carries both MIA numbers, each naming its convention
  assert "svc_mia_efficacy_salun" in stdout and "scrub_logreg_loss" in stdout
  row = next(line for line in stdout.splitlines() if line.startswith("finetune") and "." in line.split()[-1]
             and len(line.split()) == 3)
  assert row.split()[1:] == [f"{r['models']['finetune']['mia']:.3f}", f"{svc['finetune']:.3f}"]
