"""Pure training: step, scan run, schedule rules, vmap over models equals single runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import train as jt


def test_train_step_is_pure_and_reduces_loss(tiny_model, blobs):
  x, y, _, _ = blobs
  cfg = jt.TrainConfig(lr=0.05)
  tx = jt.make_optimizer(cfg, 10)
  params, stats = tiny_model.init(jax.random.key(0))
  st = jt.TrainState.create(params, stats, tx)
  step = jax.jit(jt.make_train_step(tiny_model, tx))
  batch = (jnp.asarray(x[:32]), jnp.asarray(y[:32]))
  s1, m1 = step(st, batch, jax.random.key(1))
  s1b, _ = step(st, batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s1b.params)):
    np.testing.assert_array_equal(a, b)
  assert int(s1.step) == 1
  s = s1
  for i in range(10):
    s, m = step(s, batch, jax.random.key(2 + i))
  assert float(m["loss"]) < float(m1["loss"])


def test_epoch_batches_is_a_permutation_of_the_index():
  idx = jnp.arange(10, 30)
  b = jt.epoch_batches(jax.random.key(0), idx, 6)
  assert b.full.shape == (3, 6) and b.rest.shape == (2,)  # the last partial batch is kept
  vals = np.concatenate([np.asarray(b.full).ravel(), np.asarray(b.rest)])
  assert sorted(vals.tolist()) == list(range(10, 30))  # every example exactly once
  assert b.num_steps == 4 == jt.steps_per_epoch(20, 6)
  dropped = jt.epoch_batches(jax.random.key(0), idx, 6, drop_last=True)
  assert dropped.rest is None and dropped.num_steps == 3 == jt.steps_per_epoch(20, 6, drop_last=True)
  np.testing.assert_array_equal(dropped.full, b.full)
  even = jt.epoch_batches(jax.random.key(0), jnp.arange(12), 6)
  assert even.rest is None and even.full.shape == (2, 6)
  small = jt.epoch_batches(jax.random.key(0), jnp.arange(4), 64)  # batch clamped to the set
  assert small.full.shape == (1, 4) and small.rest is None


def test_step_schedule_follows_decay_rule():
  # lr in epoch e (1-based) = lr0 * 0.1 ** #{d in decay: d < e}
  cfg = jt.TrainConfig(epochs=10, lr=1.0, schedule="step", decay_epochs=(5, 8, 9))
  sched = jt.make_schedule(cfg, 3)
  for e in range(1, 11):
    expect = 0.1 ** sum(d < e for d in (5, 8, 9))
    for s in range(3):
      assert float(sched((e - 1) * 3 + s)) == pytest.approx(expect, rel=1e-5)


def test_cosine_schedule_ends_at_final_fraction():
  cfg = jt.TrainConfig(epochs=2, lr=0.5, schedule="cosine", final_lr_frac=0.01)
  sched = jt.make_schedule(cfg, 5)
  assert float(sched(0)) == pytest.approx(0.5)
  assert float(sched(10)) == pytest.approx(0.005, rel=1e-4)


def test_train_model_equals_pure_scan_run(tiny_model, blobs):
  x, y, _, _ = blobs
  cfg = jt.TrainConfig(epochs=2, batch_size=32, lr=0.05)
  idx = np.arange(100)
  key = jax.random.key(5)
  st, _ = jt.train_model(tiny_model, cfg, x, y, idx, key, progress=False)
  init, fit = jt.make_fit(tiny_model, cfg, len(idx))
  params, stats = tiny_model.init(jax.random.fold_in(key, 0))
  ts, hist = jax.jit(fit)(init(params, stats), jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx),
                          jax.random.fold_in(key, 1))
  assert hist["loss"].shape == (2,)
  for a, b in zip(jax.tree.leaves(st.params), jax.tree.leaves(ts.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_vmapped_training_equals_single_runs(tiny_model, blobs):
  """N models trained in one vmapped program equal N single-model runs with the same keys."""
  x, y, _, _ = blobs
  cfg = jt.TrainConfig(epochs=2, batch_size=16, lr=0.05)
  n = 64
  init, fit = jt.make_fit(tiny_model, cfg, n)
  keys = jax.random.split(jax.random.key(7), 3)
  rng = np.random.default_rng(0)
  idxs = jnp.asarray(np.stack([np.sort(rng.permutation(len(y))[:n]) for _ in range(3)]))
  xd, yd = jnp.asarray(x), jnp.asarray(y)

  def one(k, idx):
    p, s = tiny_model.init(jax.random.fold_in(k, 0))
    return fit(init(p, s), xd, yd, idx, jax.random.fold_in(k, 1))

  many, _ = jax.jit(jax.vmap(one))(keys, idxs)
  for i in range(3):
    single, _ = jax.jit(one)(keys[i], idxs[i])
    for a, b in zip(jax.tree.leaves(many.params), jax.tree.leaves(single.params)):
      np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5)
  # and the models differ from each other (different keys and data)
  leaf = jax.tree.leaves(many.params)[0]
  assert not np.allclose(leaf[0], leaf[1])


def test_evaluate_batches_match_unbatched(tiny_model, blobs):
  x, y, _, _ = blobs
  p, s = tiny_model.init(jax.random.key(0))
  full = jt.evaluate(tiny_model, p, s, x[:50], y[:50], batch_size=1024)
  batched = jt.evaluate(tiny_model, p, s, x[:50], y[:50], batch_size=7)
  np.testing.assert_allclose(full["logits"], batched["logits"], rtol=1e-5, atol=1e-5)
  assert full["losses"].shape == (50,)
  assert full["acc"] == pytest.approx(np.mean(full["logits"].argmax(-1) == y[:50]))


@pytest.mark.parametrize("kw,msg", [({"optimizer": "lbfgs"}, "unknown optimizer"),
                                    ({"lr": float("nan")}, "lr=nan must be"),
                                    ({"batch_size": 0}, "batch_size")])
def test_bad_train_config(kw, msg):
  with pytest.raises(ValueError, match=msg):
    jt.TrainConfig(**kw)


def test_train_model_checks_indices_and_labels_on_the_host(tiny_model, blobs):
  # out-of-range indices would be clamped by JAX's gather, too-large labels give a zero one-hot
  x, y, _, _ = blobs
  cfg = jt.TrainConfig(epochs=1, batch_size=16)
  for index, labels, match in ((np.arange(len(y) + 5), y, rf"index must lie in \[0, {len(y)}\)"),
                               (np.array([-1, 0, 1]), y, "got range \\[-1, 1\\]"),
                               (np.array([0.0, 1.0]), y, "index must hold integers"),
                               (np.arange(8), np.where(np.arange(len(y)) == 3, 9, y),
                                "labels must lie in \\[0, 4\\) for model"),
                               (np.arange(8), y[:-1], "labels must have shape")):
    with pytest.raises(ValueError, match=match):
      jt.train_model(tiny_model, cfg, x, labels, index, jax.random.key(0), progress=False)
