"""Issue 13's reference variants: the SCRUB small-scale notebooks' pull to the original weights and eval-mode
baselines, and the presets named after their source."""

import jax
import numpy as np
import pytest

from jaxunlearn import unlearn as jun
from jaxunlearn.unlearn import replace as _cfg
from jaxunlearn.unlearn._base import anchor_penalty
from jaxunlearn.unlearn._finetune import train_on


def _dist(a, b):
  return float(sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def test_anchor_penalty_against_numpy(trained):
  p0 = trained.params
  p1 = jax.tree.map(lambda a: a + 0.1 * np.sign(np.asarray(a) + 1e-3), p0)
  assert float(anchor_penalty(p1, (0.05, p0))) == pytest.approx(0.05 * _dist(p1, p0), rel=1e-4)
  assert anchor_penalty(p1, None) == 0.0


@pytest.mark.parametrize("name", ["finetune", "neggrad_plus"])
def test_anchor_pulls_towards_the_original_and_zero_changes_nothing(name, trained, class_data):
  base = _cfg(jun.make_config(name), epochs=3, batch_size=32, lr=0.05)
  method = jax.jit(jun.make(name, base))
  key = jax.random.key(0)
  free, _ = method(trained, class_data, key, {"anchor": 0.0})
  pulled, _ = method(trained, class_data, key, {"anchor": 5.0})
  assert _dist(pulled.params, trained.params) < 0.5 * _dist(free.params, trained.params)
  if name == "finetune":  # anchor 0 is the plain retain-set training of before (two programs: up to rounding)
    plain, _ = jax.jit(lambda s, d, k: train_on(s, d, d.retain, k, base, jun.make(name, base).hparams))(
        trained, class_data, key)
    for a, b in zip(jax.tree.leaves(free.params), jax.tree.leaves(plain.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["finetune", "neggrad_plus"])
def test_eval_mode_keeps_the_batch_statistics(name, trained, class_data):
  assert jax.tree.leaves(trained.batch_stats), "the fixture model must have BatchNorm"
  cfg = _cfg(jun.make_config(name), epochs=1, batch_size=32)
  for train_mode in (True, False):
    st, _ = jax.jit(jun.make(name, _cfg(cfg, train_mode=train_mode)))(trained, class_data, jax.random.key(1))
    same = all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(st.batch_stats), jax.tree.leaves(trained.batch_stats)))
    assert same == (not train_mode)


def test_presets_of_the_scrub_notebooks():
  small = jun.make_config("neggrad_plus", preset="small")
  assert (small.anchor, small.train_mode, small.alpha, small.forget_batch_size) == (0.05, False, 0.95, 64)
  assert jun.make_config("neggrad_plus", preset="large").forget_batch_size == 32
  fs = jun.make_config("finetune", preset="scrub_small")
  assert (fs.anchor, fs.train_mode, fs.optim.momentum, fs.optim.schedule) == (0.05, False, 0.0, "constant")
  assert jun.make_config("finetune").anchor == 0.0 and jun.make_config("finetune").train_mode


def test_salun_labels_include_the_true_class_ours_never(class_data):
  from jaxunlearn.unlearn import _random_label

  forget = np.asarray(class_data.forget)
  y = np.asarray(class_data.y)[forget]
  for exclude, expect_true in ((True, False), (False, True)):
    draws = np.stack([np.asarray(_random_label.random_label_targets(jax.random.key(i), class_data, exclude))[forget]
                      for i in range(40)])
    assert (draws == y).any() == expect_true
    assert set(np.unique(draws)) <= set(range(class_data.num_classes))
  frac = np.mean(np.stack([np.asarray(_random_label.random_label_targets(jax.random.key(i), class_data, False))[forget]
                           for i in range(200)]) == y)
  assert abs(frac - 1 / class_data.num_classes) < 0.05  # uniform over all C classes: 1 in C is the true one


def test_presets_named_after_their_source():
  ng = jun.make_config("neggrad", preset="salun_paper")
  assert (ng.optim.lr, ng.batch_size) == (1e-4, 256)
  s = jun.make_config("salun", preset="salun_paper")
  assert (s.optim.lr, s.batch_size, s.exclude_true) == (0.013, 256, False)
  assert not jun.make_config("random_label", preset="salun_paper").exclude_true
  assert jun.make_config("random_label").exclude_true and jun.make_config("salun").exclude_true
  assert jun.make_config("random_label", preset="salun_paper").two_pass and s.two_pass
  assert not (jun.make_config("random_label").two_pass or jun.make_config("salun").two_pass)


