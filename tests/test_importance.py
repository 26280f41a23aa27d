"""Per-example gradients chunked over examples: each reduction equals a plain Python loop over single
examples (no vmap, no chunks, no padding), computed in float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.train import cross_entropy
from jaxunlearn.unlearn import importance


def _one_grad(state, x, y):
  def nll(params):
    logits, _ = state.model.apply(params, state.batch_stats, x[None], train=False)
    return cross_entropy(logits, jnp.asarray([y]))[0]
  return [np.asarray(g, np.float64) for g in jax.tree.leaves(jax.grad(nll)(state.params))]


def _probs(state, x):
  logits, _ = state.model.apply(state.params, state.batch_stats, x, train=False)
  return np.asarray(jax.nn.softmax(logits), np.float64)


@pytest.fixture(scope="module")
def rows(class_data):
  return np.asarray(class_data.forget)[:13]  # 13 examples: chunk 5 leaves a padded last chunk


def _leaves(tree):
  return [np.asarray(t, np.float64) for t in jax.tree.leaves(tree)]


def test_diag_fisher_true_labels_equals_a_loop_over_examples(trained, class_data, rows):
  ref = None
  for i in rows:
    g = _one_grad(trained, class_data.x[i], int(class_data.y[i]))
    ref = [a * a for a in g] if ref is None else [r + a * a for r, a in zip(ref, g)]
  ref = [r / len(rows) for r in ref]
  for chunk in (5, 64):
    got = _leaves(importance.diag_fisher(trained, class_data, jnp.asarray(rows), chunk_size=chunk))
    for a, b in zip(got, ref):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)


def test_diag_fisher_expected_weights_every_class_by_its_probability(mlp_trained, class_data, rows):
  p = _probs(mlp_trained, class_data.x[rows])
  ref = None
  for r, i in enumerate(rows):
    for c in range(class_data.num_classes):
      g = _one_grad(mlp_trained, class_data.x[i], c)
      term = [p[r, c] * a * a for a in g]
      ref = term if ref is None else [x + t for x, t in zip(ref, term)]
  ref = [r / len(rows) for r in ref]
  got = _leaves(importance.diag_fisher(mlp_trained, class_data, jnp.asarray(rows), labels="expected", chunk_size=5))
  for a, b in zip(got, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10)
  # the true-label (empirical) Fisher is a different quantity on a model that is not certain
  emp = _leaves(importance.diag_fisher(mlp_trained, class_data, jnp.asarray(rows), chunk_size=5))
  assert max(np.max(np.abs(a - b)) for a, b in zip(emp, ref)) > 1e-3 * max(np.max(np.abs(b)) for b in ref)


def test_sampled_labels_average_to_the_expected_fisher(mlp_trained, class_data, rows):
  idx = jnp.asarray(rows)
  keys = jax.random.split(jax.random.key(4), 400)
  sampled = jax.vmap(lambda k: importance.diag_fisher(mlp_trained, class_data, idx, labels="sampled", key=k))(keys)
  expected = importance.diag_fisher(mlp_trained, class_data, idx, labels="expected")
  a = np.concatenate([np.ravel(np.mean(np.asarray(s, np.float64), 0)) for s in jax.tree.leaves(sampled)])
  b = np.concatenate([np.ravel(np.asarray(e, np.float64)) for e in jax.tree.leaves(expected)])
  # 400 draws: the Monte-Carlo mean is within a few percent of the exact expectation (in norm)
  assert np.linalg.norm(a - b) < 0.1 * np.linalg.norm(b)
  single = np.concatenate([np.ravel(np.asarray(s[0], np.float64)) for s in jax.tree.leaves(sampled)])
  assert np.linalg.norm(single - b) > np.linalg.norm(a - b)  # one draw is noisier than the mean
  with pytest.raises(ValueError, match="needs a key"):
    importance.diag_fisher(mlp_trained, class_data, idx, labels="sampled")


def test_mean_grad_and_stacked_grads_equal_direct_computations(trained, class_data, rows):
  idx = jnp.asarray(rows)

  def mean_loss(params):
    logits, _ = trained.model.apply(params, trained.batch_stats, class_data.x[idx], train=False)
    return jnp.mean(cross_entropy(logits, class_data.y[idx]))

  for a, b in zip(_leaves(importance.mean_grad(trained, class_data, idx, chunk_size=4)),
                  _leaves(jax.grad(mean_loss)(trained.params))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  stacked = _leaves(importance.stacked_grads(trained, class_data, idx, chunk_size=5))
  assert all(s.shape[0] == len(rows) for s in stacked)
  for r in (0, 7, 12):
    for a, b in zip([s[r] for s in stacked], _one_grad(trained, class_data.x[rows[r]], int(class_data.y[rows[r]]))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_bad_arguments_are_clear(mlp_trained, class_data):
  with pytest.raises(ValueError, match="labels must be one of"):
    importance.diag_fisher(mlp_trained, class_data, class_data.forget, labels="nope")
  with pytest.raises(ValueError, match="empty set"):
    importance.diag_fisher(mlp_trained, class_data, jnp.zeros((0,), jnp.int32))
