"""SSD and label-free SSD: weights whose forget importance is at most alpha times the full-data
importance stay bit-identical, the others equal w * min(lambda * D / f, 1), with importances computed
by loops over single examples and the rule applied in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import unlearn as jun
from jaxunlearn.train import cross_entropy
from jaxunlearn.unlearn import importance

ALPHA, LAM = 1.5, 1.0  # the blobs' forget class is 1/4 of the data: f / D <= 4


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in jax.tree.leaves(tree)])


def _loop_importance(state, data, rows, quantity):
  """Mean over ``rows`` of a per-example quantity of single-example gradients: the squared gradient
  of the cross-entropy ("ce"), of ||f(x)||_2 ("norm"), or the absolute gradient of ||f(x)||_2^2 ("mas")."""
  def value(params, xi, yi):
    logits, _ = state.model.apply(params, state.batch_stats, xi[None], train=False)
    if quantity == "ce":
      return cross_entropy(logits, yi[None])[0]
    sq = jnp.sum(jnp.square(logits))
    return jnp.sqrt(sq) if quantity == "norm" else sq

  grad = jax.jit(jax.grad(value))
  total = 0.0
  for i in np.asarray(rows):
    g = _flat(grad(state.params, data.x[i], data.y[i]))
    total = total + (np.abs(g) if quantity == "mas" else g * g)
  return total / len(rows)


@pytest.fixture(scope="module")
def imps(mlp_trained, class_data):
  everything = np.concatenate([np.asarray(class_data.retain), np.asarray(class_data.forget)])
  return {q: (_loop_importance(mlp_trained, class_data, class_data.forget, q),
              _loop_importance(mlp_trained, class_data, everything, q)) for q in ("ce", "norm")}


def _check_rule(old, new, f, d, alpha, lam):
  """Clearly unselected entries bit-identical, clearly selected ones w * min(lam * d / f, 1) (entries
  within 1e-4 of the threshold, where float32 sums may fall either side, are skipped)."""
  w, got = _flat(old), _flat(new)
  sel, keep = f > (1 + 1e-4) * alpha * d, f < (1 - 1e-4) * alpha * d
  keep |= f == 0  # unused by the forget set (e.g. a dead unit): never selected
  assert sel.sum() > 10 and keep.sum() > 10, (sel.sum(), keep.sum())
  np.testing.assert_array_equal(got[keep], w[keep])
  beta = np.minimum(lam * d[sel] / f[sel], 1.0)
  assert np.mean(beta < 0.99) > 0.3  # the selected weights really shrink
  if lam > alpha:  # then selected weights with f <= lam * d have lam * d / f >= 1: the bound keeps them
    assert np.any(beta == 1.0)
  np.testing.assert_allclose(got[sel], w[sel] * beta, rtol=2e-4, atol=1e-9)
  return sel.sum()


@pytest.mark.parametrize("lam", [LAM, 2.0])
def test_ssd_dampens_exactly_the_selected_weights(mlp_trained, class_data, imps, lam):
  f, d = imps["ce"]
  cfg = jun.SsdConfig(alpha=ALPHA, lam=lam, chunk_size=16)
  new, metrics = jax.jit(jun.make("ssd", cfg))(mlp_trained, class_data, jax.random.key(0))
  n_sel = _check_rule(mlp_trained.params, new.params, f, d, ALPHA, lam)
  assert round(float(metrics["dampened_fraction"]) * f.size) == n_sel  # no entry lies within 1e-4 of the threshold
  assert jax.tree.structure(new.batch_stats) == jax.tree.structure(mlp_trained.batch_stats)


def test_ssd_with_a_huge_alpha_changes_nothing_and_says_so(mlp_trained, class_data):
  m = jun.make("ssd", jun.SsdConfig(chunk_size=32))
  new, metrics = jax.jit(m)(mlp_trained, class_data, jax.random.key(0), {"alpha": 1e9})
  np.testing.assert_array_equal(_flat(new.params), _flat(mlp_trained.params))
  assert float(metrics["dampened_fraction"]) == 0.0 and float(metrics["weight_change"]) == 0.0


def test_ssd_mask_limits_the_dampening(mlp_trained, class_data, imps):
  f, d = imps["ce"]
  mask = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), mlp_trained.params)
  mask["head"] = jax.tree.map(jnp.ones_like, mask["head"])
  new, _ = jax.jit(jun.make("ssd", jun.SsdConfig(alpha=ALPHA)))(mlp_trained, class_data, jax.random.key(0),
                                                                 mask=mask)
  on = _flat(mask) > 0
  w, got = _flat(mlp_trained.params), _flat(new.params)
  np.testing.assert_array_equal(got[~on], w[~on])
  sel = on & (f > (1 + 1e-4) * ALPHA * d)
  assert sel.sum() > 0
  np.testing.assert_allclose(got[sel], w[sel] * np.minimum(LAM * d[sel] / f[sel], 1.0), rtol=2e-4)


def test_lfssd_importance_is_the_squared_gradient_of_the_output_norm(mlp_trained, class_data, imps):
  rows = class_data.forget[:13]
  got = _flat(importance.output_sensitivity(mlp_trained, class_data, rows, chunk_size=5))
  np.testing.assert_allclose(got, _loop_importance(mlp_trained, class_data, rows, "norm"), rtol=1e-4, atol=1e-12)
  mas = _flat(importance.output_sensitivity(mlp_trained, class_data, rows, form="mas", chunk_size=5))
  np.testing.assert_allclose(mas, _loop_importance(mlp_trained, class_data, rows, "mas"), rtol=1e-4, atol=1e-10)
  with pytest.raises(ValueError, match="label-free"):
    importance.reduce_example_grads(mlp_trained, class_data, rows, lambda a, *r: a, 0.0, labels="expected",
                                    quantity="output_norm")


def test_lfssd_applies_the_rule_to_output_importances_and_ignores_labels(mlp_trained, class_data, imps):
  f, d = imps["norm"]
  m = jax.jit(jun.make("lfssd", jun.LfssdConfig(alpha=ALPHA, lam=LAM, chunk_size=16)))
  new, _ = m(mlp_trained, class_data, jax.random.key(0))
  _check_rule(mlp_trained.params, new.params, f, d, ALPHA, LAM)
  shuffled = class_data.replace(y=jax.random.permutation(jax.random.key(9), class_data.y))
  assert np.any(np.asarray(shuffled.y) != np.asarray(class_data.y))
  again, _ = m(mlp_trained, shuffled, jax.random.key(0))
  np.testing.assert_array_equal(_flat(again.params), _flat(new.params))
  # the labels matter to SSD: the same shuffle changes its result
  s = jax.jit(jun.make("ssd", jun.SsdConfig(alpha=ALPHA, chunk_size=16)))
  a, _ = s(mlp_trained, class_data, jax.random.key(0))
  b, _ = s(mlp_trained, shuffled, jax.random.key(0))
  assert np.any(_flat(a.params) != _flat(b.params))


def test_retain_subset_weights_the_retain_part_by_the_retain_size(mlp_trained, class_data):
  """D = (n_f f + n_r r) / n with r over the drawn retain rows: the rule on that D, recomputed here."""
  key = jax.random.key(3)
  cfg = jun.SsdConfig(alpha=ALPHA, retain_subset=20, chunk_size=16)
  new, _ = jax.jit(jun.make("ssd", cfg))(mlp_trained, class_data, key)
  rows = jun.importance.random_subset(jax.random.fold_in(key, 0), class_data.retain, 20)
  f = _flat(importance.diag_fisher(mlp_trained, class_data, class_data.forget))
  r = _flat(importance.diag_fisher(mlp_trained, class_data, rows))
  n_f, n_r = len(class_data.forget), len(class_data.retain)
  _check_rule(mlp_trained.params, new.params, f, (n_f * f + n_r * r) / (n_f + n_r), ALPHA, LAM)


def test_bad_settings_are_one_line_errors():
  with pytest.raises(ValueError, match="alpha"):
    jun.SsdConfig(alpha=-1.0)
  with pytest.raises(ValueError, match="output_importance"):
    jun.LfssdConfig(output_importance="l1")


def test_scale_rule_takes_half_the_bound_on_the_importance_ratio():
  whole_class = jun.DataScale(n_retain=1294, n_forget=143, num_classes=10, retrain_epochs=15, retrain_batch_size=64,
                              whole_class=True)
  for name in ("ssd", "lfssd"):
    cfg, choice = jun.default_config(name, whole_class)
    assert cfg.alpha == round(1437 / 286, 3) and "n / (2 n_forget)" in choice.rule
    tiny = jun.DataScale(9900, 100, 100, 10, 128)  # one class of a hundred: the paper's 10
    assert jun.default_config(name, tiny)[0].alpha == 10.0


def test_a_method_without_steps_is_timed_as_one_program_under_the_steps_executor(mlp_trained, class_data):
  """Under ``--executor steps`` a method that takes no optimizer step would count all its work as
  compilation and report 0 seconds (and a speed-up of billions); it is timed under ``scan`` instead."""
  from jaxunlearn import run as jrun
  spec, cfg = jun.get_method("ssd"), jun.SsdConfig(alpha=ALPHA, chunk_size=32)
  state, _, secs, compile_secs, counted = jrun._unlearn(spec, mlp_trained, class_data, jax.random.key(0), cfg, None,
                                                        "steps")
  assert secs > 0 and compile_secs > 0 and counted.steps == 0
  ref, _ = jax.jit(jun.make("ssd", cfg))(mlp_trained, class_data, jax.random.key(0))
  np.testing.assert_array_equal(_flat(state.params), _flat(ref.params))