def test_two_pass_random_label_is_a_forget_pass_then_a_retain_pass(trained, class_data):
  """``two_pass`` (SalUn's code for 10 classes) equals a hand-written epoch: the relabelled forget set in
  batches of 32 and 8, then the retain set in batches of 32, 32, 32 and 24, one plain SGD step each."""
  import jax.numpy as jnp

  from jaxunlearn import train as jtrain
  from jaxunlearn.unlearn import _random_label

  cfg = jun.make_config("random_label", {"epochs": "2", "batch_size": "32", "lr": "0.05", "momentum": "0",
                                         "weight_decay": "0", "two_pass": "true", "exclude_true": "false"})
  key = jax.random.key(4)
  got, _ = jax.jit(jun.make("random_label", cfg))(trained, class_data, key)
  union, _ = jax.jit(jun.make("random_label", _cfg(cfg, two_pass=False)))(trained, class_data, key)

  model, x = trained.model, class_data.x

  def loss(p, s, idx, y):
    logits, s = model.apply(p, s, x[idx], train=True)
    return jnp.mean(jtrain.cross_entropy(logits, y)), s

  grad = jax.jit(jax.grad(loss, has_aux=True))
  params, stats, sizes = trained.params, trained.batch_stats, []
  for e in range(2):
    kp, kl = jax.random.split(jtrain.epoch_keys(key, e)[0])
    labels = _random_label.random_label_targets(kl, class_data, False)
    kf, kr = jax.random.split(kp)
    for k, index in ((kf, class_data.forget), (kr, class_data.retain)):
      perm = np.asarray(jax.random.permutation(k, index))
      for start in range(0, len(perm), 32):
        idx = jnp.asarray(perm[start:start + 32])
        sizes.append(len(idx))
        g, stats = grad(params, stats, idx, labels[idx])
        params = jax.tree.map(lambda p, d: p - 0.05 * d, params, g)
  assert sizes == [32, 8, 32, 32, 32, 24] * 2
  for a, b in zip(jax.tree.leaves((got.params, got.batch_stats)), jax.tree.leaves((params, stats))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  assert any(not np.allclose(np.asarray(a), np.asarray(b), atol=1e-4)  # the union's order is another run
             for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(union.params)))


def test_run_holdout_trains_without_it_and_rewind_validates_on_it(tmp_path, capsys):
  import json

  from jaxunlearn import cli

  args = ["run", "--dataset", "digits", "--train-subset", "300", "--test-subset", "100", "--model", "mlp", "--width",
          "0.25", "--epochs", "2", "--executor", "scan", "--method", "scrub_rewind", "--forget", "class:3", "--quiet"]
  assert cli.main(args + ["--holdout", "0.2", "--out", str(tmp_path / "h")]) == 0
  r = json.loads((tmp_path / "h" / "results.json").read_text())
  sz = r["sizes"]  # about 20 % (rounded per class) never trained on
  assert abs(sz["holdout"] - 60) <= 5 and sz["retain"] + sz["forget"] + sz["holdout"] == 300
  assert r["forget_validation"].startswith("held-out training examples")
  assert cli.main(args + ["--out", str(tmp_path / "t")]) == 0
  t = json.loads((tmp_path / "t" / "results.json").read_text())
  assert "holdout" not in t["sizes"] and t["forget_validation"].startswith("test split")
  capsys.readouterr()
  assert cli.main(args + ["--holdout", "0.7", "--out", str(tmp_path / "bad")]) == 2
  assert "--holdout must lie in [0, 0.5]" in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name", ["cf_k", "eu_k"])
def test_scrub_paper_block_baselines_keep_the_head_frozen(name, trained, class_data):
  cfg = _cfg(jun.make_config(name, preset="scrub_paper"), epochs=1, batch_size=32)
  assert (cfg.k, cfg.train_head, cfg.optim.momentum) == (2, False, 0.0)
  class_data = class_data.replace(init_key=jax.random.key(9))  # eu_k's preset resets to the saved initialisation
  st, _ = jax.jit(jun.make(name, cfg))(trained, class_data, jax.random.key(0))
  before = trained.model.block_names()[-2]
  for a, b in zip(jax.tree.leaves(st.params["head"]), jax.tree.leaves(trained.params["head"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the head: bit-identical
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))  # the block before it: trained
             for a, b in zip(jax.tree.leaves(st.params[before]), jax.tree.leaves(trained.params[before])))
  with pytest.raises(ValueError, match="leaves no group to train"):
    jun.make(name, _cfg(cfg, k=1))(trained, class_data, jax.random.key(0))


