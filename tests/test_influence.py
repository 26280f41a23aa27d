"""Influence unlearning's step equals a direct dense Newton solve, built in float64 numpy from per-example
gradients taken one example at a time (no vmap, no chunks, no Woodbury)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxunlearn import models as jmodels
from jaxunlearn import train as jtrain
from jaxunlearn import unlearn as jun
from jaxunlearn.train import cross_entropy
from jaxunlearn.unlearn import _influence

KEY = jax.random.key(11)
# one compiled program per discrete setting; alpha and damping are data
METHOD = jax.jit(jun.make("influence", jun.InfluenceConfig(num_samples=10_000, chunk_size=32)))


@pytest.fixture(scope="module")
def mlp_trained(blobs):
  """A 2-hidden-layer MLP of 8 units (628 parameters: the dense P x P solves stay instant), trained on blobs."""
  x, y, _, _ = blobs
  model = jmodels.create_model("mlp", num_classes=4, input_shape=(8, 8, 1), width=1 / 32)
  st, _ = jtrain.train_model(model, jtrain.TrainConfig(epochs=3, batch_size=32, lr=0.1), x, y, np.arange(len(y)),
                             jax.random.key(1), progress=False)
  return st


@pytest.fixture(scope="module")
def grads(mlp_trained, class_data):
  """``{row: float64 [P]}``: each training example's gradient of its own cross-entropy, one ``jax.grad``
  call per example."""

  def nll(params, x, y):
    logits, _ = mlp_trained.model.apply(params, mlp_trained.batch_stats, x[None], train=False)
    return cross_entropy(logits, jnp.asarray([y]))[0]

  one = jax.jit(jax.grad(nll))
  out = {}
  for i in range(class_data.x.shape[0]):
    g = one(mlp_trained.params, class_data.x[i], class_data.y[i])
    out[i] = np.asarray(ravel_pytree(g)[0], np.float64)
  return out


def _flat(params):
  return np.asarray(ravel_pytree(params)[0], np.float64)


def _dense_step(grads, rows, forget, retain, damping, alpha, retain_grad=False, keep=None):
  """``alpha * n_f/n * (damping I + G^T G / m)^-1 v`` by ``numpy.linalg.solve`` on the explicit P x P matrix
  (restricted to the coordinates ``keep`` when given; zero elsewhere)."""
  G = np.stack([grads[int(i)] for i in rows])
  v = np.mean([grads[int(i)] for i in forget], axis=0)
  if retain_grad:
    v = v - np.mean([grads[int(i)] for i in retain], axis=0)
  keep = np.ones(G.shape[1], bool) if keep is None else keep
  Gk = G[:, keep]
  H = damping * np.eye(Gk.shape[1]) + Gk.T @ Gk / len(rows)
  step = np.zeros(G.shape[1])
  step[keep] = np.linalg.solve(H, v[keep])
  return alpha * len(forget) / (len(forget) + len(retain)) * step


def _run(state, data, mask=None, alpha=1.0, damping=0.05, **cfg):
  m = METHOD if not cfg else jax.jit(jun.make("influence", jun.InfluenceConfig(**cfg)))
  return m(state, data, KEY, {"alpha": alpha, "damping": damping}, mask=mask)


def _rel(a, b):
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("retain_grad", [False, True])
def test_step_equals_a_dense_newton_solve_on_every_retain_example(mlp_trained, class_data, grads, retain_grad):
  retain, forget = np.asarray(class_data.retain), np.asarray(class_data.forget)
  out, metrics = _run(mlp_trained, class_data, alpha=0.7, **({"num_samples": 10_000, "retain_grad": True}
                                                                      if retain_grad else {}))
  got = _flat(out.params) - _flat(mlp_trained.params)
  ref = _dense_step(grads, retain, forget, retain, 0.05, 0.7, retain_grad)
  assert _rel(got, ref) < 1e-4
  assert np.isclose(float(metrics["step_norm"]), np.linalg.norm(ref), rtol=1e-4)
  # the Newton step is not a rescaled gradient step: the dense solve's direction differs from v's
  v = np.mean([grads[int(i)] for i in forget], axis=0)
  assert abs(v @ ref) / (np.linalg.norm(v) * np.linalg.norm(ref)) < 0.99


def test_sampled_retain_rows_give_the_dense_solve_on_those_rows(mlp_trained, class_data, grads):
  retain, forget = np.asarray(class_data.retain), np.asarray(class_data.forget)
  rows = np.asarray(jun.importance.random_subset(jax.random.fold_in(KEY, 0), class_data.retain, 50))
  assert len(set(rows.tolist())) == 50 and set(rows.tolist()) <= set(retain.tolist())
  sampled = jax.jit(jun.make("influence", jun.InfluenceConfig(damping=0.02, num_samples=50)))
  out, _ = sampled(mlp_trained, class_data, KEY)
  got = _flat(out.params) - _flat(mlp_trained.params)
  assert _rel(got, _dense_step(grads, rows, forget, retain, 0.02, 1.0)) < 1e-4
  # another key draws other rows, and another step
  other, _ = sampled(mlp_trained, class_data, jax.random.key(12))
  assert _rel(_flat(other.params) - _flat(mlp_trained.params), got) > 1e-3


def test_mask_takes_the_newton_step_in_the_masked_subspace(mlp_trained, class_data, grads):
  retain, forget = np.asarray(class_data.retain), np.asarray(class_data.forget)
  rng = np.random.default_rng(0)
  mask = jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape) < 0.4, jnp.float32), mlp_trained.params)
  mask["dense0"]["bias"] = False  # a Python-bool leaf freezes the whole tensor
  out, _ = _run(mlp_trained, class_data, mask=mask)
  keep = _flat(jax.tree.map(lambda m, p: jnp.broadcast_to(jnp.asarray(m, jnp.float32), p.shape), mask,
                            mlp_trained.params)) > 0
  got = _flat(out.params) - _flat(mlp_trained.params)
  ref = _dense_step(grads, retain, forget, retain, 0.05, 1.0, keep=keep)
  assert _rel(got, ref) < 1e-4
  for a, b, m in zip(jax.tree.leaves(out.params), jax.tree.leaves(mlp_trained.params),
                     jax.tree.leaves(jax.tree.map(lambda m, p: np.broadcast_to(np.asarray(m), p.shape) > 0,
                                                  mask, mlp_trained.params))):
    np.testing.assert_array_equal(np.asarray(a)[~m], np.asarray(b)[~m])  # bit-identical outside the mask
  # the subspace solve is not the full solve with its unmasked entries zeroed
  full = _dense_step(grads, retain, forget, retain, 0.05, 1.0)
  assert _rel(np.where(keep, full, 0.0), ref) > 1e-2


def test_alpha_zero_is_bit_identical_and_a_small_step_raises_the_forget_loss(mlp_trained, class_data, grads):
  out, _ = _run(mlp_trained, class_data, alpha=0.0)
  for a, b in zip(jax.tree.leaves((out.params, out.batch_stats)),
                  jax.tree.leaves((mlp_trained.params, mlp_trained.batch_stats))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  forget = class_data.forget

  def forget_loss(params):
    logits, _ = mlp_trained.model.apply(params, mlp_trained.batch_stats, class_data.x[forget], train=False)
    return float(jnp.mean(cross_entropy(logits, class_data.y[forget])))

  alpha = 1e-3
  out, _ = _run(mlp_trained, class_data, alpha=alpha)
  rise = forget_loss(out.params) - forget_loss(mlp_trained.params)
  assert rise > 0  # the step unfits the forget set (a step of the wrong sign lowers its loss)
  # first order: the rise is alpha * n_f/n * g_f^T H^-1 g_f (dense float64 solve)
  retain, f = np.asarray(class_data.retain), np.asarray(forget)
  g = np.mean([grads[int(i)] for i in f], axis=0)
  slope = g @ _dense_step(grads, retain, f, retain, 0.05, 1.0)
  assert slope > 0 and abs(rise / alpha - slope) < 0.05 * slope


def test_woodbury_product_equals_a_dense_solve_for_more_rows_than_columns_too():
  rng = np.random.default_rng(1)
  for m, p in ((7, 40), (40, 9)):
    G = rng.standard_normal((m, p))
    v = rng.standard_normal(p)
    got = np.asarray(_influence.fisher_inverse_product(jnp.asarray(G, jnp.float32), jnp.asarray(v, jnp.float32), 0.3))
    ref = np.linalg.solve(0.3 * np.eye(p) + G.T @ G / m, v)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_refusals_are_one_line(mlp_trained, class_data):
  with pytest.raises(ValueError, match=r"influence: the retain gradients G \(120 examples x 628 parameters"):
    _run(mlp_trained, class_data, num_samples=10_000, memory_budget_mb=0.1)
  with pytest.raises(ValueError, match="InfluenceConfig.damping=0"):
    jun.InfluenceConfig(damping=0.0)
  with pytest.raises(ValueError, match="InfluenceConfig.num_samples"):
    jun.InfluenceConfig(num_samples=0)
  with pytest.raises(ValueError, match="InfluenceConfig.alpha"):
    jun.InfluenceConfig(alpha=-1.0)
