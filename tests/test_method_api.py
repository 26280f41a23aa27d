"""The method factory: every registered method is a pure function of (state, data, key, hparams) that plain
``jax.jit`` compiles once and ``jax.vmap`` maps over hyperparameters and keys, equal to separate runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import train as jtrain
from jaxunlearn import unlearn as jun

# Tiny discrete settings per method (a few steps each). A newly registered method must be added here:
# test_every_method_is_covered fails otherwise. A method without an optimizer names the hyperparameter the
# vmap test varies in VARY (default ``lr``), and scales it by 0.5, 1, 2.
VARY: dict[str, str] = {"influence": "alpha", "fisher": "alpha", "ssd": "lam", "lfssd": "lam"}
# Methods that run no training loop (their steps-executor test does not apply), and the number of
# training passes (distinct step functions) of those with more than one.
NO_LOOP: set[str] = {"influence", "fisher", "ssd", "lfssd"}
PASSES = {"scrub": 2, "scrub_rewind": 4, "unsir": 2}  # scrub_rewind: SCRUB's passes twice; unsir: impair, repair
# Methods that refuse the MLP (they need convolution kernels): these tests run them on the tiny CNN.
CNN_ONLY = {"ct"}
TINY = {
    "finetune": dict(epochs=1, batch_size=32),
    "retrain": dict(epochs=1, batch_size=32),
    "neggrad": dict(epochs=1, batch_size=16),
    "neggrad_plus": dict(epochs=1, batch_size=32, forget_batch_size=16),
    "random_label": dict(epochs=1, batch_size=32),
    "l1_sparse": dict(epochs=1, batch_size=32, l1=1e-3),
    "bad_teacher": dict(epochs=1, batch_size=32),  # Adam: its sign-like steps amplify vmap rounding at large lr
    "scrub": dict(epochs=2, msteps=1, batch_size=32, forget_batch_size=16, lr=5e-3),
    "scrub_rewind": dict(epochs=2, msteps=1, batch_size=32, forget_batch_size=16, lr=5e-3),
    "del": dict(epochs=1, batch_size=32, score_batch_size=32),
    "salun": dict(epochs=1, batch_size=32, score_batch_size=32),
    "cf_k": dict(epochs=1, batch_size=32),
    "eu_k": dict(epochs=1, batch_size=32),
    "lau": dict(epochs=1, batch_size=16, pgd_steps=3, lr=0.1, early_stop=False),
    "influence": dict(num_samples=32, chunk_size=16),
    "boundary_shrink": dict(epochs=1, batch_size=16),
    "boundary_expand": dict(epochs=1, batch_size=16),
    "msg": dict(epochs=1, batch_size=32, score_batch_size=32),
    "ct": dict(epochs=1, batch_size=32),
    "fisher": dict(retain_subset=40, chunk_size=16),
    "ssd": dict(alpha=1.5, retain_subset=60, chunk_size=32),  # blobs: a class is 1/4 of D, so ratios are <= 4
    "lfssd": dict(alpha=1.5, retain_subset=60, chunk_size=32),
    "unsir": dict(epochs=1, repair_epochs=1, retain_per_class=10, batch_size=16, noise_count=8, noise_steps=3),
    "srl": dict(epochs=1, batch_size=32),
}


def _method(name):
  spec = jun.get_method(name)
  return jun.make(name, jun.replace(spec.config_cls(), **TINY[name]))


def original(name, request):
  """The model a method's API tests start from: the small MLP, or the tiny CNN for :data:`CNN_ONLY`."""
  return request.getfixturevalue("trained" if name in CNN_ONLY else "mlp_trained")


def _leaves(state, *idx):
  return [np.asarray(leaf)[idx] for leaf in jax.tree.leaves((state.params, state.batch_stats))]


def test_every_method_is_covered():
  assert set(TINY) == set(jun.METHODS)
  for name, spec in jun.METHODS.items():
    assert VARY.get(name, "lr") in jun.make(name).hparams, name
    for preset in spec.presets:  # every preset builds a valid config and method
      m = jun.make(name, preset=preset)
      if jun.trains(m.config):
        assert set(m.hparams) >= {"lr", "momentum", "weight_decay"}
      assert all(v.dtype == jnp.float32 and v.shape == () for v in m.hparams.values())


