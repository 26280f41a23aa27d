"""The one training loop's key convention: no step ever reuses a key that drew an epoch's batches."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import train as jtrain


def _data(k):
  return tuple(np.asarray(jax.random.key_data(k)).ravel().tolist())


def test_step_keys_never_reuse_the_batch_drawing_keys():
  """Collects every key handed to steps by run_epochs and every key the plan's permutation consumes
  (``permutation(k)`` splits ``k``; under the partitionable threefry ``split(k, n)[i] == fold_in(k, i)``,
  which is how the old ``fold_in(epoch_key, i + 1)`` step keys collided with the permutation's)."""
  key = jax.random.key(7)
  steps, epochs = 5, 3
  index = jnp.arange(20)

  def plan(k_perm, e):
    return {"idx": jtrain.epoch_batches(k_perm, index, 4), "kp": jax.random.key_data(k_perm)[None].repeat(steps, 0)}

  def step(c, row, k):
    return c, {"k": jax.random.key_data(k)}

  def step_keeping_plan_key(c, row, k):
    return row["kp"], {}

  last_kp, _ = jax.jit(lambda k: jtrain.run_epochs(step_keeping_plan_key, jnp.zeros(2, jnp.uint32), k, epochs,
                                                   plan))(key)
  # run_epochs averages metrics over an epoch's steps; collect the raw per-step keys with the same
  # functions it is built from (epoch_keys, scan_steps)
  step_keys, perm_keys = set(), set()
  for e in range(epochs):
    k_perm, k_steps = jtrain.epoch_keys(key, e)
    _, mm = jtrain.scan_steps(step, 0, jnp.zeros((steps,)), k_steps)
    step_keys |= {tuple(r.ravel().tolist()) for r in np.asarray(mm["k"])}
    perm_keys |= {_data(k_perm)} | {_data(k) for k in jax.random.split(k_perm, 2)}
    perm_keys |= {_data(jax.random.fold_in(k_perm, i)) for i in range(steps + 1)}
  assert len(step_keys) == steps * epochs  # all distinct
  assert not step_keys & perm_keys
  # run_epochs hands out these keys: its plan key of the last epoch is epoch_keys(key, epochs - 1)[0]
  np.testing.assert_array_equal(np.asarray(last_kp).ravel(),
                                np.asarray(jax.random.key_data(jtrain.epoch_keys(key, epochs - 1)[0])).ravel())


def test_make_fit_and_train_model_follow_the_same_keys(blobs, mlp_model):
  """``fit`` (one scan) and ``train_model`` (a Python loop over jitted epochs) give the same weights."""
  x, y, _, _ = blobs
  cfg = jtrain.TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=True)
  idx = np.arange(len(y))
  key = jax.random.key(4)
  st, _ = jtrain.train_model(mlp_model, cfg, x, y, idx, key, progress=False)
  init, fit = jtrain.make_fit(mlp_model, cfg, len(idx))
  ts, _ = jax.jit(fit)(init(*mlp_model.init(jax.random.fold_in(key, 0))), jnp.asarray(x), jnp.asarray(y),
                       jnp.asarray(idx), jax.random.fold_in(key, 1))
  for a, b in zip(jax.tree.leaves(st.params), jax.tree.leaves(ts.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_traced_optimizer_hparams_equal_static_ones(blobs, mlp_model):
  """make_optimizer with traced lr / momentum / weight decay / decay factor equals the static config."""
  cfg = jtrain.OptimConfig(lr=0.05, momentum=0.8, weight_decay=1e-3, schedule="step", decay_epochs=(1,),
                           decay_factor=0.5)
  params = mlp_model.init(jax.random.key(0))[0]
  grads = jax.tree.map(jnp.ones_like, params)

  def run(hp):
    tx = jtrain.make_optimizer(cfg, 2, 3, hparams=hp)
    st = tx.init(params)
    outs = []
    for _ in range(4):
      u, st = tx.update(grads, st, params)
      outs.append(jax.tree.leaves(u)[0])
    return jnp.stack(outs)

  static = run(None)
  traced = jax.jit(run)(jtrain.as_hparams(jtrain.hparam_fields(cfg)))
  np.testing.assert_allclose(np.asarray(static), np.asarray(traced), rtol=1e-6)
  # the step schedule halves the rate after epoch 1 (2 steps): updates 3-4 are smaller than 1-2
  assert np.all(np.abs(np.asarray(static)[3]) < np.abs(np.asarray(static)[1]))


def test_train_model_executors_agree(blobs, tiny_model):
  """The host-stepped executor (each step its own jitted call) trains the same model as the scan one:
  same keys and updates; equal up to float32 rounding (XLA fuses a step alone differently than inside
  a scan, so not bit for bit)."""
  x, y, _, _ = blobs
  cfg = jtrain.TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=True)
  idx = np.arange(len(y))
  from jaxunlearn.train import _loop

  a, ha = jtrain.train_model(tiny_model, cfg, x, y, idx, jax.random.key(4), progress=False, executor="scan")
  _loop._STEP_PROGRAMS.clear()
  b, hb = jtrain.train_model(tiny_model, cfg, x, y, idx, jax.random.key(4), progress=False, executor="steps")
  assert len(_loop._STEP_PROGRAMS) == 1  # every epoch reuses one compiled step
  assert (ha["executor"], hb["executor"]) == ("scan", "steps")
  for p, q in zip(jax.tree.leaves((a.params, a.batch_stats)), jax.tree.leaves((b.params, b.batch_stats))):
    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-5)
  assert max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in
             zip(jax.tree.leaves(a.params), jax.tree.leaves(tiny_model.init(jax.random.fold_in(jax.random.key(4), 0))[0]))) > 1e-3


