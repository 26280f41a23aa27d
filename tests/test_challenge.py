"""MSG and CT (NeurIPS-2023 challenge solutions, as in DeepUnlearn): MSG resets exactly the smallest-|g|
fraction of the conv weights (g = grad retain CE - grad forget CE) and scales the others' gradients; CT
transposes every conv kernel before finetuning and refuses models it cannot transpose."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import cross_entropy
from jaxunlearn.unlearn import CtConfig
from jaxunlearn.unlearn import FinetuneConfig
from jaxunlearn.unlearn import MsgConfig
from jaxunlearn.unlearn import ct
from jaxunlearn.unlearn import finetune
from jaxunlearn.unlearn import make
from jaxunlearn.unlearn import replace
from jaxunlearn.unlearn._challenge import msg_gradient
from jaxunlearn.unlearn._challenge import msg_selection
from jaxunlearn.unlearn._challenge import msg_targets
from jaxunlearn.unlearn._challenge import transpose_conv_kernels

KEY = jax.random.key(7)


def _np(tree):
  return jax.tree.map(np.asarray, tree)


def _kernels(params, ndim):
  """{path: array} of the leaves named kernel with ``ndim`` dims, in pytree order."""
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)
          if getattr(p[-1], "key", None) == "kernel" and v.ndim == ndim}


def _run(state, data, key, **cfg):
  return jax.jit(make("msg", replace(MsgConfig(), **cfg)))(state, data, key)


@pytest.fixture(scope="module")
def reset0(trained, class_data):
  """MSG with 0 epochs on the tiny CNN (just the reset), shared by the tests below."""
  return _run(trained, class_data, KEY, epochs=0, score_batch_size=32)


def _mean_ce(model, params, stats, x, y, train):
  logits, _ = model.apply(params, stats, x, train=train)
  return jnp.mean(cross_entropy(logits, y))


def test_msg_gradient_is_retain_minus_forget_batch_sums(trained, class_data):
  """Direct formula: sum over batches of grad(mean CE) on |F| random retain examples minus the same on the
  forget set, eval mode; batches of 16 (40 = 16 + 16 + 8, the last one partial)."""
  k = jax.random.key(3)
  g = _np(msg_gradient(trained, class_data, k, batch_size=16))
  f = int(class_data.forget.shape[0])
  sub = np.asarray(jax.random.permutation(k, class_data.retain))[:f]
  x, y = np.asarray(class_data.x), np.asarray(class_data.y)
  model, stats = trained.model, trained.batch_stats
  grad = jax.jit(jax.grad(lambda p, xb, yb: _mean_ce(model, p, stats, xb, yb, False)))
  want = jax.tree.map(lambda p: np.zeros(p.shape, np.float64), trained.params)
  for idx, sign in ((sub, 1.0), (np.asarray(class_data.forget), -1.0)):
    for s in range(0, len(idx), 16):
      b = idx[s:s + 16]
      gb = grad(trained.params, x[b], y[b])
      want = jax.tree.map(lambda w, v: w + sign * np.asarray(v, np.float64), want, gb)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert max(float(np.abs(a).max()) for a in jax.tree.leaves(g)) > 1e-3


def _smallest(scores, fraction):
  """Boolean masks of the round(fraction * total) smallest |score| over all the arrays in ``scores``
  (a numpy stable sort: ties go to the earlier position)."""
  flat = np.concatenate([np.abs(v).ravel() for v in scores])
  sel = np.zeros(flat.size, bool)
  sel[np.argsort(flat, kind="stable")[:round(fraction * flat.size)]] = True
  out, start = [], 0
  for v in scores:
    out.append(sel[start:start + v.size].reshape(v.shape))
    start += v.size
  return out


def test_msg_resets_exactly_the_smallest_gradient_conv_entries(trained, class_data, reset0):
  """0 epochs: the reset entries equal the fresh init and are the round(0.3 n) smallest |g| of each conv
  layer (numpy stable ranking); every other entry and the BatchNorm statistics are bit-identical."""
  new, m = reset0
  fresh, _ = trained.model.init(jax.random.fold_in(KEY, 0))
  g = _kernels(msg_gradient(trained, class_data, jax.random.fold_in(KEY, 2), batch_size=32), 4)
  old, got, ini = _kernels(trained.params, 4), _kernels(new.params, 4), _kernels(fresh, 4)
  assert len(g) == 2  # conv1, conv2 (the dense kernels are not targets on a CNN)
  total = 0
  for k, gk in g.items():
    want = _smallest([gk], 0.3)[0]
    np.testing.assert_array_equal(got[k] != old[k], want, err_msg=k)
    np.testing.assert_array_equal(got[k][want], ini[k][want])
    assert int(want.sum()) == round(0.3 * gk.size)
    total += int(want.sum())
  assert float(m["reset_fraction"]) == pytest.approx(total / sum(v.size for v in g.values()), rel=1e-6)
  for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(trained.params), jax.tree.leaves(new.params)):
    if np.ndim(a) != 4:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(p))
  for a, b in zip(jax.tree.leaves(trained.batch_stats), jax.tree.leaves(new.batch_stats)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_msg_selection_per_layer_or_global_matches_numpy(trained):
  """The selection alone on random gradients with ties (rounded values, zeros): per conv layer or one
  ranking over all conv kernels; non-target leaves are never selected."""
  rng = np.random.default_rng(0)
  g = jax.tree.map(lambda p: np.round(rng.standard_normal(p.shape), 1).astype(np.float32), trained.params)
  targets = msg_targets(trained.params)
  convs = [v for v, t in zip(jax.tree.leaves(g), jax.tree.leaves(targets)) if t]
  assert len(convs) == 2
  for per_layer, want in ((True, [_smallest([v], 0.3)[0] for v in convs]), (False, _smallest(convs, 0.3))):
    sel = msg_selection(g, targets, 0.3, per_layer=per_layer)
    got = [np.asarray(s) for s, t in zip(jax.tree.leaves(sel), jax.tree.leaves(targets)) if t]
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a == 1, b)
    assert all(not np.any(np.asarray(s)) for s, t in zip(jax.tree.leaves(sel), jax.tree.leaves(targets)) if not t)


def test_msg_first_sgd_step_scales_the_kept_conv_gradients(trained, class_data, reset0):
  """One full-batch plain-SGD step (no momentum, no decay, constant lr): the step equals -lr * s * grad of
  the retain CE (train mode) at the reset weights, s = 0.1 on the kept conv entries and 1 elsewhere; with
  small_grad_scale 1 (plain finetuning) s = 1 everywhere."""
  n = int(class_data.retain.shape[0])
  m = make("msg", MsgConfig(epochs=1, batch_size=n, optim=OptimConfig(lr=0.5, momentum=0.0, weight_decay=0.0,
                                                                      schedule="constant"), score_batch_size=32))
  step = jax.jit(m)
  p0 = reset0[0]
  p1, _ = step(trained, class_data, KEY)
  full, _ = step(trained, class_data, KEY, m.hparams_with(small_grad_scale=1.0))
  idx = np.asarray(class_data.retain)
  x, y = np.asarray(class_data.x)[idx], np.asarray(class_data.y)[idx]
  grad = jax.jit(jax.grad(lambda p: _mean_ce(trained.model, p, p0.batch_stats, x, y, True)))(p0.params)
  reset = jax.tree.map(lambda a, b: np.asarray(a) != np.asarray(b), p0.params, trained.params)
  kept_moved = 0.0
  for (path, a0), a1, af, g, r in zip(jax.tree_util.tree_leaves_with_path(p0.params), jax.tree.leaves(p1.params),
                                      jax.tree.leaves(full.params), jax.tree.leaves(grad), jax.tree.leaves(reset)):
    a0, a1, af, g = map(np.asarray, (a0, a1, af, g))
    s = np.where(r, 1.0, 0.1) if a0.ndim == 4 else np.ones_like(a0)
    np.testing.assert_allclose(a1 - a0, -0.5 * s * g, rtol=2e-3, atol=2e-6, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_allclose(af - a0, -0.5 * g, rtol=2e-3, atol=2e-6, err_msg=jax.tree_util.keystr(path))
    if a0.ndim == 4:
      np.testing.assert_allclose((a1 - a0)[~r], 0.1 * (af - a0)[~r], rtol=1e-4, atol=1e-7)
      np.testing.assert_array_equal(a1[r], af[r])
      kept_moved = max(kept_moved, float(np.abs(af - a1)[~r].max()))
    else:
      np.testing.assert_array_equal(a1, af)
  assert kept_moved > 1e-3  # the 0.1 makes a visible difference


def test_msg_on_a_model_without_convs_resets_its_weight_matrices(mlp_trained, class_data):
  new, m = _run(mlp_trained, class_data, KEY, epochs=0, score_batch_size=32)
  old, got = _kernels(mlp_trained.params, 2), _kernels(new.params, 2)
  assert len(old) == 3  # dense0, dense1, head
  for k in old:
    assert int(np.sum(got[k] != old[k])) == round(0.3 * old[k].size), k
  for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(mlp_trained.params), jax.tree.leaves(new.params)):
    if np.ndim(a) == 1:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_msg_caller_mask_freezes_everything_outside_it(mlp_trained, class_data):
  """A caller's mask: nothing outside it is reset or trained (dense1 masked out); the rest moves."""
  mask = jax.tree.map(lambda p: np.ones(p.shape, np.float32), mlp_trained.params)
  mask["dense1"] = jax.tree.map(lambda p: np.zeros(p.shape, np.float32), mlp_trained.params["dense1"])
  new, _ = jax.jit(make("msg", MsgConfig(epochs=1, batch_size=32, score_batch_size=32)))(
      mlp_trained, class_data, KEY, mask=mask)
  for name in mask:
    same = [np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree.leaves(mlp_trained.params[name]), jax.tree.leaves(new.params[name]))]
    assert all(same) if name == "dense1" else not any(same), name


