"""The default chunk of many-model runs: from the compiled program's memory analysis and the device's memory."""

import jax
import numpy as np
import pytest

from jaxunlearn import data as jdata
from jaxunlearn import many as jmany
from jaxunlearn import train as jtrain
from jaxunlearn.many import memory
from jaxunlearn.many.engine import key_parts
from jaxunlearn.many.engine import model_mesh
from jaxunlearn.many.programs import train_program


def test_fit_chunk_shrinks_with_the_budget_and_stays_a_multiple_of_the_devices():
  per_model, fixed = 300, 1000
  measure = lambda k: fixed + per_model * k  # noqa: E731  (bytes per device for k models per device)
  chunks = [memory.fit_chunk(measure, 64, 4, b) for b in (10**6, 5000, 4000, 1300)]
  assert chunks == [64, 4 * 13, 4 * 10, 4 * 1]  # (b - 1000) // 300 models per device, capped at 64 / 4
  assert all(c % 4 == 0 for c in chunks) and chunks == sorted(chunks, reverse=True)
  assert memory.fit_chunk(measure, 64, 4, None) is None  # no budget (the CPU): no opinion
  with pytest.raises(MemoryError, match="one model per device"):
    memory.fit_chunk(measure, 64, 4, 1200)


def test_the_chunk_of_a_real_program_shrinks_when_a_mocked_budget_shrinks(blobs, tiny_model, monkeypatch):
  """XLA's memory analysis of train_many's per-chunk program: more models per chunk cost more bytes, and a
  budget of about 3 models' worth gives a chunk of about 3 (mocked budgets: the CPU reports no memory)."""
  x, y, _, _ = blobs
  cfg = jtrain.TrainConfig(epochs=1, batch_size=16, lr=0.05)
  keep = jdata.keep_mask(0, 16, len(y))
  idx = jdata.keep_indices(keep, 0)
  mesh = model_mesh()
  kd, impl = key_parts(0)
  program = train_program(tiny_model, cfg, idx.shape[1], impl, "vmap", mesh)
  pm = {"m": np.arange(16, dtype=np.int32), "index": idx}
  sh = {"key": kd, "x": jax.numpy.asarray(x), "y": jax.numpy.asarray(y, jax.numpy.int32)}
  seen = {}
  real = memory.fit_chunk

  def spy(measure, *a):
    seen.update({k: measure(k) for k in (1, 2, 4)})
    return real(measure, *a)

  monkeypatch.setattr(memory, "fit_chunk", spy)
  big = memory.auto_chunk(program, pm, sh, 16, mesh, budget=10**10)
  monkeypatch.setattr(memory, "fit_chunk", real)
  assert seen[1] < seen[2] < seen[4] and big == 16
  slope = seen[2] - seen[1]
  chunks = [memory.auto_chunk(program, pm, sh, 16, mesh, budget=seen[1] + k * slope) for k in (10, 4, 2)]
  assert chunks == sorted(chunks, reverse=True) and chunks[-1] < 16 and chunks[-1] >= 1
  assert memory.auto_chunk(program, pm, sh, 16, mesh) is None  # the CPU reports no free memory


def test_train_many_takes_the_derived_chunk(blobs, tiny_model, monkeypatch):
  """With chunk_size=None, train_many runs the chunk the memory rule gives (mocked) and equals one chunk."""
  from jaxunlearn.many import api

  x, y, _, _ = blobs
  cfg = jtrain.TrainConfig(epochs=1, batch_size=16, lr=0.05)
  keep = jdata.keep_mask(0, 4, len(y))
  info = {}
  monkeypatch.setattr(api, "auto_chunk", lambda *a, **k: 2)
  a, _ = jmany.train_many(0, (x, y), keep, cfg, model=tiny_model, progress=False, info=info)
  assert info["chunk_size"] == 2
  monkeypatch.setattr(api, "auto_chunk", lambda *a, **k: None)
  b, _ = jmany.train_many(0, (x, y), keep, cfg, model=tiny_model, progress=False, info=info)
  assert info["chunk_size"] == 4
  for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-6)


def test_a_chunk_out_of_memory_is_retried_at_half_the_size():
  """A per-chunk program that runs out of device memory above 2 models: the run halves its chunk (8, 4, 2)
  and finishes with every model's output; any other error, or one at one model per device, is raised."""
  from jaxunlearn.many.engine import ChunkedRun

  sizes = []

  def program(pm, sh):
    sizes.append(pm["a"].shape[0])
    if pm["a"].shape[0] > 2:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 12.0GiB")
    return {"b": pm["a"] * 2.0 + sh["s"]}

  run = ChunkedRun(program, {"a": np.arange(7, dtype=np.float32)}, {"s": np.float32(1.0)}, 7, 8, model_mesh(),
                   progress=False)
  out = run()
  np.testing.assert_array_equal(out["b"], np.arange(7) * 2.0 + 1.0)
  assert sizes[:3] == [8, 4, 2] and run.chunk == 2 and set(sizes[2:]) == {2}

  def broken(pm, sh):
    raise RuntimeError("INVALID_ARGUMENT: something else")

  with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
    ChunkedRun(broken, {"a": np.arange(4.0)}, {}, 4, 4, model_mesh(), progress=False)()
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):  # one model per device: nothing left to halve
    ChunkedRun(lambda pm, sh: program({"a": np.zeros(3)}, sh), {"a": np.arange(4.0)}, {"s": 0.0}, 4, 1,
               model_mesh(), progress=False)()


def test_with_checkpoints_the_chunk_halves_until_one_is_saved(tmp_path):
  """With a checkpoint folder, a chunk out of memory is still halved while nothing is saved (the manifest
  records the size that ran, so the same run again loads every chunk without computing); once a chunk is
  saved the size is fixed and the error asks for a smaller one."""
  import json

  from jaxunlearn.many.engine import ChunkedRun

  sizes = []

  def program(pm, sh, limit=2, after=None):
    if isinstance(pm["a"], jax.core.Tracer):  # the shapes of a loaded chunk (jax.eval_shape): no computation
      return {"b": pm["a"] * 2.0}
    sizes.append(pm["a"].shape[0])
    if pm["a"].shape[0] > limit or (after is not None and float(pm["a"][0]) >= after):
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 12.0GiB")
    return {"b": pm["a"] * 2.0}

  pm, ck = {"a": np.arange(7, dtype=np.float32)}, tmp_path / "ck"
  out = ChunkedRun(program, pm, {}, 7, 8, model_mesh(), ck, {"chunk_size": 8}, progress=False)()
  np.testing.assert_array_equal(out["b"], np.arange(7) * 2.0)
  assert sizes[:3] == [8, 4, 2] and json.loads((ck / "manifest.json").read_text())["chunk_size"] == 2
  sizes.clear()
  again = ChunkedRun(program, pm, {}, 7, 2, model_mesh(), ck, {"chunk_size": 2}, progress=False)()
  assert sizes == [] and np.array_equal(again["b"], out["b"])  # every chunk loaded

  with pytest.raises(MemoryError, match="pass a smaller chunk size"):  # chunk 0 saved, chunk 1 out of memory
    ChunkedRun(lambda p, s: program(p, s, limit=4, after=4), pm, {}, 7, 4, model_mesh(), tmp_path / "c2",
               {"chunk_size": 4}, progress=False)()
