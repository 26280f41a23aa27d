"""UNSIR on its defining properties: the learned noise maximises the original's loss on its class, the
impair step trains on exactly the noise and the retain subset, the repair step on the retain subset only."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import train as jtrain
from jaxunlearn import unlearn as jun
from jaxunlearn.unlearn import _unsir

KEY = jax.random.key(4)
# tiny settings: a subset of 10 per retain class (30 of 120), 40 noise rows of 8 tensors, batches of 16
TINY = jun.replace(jun.UnsirConfig(), retain_per_class=10, batch_size=16, noise_count=8, noise_steps=20, epochs=2,
                   repair_epochs=2)


def _np_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -logp[np.arange(len(labels)), labels]


def _logits(state, x):
  return np.asarray(state.model.apply(state.params, state.batch_stats, x, train=False)[0])


@pytest.mark.parametrize("clip", [True, False])
def test_noise_raises_the_originals_loss_on_its_class(trained, clip):
  """Independent check: the original's cross-entropy (numpy, on the logits of the float noise images)
  at the learned noise is far above its value at the random start, for every class; the images the
  model gets normalise back to the learned tensor (and stay in the pixel range when clipped)."""
  k, labels = jax.random.key(7), jnp.arange(4)
  z = _unsir.learn_noise(trained, labels, k, 30, 0.1, 0.1, clip)
  z0 = _unsir.noise_start(trained, k, 4, clip)
  img = _unsir.noise_images(trained.model, z)
  np.testing.assert_allclose(np.asarray(trained.model.normalize(img)), np.asarray(z), atol=1e-5)
  if clip:
    assert float(jnp.min(img)) >= -1e-6 and float(jnp.max(img)) <= 1 + 1e-6
  before = _np_ce(_logits(trained, _unsir.noise_images(trained.model, z0)), np.arange(4))
  after = _np_ce(_logits(trained, img), np.arange(4))
  assert np.all(after > before + 2.0), (before, after)
  # the regulariser is what it says: a large lambda keeps the noise near 0 (the mean image)
  big = _unsir.learn_noise(trained, labels, k, 30, 0.1, 100.0, clip)
  assert float(jnp.sum(big ** 2)) < 0.1 * float(jnp.sum(z ** 2))


def test_retain_subset_is_class_balanced(class_data):
  y, retain = np.asarray(class_data.y), np.asarray(class_data.retain)
  for per_class, want in [(10, {1: 10, 2: 10, 3: 10}), (40, {1: 40, 2: 40, 3: 40}), (100, {1: 40, 2: 40, 3: 40})]:
    sub = np.asarray(_unsir.retain_subset(jax.random.key(per_class), class_data, per_class))
    assert len(set(sub)) == len(sub) and set(sub) <= set(retain)
    assert dict(zip(*np.unique(y[sub], return_counts=True))) == want
  a, b = (np.asarray(_unsir.retain_subset(jax.random.key(i), class_data, 10)) for i in (0, 1))
  assert set(a) != set(b)  # drawn with the key


@jax.jit
def _sgd_step(state, params, stats, opt, lr, xb, yb):
  """One step of plain optax SGD (momentum 0.9, as the config) on the mean cross-entropy, train mode."""
  tx = optax.sgd(lr, momentum=0.9)

  def loss(p):
    logits, s = state.model.apply(p, stats, xb, train=True)
    return jnp.mean(jtrain.cross_entropy(logits, yb)), s

  (_, stats), g = jax.value_and_grad(loss, has_aux=True)(params)
  upd, opt = tx.update(g, opt, params)
  return optax.apply_updates(params, upd), stats, opt


def _sgd_epochs(state, params, stats, key, epochs, lr, cfg, pool, fetch):
  """``epochs`` epochs of :func:`_sgd_step` from a fresh momentum over batches of a permutation of
  ``pool`` drawn with the loop's key convention; ``fetch(batch) -> (images, labels)``."""
  assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 0.0 and cfg.optim.schedule == "constant"
  opt = optax.sgd(lr, momentum=0.9).init(params)
  for e in range(epochs):
    k_perm, _ = jtrain.epoch_keys(key, e)
    perm = np.asarray(jax.random.permutation(k_perm, jnp.asarray(pool)))
    for i in range(0, len(perm), cfg.batch_size):
      params, stats, opt = _sgd_step(state, params, stats, opt, lr, *fetch(perm[i:i + cfg.batch_size]))
  return params, stats