def test_two_pass_under_the_steps_executor_equals_its_scan(mlp_trained, class_data):
  from jaxunlearn import train as jtrain

  m = jun.make("random_label", jun.make_config("random_label", {"epochs": "2", "batch_size": "32",
                                                                "two_pass": "true"}))
  a, ma = jax.jit(m)(mlp_trained, class_data, jax.random.key(2))
  with jtrain.count_steps() as counted, jtrain.use_executor("steps"):
    b, mb = m(mlp_trained, class_data, jax.random.key(2))
  assert counted.steps == 2 * (2 + 4)  # forget 32 + 8, retain 3 x 32 + 24
  for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(ma["loss"]), np.asarray(mb["loss"]), rtol=1e-4)


def test_eu_k_saved_reset_restarts_from_the_originals_own_initialisation(class_data):
  """reset='saved' (the SCRUB notebooks' EU-k) re-initialises the last groups to the ORIGINAL's initial
  weights, model.init(init_key); 'fresh' to a new draw. Checked with 0 epochs (the reset alone)."""
  from jaxunlearn import models as jm
  from jaxunlearn import train as jtrain

  model = jm.create_model("mlp", num_classes=4, input_shape=(8, 8, 1), width=0.25)
  init_key = jax.random.key(21)
  x, y = np.asarray(class_data.x), np.asarray(class_data.y)
  original, _ = jtrain.train_model(model, jtrain.TrainConfig(epochs=2, batch_size=32, lr=0.05), x, y,
                                   np.arange(len(y)), init_key, progress=False, executor="scan")
  p0, _ = model.init(jax.random.fold_in(init_key, 0))  # what train_model started from
  data = jun.UnlearnData.create(x, y, class_data.retain, class_data.forget, num_classes=4,
                                init_key=jax.random.fold_in(init_key, 0))
  groups = model.block_names()[-2:]
  for reset in ("saved", "fresh"):
    cfg = _cfg(jun.make_config("eu_k", {"reset": reset}), epochs=0)
    st, _ = jax.jit(jun.make("eu_k", cfg))(original, data, jax.random.key(3))
    same = [np.array_equal(np.asarray(st.params[g]["kernel"]), np.asarray(p0[g]["kernel"])) for g in groups]
    assert all(same) == (reset == "saved") and any(same) == (reset == "saved"), reset  # (biases start at 0)
    for g in model.block_names()[:-2]:  # the rest is the trained original's
      for a, b in zip(jax.tree.leaves(st.params[g]), jax.tree.leaves(original.params[g])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert jun.make_config("eu_k", preset="scrub_paper").reset == "saved" and jun.make_config("eu_k").reset == "fresh"
  with pytest.raises(ValueError, match="needs the original's initialisation key"):
    jun.make("eu_k", _cfg(jun.make_config("eu_k", {"reset": "saved"}), epochs=0))(original, class_data, jax.random.key(3))
  with pytest.raises(TypeError, match="typed PRNG key"):
    jun.UnlearnData.create(x, y, class_data.retain, class_data.forget, num_classes=4, init_key=123)


def test_run_gives_eu_k_the_saved_initialisation_and_refuses_where_it_cannot(tmp_path, capsys):
  from jaxunlearn import cli

  base = ["run", "--dataset", "digits", "--train-subset", "200", "--test-subset", "60", "--model", "mlp", "--width",
          "0.25", "--epochs", "1", "--executor", "scan", "--method", "eu_k", "--preset", "eu_k=scrub_paper",
          "--set", "eu_k.epochs=1", "--quiet"]
  assert cli.main(base + ["--out", str(tmp_path / "ok"), "--save-models", str(tmp_path / "m")]) == 0
  capsys.readouterr()
  for extra, word in ((["--original", str(tmp_path / "m" / "original")], "--original"), (["--seeds", "2"], "--seeds 2")):
    assert cli.main(base + extra + ["--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eu_k.reset=saved" in err and word in err and not (tmp_path / "bad").exists()
