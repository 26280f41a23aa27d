"""jaxunlearn.many: many models in one program equal single runs; chunking, sharding, resume."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data as jdata
from jaxunlearn import many as jmany
from jaxunlearn.many import autotune
from jaxunlearn import train as jtrain
from jaxunlearn import unlearn as jun

KEY = jax.random.key(11)

# See tests/test_checkpoint.py: orbax's harmless "Event loop is closed" unraisable exception.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
CFG = jtrain.TrainConfig(epochs=2, batch_size=16, lr=0.05)
M = 4
# many models vs single runs: equal programs up to float32 rounding on the CPU; on GPU / TPU the training
# matmuls may run in TF32 / bf16 passes (the backend's default precision), so a looser bound applies there
TOL = 1e-5 if jax.default_backend() == "cpu" else 2e-2


def _leaves(state):
  return [np.asarray(a) for a in jax.tree.leaves((state.params, state.batch_stats))]


def _max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b)))


@pytest.fixture(scope="module")
def keep(blobs):
  return jdata.keep_mask(jax.random.key(7), M, len(blobs[1]))


@pytest.fixture(scope="module")
def many(blobs, tiny_model, keep):
  x, y, _, _ = blobs
  return jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, progress=False)


def test_keep_mask_balances_models(blobs):
  n = len(blobs[1])
  k = jdata.keep_mask(0, 6, n)
  assert k.shape == (6, n) and k.dtype == bool and (k.sum(1) == n // 2).all()
  assert len({r.tobytes() for r in k}) == 6  # independent halves
  p = jdata.keep_mask(0, 6, n, paired=True)
  assert (p.sum(1) == n // 2).all() and (p.sum(0) == 3).all()  # rows and columns balanced
  pool = np.arange(10, 30)
  q = jdata.keep_mask(1, 5, n, pool=pool)
  assert (q[:, pool].sum(1) == 10).all() and (q.sum(1) == 10 + (n - 20) // 2).all()


def test_train_many_equals_single_runs(blobs, tiny_model, keep, many):
  x, y, _, _ = blobs
  states, metrics = many
  assert jmany.num_models_of(states) == M
  assert metrics["loss"].shape == (M, CFG.epochs)
  init, fit = jtrain.make_fit(tiny_model, CFG, int(keep[0].sum()))

  @jax.jit
  def single(k, index):  # one model alone, the same keys as model m of train_many
    params, stats = tiny_model.init(jax.random.fold_in(k, 0))
    ts, hist = fit(init(params, stats), jax.numpy.asarray(x), jax.numpy.asarray(y), index, jax.random.fold_in(k, 1))
    return jtrain.ModelState(ts.params, ts.batch_stats, tiny_model), hist

  for m in range(M):
    one, hist = single(jax.random.fold_in(KEY, m), np.flatnonzero(keep[m]))
    assert _max_diff(one, jmany.take(states, m)) < TOL
    np.testing.assert_allclose(np.asarray(metrics["loss"][m]), np.asarray(hist["loss"]), rtol=1e-5, atol=1e-6)
  # and the documented equivalence with the Python driver train_model
  ref, _ = jtrain.train_model(tiny_model, CFG, x, y, np.flatnonzero(keep[2]), jax.random.fold_in(KEY, 2),
                              progress=False)
  assert _max_diff(ref, jmany.take(states, 2)) < TOL
  # different models really differ (different data and keys)
  assert _max_diff(jmany.take(states, 0), jmany.take(states, 1)) > 1e-2


def test_chunked_equals_unchunked(blobs, tiny_model, keep, many):
  x, y, _, _ = blobs
  calls = []
  chunked, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, chunk_size=3, progress=False,
                                 on_chunk=lambda i, n, loaded: calls.append((i, n, loaded)))
  assert calls == [(0, 2, False), (1, 2, False)]  # 4 models in chunks of 3, the last chunk padded
  assert jmany.num_models_of(chunked) == M
  assert _max_diff(chunked, many[0]) < TOL


def test_predict_on_the_cpu_bounds_the_images_per_step_and_equals_one_chunk(blobs, many, monkeypatch):
  """On a device that reports no free memory (the CPU) predict_many's default chunk holds at most
  HOST_IMAGES_PER_STEP images per step (75 CNN models x 1024 images in one step took 24 GB and were killed);
  the logits equal one chunk of every model's."""
  from jaxunlearn.many import memory as jmemory
  from jaxunlearn.many import predict as jpredict

  states, _ = many
  x = blobs[0][:40]
  chunks = []
  real = jpredict.ChunkedRun
  monkeypatch.setattr(jpredict, "ChunkedRun", lambda *a, **kw: chunks.append(a[4]) or real(*a, **kw))
  monkeypatch.setattr(jmemory, "HOST_IMAGES_PER_STEP", 32)
  bounded = jmany.predict_many(states, x, batch_size=16)  # 32 // 16 = 2 models per step
  flipped = jmany.predict_many(states, x, batch_size=16, flip=True)  # a mirror image doubles them: 1 model
  whole = jmany.predict_many(states, x, batch_size=16, chunk_size=M)
  assert chunks == [2, 1, M]
  np.testing.assert_allclose(bounded, whole, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(flipped[:, :, 0], whole, rtol=1e-6, atol=1e-6)


def test_sequential_strategy_equals_vmap(blobs, tiny_model, keep, many):
  x, y, _, _ = blobs
  seq, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, strategy="sequential", progress=False)
  assert _max_diff(seq, many[0]) < TOL


