"""DEL (reset to a fresh init where masked, masked finetuning, head fully trained) and SalUn (random
labels under the saliency mask): unmasked parameters stay bit-identical; both forget class 0."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxunlearn.train import evaluate
from jaxunlearn.unlearn import DelConfig
from jaxunlearn.unlearn import SalunConfig
from jaxunlearn.unlearn import del_unlearn
from jaxunlearn.unlearn import masks
from jaxunlearn.unlearn import salun

del_jit = jax.jit(del_unlearn, static_argnames="config")
salun_jit = jax.jit(salun, static_argnames="config")


def _leaves(t):
  return [np.asarray(l) for l in jax.tree.leaves(t)]


def test_del_reset_equals_fresh_init_where_masked(trained, class_data, tiny_model):
  key = jax.random.key(11)
  mask = masks.del_mask(trained, class_data, 0.3)
  fresh, _ = tiny_model.init(jax.random.fold_in(key, 0))
  new, m = del_jit(trained, class_data, key, DelConfig(epochs=0))  # 0 epochs: just the reset
  # The reported fraction, recomputed in numpy from the 0/1 mask leaves; del_mask keeps exactly
  # round(0.3 * size) entries.
  mask_leaves = _leaves(mask)
  assert all(np.isin(l, (0.0, 1.0)).all() for l in mask_leaves)
  ones = sum(int(l.sum()) for l in mask_leaves)
  size = sum(l.size for l in mask_leaves)
  assert ones == round(0.3 * size)
  assert float(m["mask_fraction"]) == pytest.approx(ones / size, rel=1e-6)
  for p, q, f, mm in zip(_leaves(new.params), _leaves(trained.params), _leaves(fresh), _leaves(mask)):
    np.testing.assert_array_equal(p[mm == 1], f[mm == 1])
    np.testing.assert_array_equal(p[mm == 0], q[mm == 0])
  assert any(np.any(q[mm == 1] != f[mm == 1])
             for q, f, mm in zip(_leaves(trained.params), _leaves(fresh), _leaves(mask)))


def test_del_unmasked_bit_identical_after_finetuning(trained, class_data):
  key = jax.random.key(12)
  mask = masks.del_mask(trained, class_data, 0.3)
  new, m = del_jit(trained, class_data, key, DelConfig(epochs=2, batch_size=32))
  assert m["loss"].shape == (2,)
  moved = 0
  for name in ("conv1", "conv2", "fc"):
    for p, q, mm in zip(_leaves(new.params[name]), _leaves(trained.params[name]), _leaves(mask[name])):
      np.testing.assert_array_equal(p[mm == 0], q[mm == 0])
      moved += int(np.sum(p[mm == 1] != q[mm == 1]))
  assert moved > 0
  # The head is trained entirely: its entries outside the mask move too (those fed by live features).
  head_unmasked_moved = 0
  for p, q, mm in zip(_leaves(new.params["head"]), _leaves(trained.params["head"]), _leaves(mask["head"])):
    head_unmasked_moved += int(np.sum(p[mm == 0] != q[mm == 0]))
  assert head_unmasked_moved > 0


def test_del_uses_the_given_mask(trained, class_data):
  mask = jax.tree.map(lambda p: np.zeros(p.shape, np.float32), trained.params)
  mask["conv1"] = jax.tree.map(lambda p: np.ones(p.shape, np.float32), trained.params["conv1"])
  new, m = del_jit(trained, class_data, jax.random.key(1), DelConfig(epochs=1, batch_size=32), mask=mask)
  for name in ("conv2", "fc"):
    for p, q in zip(_leaves(new.params[name]), _leaves(trained.params[name])):
      np.testing.assert_array_equal(p, q)
  assert all(np.any(p != q) for p, q in zip(_leaves(new.params["conv1"]), _leaves(trained.params["conv1"])))


def test_salun_changes_only_masked_entries(trained, class_data):
  mask = masks.salun_mask(trained, class_data, 0.5)
  new, m = salun_jit(trained, class_data, jax.random.key(3), SalunConfig(epochs=2, batch_size=32))
  assert float(m["mask_fraction"]) == pytest.approx(0.5, abs=1e-3)
  moved = 0
  for p, q, mm in zip(_leaves(new.params), _leaves(trained.params), _leaves(mask)):
    np.testing.assert_array_equal(p[mm == 0], q[mm == 0])
    moved += int(np.sum(p[mm == 1] != q[mm == 1]))
  assert moved > 0


def _accs(state, blobs, class_split):
  x, y, xt, yt = blobs
  retain, forget = class_split
  ev = lambda xs, ys: evaluate(state.model, state.params, state.batch_stats, xs, ys)["acc"]
  return ev(x[retain], y[retain]), ev(x[forget], y[forget]), ev(xt, yt)


# Small data: DEL with 10 epochs of batch 32 (the paper's 30 epochs of batch 128 are for CIFAR);
# SalUn with random_label's defaults but batch 32.
@pytest.mark.parametrize("name,fn,cfg", [
    ("del", del_jit, DelConfig(epochs=10, batch_size=32)),
    ("salun", salun_jit, SalunConfig(batch_size=32)),
])
def test_forgets_class_keeps_retain(trained, class_data, blobs, class_split, name, fn, cfg):
  r0, f0, _ = _accs(trained, blobs, class_split)
  new, _ = fn(trained, class_data, jax.random.key(7), cfg)
  r, f, _ = _accs(new, blobs, class_split)
  assert f0 >= 0.95
  assert f <= 0.5, (name, f)  # forget accuracy drops from ~1 to at most 0.5
  assert r >= 0.9, (name, r)  # stated bound: retain accuracy >= 0.9


def test_configs_are_hashable_defaults():
  for cfg in (DelConfig(), SalunConfig()):
    hash(cfg)
  assert (DelConfig().fraction, DelConfig().optim.lr, DelConfig().epochs, DelConfig().optim.final_lr_frac) == (0.3, 0.015, 30, 0.01)
  assert dataclasses.asdict(SalunConfig())["fraction"] == 0.5
