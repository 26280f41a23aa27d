"""Boundary Unlearning (Chen et al. 2023): Shrink finetunes each forget example towards the nearest wrong class
of a one-step FGSM neighbour on the original model; Expanding trains the forget set into a temporary extra class
and deletes that output, leaving the original K outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import unlearn as jun
from jaxunlearn.train import cross_entropy
from jaxunlearn.unlearn import _boundary
from jaxunlearn.unlearn import defaults as jdef

KEY = jax.random.key(7)


def _forget(data):
  f = np.asarray(data.forget)
  return np.asarray(data.x)[f], np.asarray(data.y)[f]


@jax.jit
def _direct_fgsm_labels(state, x_uint8, y, bound):
  """The FGSM neighbour and its most likely wrong class, written out: x in [0, 1], one signed gradient step
  of the per-example cross-entropy (eval mode), clipped to [0, 1]; argmax over the classes != y."""
  x01 = x_uint8.astype(jnp.float32) / 255.0
  rows = jnp.arange(y.shape[0])
  g = jax.grad(lambda z: -jnp.sum(jax.nn.log_softmax(state.apply(z))[rows, y]))(x01)
  logits = state.apply(jnp.clip(x01 + bound * jnp.sign(g), 0.0, 1.0))
  return jnp.argmax(logits.at[rows, y].set(-jnp.inf), -1), jnp.argmax(logits, -1) != y


_search = jax.jit(_boundary.nearest_wrong_labels, static_argnames="batch_size")


@pytest.mark.parametrize("fixture", ["mlp_trained", "trained"])
def test_nearest_wrong_labels_are_the_direct_fgsm_neighbours_wrong_class(fixture, class_data, request):
  state = request.getfixturevalue(fixture)
  x, y = map(jnp.asarray, _forget(class_data))
  n_crossed = []
  for bound in (0.0, 0.1, 0.6):
    labels, crossed = _search(state, x, y, bound, batch_size=16)  # chunks of 16: the last one padded
    want, want_crossed = _direct_fgsm_labels(state, x, y, bound)
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(want), err_msg=f"bound {bound}")
    np.testing.assert_array_equal(np.asarray(crossed), np.asarray(want_crossed))
    assert not np.any(np.asarray(labels) == np.asarray(y))  # never the true label
    n_crossed.append(int(np.sum(want_crossed)))
    if bound == 0.0:  # no step: the clean image's most likely wrong class
      clean = np.array(state.apply(x))
      clean[np.arange(len(y)), np.asarray(y)] = -np.inf
      np.testing.assert_array_equal(np.asarray(labels), clean.argmax(-1))
  # the attack branch is exercised: the large step crosses the boundary for more examples than no step
  assert n_crossed[2] > n_crossed[0], n_crossed


def _plain_sgd(name, **kw):
  cfg = jun.replace(jun.get_method(name).config_cls(), momentum=0.0, weight_decay=0.0, schedule="constant", **kw)
  return jun.make(name, cfg)


def test_shrink_trains_on_exactly_the_nearest_wrong_labels(mlp_trained, class_data):
  """One full-batch plain-SGD step equals ``theta - lr * grad mean CE(f(x_forget), nearest wrong labels)``."""
  x, y = _forget(class_data)
  lr, bound = 0.5, 0.1
  m = _plain_sgd("boundary_shrink", epochs=1, batch_size=len(y), lr=lr, bound=bound)
  got, metrics = jax.jit(m)(mlp_trained, class_data, KEY)
  labels, crossed = map(np.asarray, _direct_fgsm_labels(mlp_trained, jnp.asarray(x), jnp.asarray(y), bound))

  def loss(params):
    logits, _ = mlp_trained.model.apply(params, mlp_trained.batch_stats, jnp.asarray(x), train=True)
    return jnp.mean(cross_entropy(logits, jnp.asarray(labels)))

  grads = jax.grad(loss)(mlp_trained.params)
  want = jax.tree.map(lambda p, g: p - lr * g, mlp_trained.params, grads)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert float(metrics["crossed"]) == pytest.approx(np.mean(crossed))
  # the true labels would have given a different step (the check above can fail)
  g_true = jax.grad(lambda p: jnp.mean(cross_entropy(mlp_trained.model.apply(p, {}, jnp.asarray(x))[0],
                                                     jnp.asarray(y))))(mlp_trained.params)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_true), jax.tree.leaves(grads))) > 1e-3


def test_shrink_moves_the_forget_predictions_to_those_classes(trained, class_data):
  x, y = _forget(class_data)
  labels = np.asarray(_direct_fgsm_labels(trained, jnp.asarray(x), jnp.asarray(y), 0.1)[0])
  assert np.mean(np.asarray(trained.apply(jnp.asarray(x))).argmax(-1) == y) == 1.0
  cfg = jun.replace(jun.BoundaryShrinkConfig(), epochs=10, batch_size=16, lr=0.01)
  out, metrics = jax.jit(jun.make("boundary_shrink", cfg))(trained, class_data, KEY)
  pred = np.asarray(out.apply(jnp.asarray(x))).argmax(-1)
  assert np.mean(pred == labels) >= 0.9, np.mean(pred == labels)
  assert np.mean(pred == y) == 0.0
  assert float(metrics["acc"][-1]) >= 0.9  # the training accuracy is measured against those labels


def _logits(state, x):
  return np.asarray(state.apply(jnp.asarray(x)))


def test_expand_deletes_the_shadow_output_exactly(trained, class_data):
  """The returned model has the original K outputs and parameter shapes; its logits are the first K logits of
  the trained widened net; the widened net puts the forget set in the shadow class K."""
  x, y = _forget(class_data)
  k = trained.model.num_classes
  cfg = jun.replace(jun.BoundaryExpandConfig(), epochs=10, batch_size=16, lr=0.01)
  out, metrics = jax.jit(jun.make("boundary_expand", cfg))(trained, class_data, KEY)
  wide, _ = jax.jit(lambda s, d, k_: _boundary.expand_train(s, d, k_, cfg, jun.make("boundary_expand", cfg).hparams)
                    )(trained, class_data, KEY)
  assert out.model == trained.model and out.model.num_classes == k and wide.model.num_classes == k + 1
  assert jax.tree.structure(out.params) == jax.tree.structure(trained.params)
  assert [a.shape for a in jax.tree.leaves(out.params)] == [a.shape for a in jax.tree.leaves(trained.params)]
  assert _logits(out, x).shape == (len(y), k)
  xr = np.asarray(class_data.x)[np.asarray(class_data.retain)]
  for xs in (x, xr):
    np.testing.assert_allclose(_logits(out, xs), _logits(wide, xs)[:, :k], rtol=1e-6, atol=1e-6)
  # pushed into the shadow class while widened; after the deletion the forget class is gone
  assert np.mean(_logits(wide, x).argmax(-1) == k) >= 0.9
  assert float(metrics["acc"][-1]) >= 0.9 and float(metrics["acc"][0]) < float(metrics["acc"][-1])
  assert np.mean(_logits(out, x).argmax(-1) == y) <= 0.1


def test_expand_widening_is_exact_and_one_step_trains_the_forget_set_to_the_shadow_class(mlp_trained, class_data):
  x, y = _forget(class_data)
  k = mlp_trained.model.num_classes
  lr = 0.5
  m0 = _plain_sgd("boundary_expand", epochs=0, batch_size=len(y), lr=lr)
  m1 = _plain_sgd("boundary_expand", epochs=1, batch_size=len(y), lr=lr)
  wide0, _ = _boundary.expand_train(mlp_trained, class_data, KEY, m0.config, m0.hparams)
  # widening: the K original outputs bit-identical, a fresh (non-zero) shadow column
  np.testing.assert_array_equal(np.asarray(wide0.params["head"]["kernel"][:, :k]),
                                np.asarray(mlp_trained.params["head"]["kernel"]))
  assert float(jnp.std(wide0.params["head"]["kernel"][:, k])) > 0
  np.testing.assert_array_equal(_logits(wide0, x)[:, :k], _logits(mlp_trained, x))
  # no training: deleting the neuron gives back the original weights bit for bit
  same, _ = jax.jit(m0)(mlp_trained, class_data, KEY)
  for a, b in zip(jax.tree.leaves(same.params), jax.tree.leaves(mlp_trained.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # one full-batch step: theta - lr * grad mean CE(f_wide(x_forget), K)
  wide1, _ = _boundary.expand_train(mlp_trained, class_data, KEY, m1.config, m1.hparams)
  loss = lambda p: jnp.mean(cross_entropy(wide0.model.apply(p, {}, jnp.asarray(x))[0], jnp.full(len(y), k)))  # noqa: E731
  want = jax.tree.map(lambda p, g: p - lr * g, wide0.params, jax.grad(loss)(wide0.params))
  for a, b in zip(jax.tree.leaves(wide1.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_masks_freeze_what_they_exclude(mlp_trained, class_data):
  """A mask freezing the head: Expanding's returned head is the original's bit for bit (the shadow column
  trains, then is deleted), the body changes; Shrink leaves the head bit-identical too."""
  mask = jax.tree.map(jnp.ones_like, mlp_trained.params)
  mask["head"] = jax.tree.map(jnp.zeros_like, mask["head"])
  for name in ("boundary_expand", "boundary_shrink"):
    m = jun.make(name, jun.replace(jun.get_method(name).config_cls(), epochs=2, batch_size=16, lr=0.01))
    out, _ = jax.jit(m)(mlp_trained, class_data, KEY, mask=mask)
    for a, b in zip(jax.tree.leaves(out.params["head"]), jax.tree.leaves(mlp_trained.params["head"])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert float(jnp.max(jnp.abs(out.params["dense0"]["kernel"] - mlp_trained.params["dense0"]["kernel"]))) > 0, name


def test_bad_settings_and_random_forget_sets():
  with pytest.raises(ValueError, match="bound"):
    jun.make_config("boundary_shrink", {"bound": "-0.1"})
  assert jun.make_config("boundary_shrink", preset="boundary_paper").optim.lr == 1e-5
  # not whole classes: one epoch of at most BOUNDARY_MAX_UPDATES updates
  for name in ("boundary_shrink", "boundary_expand"):
    for n_forget in (143, 6000):
      cfg, _ = jun.default_config(name, jun.DataScale(54000, n_forget, 10, 10, 128, whole_class=False))
      assert cfg.epochs == 1 and jdef.steps(n_forget, cfg.batch_size) <= jdef.BOUNDARY_MAX_UPDATES
    cfg, _ = jun.default_config(name, jun.DataScale(54000, 6000, 10, 10, 128, whole_class=True))
    assert cfg == jun.make_config(name)