def test_group_strategy_equals_vmap(blobs, tiny_model, keep, many):
  x, y, _, _ = blobs
  for g in (2, "3"):  # 2 divides the 4 models; 3 leaves a remainder group of 1
    grouped, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, strategy=g, progress=False)
    assert _max_diff(grouped, many[0]) < TOL


def test_auto_strategy_measures_and_matches_vmap(blobs, tiny_model, keep, many):
  x, y, _, _ = blobs
  jmany.clear_strategy_cache()
  choice = jmany.choose_strategy(tiny_model, CFG, (x, y), num_models=M, steps=2, repeats=1)
  times = choice.seconds_per_model_step
  assert list(times)[0] == "sequential" and set(times) <= {"sequential", "vmap"}  # M=4: no group of 4 < 4
  assert all(t is not None and t > 0 for t in times.values())
  assert str(choice.strategy) == min(times, key=times.get) and not choice.cached
  again = jmany.choose_strategy(tiny_model, CFG, (x, y), num_models=M, steps=2, repeats=1)
  assert again.cached and again.strategy == choice.strategy
  auto, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, strategy="auto", progress=False)
  assert _max_diff(auto, many[0]) < TOL


def test_autotune_search_order_early_stop_and_oom():
  def probe_from(table, calls):
    def probe(cand, n):
      calls.append((cand, n))
      t = table[cand]
      if isinstance(t, Exception):
        raise t
      return t
    return probe

  calls = []
  table = {"sequential": 3.0, 4: 2.0, 16: 1.0, "vmap": 5.0}
  c = jmany.autotune_strategy(probe_from(table, calls), per_device=32)
  assert c.strategy == 16
  assert calls == [("sequential", 2), (4, 8), (16, 32), ("vmap", 32)]  # two groups' worth; vmap the chunk
  calls = []  # slower than 1.1 x the best: stop there, never try the bigger groups
  c = jmany.autotune_strategy(probe_from({"sequential": 1.0, 4: 2.0, 16: 0.1, "vmap": 0.1}, calls), per_device=32)
  assert c.strategy == "sequential" and [k for k, _ in calls] == ["sequential", 4]
  calls = []  # out of memory: recorded, and the search stops
  oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
  c = jmany.autotune_strategy(probe_from({"sequential": 2.0, 4: 1.0, "vmap": oom}, calls), per_device=8)
  assert c.strategy == 4 and c.seconds_per_model_step == {"sequential": 2.0, "4": 1.0, "vmap": None}
  with pytest.raises(ValueError, match="boom"):  # any other error is the caller's
    jmany.autotune_strategy(probe_from({"sequential": ValueError("boom")}, []), per_device=8)
  with pytest.raises(RuntimeError, match="every strategy ran out"):
    jmany.autotune_strategy(probe_from({"sequential": oom}, []), per_device=8)
  c = jmany.autotune_strategy(probe_from({}, calls := []), per_device=1)  # one model per device: nothing to choose
  assert c.strategy == "vmap" and calls == []


def test_resumed_auto_run_keeps_the_checkpointed_strategy(tmp_path, blobs, tiny_model, keep, many, monkeypatch):
  x, y, _, _ = blobs
  ck = tmp_path / "ck"
  seq, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, strategy="sequential", chunk_size=2,
                             checkpoint_dir=ck, progress=False)
  assert '"strategy": "sequential"' in (ck / "manifest.json").read_text()

  def no_probe(*a, **k):
    raise AssertionError("a resumed run must not measure again")

  monkeypatch.setattr(autotune, "choose_strategy", no_probe)
  resumed, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, strategy="auto", chunk_size=2,
                                 checkpoint_dir=ck, progress=False)
  assert _max_diff(resumed, seq) == 0.0


