"""CF-k / EU-k: only the last k parameter groups change (and their BatchNorm statistics); EU-k starts
them from a fresh initialisation; both forget class 0 of the blobs problem."""

import jax
import numpy as np
import pytest

from jaxunlearn.train import evaluate
from jaxunlearn.unlearn import CFkConfig
from jaxunlearn.unlearn import EUkConfig
from jaxunlearn.unlearn import cf_k
from jaxunlearn.unlearn import eu_k
from jaxunlearn.unlearn._blocks import last_blocks
from jaxunlearn.unlearn import replace as _cfg  # flat optimizer fields route into config.optim

cf_jit = jax.jit(cf_k, static_argnames="config")
eu_jit = jax.jit(eu_k, static_argnames="config")


def _same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _all_differ(a, b):
  return all(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_last_blocks(tiny_model):
  assert tiny_model.block_names() == ("conv1", "conv2", "fc", "head")
  assert last_blocks(tiny_model, 1) == ("head",)
  assert last_blocks(tiny_model, 2) == ("fc", "head")
  for k in (0, 5):
    with pytest.raises(ValueError, match="k must be"):
      last_blocks(tiny_model, k)


@pytest.mark.parametrize("k", [2, 3])
def test_cf_k_only_last_blocks_change(trained, class_data, k):
  new, m = cf_jit(trained, class_data, jax.random.key(0), _cfg(CFkConfig(), k=k, epochs=2, batch_size=32, lr=0.05))
  groups = ("conv1", "conv2", "fc", "head")[-k:]
  for name in ("conv1", "conv2", "fc", "head"):
    if name in groups:
      assert _all_differ(new.params[name], trained.params[name]), name
    else:
      assert _same(new.params[name], trained.params[name]), name
  for name in ("conv1", "conv2"):  # BatchNorm statistics: frozen with their group
    assert _same(new.batch_stats[name], trained.batch_stats[name]) == (name not in groups), name
  assert m["loss"].shape == (2,)


def test_cf_k_with_mask_changes_only_masked_entries(trained, class_data):
  mask = jax.tree.map(lambda p: (jax.random.uniform(jax.random.key(p.size), p.shape) < 0.5).astype("float32"),
                      trained.params)
  new, _ = cf_jit(trained, class_data, jax.random.key(0), _cfg(CFkConfig(), k=2, epochs=1, batch_size=32, lr=0.05), mask=mask)
  for name in ("conv1", "conv2"):
    assert _same(new.params[name], trained.params[name])
  for p, q, mm in zip(jax.tree.leaves(new.params["fc"]), jax.tree.leaves(trained.params["fc"]),
                      jax.tree.leaves(mask["fc"])):
    p, q, mm = np.asarray(p), np.asarray(q), np.asarray(mm)
    np.testing.assert_array_equal(p[mm == 0], q[mm == 0])
    assert np.any(p[mm == 1] != q[mm == 1])


def test_eu_k_reinitialises_last_blocks(trained, class_data, tiny_model):
  key = jax.random.key(4)
  fresh_p, fresh_s = tiny_model.init(jax.random.fold_in(key, 0))
  # After 0 epochs: the last k=3 groups are the fresh initialisation (params and BN stats), the rest untouched.
  new0, _ = eu_jit(trained, class_data, key, EUkConfig(k=3, epochs=0))
  for name in ("conv2", "fc", "head"):
    assert _same(new0.params[name], fresh_p[name]), name
  assert _same(new0.batch_stats["conv2"], fresh_s["conv2"])
  assert _same(new0.params["conv1"], trained.params["conv1"])
  assert _same(new0.batch_stats["conv1"], trained.batch_stats["conv1"])
  assert _all_differ(new0.params["fc"], trained.params["fc"])
  # After training: those groups moved away from the fresh init, the rest is still bit-identical.
  new, _ = eu_jit(trained, class_data, key, EUkConfig(k=3, epochs=2, batch_size=32))
  assert _same(new.params["conv1"], trained.params["conv1"])
  assert _same(new.batch_stats["conv1"], trained.batch_stats["conv1"])
  for name in ("conv2", "fc", "head"):
    assert _all_differ(new.params[name], fresh_p[name]), name
  assert _all_differ(new.batch_stats["conv2"], fresh_s["conv2"])


def _accs(state, blobs, class_split):
  x, y, xt, yt = blobs
  retain, forget = class_split
  ev = lambda xs, ys: evaluate(state.model, state.params, state.batch_stats, xs, ys)["acc"]
  return ev(x[retain], y[retain]), ev(x[forget], y[forget]), ev(xt, yt)


# On this separable problem the retain loss of the original is ~0, so CF-k with the default weight decay
# does not move the class-0 boundary; a stronger weight decay (2e-2) and lr 0.1 for 30 epochs makes it
# forget. EU-k's defaults work with smaller batches (32) and 10 epochs.
@pytest.mark.parametrize("name,fn,cfg", [
    ("cf_k", cf_jit, _cfg(CFkConfig(), k=2, epochs=30, batch_size=32, lr=0.1, weight_decay=2e-2)),
    ("eu_k", eu_jit, EUkConfig(k=2, epochs=10, batch_size=32)),
])
def test_forgets_class_keeps_retain(trained, class_data, blobs, class_split, name, fn, cfg):
  r0, f0, _ = _accs(trained, blobs, class_split)
  new, _ = fn(trained, class_data, jax.random.key(7), cfg)
  r, f, _ = _accs(new, blobs, class_split)
  assert f0 >= 0.95
  assert f <= 0.5, (name, f)  # forget accuracy drops from ~1 to at most 0.5
  assert r >= 0.9, (name, r)  # stated bound: retain accuracy >= 0.9
