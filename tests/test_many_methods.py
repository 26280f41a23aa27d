"""The many-model entry points: bad hyperparameters refused before compiling, train_many's executors equal to
single runs, group strategies only under scan. (unlearn_many equals single runs for EVERY registered method:
test_method_api.test_vmap_and_unlearn_many_equal_separate_runs, sharing that test's separate runs.)"""

import jax
import numpy as np
import pytest

from jaxunlearn import many as jmany
from jaxunlearn import train as jtrain

KEY = jax.random.key(21)


def test_unlearn_many_rejects_bad_hparams_before_compiling(mlp_trained, class_data):
  with pytest.raises(ValueError, match="no hyperparameter 'lrr'"):
    jmany.unlearn_many(mlp_trained, class_data, KEY, "finetune", hparams={"lrr": 0.1}, num_models=2, progress=False)
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    jmany.unlearn_many(mlp_trained, class_data, KEY, "finetune", hparams={"lr": [0.1, 0.2, 0.3]}, num_models=2,
                       progress=False)
  with pytest.raises(ValueError, match="NaN"):
    jmany.unlearn_many(mlp_trained, class_data, KEY, "finetune", hparams={"lr": [0.1, float("nan")]}, num_models=2,
                       progress=False)
  with pytest.raises(ValueError, match="not a registered method"):
    jmany.unlearn_many(mlp_trained, class_data, KEY, lambda *a: a, num_models=2, progress=False)


def test_train_many_executors_agree_with_single_runs(blobs, tiny_model):
  x, y, _, _ = blobs
  keep = np.zeros((2, len(y)), bool)
  keep[0, ::2] = keep[1, 1::2] = True
  cfg = jtrain.TrainConfig(epochs=1, batch_size=16, lr=0.05)
  info = {}
  stepped, _ = jmany.train_many(KEY, (x, y), keep, cfg, model=tiny_model, progress=False, executor="steps", info=info)
  scanned, _ = jmany.train_many(KEY, (x, y), keep, cfg, model=tiny_model, progress=False, executor="scan")
  assert info["executor"] == "steps" and info["strategy"] == "vmap"
  for m in range(2):
    single, _ = jtrain.train_model(tiny_model, cfg, x, y, np.flatnonzero(keep[m]), jax.random.fold_in(KEY, m),
                                   progress=False, executor="scan")
    for a, b, c in zip(jax.tree.leaves(jmany.take(stepped, m).params), jax.tree.leaves(jmany.take(scanned, m).params),
                       jax.tree.leaves(single.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(np.asarray(b), np.asarray(c), rtol=1e-5, atol=1e-6)


def test_steps_executor_refuses_group_strategies(blobs, tiny_model):
  """Under steps a chunk's models run in lockstep (vmap) or one after another (sequential); a group size
  needs the scan executor: refused when asked for explicitly, scan when the executor was auto."""
  from jaxunlearn.errors import ConfigError
  x, y, _, _ = blobs
  keep = np.ones((2, len(y)), bool)
  with pytest.raises(ConfigError, match="executor 'steps' runs the models of a chunk in lockstep"):
    jmany.train_many(KEY, (x, y), keep, jtrain.TrainConfig(epochs=1), model=tiny_model, strategy=2,
                     executor="steps", progress=False)
  assert jmany.run_settings("auto", 2, tiny_model) == ("scan", 2)
  assert jmany.run_settings("steps", "sequential", tiny_model) == ("steps", "sequential")


def test_a_method_without_a_training_loop_runs_as_one_program_whatever_the_executor(monkeypatch, mlp_trained,
                                                                                    class_data):
  """Under ``steps`` a method with a training loop runs host-stepped; one without (SSD, Fisher, ...) has no
  step to run on the host, so it runs as one compiled program, as a single run does (every operation
  outside a step would otherwise run eagerly, one small compilation each)."""
  from jaxunlearn.many import api
  from jaxunlearn.many.programs import HostStepped

  made = []
  real = api.unlearn_program
  monkeypatch.setattr(api, "unlearn_program", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
  for name, stepped in (("finetune", True), ("ssd", False)):
    jmany.unlearn_many(mlp_trained, class_data, KEY, name, num_models=2, progress=False, executor="steps")
    assert isinstance(made[-1], HostStepped) == stepped, name