def test_auto_refuses_an_unreadable_manifest_before_measuring(tmp_path, blobs, tiny_model, keep, monkeypatch):
  x, y, _, _ = blobs
  monkeypatch.setattr(autotune, "choose_strategy", lambda *a, **k: pytest.fail("measured before checking"))
  for text, match in (("{not json", "is unreadable"), ("[1, 2]", "is not a JSON object")):
    (tmp_path / "ck").mkdir(exist_ok=True)
    (tmp_path / "ck" / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=match):
      jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, strategy="auto", checkpoint_dir=tmp_path / "ck",
                        progress=False)


def test_strategy_errors_name_the_value(blobs, many):
  assert jmany.check_strategy("8") == 8 and jmany.check_strategy("vmap") == "vmap"
  for bad, match in ((0, "group size must be >= 1, got 0"), ("pmap", "'pmap'"), (True, "True"), (2.5, "2.5")):
    with pytest.raises(ValueError, match=match):
      jmany.check_strategy(bad)
  with pytest.raises(ValueError, match="'auto' is chosen by train_many"):
    jmany.predict_many(many[0], blobs[2][:4], strategy="auto")


def test_keep_mask_is_respected(blobs, tiny_model, keep, many):
  """Excluded examples are NaN images: a model that never sees them stays finite, one that does not;
  and a model trained with a keep mask equals one trained on the compacted data set."""
  x, y, _, _ = blobs
  poison = ~keep[0] & keep[1]
  assert poison.any()
  xf = (x.astype(np.float32) / 255.0)
  xf[poison] = np.nan
  st, _ = jmany.train_many(KEY, (xf, y), keep, CFG, model=tiny_model, progress=False)
  assert all(np.isfinite(a[0]).all() for a in _leaves(st))
  assert any(~np.isfinite(a[1]).all() for a in _leaves(st))  # the control: model 1 saw NaNs

  # Compacted: model 0's examples first (in order), the rest after; model 0 keeps the first K.
  order = np.concatenate([np.flatnonzero(keep[0]), np.flatnonzero(~keep[0])])
  k = int(keep[0].sum())
  compact_keep = keep[:, order]
  compact_keep[0] = np.arange(len(y)) < k
  compact, _ = jmany.train_many(KEY, (x[order], y[order]), compact_keep, CFG, model=tiny_model, progress=False)
  assert _max_diff(jmany.take(compact, 0), jmany.take(many[0], 0)) < TOL


def test_resume_after_interruption(tmp_path, blobs, tiny_model, keep):
  x, y, _, _ = blobs
  ck = tmp_path / "ck"

  def kill_after_chunk_1(i, n, loaded):
    if i == 1:
      raise KeyboardInterrupt("simulated kill")

  with pytest.raises(KeyboardInterrupt):
    jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, chunk_size=1, checkpoint_dir=ck,
                      progress=False, on_chunk=kill_after_chunk_1)
  assert sorted(p.name for p in ck.iterdir() if p.name.startswith("chunk_")) == ["chunk_00000", "chunk_00001"]
  calls = []
  resumed, met = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, chunk_size=1, checkpoint_dir=ck,
                                   progress=False, on_chunk=lambda i, n, loaded: calls.append(loaded))
  assert calls == [True, True, False, False]  # finished chunks are loaded, not retrained
  straight, met2 = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, chunk_size=1, progress=False)
  for a, b in zip(_leaves(resumed), _leaves(straight)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(np.asarray(met["loss"]), np.asarray(met2["loss"]))

  # a different run may not reuse the folder
  with pytest.raises(ValueError, match="different run.*config"):
    jmany.train_many(KEY, (x, y), keep, jtrain.TrainConfig(epochs=2, batch_size=16, lr=0.1),
                      model=tiny_model, chunk_size=1, checkpoint_dir=ck, progress=False)
  # a damaged chunk is named
  for f in (ck / "chunk_00001").rglob("*"):
    if f.is_file() and not f.name.startswith("_") and f.name != "commit_success.txt":
      f.write_bytes(b"garbage")
  with pytest.raises(ValueError, match="chunk_00001"):
    jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, chunk_size=1, checkpoint_dir=ck, progress=False)