def _hand_unsir(state, data, key, cfg):
  """UNSIR written out with Python loops: impair over the retain subset followed by one noise row per
  forget example (tensor j mod S, labelled with its class), then repair over the retain subset."""
  k_noise, k_sub, k_imp, k_rep, k_slots = (jax.random.fold_in(key, i) for i in range(5))
  x, y = np.asarray(data.x, np.float32) / 255.0, np.asarray(data.y)
  f = len(data.forget)
  s = min(f, cfg.noise_count)
  labels = y[np.asarray(jax.random.permutation(k_slots, data.forget))[:s]]
  z = _unsir.learn_noise(state, jnp.asarray(labels), k_noise, cfg.noise_steps, cfg.noise_lr, cfg.noise_reg)
  noise = np.asarray(_unsir.noise_images(state.model, z))
  sub = np.asarray(_unsir.retain_subset(k_sub, data, cfg.retain_per_class))
  imgs = np.concatenate([x[sub], noise[np.arange(f) % s]])
  targets = np.concatenate([y[sub], labels[np.arange(f) % s]])
  params, stats = _sgd_epochs(state, state.params, state.batch_stats, k_imp, cfg.epochs, cfg.optim.lr, cfg,
                              np.arange(len(targets)), lambda b: (imgs[b], targets[b]))
  return _sgd_epochs(state, params, stats, k_rep, cfg.repair_epochs, cfg.repair_lr, cfg, sub,
                     lambda b: (x[b], y[b]))


def test_impair_then_repair_equal_hand_written_loops(trained, class_data):
  """The method equals the two loops above on the tiny CNN (BatchNorm: each batch's composition counts)."""
  got, m = jax.jit(jun.make("unsir", TINY))(trained, class_data, KEY)
  params, stats = _hand_unsir(trained, class_data, KEY, TINY)
  for a, b in zip(jax.tree.leaves((got.params, got.batch_stats)), jax.tree.leaves((params, stats))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
  assert m["impair_loss"].shape == (2,) and m["repair_loss"].shape == (2,)
  assert float(m["noise_ce"]) > float(m["noise_ce_start"])


def test_only_the_retain_subset_and_the_noise_reach_training(mlp_trained, class_data):
  """Changing the image of every example outside the retain subset (forget examples included) leaves the
  result bit-identical; changing one subset image changes it."""
  method = jax.jit(jun.make("unsir", TINY))
  base, _ = method(mlp_trained, class_data, KEY)
  sub = np.asarray(_unsir.retain_subset(jax.random.fold_in(KEY, 1), class_data, TINY.retain_per_class))
  x = np.asarray(class_data.x).copy()
  outside = np.setdiff1d(np.arange(len(x)), sub)
  x[outside] = 255 - x[outside]
  same, _ = method(mlp_trained, dataclasses.replace(class_data, x=jnp.asarray(x)), KEY)
  for a, b in zip(jax.tree.leaves(base.params), jax.tree.leaves(same.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  x[sub[0]] = 255 - x[sub[0]]
  other, _ = method(mlp_trained, dataclasses.replace(class_data, x=jnp.asarray(x)), KEY)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(base.params),
                                                             jax.tree.leaves(other.params))) > 0


def test_unsir_forgets_class0_keeps_retain_and_the_learned_noise_is_what_forgets(trained, class_data):
  """Class 0 forgotten, the retain set kept; the same run with the noise left at its random start
  (no noise steps) forgets nothing."""
  cfg = jun.replace(TINY, epochs=1, repair_epochs=1, retain_per_class=40, noise_steps=50)
  x, y = np.asarray(class_data.x), np.asarray(class_data.y)
  forget, retain = np.asarray(class_data.forget), np.asarray(class_data.retain)

  def acc(state, idx):
    return jtrain.evaluate(state.model, state.params, state.batch_stats, x[idx], y[idx])["acc"]

  with jtrain.use_executor("steps"):  # the two runs share their compiled steps
    state, _ = jun.make("unsir", cfg)(trained, class_data, jax.random.key(0))
    control, _ = jun.make("unsir", jun.replace(cfg, noise_steps=0))(trained, class_data, jax.random.key(0))
  assert acc(state, forget) <= 0.05 and acc(state, retain) >= 0.95
  assert acc(control, forget) >= 0.9


def test_bad_settings_are_one_line_errors():
  with pytest.raises(ValueError, match="UnsirConfig.noise_steps=-1 must be an integer >= 0"):
    jun.UnsirConfig(noise_steps=-1)
  with pytest.raises(ValueError, match="UnsirConfig.retain_per_class=0"):
    jun.UnsirConfig(retain_per_class=0)
  with pytest.raises(ValueError, match="repair_lr"):
    jun.UnsirConfig(repair_lr=-1.0)
