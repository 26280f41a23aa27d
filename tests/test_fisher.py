"""Fisher forgetting: over many keys the per-entry variance of the noise follows
min(alpha / (F + eps), var_max), F the retain set's Fisher computed by a loop over single examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import unlearn as jun
from jaxunlearn.train import cross_entropy

ALPHA, VAR_MAX, EPS = 1e-6, 1e-3, 1e-8
KEYS = 400


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in jax.tree.leaves(tree)])


def _expected_fisher(state, x, rows, num_classes):
  """sum over examples and classes of p(c | x) (grad log p(c | x))^2 / n, one example and class at a time."""
  def nll(params, xi, c):
    logits, _ = state.model.apply(params, state.batch_stats, xi[None], train=False)
    return cross_entropy(logits, jnp.asarray([c]))[0]

  grad = jax.jit(jax.grad(nll))
  total = 0.0
  for i in rows:
    logits, _ = state.model.apply(state.params, state.batch_stats, x[i][None], train=False)
    p = np.asarray(jax.nn.softmax(logits)[0], np.float64)
    for c in range(num_classes):
      total = total + p[c] * _flat(grad(state.params, x[i], c)) ** 2
  return total / len(rows)


@pytest.fixture(scope="module")
def small(blobs, class_split):
  """The blobs with a retain set of 8 examples (the Fisher's loop stays short)."""
  x, y, _, _ = blobs
  retain, forget = class_split
  return jun.UnlearnData.create(x, y, retain[:8], forget, num_classes=4)


def test_noise_variance_follows_the_clamped_inverse_fisher(mlp_trained, small):
  method = jun.make("fisher", jun.FisherConfig(alpha=ALPHA, var_max=VAR_MAX, eps=EPS, retain_subset=None))
  keys = jax.random.split(jax.random.key(0), KEYS)
  out, metrics = jax.jit(jax.vmap(method, in_axes=(None, None, 0)))(mlp_trained, small, keys)
  w = _flat(mlp_trained.params)
  delta = np.stack([_flat(jax.tree.map(lambda a: a[k], out.params)) for k in range(KEYS)]) - w
  emp = np.mean(delta ** 2, axis=0)  # the noise has mean 0: its variance is the mean square
  fisher = _expected_fisher(mlp_trained, small.x, np.asarray(small.retain), 4)
  var = np.minimum(ALPHA / (fisher + EPS), VAR_MAX)
  clamped = var >= VAR_MAX
  assert 0.1 < clamped.mean() < 0.9, "both branches of the clamp must be exercised"
  ratio = emp / var
  for part in (clamped, ~clamped):  # 400 draws: a variance's relative standard error is sqrt(2/400) = 7 %
    assert np.mean(np.abs(ratio[part] - 1)) < 0.15
  # per entry, KEYS * emp / var is chi-square with KEYS degrees of freedom: beyond 5 standard deviations
  # (sqrt(2 * KEYS) each) almost never; a wrong power, Fisher or clamp moves many entries there
  z = (KEYS * ratio - KEYS) / np.sqrt(2 * KEYS)
  assert np.mean(np.abs(z) > 5) < 0.005
  np.testing.assert_allclose(np.asarray(metrics["clamped_fraction"]), clamped.mean(), atol=2e-3)
  np.testing.assert_allclose(np.asarray(metrics["noise_rms"]), np.sqrt(var.mean()), rtol=1e-3)
  # the paper's power 0.5 is a different variance on the unclamped entries
  paper = np.minimum(ALPHA / np.sqrt(fisher + EPS), VAR_MAX)
  assert np.mean(np.abs(emp / paper - 1)[~clamped]) > 0.5


def test_mask_limits_the_noise_and_zero_variance_leaves_the_model(mlp_trained, small):
  cfg = jun.FisherConfig(retain_subset=None)
  mask = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.float32), mlp_trained.params)
  mask["dense0"]["kernel"] = jnp.zeros_like(mask["dense0"]["kernel"])
  mask["head"]["kernel"] = mask["head"]["kernel"].at[:, 1].set(0.0)
  new, _ = jax.jit(jun.make("fisher", cfg))(mlp_trained, small, jax.random.key(1), mask=mask)
  for p, q, m in zip(jax.tree.leaves(mlp_trained.params), jax.tree.leaves(new.params), jax.tree.leaves(mask)):
    p, q, m = np.asarray(p), np.asarray(q), np.asarray(m) > 0
    np.testing.assert_array_equal(q[~m], p[~m])
    assert np.all(q[m] != p[m])
  # no noise: the weights are returned as they are and the metrics say so
  none, metrics = jax.jit(jun.make("fisher", cfg))(mlp_trained, small, jax.random.key(1),
                                                    {"alpha": 0.0, "var_max": 0.0})
  np.testing.assert_array_equal(_flat(none.params), _flat(mlp_trained.params))
  assert float(metrics["weight_change"]) == 0.0 and float(metrics["noise_rms"]) == 0.0


def test_retain_subset_takes_that_many_random_retain_examples(mlp_trained, class_data):
  key = jax.random.key(5)
  sub, _ = jax.jit(jun.make("fisher", jun.FisherConfig(retain_subset=7)))(mlp_trained, class_data, key)
  rows = jun.importance.random_subset(jax.random.fold_in(key, 0), class_data.retain, 7)
  assert len(set(np.asarray(rows).tolist())) == 7 and set(np.asarray(rows).tolist()) <= set(np.asarray(class_data.retain).tolist())
  # the same run on data whose retain set is those rows (and no cap) draws the same noise: same result
  only = class_data.replace(retain=rows)
  ref, _ = jax.jit(jun.make("fisher", jun.FisherConfig(retain_subset=None)))(mlp_trained, only, key)
  np.testing.assert_allclose(_flat(sub.params), _flat(ref.params), rtol=1e-6, atol=1e-7)


def test_bad_settings_are_one_line_errors():
  with pytest.raises(ValueError, match="labels"):
    jun.FisherConfig(labels="nope")
  with pytest.raises(ValueError, match="retain_subset"):
    jun.FisherConfig(retain_subset=0)
  with pytest.raises(ValueError, match="power"):
    jun.FisherConfig(power=0.0)