# Methods whose many-model run is also checked as one scanned program (one per loop shape that scan-specific
# code touches: one pass, SCRUB's two passes, LAU's inner attack); every method is checked host-stepped.
SCAN_MANY = ("finetune", "scrub", "lau")
KEY = jax.random.key(21)


def _assert_close(got, want, msg):
  """Leaf lists (:func:`_leaves`) equal up to the float32 rounding of a batched vs a plain program."""
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=msg)


@pytest.mark.parametrize("name", sorted(TINY))
def test_vmap_and_unlearn_many_equal_separate_runs(name, request, class_data):
  """One method, three ways against the same separate runs (plain ``jax.jit``, one scanned program each,
  compiled once: hyperparameters are data):

  1. ``jax.vmap`` over 3 hyperparameter values x 2 keys in one jitted program;
  2. ``unlearn_many`` of 2 models with their own keys (``fold_in(key, m)``) and values, host-stepped (the
     chunk vmapped, each step one jitted call); for :data:`SCAN_MANY` also as one scanned program.
     Host-stepped, a method binds one step function per training pass for the whole run (a new closure per
     epoch would recompile every epoch; two epochs here), at most twice: full and last partial batch.

  The hyperparameter reaches the computation: x0.5 and x2 give different weights.
  """
  from jaxunlearn import many as jmany
  from jaxunlearn.train import _loop

  mlp_trained = original(name, request)
  loops = name not in NO_LOOP
  tiny = {**TINY[name], "epochs": 2} if loops else TINY[name]
  m = jun.make(name, jun.replace(jun.get_method(name).config_cls(), **tiny))
  hp = VARY.get(name, "lr")
  vals = jnp.array([0.5, 1.0, 2.0], jnp.float32) * m.hparams[hp]
  keys = jnp.stack([jax.random.fold_in(KEY, 0), jax.random.fold_in(KEY, 1)])  # unlearn_many's model keys
  single = jax.jit(m)
  runs = {(i, j): single(mlp_trained, class_data, keys[j], {hp: vals[i]}) for i in range(3) for j in range(2)}
  assert single._cache_size() == 1, "new hparams values must not recompile"
  diff = max(np.max(np.abs(a - b)) for a, b in zip(_leaves(runs[0, 0][0]), _leaves(runs[2, 0][0])))
  assert diff > 1e-6, name

  over_keys = jax.vmap(m, in_axes=(None, None, 0, None))
  out, _ = jax.jit(jax.vmap(over_keys, in_axes=(None, None, None, 0)))(mlp_trained, class_data, keys, {hp: vals})
  for (i, j), (s, _) in runs.items():
    _assert_close(_leaves(out, i, j), _leaves(s), f"{name} vmap {hp}#{i} key#{j}")

  pairs = [(0, 0), (2, 1)]  # model m: (value index, key index)
  for executor in ("steps", "scan") if name in SCAN_MANY else ("steps",):
    _loop._STEP_PROGRAMS.clear()
    many, metrics = jmany.unlearn_many(mlp_trained, class_data, KEY, m, hparams={hp: vals[np.array([0, 2])]},
                                       num_models=2, progress=False, executor=executor)
    if executor == "steps" and loops:
      passes = PASSES.get(name, 1)
      assert len({k[0] for k in _loop._STEP_PROGRAMS}) == passes, name
      assert passes <= len(_loop._STEP_PROGRAMS) <= 2 * passes, name
    for mi, ij in enumerate(pairs):
      s, sm = runs[ij]
      _assert_close(_leaves(many, mi), _leaves(s), f"{name} unlearn_many {executor} model {mi}")
      for k in sm:
        np.testing.assert_allclose(np.asarray(metrics[k])[mi], np.asarray(sm[k]), rtol=2e-4, atol=2e-5,
                                   err_msg=f"{name} {executor} metric {k}")


def test_second_call_with_new_hparams_does_not_recompile(mlp_trained, class_data):
  m = _method("scrub")
  f = jax.jit(m)
  a, _ = f(mlp_trained, class_data, jax.random.key(0), m.hparams_with(alpha=0.2, kd_T=3.0))
  b, _ = f(mlp_trained, class_data, jax.random.key(0), m.hparams_with(alpha=0.9, kd_T=1.5))
  assert f._cache_size() == 1
  assert max(np.max(np.abs(x - y)) for x, y in zip(_leaves(a), _leaves(b))) > 0