def test_ct_transposes_every_conv_kernel_and_nothing_else(trained, class_data):
  new, _ = jax.jit(ct, static_argnames="config")(trained, class_data, KEY, CtConfig(epochs=0))
  flipped = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(trained.params), jax.tree.leaves(new.params)):
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 4:
      np.testing.assert_array_equal(b, np.transpose(a, (1, 0, 2, 3)), err_msg=jax.tree_util.keystr(path))
      flipped += int(np.any(a != b))
    else:
      np.testing.assert_array_equal(a, b)
  assert flipped == 2
  for a, b in zip(jax.tree.leaves(trained.batch_stats), jax.tree.leaves(new.batch_stats)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ct_is_finetuning_from_the_transposed_kernels(trained, class_data):
  """CT at E epochs = finetune (same SGD, no anchor, train mode) of the model with transposed kernels."""
  cfg = CtConfig(epochs=1, batch_size=32)
  got, gm = jax.jit(ct, static_argnames="config")(trained, class_data, KEY, cfg)
  start = ModelState(transpose_conv_kernels(trained.params), trained.batch_stats, trained.model)
  ft = FinetuneConfig(epochs=1, batch_size=32, optim=cfg.optim)
  want, wm = jax.jit(finetune, static_argnames="config")(start, class_data, KEY, ft)
  for a, b in zip(jax.tree.leaves((got.params, got.batch_stats)), jax.tree.leaves((want.params, want.batch_stats))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(jax.tree.leaves(got.params),
                                                                    jax.tree.leaves(start.params)))


def test_ct_refuses_models_it_cannot_transpose(mlp_trained, class_data):
  with pytest.raises(ValueError, match="model 'mlp' has none"):
    jax.jit(make("ct"))(mlp_trained, class_data, KEY)
  params = {"conv": {"kernel": np.zeros((3, 1, 1, 2), np.float32)}, "head": {"kernel": np.zeros((2, 2))}}
  with pytest.raises(ValueError, match=r"\['conv'\]\['kernel'\] of model '\?' is 3x1"):
    transpose_conv_kernels(params)
  ok = transpose_conv_kernels({"conv": {"kernel": np.arange(8.0).reshape(2, 2, 1, 2)}})
  np.testing.assert_array_equal(ok["conv"]["kernel"], np.arange(8.0).reshape(2, 2, 1, 2).transpose(1, 0, 2, 3))


def test_ct_on_the_mlp_is_refused_before_anything_trains(mlp_model, tiny_model, capsys, tmp_path):
  from jaxunlearn import cli
  from jaxunlearn import unlearn as jun

  with pytest.raises(ValueError, match="model 'mlp' has none"):
    jun.check_model("ct", mlp_model)
  jun.check_model("ct", tiny_model)
  jun.check_model("msg", mlp_model)  # MSG falls back to the weight matrices
  code = cli.main(["run", "--model", "mlp", "--method", "ct", "--out", str(tmp_path / "o")])
  captured = capsys.readouterr()
  assert code == 2 and "ct transposes convolution kernels, and model 'mlp' has none" in captured.err
  assert "original" not in captured.err and not (tmp_path / "o" / "results.json").exists()