def test_auto_executor_rule(tiny_model, mlp_model):
  assert jtrain.resolve_executor("auto", tiny_model, "cpu") == "steps"
  assert jtrain.resolve_executor("auto", mlp_model, "cpu") == "scan"
  assert jtrain.resolve_executor("auto", tiny_model, "gpu") == "scan"
  assert jtrain.resolve_executor("steps", mlp_model, "gpu") == "steps"
  import pytest
  with pytest.raises(ValueError, match="unknown executor 'fast'"):
    jtrain.resolve_executor("fast")


def test_steps_executor_inside_jit_falls_back_to_scan(blobs, tiny_model):
  """Under jax.jit the loop cannot step on the host: it stays one scan (and gives the same result)."""
  x, y, _, _ = blobs
  cfg = jtrain.TrainConfig(epochs=1, batch_size=32, lr=0.05)
  init, fit = jtrain.make_fit(tiny_model, cfg, len(y))
  st = init(*tiny_model.init(jax.random.key(0)))
  args = (jnp.asarray(x), jnp.asarray(y), jnp.arange(len(y)), jax.random.key(1))
  with jtrain.use_executor("steps"):
    jaxpr = jax.make_jaxpr(fit)(st, *args)
    eager, _ = fit(st, *args)
  assert "scan" in str(jaxpr)
  jitted, _ = jax.jit(fit)(st, *args)
  for p, q in zip(jax.tree.leaves(eager.params), jax.tree.leaves(jitted.params)):
    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-5, atol=1e-6)


def test_step_programs_are_reused_within_a_run_and_not_kept_forever():
  """One jitted program per step function (reused by every epoch of a run); old ones are dropped so a
  long session does not keep every run's closures (and the data they hold) alive."""
  from jaxunlearn.train import _loop

  made, rows = [], jnp.ones((3,))
  cache_key = lambda step: (step, jax.tree.structure(rows), ((3,),))  # noqa: E731  (function, row shapes)
  for _ in range(_loop._STEP_PROGRAMS_KEPT + 3):
    def step(c, row, k):
      return c + row, {}
    made.append(step)
    with jtrain.use_executor("steps"):
      jtrain.run_epochs(step, jnp.float32(0), jax.random.key(0), 2, lambda k, e: rows)
    assert _loop._STEP_PROGRAMS[cache_key(step)] is _loop._step_program(step, None, rows, None)  # reused
  assert len(_loop._STEP_PROGRAMS) == _loop._STEP_PROGRAMS_KEPT
  assert cache_key(made[0]) not in _loop._STEP_PROGRAMS and cache_key(made[-1]) in _loop._STEP_PROGRAMS


def test_the_steps_executor_passes_carried_data_through_without_copying_it():
  """A step that carries its data (``(state, x)``) gets the very same array back after every step, and
  the compiled program does not output it (outputs would be copies: XLA copied the 47 MB of
  Fashion-MNIST on every step); the state it computes is the scan executor's."""
  from jaxunlearn.train import _loop

  x = jnp.arange(12.0).reshape(4, 3)

  def step(c, row, k):
    s, x = c
    return (s + jnp.sum(x[row]) + jax.random.uniform(k), x), {}

  rows = jnp.array([0, 2, 1, 3, 0])
  with jtrain.use_executor("steps"):
    (s_steps, x_out), _ = jtrain.scan_steps(step, (jnp.float32(0), x), rows, jax.random.key(1))
  assert x_out is x
  (s_scan, _), _ = jtrain.scan_steps(step, (jnp.float32(0), x), rows, jax.random.key(1))
  np.testing.assert_allclose(float(s_steps), float(s_scan), rtol=1e-6)
  prog = _loop._step_program(step, (jnp.float32(0), x), rows, jax.random.key(1))
  outs = jax.eval_shape(lambda *a: prog(*a), (jnp.float32(0), x), rows, np.int32(0), np.int32(0), jax.random.key(1))
  compiled = [c for c in _loop._COMPILED.values()][-1]
  n_out = len(jax.eval_shape(compiled, *[[]], *jax.tree.leaves(((jnp.float32(0), x), rows, np.int32(0), np.int32(0),
                                                                 jax.random.key(1)))))
  assert len(jax.tree.leaves(outs)) == 2 and n_out == 1  # (s, x) out, only s computed


