"""The chunked, sharded runner of one compiled per-chunk program over a model axis (plus mesh, keys, chunk sizes)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxunlearn import checkpoint as ckpt
from jaxunlearn.data import as_key
from jaxunlearn.many.resume import check_manifest
from jaxunlearn.many.strategy import check_strategy

MODEL_AXIS = "models"


def model_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis ``"models"`` over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("no devices given for the model mesh")
  return Mesh(np.asarray(devices, dtype=object), (MODEL_AXIS,))


def key_parts(key) -> tuple[np.ndarray, str]:
  """``(key data as numpy, key implementation name)`` of a key or int seed, for a program's shared inputs."""
  k = as_key(key)
  return np.asarray(jax.random.key_data(k)), str(jax.random.key_impl(k))


def round_chunk(chunk_size: int | None, num_models: int, num_devices: int) -> int:
  """``chunk_size`` (default: all models) capped at ``num_models`` and rounded up to a multiple of the devices."""
  c = num_models if chunk_size is None else chunk_size
  if not (isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1):
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
  c = min(int(c), num_models)
  return -(-c // num_devices) * num_devices


def put_on(x, sharding):
  """Places ``x`` (numpy or jax) with ``sharding``; works with global (multi-process) meshes."""
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if jax.process_count() == 1 or isinstance(x, jax.Array):
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def gather_to_host(tree):
  """A pytree of (possibly multi-process) device arrays as host numpy arrays."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


# "models/s" always (tqdm's default switches to "s/models" below one model per second).
_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


@dataclasses.dataclass
class ChunkedRun:
  """One chunked run of a compiled per-chunk program.

  Calling it runs ``program(per_model[chunk], shared)`` for each chunk of ``chunk`` models (the
  last chunk padded by repeating its last model, the copies dropped), the model axis sharded over
  ``mesh``; with ``checkpoint_dir`` each finished chunk is saved and a rerun loads it instead.
  Returns the outputs concatenated along the model axis.

  A chunk that runs out of device memory (``RESOURCE_EXHAUSTED``) is retried at half the size (a
  multiple of the devices; said on the progress bar) down to one model per device; ``chunk`` then holds
  the size that ran. With ``checkpoint_dir`` only while no chunk is finished (the manifest then records
  the smaller size): finished chunk files are numbered by a fixed size, so later the error says to pass
  a smaller chunk size.
  """

  program: Callable            # jitted: (per_model_chunk, shared) -> pytree with leading axis [c]
  per_model: Any               # pytree, leaves with leading axis M (numpy or jax)
  shared: Any                  # pytree, replicated
  num_models: int
  chunk: int
  mesh: Mesh
  checkpoint_dir: Path | None = None
  fingerprint: dict | None = None
  progress: bool = True
  desc: str = ""
  on_chunk: Callable | None = None
  to_host: bool = True         # finished chunks leave the device (numpy): device memory holds one chunk
  compile_first: bool = False  # compile ahead of time on the first computed chunk and time it
  compile_seconds: float = 0.0

  def __call__(self):
    m_total, c = self.num_models, self.chunk
    models_sh = NamedSharding(self.mesh, P(MODEL_AXIS))
    repl = NamedSharding(self.mesh, P())
    shared = jax.tree.map(lambda a: put_on(a, repl), self.shared)
    if self.checkpoint_dir is not None:
      check_manifest(self.checkpoint_dir, self.fingerprint or {})
    outs = []
    bar = tqdm(total=m_total, desc=self.desc, unit=" models", disable=not self.progress, leave=False,
               dynamic_ncols=True, bar_format=_BAR_FORMAT)
    abstract = None
    fn = self.program
    lo, i = 0, 0
    try:
      while lo < m_total:
        c = self.chunk
        n_chunks = i + -(-(m_total - lo) // c)
        hi = min(m_total, lo + c)
        sel = np.minimum(np.arange(lo, lo + c), m_total - 1)
        inputs = jax.tree.map(lambda a: put_on(a[sel], models_sh), self.per_model)
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / f"chunk_{i:05d}"
        loaded = path is not None and ckpt.exists(path)
        if loaded:
          if abstract is None:
            abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=models_sh),
                                    jax.eval_shape(self.program, inputs, shared))
          out = ckpt.load(path, abstract)
        else:
          if path is not None and path.exists():
            raise ValueError(f"checkpoint {str(path)!r} exists but is not a finished checkpoint; "
                             "delete it and run again")
          if self.compile_first and fn is self.program and hasattr(self.program, "lower"):
            tc = time.perf_counter()
            fn = self.program.lower(inputs, shared).compile()
            self.compile_seconds = time.perf_counter() - tc
          try:
            out = fn(inputs, shared)
            jax.block_until_ready(out)
          except Exception as e:  # noqa: BLE001  (only out-of-memory is handled; everything else re-raised)
            if not is_out_of_memory(e) or c <= self.mesh.size:
              raise
            if self.checkpoint_dir is not None and lo > 0:
              raise MemoryError(f"a chunk of {c} models does not fit in device memory; the checkpoints of the "
                                f"finished chunks fix the chunk size: pass a smaller chunk size (e.g. {c // 2}) "
                                "and a new checkpoint folder") from e
            self.chunk = max(self.mesh.size, (c // 2) // self.mesh.size * self.mesh.size)
            if self.checkpoint_dir is not None:  # nothing saved yet: the manifest takes the smaller size
              self.fingerprint = {**(self.fingerprint or {}), "chunk_size": self.chunk}
              if jax.process_index() == 0:
                (self.checkpoint_dir / "manifest.json").unlink(missing_ok=True)
              check_manifest(self.checkpoint_dir, self.fingerprint)
            fn = self.program
            bar.write(f"{self.desc}: a chunk of {c} models ran out of device memory; retrying with {self.chunk}")
            continue
          if path is not None:
            ckpt.save(path, out)
        out = jax.tree.map(lambda a: a[: hi - lo], out)
        outs.append(gather_to_host(out) if self.to_host else out)  # (computed chunks are already ready)
        bar.update(hi - lo)
        if self.on_chunk is not None:
          self.on_chunk(i, n_chunks, loaded)
        lo, i = hi, i + 1
    finally:
      bar.close()
    if len(outs) == 1:
      return outs[0]
    if self.to_host:
      return jax.tree.map(lambda *a: np.concatenate(a, axis=0), *outs)
    out = jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *outs)
    if m_total % self.mesh.size == 0:  # keep the model axis sharded when it divides evenly
      out = jax.tree.map(lambda a: jax.device_put(a, models_sh), out)
    return out


def is_out_of_memory(e: BaseException) -> bool:
  """Whether ``e`` is XLA's out-of-device-memory error."""
  return "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e)


def prepare(num_models, chunk_size, devices, strategy):
  """``(mesh, chunk, strategy)`` of a run: the model mesh, the rounded chunk size, the checked strategy."""
  strategy = check_strategy(strategy, allow_auto=False)
  mesh = model_mesh(devices)
  chunk = round_chunk(chunk_size, num_models, mesh.size)
  return mesh, chunk, strategy


def train_arrays(data):
  """``(x, y)`` of training data given as ``(x, y)``, a ``Dataset`` (its train split) or an ``UnlearnData``."""
  if isinstance(data, tuple) and len(data) == 2:
    x, y = data
  elif hasattr(data, "x_train"):
    x, y = data.x_train, data.y_train
  elif hasattr(data, "x") and hasattr(data, "y"):
    x, y = data.x, data.y
  else:
    raise TypeError("data must be (x, y), a jaxunlearn.data.Dataset or an UnlearnData, got "
                    f"{type(data).__name__}")
  if np.ndim(x) != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {np.shape(x)}")
  if np.shape(y) != (np.shape(x)[0],):
    raise ValueError(f"labels must have shape ({np.shape(x)[0]},), got {np.shape(y)}")
  return x, y
