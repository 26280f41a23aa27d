"""The airbench94 recipe: network (jaxunlearn.models), whitening, alternating flip, frozen layers, TTA
(predict_many(tta=...)), many models (train_many with fit_factory=make_airbench_fit).

CPU-sized: 8x8 images, widths (16, 32, 32), a few epochs (XLA:CPU runs conv gradients inside
``lax.scan`` slowly, jax issue 12868).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data as jdata
from jaxunlearn import many as jmany
from jaxunlearn import models as jmodels
from jaxunlearn import recipes as ab
from jaxunlearn.train import ModelState

WIDTH = (16, 32, 32)
# Blobs are random per-pixel prototypes: translation / flips would change the class pattern, so the
# learning tests switch them off (their own tests are below). lr: the decoupled lr is per summed
# example, so the tiny batch of 32 needs a larger one than the paper's 11.5 at batch 1024.
TINY = ab.AirbenchConfig(epochs=4, batch_size=32, lr=50.0, translate=0, flip="none", whiten_images=64)


@pytest.fixture(scope="module")
def model():
  return jmodels.create_airbench(4, (8, 8, 1), width=WIDTH)


def _leaves(tree):
  return [np.asarray(a) for a in jax.tree.leaves(tree)]


@functools.lru_cache(maxsize=None)
def _fit(model, cfg, k):
  init, fit = ab.make_airbench_fit(model, cfg, k)
  return init, jax.jit(fit)


def _run(model, cfg, x, y, index, key):
  """One model the way train_airbench_many runs model m with key fold_in(key, m)."""
  init, fit = _fit(model, cfg, len(index))
  params, stats = model.init(jax.random.fold_in(key, 0))
  state, hist = fit(init(params, stats), x, y, jnp.asarray(index, jnp.int32), jax.random.fold_in(key, 1))
  return (params, stats), state, hist


def _tta(state, x, level=1, **kw):
  """Test-time-augmented logits of one model: predict_many(tta=level) on a stack of one."""
  return jmany.predict_many(jmany.stack_states([state]), x, tta=level, **kw)[0]


@pytest.fixture(scope="module")
def trained(model, blobs):
  x, y, _, _ = blobs
  return _run(model, TINY, x, y, np.arange(len(y)), jax.random.key(3))


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

def test_shapes_and_contract(model, blobs):
  x = blobs[0][:5]
  params, stats = model.init(jax.random.key(0))
  # CF-k / EU-k take the last k of block_names(), so it must list the groups in forward order.
  names = model.block_names()
  assert names == ("whiten", "block1", "block2", "block3", "head")
  # The top-level parameter groups are exactly the blocks (their dict order is Flax's, unused).
  assert set(params) == set(names) and len(params) == len(names)
  # ... and that order is the network's: each group's input channels are the previous group's
  # outputs, from the image's 1 channel to the head's 4 classes.
  def in_out(group):
    k_in, k_out = (group["kernel"],) * 2 if "kernel" in group else (group["conv1"]["kernel"],
                                                                    group["conv2"]["kernel"])
    return k_in.shape[-2], k_out.shape[-1]
  chain = [in_out(params[name]) for name in names]
  assert chain == [(1, 8), (8, 16), (16, 32), (32, 32), (32, 4)], chain
  assert params["whiten"]["kernel"].shape == (2, 2, 1, 8) and params["head"]["kernel"].shape == (32, 4)
  logits, _ = model.apply(params, stats, x, train=False)
  feats = model.features(params, stats, x)
  assert logits.shape == (5, 4) and logits.dtype == jnp.float32 and feats.shape == (5, 32)
  np.testing.assert_allclose(model.head(params["head"], feats), logits, rtol=1e-5, atol=1e-6)
  # partial identity init: the first C_in filters of every later conv are Dirac deltas
  k = np.asarray(params["block2"]["conv1"]["kernel"])            # [3, 3, 16, 32]
  eye = np.zeros((3, 3, 16, 16))
  eye[1, 1, np.arange(16), np.arange(16)] = 1
  np.testing.assert_array_equal(k[..., :16], eye)
  assert np.abs(k[..., 16:]).max() > 0
  # the paper's CIFAR-10 size, shapes only
  big = jmodels.create_airbench(10, (32, 32, 3))
  p, _ = jax.eval_shape(big.init, jax.random.key(0))
  assert p["whiten"]["kernel"].shape == (2, 2, 3, 24)
  assert [p[f"block{i}"]["conv2"]["kernel"].shape[-1] for i in (1, 2, 3)] == [64, 256, 256]
  assert big.feature_dim == 256
  out = jax.eval_shape(lambda a, b, c: big.apply(a, b, c, train=True), *jax.eval_shape(big.init, jax.random.key(0)),
                       jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8))
  assert out[0].shape == (2, 10)


def test_config_validation():
  with pytest.raises(ValueError, match="flip"):
    ab.AirbenchConfig(flip="sometimes")
  with pytest.raises(ValueError, match="epochs"):
    ab.AirbenchConfig(epochs=0)
  with pytest.raises(ValueError, match="momentum"):
    ab.AirbenchConfig(momentum=1.0)
  hash(ab.AirbenchConfig())


def test_schedule_and_fractional_epochs():
  cfg = ab.AirbenchConfig(epochs=2.5, batch_size=32)
  assert ab.schedule_steps(cfg, 160) == (32, 5, 13)              # ceil(2.5 * 5)
  t = 100
  f = [float(ab.lr_factor(cfg, t, c)) for c in (0, 23, 100)]
  np.testing.assert_allclose(f, [0.2, 1.0, 0.07], rtol=1e-6)
  assert float(ab.lr_factor(cfg, t, 60)) == pytest.approx(1.0 + (0.07 - 1.0) * (60 - 23) / 77, rel=1e-5)
  # the peak is floored to a whole step (reference: int(0.23 * T)): T = 476 -> step 109, not 109.48
  assert float(ab.lr_factor(cfg, 476, 109)) == pytest.approx(1.0, rel=1e-6)
  assert float(ab.lr_factor(cfg, 476, 110)) == pytest.approx(1.0 + (0.07 - 1.0) / (476 - 109), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Whitening
# ---------------------------------------------------------------------------------------------

def test_whitening_whitens_patches():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((300, 9, 9, 3))
  z = z + 0.8 * np.roll(z, 1, axis=2) + 0.5 * z[..., ::-1]           # correlated pixels and channels
  x = np.clip(128 + 30 * z, 0, 255).astype(np.uint8)
  wp = jax.jit(lambda a: ab.whitening_params(a, eps=1e-9, chunk=64))(x)
  d = 2 * 2 * 3
  assert wp["kernel"].shape == (2, 2, 3, 2 * d) and wp["bias"].shape == (2 * d,)
  w = np.asarray(wp["kernel"]).reshape(d, 2 * d)
  np.testing.assert_array_equal(w[:, d:], -w[:, :d])
  u = w[:, :d] / np.linalg.norm(w[:, :d], axis=0)                # eigenvectors: orthonormal
  np.testing.assert_allclose(u.T @ u, np.eye(d), atol=1e-4)
  # the layer, applied as the model's Flax conv, outputs centred, whitened patches
  out = nn.Conv(2 * d, (2, 2), padding="VALID").apply({"params": wp}, x.astype(np.float32) / 255.0)
  o = np.asarray(out[..., :d], np.float64).reshape(-1, d)
  np.testing.assert_allclose(o.mean(0), 0.0, atol=1e-3)
  np.testing.assert_allclose(np.cov(o, rowvar=False), np.eye(d), atol=2e-3)
  # normalisation through the model equals explicit mean / std
  m = jmodels.create_airbench(10, (9, 9, 3), width=(4, 4, 4))
  a = ab.whitening_params(x, m, eps=1e-3)
  b = ab.whitening_params(x, eps=1e-3, mean=jmodels.CIFAR10_MEAN, std=jmodels.CIFAR10_STD)
  np.testing.assert_allclose(a["kernel"], b["kernel"], rtol=1e-5, atol=1e-5)


def test_frozen_layers_stay_bit_identical(model, blobs, trained):
  x, y, _, _ = blobs
  (p0, _), state, _ = trained
  for blk in ("block1", "block2", "block3"):
    for bn in ("bn1", "bn2"):
      np.testing.assert_array_equal(state.params[blk][bn]["scale"], p0[blk][bn]["scale"])
      assert not np.array_equal(state.params[blk][bn]["bias"], p0[blk][bn]["bias"])
  np.testing.assert_array_equal(state.params["head"]["bias"], p0["head"]["bias"])
  assert not np.array_equal(state.params["head"]["kernel"], p0["head"]["kernel"])
  # the whitening kernel is the data's (computed once at the start of fit), then never moves
  key = jax.random.fold_in(jax.random.key(3), 1)
  sub = np.arange(len(y))[np.asarray(jax.random.permutation(jax.random.fold_in(key, 2), len(y)))[:TINY.whiten_images]]
  want = ab.whitening_params(x[sub], model, eps=TINY.whiten_eps)
  np.testing.assert_allclose(state.params["whiten"]["kernel"], want["kernel"], rtol=1e-4, atol=1e-4)
  # without data whitening the initial kernel itself must come back bit-identical
  cfg = dataclasses.replace(TINY, whiten=False, epochs=1)
  (p1, _), st1, _ = _run(model, cfg, x, y, np.arange(64), jax.random.key(4))
  np.testing.assert_array_equal(st1.params["whiten"]["kernel"], p1["whiten"]["kernel"])
  # 2 steps, fewer than lookahead_every: the final Lookahead update still brings the training in
  assert not np.array_equal(st1.params["block1"]["conv1"]["kernel"], p1["block1"]["conv1"]["kernel"])


def test_whitening_bias_trained_only_first_epochs(model):
  cfg = ab.AirbenchConfig(whiten_bias_epochs=2)
  params, _ = model.init(jax.random.key(0))
  tx = ab.make_airbench_optimizer(cfg, 32, 5, 50)                # 10 steps of whitening-bias training
  grads = jax.tree.map(jnp.ones_like, params)
  st = tx.init(params)
  moved = []
  for _ in range(12):
    upd, st = tx.update(grads, st, params)
    moved.append(bool(np.any(np.asarray(upd["whiten"]["bias"]) != 0)))
    assert not np.any(np.asarray(upd["whiten"]["kernel"])) and not np.any(np.asarray(upd["head"]["bias"]))
    assert np.all(np.asarray(upd["block1"]["conv1"]["kernel"]) != 0)
  assert moved == [True] * 10 + [False] * 2


def test_bias_lr_scaled(model):
  cfg = ab.AirbenchConfig(weight_decay=0.0, momentum=0.5)
  params, _ = model.init(jax.random.key(0))
  tx = ab.make_airbench_optimizer(cfg, 32, 5, 50)
  upd, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  b = float(upd["block1"]["bn1"]["bias"][0])
  k = float(upd["block1"]["conv1"]["kernel"].reshape(-1)[0])
  kilo = 1024 * (1 + 1 / (1 - 0.5))
  assert k == pytest.approx(-11.5 / kilo * 0.2 * (1 + 0.5), rel=1e-5)   # Nesterov: g + mu * (mu*0 + g)
  assert b == pytest.approx(64 * k, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

def test_alternating_flip():
  k = 64
  start = jax.random.bernoulli(jax.random.key(0), 0.5, (k,))
  assert 16 < int(start.sum()) < 48
  for e in range(4):
    f = np.asarray(ab.alternating_flips(start, e))
    np.testing.assert_array_equal(f, np.asarray(start) if e % 2 == 0 else ~np.asarray(start))
  # through the epoch plan that fit uses: the flip bit follows the position, whatever the order
  seen = np.zeros((4, k), bool)
  for e in range(4):
    pos, flips = ab.epoch_plan(jax.random.key(10 + e), start, e, 16, 4)
    pos, flips = np.asarray(pos).ravel(), np.asarray(flips).ravel()
    assert sorted(pos.tolist()) == list(range(k))
    seen[e, pos] = flips
  np.testing.assert_array_equal(seen[0], start)
  np.testing.assert_array_equal(seen[1], ~seen[0])
  np.testing.assert_array_equal(seen[2], seen[0])
  assert (seen[0] ^ seen[1]).all()                               # each example: once each way


def test_translate():
  x = jnp.arange(2 * 6 * 6).reshape(2, 6, 6, 1).astype(jnp.uint8)
  assert ab.translate(jax.random.key(0), x, 0) is x
  outs = [np.asarray(ab.translate(jax.random.key(s), x, 2)) for s in range(20)]
  assert all(o.shape == x.shape and o.dtype == np.uint8 for o in outs)
  assert any(not np.array_equal(o, x) for o in outs)
  assert any(np.array_equal(o[0], x[0]) for o in outs)           # offset (2, 2) = identity
  # reflection padding: every pixel value comes from the image itself
  assert all(set(np.unique(o[0])) <= set(np.unique(x[0])) for o in outs)


# ---------------------------------------------------------------------------------------------
# Training, vmap, TTA
# ---------------------------------------------------------------------------------------------

def test_learns_separable_problem(model, blobs, trained):
  x, y, xt, yt = blobs
  _, state, hist = trained
  assert hist["acc"].shape == (4,)
  assert float(hist["loss"][-1]) < float(hist["loss"][0])
  s = ModelState(state.params, state.batch_stats, model)
  train_acc = float((np.argmax(np.asarray(s.apply(x)), -1) == y).mean())
  assert train_acc > 0.9, train_acc
  assert float((_tta(s, xt).argmax(-1) == yt).mean()) > 0.8


def test_tta_is_mean_of_image_and_mirror(model, blobs, trained):
  _, _, xt, _ = blobs
  _, state, _ = trained
  s = ModelState(state.params, state.batch_stats, model)
  a = np.asarray(s.apply(xt))
  b = np.asarray(s.apply(xt[:, :, ::-1, :]))
  got = _tta(s, xt, batch_size=32)
  np.testing.assert_allclose(got, 0.5 * (a + b), rtol=1e-5, atol=1e-5)
  stacked = jmany.stack_states([s, s])
  many = jmany.predict_many(stacked, xt[:10], tta=1)
  assert many.shape == (2, 10, 4)
  np.testing.assert_allclose(many[1], got[:10], rtol=1e-5, atol=1e-5)


def test_many_equals_single_runs(model, blobs):
  x, y, _, _ = blobs
  cfg = dataclasses.replace(ab.AirbenchConfig(epochs=1.5, batch_size=16, lr=20.0, whiten_images=32),
                            lookahead_every=2)
  keep = jdata.keep_mask(jax.random.key(5), 2, 64)
  keep = np.concatenate([keep, np.zeros((2, len(y) - 64), bool)], axis=1)
  key = jax.random.key(9)
  states, info = jmany.train_airbench_many(key, x, y, keep, cfg, model=model, chunk_size=1, progress=False)
  assert info["loss"].shape == (2, 2) and info["total_steps"] == 3 and info["chunk_size"] == 1
  assert jmany.num_models_of(states) == 2
  for m in range(2):
    idx = np.flatnonzero(keep[m])
    _, single, hist = _run(model, cfg, x, y, idx, jax.random.fold_in(key, m))
    for a, b in zip(_leaves((single.params, single.batch_stats)),
                    _leaves(jax.tree.map(lambda t: t[m], (states.params, states.batch_stats)))):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(hist["loss"], info["loss"][m], rtol=1e-4)


def test_tta_level2_adds_diagonal_translates(model, blobs, trained):
  _, _, xt, _ = blobs
  _, state, _ = trained
  s = ModelState(state.params, state.batch_stats, model)
  xt = np.asarray(xt[:12])
  padded = np.pad(xt, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  views = [xt, padded[:, :8, :8], padded[:, 2:, 2:]]  # the image, up-left and down-right views

  def flip_mean(v):
    return 0.5 * (np.asarray(s.apply(v)) + np.asarray(s.apply(v[:, :, ::-1, :])))

  want = 0.5 * flip_mean(views[0]) + 0.25 * (flip_mean(views[1]) + flip_mean(views[2]))
  got = _tta(s, xt, level=2, batch_size=5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(got, _tta(s, xt, level=1), atol=1e-4)
  many = jmany.predict_many(jmany.stack_states([s, s]), xt, tta=2)
  np.testing.assert_allclose(many[0], want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="level"):
    jmany.predict_many(jmany.stack_states([s]), xt, tta=3)


def test_batchnorm_running_stats_keep_six_tenths_of_the_old(model, blobs):
  # The reference's BatchNorm(momentum=0.6) is PyTorch momentum 0.4: running = 0.6 old + 0.4 batch.
  # Train-mode outputs use batch statistics, so two updates on the same batch give m2 = 1.6 m1.
  x = blobs[0][:32]
  params, stats = model.init(jax.random.key(0))
  _, s1 = model.apply(params, stats, x, train=True)
  _, s2 = model.apply(params, s1, x, train=True)
  checked = set()
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(s1), jax.tree.leaves(s2)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    kind = jax.tree_util.keystr(path[-1:])
    if "mean" in kind:  # starts at 0: m1 = 0.4 bm, m2 = 0.6 m1 + 0.4 bm = 1.6 m1
      np.testing.assert_allclose(b, 1.6 * a, rtol=1e-3, atol=1e-6)
    else:  # starts at 1: v1 = 0.6 + 0.4 bv, v2 - v1 = 0.6 (v1 - 1)
      np.testing.assert_allclose(b - a, 0.6 * (a - 1.0), rtol=1e-3, atol=1e-6)
    checked.add("mean" if "mean" in kind else "var")
  assert checked == {"mean", "var"}


def test_registry_builds_the_same_network():
  """create_model("airbench") (what --model airbench uses) is create_airbench with scaled widths."""
  a = jmodels.create_model("airbench", num_classes=4, input_shape=(8, 8, 1), width=0.25)
  b = jmodels.create_airbench(4, (8, 8, 1), width=(16, 64, 64), mean=(0.0,), std=(1.0,))
  assert a == b and "airbench" in jmodels.MODEL_NAMES