UCFG = jun.FinetuneConfig(epochs=1, batch_size=16)
_finetune = jax.jit(jun.finetune, static_argnames="config")


def _splits(keep):
  forget = np.stack([np.flatnonzero(keep[m])[:8] for m in range(M)]).astype(np.int32)
  retain = np.stack([np.flatnonzero(keep[m])[8:] for m in range(M)]).astype(np.int32)
  return retain, forget


@pytest.fixture(scope="module")
def unlearned_many(blobs, keep, many):
  x, y, _, _ = blobs
  retain, forget = _splits(keep)
  data = jun.UnlearnData(jax.numpy.asarray(x), jax.numpy.asarray(y), retain, forget, num_classes=4)
  return jmany.unlearn_many(many[0], data, KEY, "finetune", UCFG, progress=False)


def test_unlearn_many_equals_single_runs(blobs, keep, many, unlearned_many):
  x, y, _, _ = blobs
  out, metrics = unlearned_many
  retain, forget = _splits(keep)
  assert jmany.num_models_of(out) == M and np.asarray(metrics["loss"]).shape == (M, 1)
  for m in range(M):
    dm = jun.UnlearnData.create(x, y, retain[m], forget[m], num_classes=4)
    single, _ = _finetune(jmany.take(many[0], m), dm, jax.random.fold_in(KEY, m), UCFG)
    assert _max_diff(single, jmany.take(out, m)) < TOL
  assert _max_diff(jmany.take(out, 0), jmany.take(many[0], 0)) > 1e-4  # it did train


def test_unlearn_many_from_one_original(trained, class_data):
  cfg = jun.FinetuneConfig(epochs=1, batch_size=32)
  out, _ = jmany.unlearn_many(trained, class_data, KEY, jun.finetune, cfg, num_models=2, progress=False)
  for m in range(2):
    single, _ = _finetune(trained, class_data, jax.random.fold_in(KEY, m), cfg)
    assert _max_diff(single, jmany.take(out, m)) < TOL
  assert _max_diff(jmany.take(out, 0), jmany.take(out, 1)) > 0  # different keys, different runs
  with pytest.raises(ValueError, match="num_models"):
    jmany.unlearn_many(trained, class_data, KEY, "finetune", cfg, progress=False)


def test_predict_and_confidences(blobs, many):
  x, y, _, _ = blobs
  states, _ = many
  lg = jmany.predict_many(states, x[:50], flip=True, batch_size=16)
  assert lg.shape == (M, 50, 2, 4)
  s1 = jmany.take(states, 1)
  np.testing.assert_allclose(lg[1, :, 0], np.asarray(jtrain.predict(s1.model, s1.params, s1.batch_stats, x[:50])),
                             atol=1e-5)
  np.testing.assert_allclose(lg[1, :, 1], np.asarray(jtrain.predict(s1.model, s1.params, s1.batch_stats,
                                                                     x[:50, :, ::-1])), atol=1e-5)
  conf = jmany.confidences_many(states, x[:50], y[:50], batch_size=16)
  assert conf.shape == (M, 50, 2) and conf.dtype == np.float64
  p = np.exp(lg[..., :] - lg.max(-1, keepdims=True))
  p = p / p.sum(-1, keepdims=True)
  py = np.take_along_axis(p, np.broadcast_to(y[:50, None, None], (M, 50, 2, 1)), -1)[..., 0]
  np.testing.assert_allclose(conf, np.log(py) - np.log(1 - py), atol=2e-3)


def test_bad_inputs_fail_before_compiling(blobs, tiny_model, keep):
  x, y, _, _ = blobs
  unbalanced = keep.copy()
  unbalanced[0, np.flatnonzero(~keep[0])[0]] = True
  with pytest.raises(ValueError, match="different numbers of examples"):
    jmany.train_many(KEY, (x, y), unbalanced, CFG, model=tiny_model, progress=False)
  idx = jdata.keep_indices(unbalanced, KEY, unbalanced="resample")
  assert idx.shape == (M, keep.sum(1).max() + 1) and all(np.isin(idx[m], np.flatnonzero(unbalanced[m])).all()
                                                         for m in range(M))
  with pytest.raises(ValueError, match="columns"):
    jmany.train_many(KEY, (x, y), keep[:, :-1], CFG, model=tiny_model, progress=False)
  with pytest.raises(ValueError, match="chunk_size"):
    jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, chunk_size=0, progress=False)
  with pytest.raises(ValueError, match="strategy"):
    jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, strategy="pmap", progress=False)
  bad_y = np.where(np.arange(len(y)) == np.flatnonzero(keep[1])[0], 99, y)  # a kept example of model 1
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
    jmany.train_many(KEY, (x, bad_y), keep, CFG, model=tiny_model, progress=False)
  with pytest.raises(ValueError, match="keeps no example"):
    jmany.train_many(KEY, (x, y), np.zeros((2, len(y)), bool), CFG, model=tiny_model, progress=False)
  with pytest.raises(TypeError, match="TrainConfig"):
    jmany.train_many(KEY, (x, y), keep, {"epochs": 1}, model=tiny_model, progress=False)