def test_defaults_equal_the_config_values_and_convenience_function(mlp_trained, class_data):
  m = _method("neggrad_plus")
  cfg = m.config
  assert float(m.hparams["alpha"]) == np.float32(cfg.alpha) and float(m.hparams["lr"]) == np.float32(cfg.optim.lr)
  via_fn, _ = jax.jit(jun.neggrad_plus, static_argnames="config")(mlp_trained, class_data, jax.random.key(5), cfg)
  via_make, _ = jax.jit(m)(mlp_trained, class_data, jax.random.key(5))
  for a, b in zip(_leaves(via_fn), _leaves(via_make)):
    np.testing.assert_array_equal(a, b)


def test_bad_hparam_names_and_configs_are_one_line_errors():
  m = jun.make("scrub")
  with pytest.raises(ValueError, match="no hyperparameter 'alhpa'"):
    m.hparams_with(alhpa=0.1)
  with pytest.raises(TypeError, match="must be a ScrubConfig"):
    jun.make("scrub", jun.FinetuneConfig())
  with pytest.raises(ValueError, match="NegGradPlusConfig.alpha=1.5 must be"):
    jun.replace(jun.NegGradPlusConfig(), alpha=1.5)
  with pytest.raises(ValueError, match="no option 'nope'"):
    jun.make_config("finetune", {"nope": "1"})
  with pytest.raises(ValueError, match="retrain takes no mask"):
    jun.make("retrain")(None, None, None, mask={})


def test_set_coercion_handles_nested_optional_and_tuples():
  cfg = jun.make_config("scrub", {"lr": "1e-3", "decay_epochs": "2,4", "alpha": "0.25", "augment": "true"})
  assert (cfg.optim.lr, cfg.optim.decay_epochs, cfg.alpha, cfg.augment) == (1e-3, (2, 4), 0.25, True)
  from jaxunlearn.unlearn._registry import _coerce
  assert _coerce("none", int | None, "x") is None and _coerce("3", int | None, "x") == 3
  assert _coerce("0.5", int | float, "x") == 0.5
  with pytest.raises(ValueError, match="expected int"):
    _coerce("abc", int | None, "x.k")


def test_register_is_public_and_rejects_duplicates():
  with pytest.raises(ValueError, match="registered twice"):
    jun.register("finetune", jun.FinetuneConfig)(lambda *a, **k: None)


# One method per loop shape (one pass; SCRUB+Rewind's four passes with a rewind; UNSIR's impair then repair;
# LAU's inner PGD attack): every method's host-stepped run, vmapped over two models, is checked against its
# scanned runs (and its step functions counted) in test_vmap_and_unlearn_many_equal_separate_runs.
STEPS_SINGLE = ("finetune", "scrub_rewind", "unsir", "lau")


@pytest.mark.parametrize("name", STEPS_SINGLE)
def test_steps_executor_equals_scan(name, request, class_data):
  """A method run host-stepped on one model (each step its own jitted call) equals its one-program (scan)
  run, up to float32 rounding, and really steps on the host (the step callback fires)."""
  from jaxunlearn.train import _loop

  mlp_trained = original(name, request)
  m = jun.make(name, jun.replace(jun.get_method(name).config_cls(), **{**TINY[name], "epochs": 3}))
  a, ma = jax.jit(m)(mlp_trained, class_data, jax.random.key(8))
  calls = []
  _loop._STEP_PROGRAMS.clear()
  with jtrain.use_executor("steps", on_step=lambda: calls.append(1)):
    b, mb = m(mlp_trained, class_data, jax.random.key(8))
  assert calls, f"{name}: no host step ran"
  # one step function per pass for the whole run (a new closure per epoch would recompile every epoch),
  # bound at most twice: for the full batches and for the last partial batch
  passes = PASSES.get(name, 1)
  assert len({k[0] for k in _loop._STEP_PROGRAMS}) == passes, name
  assert passes <= len(_loop._STEP_PROGRAMS) <= 2 * passes, name
  for p, q in zip(_leaves(a), _leaves(b)):
    np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6, err_msg=name)
  for k in ma:
    np.testing.assert_allclose(np.asarray(ma[k], np.float64), np.asarray(mb[k], np.float64), rtol=1e-4, atol=1e-6)
