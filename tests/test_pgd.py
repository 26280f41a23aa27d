"""PGD: stays in the eps-ball (L-inf and L2) and the clip range, ascends the loss, and finds the exact
maximiser of a linear loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.attacks import pgd

W = jax.random.normal(jax.random.key(0), (6, 3))
Y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])


def per_example_ce(x):
  logits = x @ W
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), Y[:, None], 1)[:, 0]


def total_ce(x):
  return jnp.sum(per_example_ce(x))


@pytest.fixture(scope="module")
def x0():
  return jax.random.uniform(jax.random.key(1), (8, 6))


def test_linf_ball_and_ascent(x0):
  eps = 0.1
  adv = pgd(total_ce, x0, eps=eps, step_size=0.02, steps=20, norm="linf")
  assert adv.shape == x0.shape
  assert float(jnp.max(jnp.abs(adv - x0))) <= eps + 1e-6
  assert float(total_ce(adv)) > float(total_ce(x0)) + 0.1
  # every example's own loss went up too (the objective is separable)
  assert bool(jnp.all(per_example_ce(adv) > per_example_ce(x0)))


def test_l2_ball_and_ascent(x0):
  eps = 0.25
  adv = pgd(per_example_ce, x0, eps=eps, step_size=0.05, steps=20, norm="l2")
  norms = jnp.linalg.norm(adv - x0, axis=1)
  assert float(jnp.max(norms)) <= eps + 1e-5
  assert float(jnp.min(norms)) > 0.5 * eps  # it does move (per-example normalised steps)
  assert float(total_ce(adv)) > float(total_ce(x0)) + 0.1


def test_per_example_and_summed_losses_agree(x0):
  a = pgd(per_example_ce, x0, eps=0.1, step_size=0.03, steps=5)
  b = pgd(total_ce, x0, eps=0.1, step_size=0.03, steps=5)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_linear_loss_has_exact_maximiser(x0):
  w = jnp.array([1.0, -2.0, 0.5, -0.1, 3.0, -1.0])
  lin = lambda x: x @ w  # per-example [B]
  adv = pgd(lin, x0, eps=0.2, step_size=0.5, steps=3, norm="linf")
  np.testing.assert_allclose(np.asarray(adv), np.asarray(x0 + 0.2 * jnp.sign(w)), rtol=1e-6, atol=1e-7)
  adv2 = pgd(lin, x0, eps=0.2, step_size=0.05, steps=10, norm="l2")
  np.testing.assert_allclose(np.asarray(adv2), np.asarray(x0 + 0.2 * w / jnp.linalg.norm(w)), rtol=1e-5, atol=1e-6)


def test_clip_range_per_feature(x0):
  lo, hi = jnp.min(x0, 0), jnp.max(x0, 0)  # per-feature valid range, as LAU uses
  for norm in ("linf", "l2"):
    adv = pgd(total_ce, x0, eps=0.5, step_size=0.2, steps=10, norm=norm, clip_min=lo, clip_max=hi)
    assert bool(jnp.all(adv >= lo)) and bool(jnp.all(adv <= hi))
    assert float(total_ce(adv)) > float(total_ce(x0))
  adv = pgd(total_ce, x0, eps=0.5, step_size=0.2, steps=10, clip_min=0.0, clip_max=1.0)
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_random_start_and_zero_steps(x0):
  with pytest.raises(ValueError, match="key"):
    pgd(total_ce, x0, eps=0.1, step_size=0.1, steps=1, random_start=True)
  np.testing.assert_array_equal(np.asarray(pgd(total_ce, x0, eps=0.1, step_size=0.1, steps=0)), np.asarray(x0))
  for norm, tol in (("linf", 1e-6), ("l2", 1e-5)):
    r = pgd(total_ce, x0, jax.random.key(5), eps=0.1, step_size=0.1, steps=0, norm=norm, random_start=True)
    assert not np.array_equal(np.asarray(r), np.asarray(x0))
    d = jnp.abs(r - x0).max() if norm == "linf" else jnp.linalg.norm(r - x0, axis=1).max()
    assert float(d) <= 0.1 + tol
  with pytest.raises(ValueError, match="norm"):
    pgd(total_ce, x0, eps=0.1, step_size=0.1, steps=1, norm="l1")


def test_inside_jit_and_vmap_with_closures(x0):
  @functools.partial(jax.jit, static_argnames=())
  def attack(w, x):
    return pgd(lambda z: jnp.sum(z @ w), x, eps=0.1, step_size=0.2, steps=2)

  ws = jnp.stack([jnp.ones(6), -jnp.ones(6)])
  out = jax.vmap(attack, in_axes=(0, None))(ws, x0)
  np.testing.assert_allclose(np.asarray(out[0]), np.asarray(x0 + 0.1), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out[1]), np.asarray(x0 - 0.1), rtol=1e-6)