_SHARDED = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    jax.config.update("jax_disable_most_optimizations", True)
    sys.path.insert(0, {tests!r})
    from conftest import make_blobs
    from jaxunlearn import data, models, train, unlearn
    from jaxunlearn import many as jmany
    assert jax.device_count() == 4, jax.devices()
    x, y = make_blobs(40, seed=0)
    model = models.create_model("cnn", num_classes=4, input_shape=(8, 8, 1), width=0.25)
    cfg = train.TrainConfig(epochs=2, batch_size=16, lr=0.05)
    keep = data.keep_mask(jax.random.key(7), 4, len(y))
    # to_host=False: the outputs stay on the devices, sharded (the default moves finished chunks to the host)
    st, met = jmany.train_many(jax.random.key(11), (x, y), keep, cfg, model=model, progress=False, to_host=False)
    forget = np.stack([np.flatnonzero(keep[m])[:8] for m in range(4)]).astype(np.int32)
    retain = np.stack([np.flatnonzero(keep[m])[8:] for m in range(4)]).astype(np.int32)
    udata = unlearn.UnlearnData(jax.numpy.asarray(x), jax.numpy.asarray(y), retain, forget, num_classes=4)
    un, _ = jmany.unlearn_many(st, udata, jax.random.key(11), "finetune",
                                unlearn.FinetuneConfig(epochs=1, batch_size=16), progress=False, to_host=False)
    # the model axis really is split over the 4 devices, one model per device
    for leaf in jax.tree.leaves((st.params, un.params)):
      assert leaf.shape[0] == 4 and len(leaf.sharding.device_set) == 4, leaf.sharding
      assert {{s.data.shape[0] for s in leaf.addressable_shards}} == {{1}}
    # lockstep groups of 2 within each device's 3 models (a remainder group of 1): the first 4 of 12
    # models are the 4 above (model m's keep row and key depend on m alone)
    keep12 = data.keep_mask(jax.random.key(7), 12, len(y))
    g, _ = jmany.train_many(jax.random.key(11), (x, y), keep12, cfg, model=model, strategy=2, progress=False,
                            to_host=False)
    for leaf in jax.tree.leaves(g.params):
      assert {{s.data.shape[0] for s in leaf.addressable_shards}} == {{3}}, leaf.sharding
    for a, b in zip(jax.tree.leaves(g.params), jax.tree.leaves(st.params)):
      np.testing.assert_allclose(np.asarray(a)[:4], np.asarray(b), atol=1e-5, rtol=0)
    out = {{f"t{{i}}": np.asarray(a) for i, a in enumerate(jax.tree.leaves((st.params, st.batch_stats)))}}
    out.update({{f"u{{i}}": np.asarray(a) for i, a in enumerate(jax.tree.leaves((un.params, un.batch_stats)))}})
    np.savez({path!r}, **out)
