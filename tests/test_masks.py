"""Localisation masks: DEL criticality (theta * grad, per-output-channel top-k mean, global ranking)
and SalUn saliency (|grad|, per element), checked against direct computations on a 2-layer MLP."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn.train import ModelState
from jaxunlearn.unlearn import masks


@pytest.fixture(scope="module")
def mlp_state(mlp_model):
  params, stats = mlp_model.init(jax.random.key(3))
  return ModelState(params, stats, mlp_model)


def _mlp_logits(params, x):
  """The MLP fixture written out by hand (mean 0 / std 1 normalisation of x / 255)."""
  h = x.astype(jnp.float32).reshape(x.shape[0], -1) / 255.0
  h = jax.nn.relu(h @ params["dense0"]["kernel"] + params["dense0"]["bias"])
  h = jax.nn.relu(h @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  return h @ params["head"]["kernel"] + params["head"]["bias"]


def _direct_grad(params, data, bs):
  """sum over forget batches (in order, last one partial) of grad of -mean CE."""
  x, y, forget = np.asarray(data.x), np.asarray(data.y), np.asarray(data.forget)
  total = jax.tree.map(jnp.zeros_like, params)
  for s in range(0, len(forget), bs):
    ib = forget[s:s + bs]

    def neg_ce(p):
      onehot = jax.nn.one_hot(y[ib], 4)
      return -jnp.mean(optax.softmax_cross_entropy(_mlp_logits(p, x[ib]), onehot))

    total = jax.tree.map(jnp.add, total, jax.grad(neg_ce)(params))
  return total


def _channel_rule_numpy(a):
  a = np.asarray(a, np.float64)
  if a.ndim < 2:
    return a
  c = a.shape[-1]
  cols = a.reshape(-1, c)
  k = min(max(1, int(0.1 * c)), cols.shape[0])
  out = np.empty_like(cols)
  for j in range(c):
    out[:, j] = np.sort(cols[:, j])[-k:].mean()
  return out.reshape(a.shape)


def test_channel_topk_mean_hand_example():
  # Dense-like kernel [in=3, out=20]: k = int(0.1 * 20) = 2 -> each column scores the mean of its top 2.
  a = np.arange(60, dtype=np.float32).reshape(3, 20) % 7
  got = np.asarray(masks.channel_topk_mean(a))
  col0 = sorted([a[0, 0], a[1, 0], a[2, 0]])  # 0, 6, 5 -> top-2 mean 5.5
  assert col0 == [0.0, 5.0, 6.0]
  np.testing.assert_allclose(got[:, 0], 5.5)
  np.testing.assert_allclose(got, _channel_rule_numpy(a), rtol=1e-6)
  # Conv-like kernel [2, 2, 3, 10]: k = 1 -> each output channel gets its max over 12 entries.
  b = np.asarray(jax.random.uniform(jax.random.key(0), (2, 2, 3, 10)))
  np.testing.assert_allclose(np.asarray(masks.channel_topk_mean(b)),
                             np.broadcast_to(b.reshape(-1, 10).max(0), b.shape), rtol=1e-6)
  # 1-D tensors keep per-element scores.
  v = np.array([3.0, 1.0, 2.0], np.float32)
  np.testing.assert_array_equal(np.asarray(masks.channel_topk_mean(v)), v)


def test_del_scores_match_direct_computation(mlp_state, class_data):
  bs = 16  # 40 forget examples -> batches of 16, 16, 8
  got = masks.del_scores(mlp_state, class_data, batch_size=bs)
  g = _direct_grad(mlp_state.params, class_data, bs)
  want = jax.tree.map(lambda p, gi: _channel_rule_numpy(np.abs(np.asarray(p) * np.asarray(gi))), mlp_state.params, g)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    assert a.shape == b.shape, path
    np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=1e-7, err_msg=jax.tree_util.keystr(path))
  # The dense kernels are per column (constant down each column), biases per element.
  k0 = np.asarray(got["dense0"]["kernel"])
  assert np.all(k0 == k0[:1]) and len(np.unique(k0[0])) > 1


def test_del_mask_exact_fraction_and_global_ranking(mlp_state, class_data):
  scores = masks.del_scores(mlp_state, class_data)
  flat_s = np.concatenate([np.ravel(l) for l in jax.tree.leaves(scores)])
  total = flat_s.size
  for frac in (0.1, 0.3, 0.5):
    m = masks.del_mask(mlp_state, class_data, frac)
    flat_m = np.concatenate([np.ravel(l) for l in jax.tree.leaves(m)])
    assert set(np.unique(flat_m)) <= {0.0, 1.0}
    assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(m))
    assert jax.tree.structure(m) == jax.tree.structure(mlp_state.params)
    assert flat_m.sum() == round(frac * total)
    assert masks.mask_fraction(m) == pytest.approx(round(frac * total) / total)
    assert flat_s[flat_m == 1].min() >= flat_s[flat_m == 0].max()  # global top-k, no per-layer rule


def test_topk_mask_ties_give_exact_count():
  scores = {"a": jnp.ones((7, 3)), "b": jnp.ones((5,))}
  m = masks.topk_mask(scores, 0.5)
  assert sum(float(l.sum()) for l in jax.tree.leaves(m)) == round(0.5 * 26)
  m0 = masks.topk_mask(scores, 0.0)
  assert masks.mask_fraction(m0) == 0.0
  assert masks.mask_fraction(masks.topk_mask(scores, 1.0)) == 1.0


def test_salun_mask_per_element_ranking(mlp_state, class_data):
  g = _direct_grad(mlp_state.params, class_data, 128)
  s = masks.salun_scores(mlp_state, class_data)
  for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(g)):
    np.testing.assert_allclose(np.asarray(a), np.abs(np.asarray(b)), rtol=2e-4, atol=1e-7)
  m = masks.salun_mask(mlp_state, class_data, 0.5)
  flat_m = np.concatenate([np.ravel(l) for l in jax.tree.leaves(m)])
  flat_s = np.concatenate([np.ravel(l) for l in jax.tree.leaves(s)])
  assert flat_m.sum() == round(0.5 * flat_m.size)
  assert flat_s[flat_m == 1].min() >= flat_s[flat_m == 0].max()
  # Per element: a dense kernel column is not selected as a block (unlike DEL's channel rule).
  k0 = np.asarray(m["dense0"]["kernel"])
  assert 0 < k0.sum() < k0.size and np.any(k0.min(0) != k0.max(0))


def test_build_mask_dispatch_and_errors(mlp_state, class_data):
  for kind, fn in (("del", masks.del_mask), ("salun", masks.salun_mask)):
    a, b = masks.build_mask(kind, mlp_state, class_data, 0.2), fn(mlp_state, class_data, 0.2)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(ValueError, match="unknown mask kind"):
    masks.build_mask("random", mlp_state, class_data, 0.2)
  with pytest.raises(ValueError, match="fraction"):
    masks.build_mask("del", mlp_state, class_data, 1.5)


def test_masks_are_traceable(mlp_state, class_data):
  m = jax.jit(lambda s, d: masks.del_mask(s, d, 0.3))(mlp_state, class_data)
  ref = masks.del_mask(mlp_state, class_data, 0.3)
  for x, y in zip(jax.tree.leaves(m), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_top_n_flags_equal_a_stable_descending_sort():
  """The sort-free selection picks exactly what a stable argsort would: ties by position, NaN lowest,
  -0.0 equal to 0.0, negative and infinite values, every n."""
  from jaxunlearn.unlearn.masks import top_n_flags

  rng = np.random.default_rng(0)
  cases = [rng.normal(size=200).astype(np.float32),
           rng.integers(-3, 4, 300).astype(np.float32),  # many ties
           np.array([0.0, -0.0, np.nan, -np.inf, np.inf, 1.0, -1.0, 0.0, np.nan, 1.0], np.float32),
           np.abs(rng.normal(size=257)).astype(np.float32) * 1e-30]  # tiny magnitudes (denormals)
  for flat in cases:
    key = np.where(np.isnan(flat), -np.inf, flat)
    order = np.argsort(-key, kind="stable")
    for n in sorted({0, 1, 2, len(flat) // 3, len(flat) // 2, len(flat) - 1, len(flat)}):
      want = np.zeros(len(flat), bool)
      want[order[:n]] = True
      got = np.asarray(top_n_flags(jnp.asarray(flat), n))
      assert got.sum() == n
      np.testing.assert_array_equal(got, want, err_msg=f"n={n} of {flat[:12]}")
