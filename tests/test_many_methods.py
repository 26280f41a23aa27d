"""unlearn_many equals single runs for EVERY registered method (2 models, per-model hyperparameters)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_method_api import TINY  # the tiny per-method settings (every registered method has one)
from test_method_api import NO_LOOP
from test_method_api import PASSES
from test_method_api import VARY
from test_method_api import original

from jaxunlearn import many as jmany
from jaxunlearn import train as jtrain
from jaxunlearn import unlearn as jun

KEY = jax.random.key(21)


CASES = [(name, "steps") for name in sorted(TINY)] + [(name, "scan") for name in ("finetune", "scrub", "lau")]


@pytest.mark.parametrize("name,executor", CASES)
def test_unlearn_many_equals_single_runs(name, executor, request, class_data):
  """Two models with their own keys and learning rates in one many-model run (host-stepped: the chunk
  vmapped, each step one jitted call; or one scanned program) equal two separate jitted runs (one scanned
  program each). Host-stepped, a method binds one step function per training pass for the whole run (a new
  closure per epoch would recompile every epoch; two epochs here), at most twice: full and last partial batch."""
  from jaxunlearn.train import _loop

  mlp_trained = original(name, request)
  loops = executor == "steps" and name not in NO_LOOP
  tiny = {**TINY[name], "epochs": 2} if loops else TINY[name]
  method = jun.make(name, jun.replace(jun.get_method(name).config_cls(), **tiny))
  hp = VARY.get(name, "lr")
  lrs = np.array([0.5, 2.0], np.float32) * np.float32(method.hparams[hp])
  _loop._STEP_PROGRAMS.clear()
  out, metrics = jmany.unlearn_many(mlp_trained, class_data, KEY, method, hparams={hp: lrs}, num_models=2,
                                    progress=False, executor=executor)
  if loops:
    passes = PASSES.get(name, 1)
    assert len({k[0] for k in _loop._STEP_PROGRAMS}) == passes, name
    assert passes <= len(_loop._STEP_PROGRAMS) <= 2 * passes, name
  single = jax.jit(method)
  for m in range(2):
    s, sm = single(mlp_trained, class_data, jax.random.fold_in(KEY, m), {hp: lrs[m]})
    got = jmany.take(out, m)
    for a, b in zip(jax.tree.leaves((got.params, got.batch_stats)), jax.tree.leaves((s.params, s.batch_stats))):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5, err_msg=f"{name} model {m}")
    for k in sm:
      np.testing.assert_allclose(np.asarray(metrics[k])[m], np.asarray(sm[k]), rtol=2e-4, atol=2e-5)
  a, b = jmany.take(out, 0), jmany.take(out, 1)
  assert max(float(jnp.max(jnp.abs(p - q))) for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params))) > 0


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