def test_a_second_call_of_a_method_reuses_its_compiled_step_programs(trained, class_data):
  """Under the steps executor the step programs are cached by their traced structure: a second call with
  another learning rate (a new closure over new values) compiles nothing, and still gets its own result."""
  from jaxunlearn import unlearn as jun
  from jaxunlearn.train import _loop

  method = jun.make("finetune", jun.make_config("finetune", {"epochs": "1", "batch_size": "32"}))
  with jtrain.use_executor("steps"):
    a, _ = method(trained, class_data, jax.random.key(0), {"lr": 0.01})
    programs = dict(_loop._COMPILED)
    sizes = {k: p._cache_size() for k, p in programs.items()}
    b, _ = method(trained, class_data, jax.random.key(0), {"lr": 0.2})
  assert set(_loop._COMPILED) == set(programs)  # no new step program
  assert {k: p._cache_size() for k, p in programs.items()} == sizes  # and no new compilation of one
  assert not np.allclose(np.asarray(jax.tree.leaves(a.params)[0]), np.asarray(jax.tree.leaves(b.params)[0]))
  scan, _ = jax.jit(method)(trained, class_data, jax.random.key(0), {"lr": 0.2})
  for p, q in zip(jax.tree.leaves(b.params), jax.tree.leaves(scan.params)):
    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=2e-4, atol=2e-5)


def test_a_pass_keeps_its_last_partial_batch_like_a_pytorch_loader(trained, class_data):
  """finetune (plain SGD, BatchNorm net) equals a hand-written DataLoader-style loop: each epoch's
  permutation cut into batches of 32, 32, 32 and the last 24 (120 retain examples), every batch one
  SGD step on its mean cross-entropy with BatchNorm statistics of exactly its examples."""
  from jaxunlearn import unlearn as jun

  cfg = jun.make_config("finetune", {"epochs": "2", "batch_size": "32", "lr": "0.05", "momentum": "0",
                                     "weight_decay": "0", "schedule": "constant"})
  key = jax.random.key(3)
  got, _ = jax.jit(jun.make("finetune", cfg))(trained, class_data, key)

  model, x, y = trained.model, class_data.x, class_data.y
  retain = np.asarray(class_data.retain)

  def loss(p, s, idx):
    logits, s = model.apply(p, s, x[idx], train=True)
    return jnp.mean(jtrain.cross_entropy(logits, y[idx])), s

  grad = jax.jit(jax.grad(loss, has_aux=True))
  params, stats, sizes = trained.params, trained.batch_stats, []
  for e in range(2):
    perm = np.asarray(jax.random.permutation(jtrain.epoch_keys(key, e)[0], jnp.asarray(retain)))
    for start in range(0, len(perm), 32):
      idx = perm[start:start + 32]
      sizes.append(len(idx))
      g, stats = grad(params, stats, jnp.asarray(idx))
      params = jax.tree.map(lambda p, d: p - 0.05 * d, params, g)
  assert sizes == [32, 32, 32, 24] * 2
  for a, b in zip(jax.tree.leaves((got.params, got.batch_stats)), jax.tree.leaves((params, stats))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_the_last_partial_batch_is_one_more_step_under_both_executors():
  """A Batches pass runs its rest as step ``num_full`` (its own key), counted, under scan and steps alike;
  the scan and steps executors see the same rows and keys."""
  index = jnp.arange(10)
  b = jtrain.epoch_batches(jax.random.key(0), index, 4)
  assert b.full.shape == (2, 4) and b.rest.shape == (2,)

  def step(c, row, k):
    return c + jnp.sum(row), {"n": jnp.int32(row.shape[0]), "k": jax.random.key_data(k)}

  k_steps = jax.random.key(5)
  with jtrain.count_steps() as counted:
    total, m = jax.jit(lambda: jtrain.scan_steps(step, jnp.int32(0), b, k_steps))()
  assert counted.steps == 3 and int(total) == 45  # every example once
  np.testing.assert_array_equal(m["n"], [4, 4, 2])
  expect = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(k_steps, i))) for i in range(3)])
  np.testing.assert_array_equal(m["k"], expect)
  with jtrain.count_steps() as counted, jtrain.use_executor("steps"):
    total2, m2 = jtrain.scan_steps(step, jnp.int32(0), b, k_steps)
  assert counted.steps == 3 and int(total2) == 45
  np.testing.assert_array_equal(m2["k"], expect)
  np.testing.assert_array_equal(m2["n"], [4, 4, 2])


def test_scrub_takes_a_max_step_for_the_forget_sets_last_partial_batch(trained, class_data):
  """40 forget examples at forget batch 16 are three max-steps (16, 16, 8), 120 retain examples at
  batch 32 four min-steps (32, 32, 32, 24): msteps 1 and 2 epochs take 3 + 2 x 4 = 11 steps (7 before
  the last partial batches were kept)."""
  from jaxunlearn import unlearn as jun

  cfg = jun.make_config("scrub", {"epochs": "2", "msteps": "1", "batch_size": "32", "forget_batch_size": "16"})
  with jtrain.count_steps() as counted, jtrain.use_executor("steps"):
    jun.make("scrub", cfg)(trained, class_data, jax.random.key(0))
  assert (counted.steps, counted.exact) == (11, True)