""")


def test_sharded_over_4_devices_equals_single_device(tmp_path, many, unlearned_many):
  """4 forced CPU devices (subprocess: this process is pinned to 1) give the single-device results."""
  path = str(tmp_path / "sharded.npz")
  flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=1", "")
  env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  code = _SHARDED.format(tests=str(Path(__file__).parent), path=path)
  res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  got = np.load(path)
  assert jax.device_count() == 1
  for prefix, state in (("t", many[0]), ("u", unlearned_many[0])):
    leaves = _leaves(state)
    assert len([k for k in got.files if k.startswith(prefix)]) == len(leaves)
    for i, a in enumerate(leaves):
      np.testing.assert_allclose(got[f"{prefix}{i}"], a, atol=TOL, rtol=0)


def test_device_confidence_in_float32_matches_the_float64_reference_on_extreme_logits():
  """The on-device float32 formula equals metrics.logit_confidence (float64, the LiRA / challenge code's)
  within 1e-5 relative, through saturation (+-103.6) and for logits up to 1e4; the naive float32 formula
  (softmax, then logs) does not."""
  from jaxunlearn import metrics
  from jaxunlearn.many.programs import device_confidence

  rng = np.random.default_rng(0)
  blocks = [rng.normal(0, s, (400, 10)) for s in (0.1, 3.0, 20.0, 80.0, 300.0)]
  blocks.append(np.tile([[50.0] + [-50.0] * 9], (4, 1)))        # correct and saturated
  blocks.append(np.tile([[1e4, 1e4 - 1e-2] + [0.0] * 8], (4, 1)))  # near-tie at huge magnitude
  logits = np.concatenate(blocks).astype(np.float32)
  labels = rng.integers(0, 10, len(logits))
  labels[-8:] = 0
  ref = metrics.logit_confidence(logits.astype(np.float64), labels)
  got = np.asarray(jax.jit(device_confidence)(jnp.asarray(logits), jnp.asarray(labels)), np.float64)
  assert np.abs(ref).max() > 100  # saturation reached
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  z = logits - logits.max(-1, keepdims=True)  # what float32 on the device would give without care
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  py = p[np.arange(len(p)), labels]
  with np.errstate(divide="ignore"):
    naive = np.log(py + np.float32(1e-45)) - np.log(1 - py + np.float32(1e-45))
  assert not np.allclose(naive, ref, rtol=1e-5, atol=1e-5)


def test_confidences_many_equal_the_host_float64_path(blobs, many):
  from jaxunlearn import metrics

  x, y, _, _ = blobs
  states, _ = many
  lg = jmany.predict_many(states, x[:40], flip=True, batch_size=16)
  ref = metrics.logit_confidence(lg.astype(np.float64), y[:40, None])
  got = jmany.confidences_many(states, x[:40], y[:40], batch_size=16, chunk_size=2)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  one = jmany.confidences_many(states, x[:40], y[:40], flip=False, batch_size=16)
  np.testing.assert_allclose(one[..., 0], ref[..., 0], rtol=1e-5, atol=1e-5)


def test_finished_chunks_leave_the_device_by_default(blobs, tiny_model, keep, many):
  """train_many's chunks come back as host numpy arrays by default (the device holds one chunk at a time),
  equal to the run that keeps them on the device."""
  x, y, _, _ = blobs
  states, _ = many
  assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves((states.params, states.batch_stats)))
  dev, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, progress=False, to_host=False)
  assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(dev.params))
  for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(dev.params)):
    np.testing.assert_array_equal(a, np.asarray(b))
  two, _ = jmany.train_many(KEY, (x, y), keep, CFG, model=tiny_model, progress=False, chunk_size=2)
  assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(two.params))  # chunks concatenated on the host
  for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(two.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # 2 models per vmap instead of 4: rounding only


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_unlearn_many_donates_the_stacked_weights(blobs, keep, many):
  """The unlearning program of stacked originals donates its per-model inputs (the weights in and out
  share device memory: the lowered program aliases them); the program of one shared original does not.
  (Results are unchanged: test_unlearn_many_equals_single_runs runs the donating program.)"""
  from jaxunlearn.many.engine import key_parts, model_mesh
  from jaxunlearn.many.method_call import resolve_method, unlearn_program

  x, y, _, _ = blobs
  states = many[0]
  retain, forget = _splits(keep)
  meth = resolve_method("finetune", UCFG)
  kd, impl = key_parts(KEY)
  pm = {"m": np.arange(M, dtype=np.int32), "hparams": {}, "params": states.params, "batch_stats": states.batch_stats,
        "retain": retain, "forget": forget}
  sh = {"key": kd, "x": jnp.asarray(x), "y": jnp.asarray(y), "x_val": None, "y_val": None, "mask": None,
        "hparams": {k: np.float32(v) for k, v in meth.hparams.items()}}
  mesh = model_mesh()
  texts = {}
  for stacked in (True, False):
    prog = unlearn_program(meth, states.model, 4, impl, False, "vmap", mesh, "scan", stacked)
    texts[stacked] = prog.lower(pm, sh).as_text()
  marks = ("tf.aliasing_output", "jax.buffer_donor")
  assert any(m in texts[True] for m in marks)
  assert not any(m in texts[False] for m in marks)
