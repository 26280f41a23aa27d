"""Many models in one compiled program: shadow-model training, unlearning and evaluation.

Membership attacks (LiRA, U-LiRA) and the NeurIPS-2023 forget-quality score need tens to hundreds of
models that differ only in their data and seeds. This module trains, unlearns and evaluates M such
models as ONE jitted program, ``vmap``-ed over a leading model axis:

* :func:`train_many` -- model ``m`` is a fresh initialisation trained (``jaxunlearn.train.make_fit``,
  a pure nested ``lax.scan``) on the examples where ``keep_mask[m]`` is True.
* :func:`unlearn_many` -- a registered unlearning method applied to M states (or to one shared
  original), each with its own retain / forget indices and key.
* :func:`predict_many` / :func:`confidences_many` -- logits / logit-scaled confidences of all
  models on a set of images, optionally also on the mirror image (horizontal flip), ``[M, N, A]``.

Common behaviour of the three drivers:

* **Keys.** Model ``m`` uses ``jax.random.fold_in(key, m)`` (where ``m`` is its global index), so the
  results do not depend on the chunk size, the strategy or the number of devices. :func:`train_many`
  initialises with ``fold_in(k_m, 0)`` and trains with ``fold_in(k_m, 1)``, exactly like
  ``jaxunlearn.train.train_model(..., key=k_m)``.
* **Chunks.** An outer Python loop runs ``chunk_size`` models at a time, each chunk one call of the
  same compiled program (the last chunk is padded by repeating its last model and the copies are
  dropped), so M larger than what fits in memory still runs.
* **Devices.** The model axis is sharded over a 1-D :class:`jax.sharding.Mesh` of all devices
  (axis ``"models"``, ``NamedSharding(mesh, P("models"))`` for per-model inputs and for every
  output); ``chunk_size`` is rounded up to a multiple of the device count. The shared data (images,
  labels) is replicated. No ``pmap``: the same code runs on one device, several devices, and several
  hosts after ``jax.distributed.initialize()`` (see ``BUILD_multihost.md``).
* **Strategies.** ``"vmap"`` (default): all models of a chunk advance in lockstep, one batched
  kernel per layer (``vmap`` turns a convolution over M weight sets into ONE grouped convolution,
  fast for thin networks, slow for wide ones on cuDNN). ``"sequential"``: ``lax.map`` over the
  models of a chunk on each device (one model at a time per device; less memory, plain kernels).
  An int ``G``: groups of ``G`` models in lockstep, one group after another (``lax.map`` with
  ``batch_size=G``) -- the middle ground. ``"auto"`` (:func:`train_many` only): measure a few
  training steps of each candidate on the actual devices (:func:`choose_strategy`) and use the
  fastest per model; the choice is cached per model, config, chunk and device kind (and, in a
  multi-host run, process 0's choice is broadcast so every process compiles the same program).
* **Checkpoints.** With ``checkpoint_dir``, each finished chunk's outputs are saved with orbax
  (:mod:`jaxunlearn.checkpoint`); a rerun with the same arguments loads the finished chunks instead
  of recomputing them and so ends with exactly the results of an uninterrupted run. A
  ``manifest.json`` fingerprints the run; a folder written by a different run is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
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
from jaxunlearn.models import Model
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainConfig
from jaxunlearn.train import check_training_set
from jaxunlearn.train import make_fit

__all__ = (
    "MODEL_AXIS", "STRATEGIES", "balanced_keep_mask", "confidences_many", "keep_indices",
    "accuracies_many", "batch_over_models", "check_strategy", "choose_strategy", "model_mesh", "num_models_of", "predict_many",
    "resolve_strategy", "stack_states", "StrategyChoice", "take", "train_many", "unlearn_many",
)

MODEL_AXIS = "models"
STRATEGIES = ("vmap", "sequential", "auto")  # or an int G >= 1: groups of G models in lockstep


# ---------------------------------------------------------------------------------------------
# Meshes, keys, keep masks
# ---------------------------------------------------------------------------------------------

def model_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis ``"models"`` over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("no devices given for the model mesh")
  return Mesh(np.asarray(devices, dtype=object), (MODEL_AXIS,))


def _as_typed_key(key) -> jax.Array:
  if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
    return jax.random.key(int(key))
  if not isinstance(key, jax.Array):
    raise TypeError(f"key must be a jax.random.key (or an int seed), got {type(key).__name__}")
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise TypeError(f"key must be a single key, got a key array of shape {key.shape}")
    return key
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return jax.random.wrap_key_data(key)
  raise TypeError(f"key must be a jax.random.key, got dtype {key.dtype} shape {key.shape}")


def _key_parts(key) -> tuple[np.ndarray, str]:
  k = _as_typed_key(key)
  return np.asarray(jax.random.key_data(k)), str(jax.random.key_impl(k))


def balanced_keep_mask(key, num_models: int, num_examples: int, *, pool=None,
                       paired: bool = False) -> np.ndarray:
  """A keep mask whose rows all keep the same number of examples (``num_examples // 2``).

  Default: every model keeps an independent uniformly random half (the permutation of model m
  uses ``fold_in(key, m)``), so how many *other* models hold an example is independent of whether
  model m holds it -- what leave-one-out LiRA needs. Per example the count is Binomial(M, 1/2).

  With ``paired=True`` models are paired: for pair ``j`` one permutation (``fold_in(key, j)``) is
  drawn; model ``2j`` keeps its first half and model ``2j + 1`` the second (the complement; with
  an odd count the last example is in neither). With M and N even every example is then in
  exactly M/2 models, as in the LiRA reference's masks -- but in leave-one-out use the number of
  other models holding an example then depends on the target's membership (M/2 - 1 vs M/2),
  which matters for small M.

  Args:
    key: PRNG key or int seed.
    num_models: M >= 1.
    num_examples: N >= 2.
    pool: optional int indices; if given, the pool and the other examples are halved separately,
      so every model keeps exactly ``len(pool) // 2`` pool examples (U-LiRA's forget candidates)
      and ``(N - len(pool)) // 2`` others.
    paired: complementary pairs (see above).

  Returns:
    ``bool [M, N]``.
  """
  if isinstance(num_models, bool) or not (isinstance(num_models, (int, np.integer)) and num_models >= 1):
    raise ValueError(f"num_models must be an int >= 1, got {num_models!r}")
  if isinstance(num_examples, bool) or not (isinstance(num_examples, (int, np.integer)) and num_examples >= 2):
    raise ValueError(f"num_examples must be an int >= 2, got {num_examples!r}")
  key = _as_typed_key(key)
  groups = [np.arange(num_examples)]
  if pool is not None:
    pool = np.unique(np.asarray(pool, dtype=np.int64))
    if pool.size < 2 or pool.min() < 0 or pool.max() >= num_examples:
      raise ValueError(f"pool must hold >= 2 distinct indices in [0, {num_examples}), got {pool.size} "
                       f"in [{pool.min(initial=0)}, {pool.max(initial=0)}]")
    rest = np.setdiff1d(np.arange(num_examples), pool)
    groups = [pool] + ([rest] if rest.size >= 2 else [])
  keep = np.zeros((num_models, num_examples), dtype=bool)
  for g, members in enumerate(groups):
    h = members.size // 2
    gkey = jax.random.fold_in(key, g)
    draws = (num_models + 1) // 2 if paired else num_models
    perms = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, members.size))(
        jax.vmap(lambda j: jax.random.fold_in(gkey, j))(jnp.arange(draws))))
    for j in range(draws):
      perm = members[perms[j]]
      if not paired:
        keep[j, perm[:h]] = True
        continue
      keep[2 * j, perm[:h]] = True
      if 2 * j + 1 < num_models:
        keep[2 * j + 1, perm[h:2 * h]] = True
  return keep


def keep_indices(keep_mask, key=None, *, unbalanced: str = "error") -> np.ndarray:
  """Per-model index lists ``int32 [M, K]`` from a keep mask ``bool [M, N]``.

  Static shapes need the same K for every model. With ``unbalanced="error"`` (default) rows with
  different counts raise ValueError. With ``unbalanced="resample"`` every row is padded to the
  largest count with examples drawn (without replacement where possible) from the row's own kept
  examples -- they are then seen twice per epoch. The draw for row m depends only on ``key`` and
  m (numpy generator seeded by the key data and m), so it does not depend on chunking.
  """
  keep = _as_bool_mask(keep_mask)
  counts = keep.sum(1)
  if (counts == 0).any():
    raise ValueError(f"keep_mask row {int(np.argmin(counts))} keeps no example")
  k = int(counts.max())
  if unbalanced not in ("error", "resample"):
    raise ValueError(f"unbalanced must be 'error' or 'resample', got {unbalanced!r}")
  if (counts != k).any() and unbalanced == "error":
    raise ValueError(f"keep_mask rows keep different numbers of examples ({int(counts.min())} to {k}); "
                     "use shadow.balanced_keep_mask, or unbalanced='resample' to pad rows by resampling")
  kd = _key_parts(0 if key is None else key)[0].astype(np.uint64).tolist()
  out = np.empty((keep.shape[0], k), np.int32)
  for m in range(keep.shape[0]):
    idx = np.flatnonzero(keep[m])
    if idx.size < k:
      rng = np.random.default_rng([m, *kd])
      extra = k - idx.size
      pad = rng.choice(idx, size=extra, replace=extra > idx.size)
      idx = np.concatenate([idx, np.sort(pad)])
    out[m] = idx
  return out


def _as_bool_mask(keep_mask) -> np.ndarray:
  keep = np.asarray(keep_mask)
  if keep.ndim != 2:
    raise ValueError(f"keep_mask must be [M, N], got shape {keep.shape}")
  if keep.dtype != np.bool_:
    if not (np.issubdtype(keep.dtype, np.integer) or np.issubdtype(keep.dtype, np.floating)):
      raise TypeError(f"keep_mask must be bool, got dtype {keep.dtype}")
    if not np.isin(keep, (0, 1)).all():
      raise ValueError("keep_mask must be bool (or 0/1)")
    keep = keep.astype(bool)
  return keep


# ---------------------------------------------------------------------------------------------
# Stacked states
# ---------------------------------------------------------------------------------------------

def stack_states(states) -> ModelState:
  """Stacks a list of ``ModelState`` of one model into one state with a leading model axis."""
  states = list(states)
  if not states:
    raise ValueError("no states to stack")
  model = states[0].model
  if any(s.model != model for s in states):
    raise ValueError("states to stack belong to different models")
  params = jax.tree.map(lambda *a: jnp.stack(a), *[s.params for s in states])
  stats = jax.tree.map(lambda *a: jnp.stack(a), *[s.batch_stats for s in states])
  return ModelState(params, stats, model)


def take(states: ModelState, m: int) -> ModelState:
  """Model ``m`` of a stacked state."""
  return ModelState(jax.tree.map(lambda a: a[m], states.params),
                    jax.tree.map(lambda a: a[m], states.batch_stats), states.model)


def _single_shapes(model: Model):
  p, s = jax.eval_shape(model.init, jax.random.key(0))
  return p, s


def num_models_of(states: ModelState) -> int | None:
  """M for a stacked state, ``None`` for a single (unstacked) one.

  Raises:
    ValueError: if the leaves are neither the model's shapes nor those with one leading axis.
  """
  p1, s1 = _single_shapes(states.model)
  one = [tuple(x.shape) for x in jax.tree.leaves((p1, s1))]
  got = [tuple(np.shape(x)) for x in jax.tree.leaves((states.params, states.batch_stats))]
  if len(one) != len(got):
    raise ValueError(f"state has {len(got)} arrays but model {states.model.name!r} has {len(one)}")
  if got == one:
    return None
  ms = {g[0] for g in got if len(g) >= 1}
  if len(ms) == 1 and all(g[1:] == o for g, o in zip(got, one)):
    return int(ms.pop())
  raise ValueError("state's shapes match neither one model nor a stack of models "
                   f"(first array {got[0]} vs model's {one[0]})")


# ---------------------------------------------------------------------------------------------
# The chunked, sharded engine
# ---------------------------------------------------------------------------------------------

def _round_chunk(chunk_size: int | None, num_models: int, num_devices: int) -> int:
  c = num_models if chunk_size is None else chunk_size
  if not (isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1):
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
  c = min(int(c), num_models)
  return -(-c // num_devices) * num_devices


def check_strategy(strategy, *, allow_auto: bool = True):
  """The normalised strategy: ``"vmap"``, ``"sequential"``, ``"auto"`` or an int group size ``G >= 1``.

  Accepts the int as a string too (``"8"``, as it comes from a command line).

  Raises:
    ValueError: naming the bad value.
  """
  if isinstance(strategy, str) and strategy.strip().isdigit():
    strategy = int(strategy)
  if isinstance(strategy, (int, np.integer)) and not isinstance(strategy, (bool, np.bool_)):
    if strategy < 1:
      raise ValueError(f"strategy group size must be >= 1, got {strategy}")
    return int(strategy)
  names = STRATEGIES if allow_auto else tuple(s for s in STRATEGIES if s != "auto")
  if strategy not in names:
    extra = "" if allow_auto else " ('auto' is chosen by train_many / choose_strategy)"
    raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(names)} or an int group size{extra}")
  return strategy


def batch_over_models(one: Callable, strategy, num_devices: int) -> Callable:
  """``one(per_model, shared)`` mapped over the leading axis of every leaf of ``per_model``.

  ``vmap``: one batched program over all models. Otherwise the chunk is split into
  ``num_devices`` contiguous groups (one per device under the model sharding) and each runs
  ``lax.map`` over its models, ``G`` at a time (``"sequential"``: ``G = 1``); ``G`` at least a
  device's share is plain ``vmap``.
  """
  strategy = check_strategy(strategy, allow_auto=False)
  vm = jax.vmap(one, in_axes=(0, None))
  if strategy == "vmap":
    return vm
  g = 1 if strategy == "sequential" else strategy

  def grouped(per_model, shared):
    c = jax.tree.leaves(per_model)[0].shape[0]
    per_device = c // num_devices
    if g >= per_device:
      return vm(per_model, shared)
    split = jax.tree.map(lambda a: a.reshape(num_devices, per_device, *a.shape[1:]), per_model)
    inner = lambda pm: jax.lax.map(lambda p: one(p, shared), pm, batch_size=g if g > 1 else None)
    out = jax.vmap(inner)(split)
    return jax.tree.map(lambda a: a.reshape(c, *a.shape[2:]), out)

  return grouped


def _put(x, sharding):
  """Places ``x`` (numpy or jax) with ``sharding``; works with global (multi-process) meshes."""
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if jax.process_count() == 1 or isinstance(x, jax.Array):
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _to_host(tree):
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def _digest_tree(tree) -> list:
  """A cheap fingerprint of arrays: shape, dtype and two sums per leaf."""
  out = []
  for x in jax.tree.leaves(tree):
    a = jnp.asarray(x)
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a = jax.random.key_data(a)
    f = a.astype(jnp.float32)
    out.append([list(a.shape), str(a.dtype), float(jnp.sum(f)), float(jnp.sum(jnp.abs(f)))])
  return out


def _sha(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def _check_manifest(directory: Path, fingerprint: dict) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  ckpt.remove_stale_tmp(directory)
  path = directory / "manifest.json"
  want = json.loads(json.dumps(fingerprint))
  have = _read_manifest(path)
  if have is not None:
    if have != want:
      diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
      raise ValueError(f"checkpoint folder {str(directory)!r} was written by a different run "
                       f"(differs in {', '.join(diff)}); delete it or choose another checkpoint_dir")
    return
  if jax.process_index() == 0:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="manifest", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
      json.dump(want, f, indent=1)
    os.replace(tmp, path)


# "models/s" always (tqdm's default switches to "s/models" below one model per second).
_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


@dataclasses.dataclass
class _Run:
  """One chunked run of a compiled per-chunk program."""

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
  to_host: bool = False
  compile_first: bool = False  # compile ahead of time on the first chunk and time it
  compile_seconds: float = 0.0

  def __call__(self):
    m_total, c = self.num_models, self.chunk
    models_sh = NamedSharding(self.mesh, P(MODEL_AXIS))
    repl = NamedSharding(self.mesh, P())
    shared = jax.tree.map(lambda a: _put(a, repl), self.shared)
    if self.checkpoint_dir is not None:
      _check_manifest(self.checkpoint_dir, self.fingerprint or {})
    n_chunks = -(-m_total // c)
    outs = []
    bar = tqdm(total=m_total, desc=self.desc, unit=" models", disable=not self.progress, leave=False,
               dynamic_ncols=True, bar_format=_BAR_FORMAT)
    abstract = None
    try:
      for i in range(n_chunks):
        lo, hi = i * c, min(m_total, (i + 1) * c)
        sel = np.minimum(np.arange(lo, lo + c), m_total - 1)
        inputs = jax.tree.map(lambda a: _put(a[sel], models_sh), self.per_model)
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
          if self.compile_first and i == 0:
            tc = time.perf_counter()
            self.program = self.program.lower(inputs, shared).compile()
            self.compile_seconds = time.perf_counter() - tc
          out = self.program(inputs, shared)
          if path is not None:
            ckpt.save(path, out)
        out = jax.tree.map(lambda a: a[: hi - lo], out)
        if self.to_host:
          out = _to_host(out)
        else:
          jax.block_until_ready(out)
        outs.append(out)
        bar.update(hi - lo)
        if self.on_chunk is not None:
          self.on_chunk(i, n_chunks, loaded)
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


def _setup(num_models, chunk_size, devices, strategy):
  strategy = check_strategy(strategy, allow_auto=False)
  mesh = model_mesh(devices)
  chunk = _round_chunk(chunk_size, num_models, mesh.size)
  return mesh, chunk, strategy


def _ckpt_dir(checkpoint_dir) -> Path | None:
  if checkpoint_dir is None:
    return None
  p = Path(checkpoint_dir)
  if p.exists() and not p.is_dir():
    raise ValueError(f"checkpoint_dir {str(p)!r} exists and is not a folder")
  return p


def _train_data(data):
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


# ---------------------------------------------------------------------------------------------
# Choosing the strategy by measurement
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StrategyChoice:
  """What :func:`choose_strategy` measured and picked.

  Attributes:
    strategy: the fastest candidate: ``"vmap"``, ``"sequential"`` or an int group size.
    seconds_per_model_step: ``{candidate: seconds per model per training step}`` for every
      candidate tried, in the order tried (``None``: it ran out of memory). Keys are strings.
    probe_seconds: wall time of the whole measurement, compilations included.
    cached: the choice came from this process's cache (nothing was measured now).
  """

  strategy: Any
  seconds_per_model_step: dict
  probe_seconds: float
  cached: bool = False

  def describe(self) -> str:
    """One line: the choice and the per-candidate figures."""
    if not self.seconds_per_model_step:
      return f"strategy {self.strategy} (one model per device: nothing to measure)"
    figs = ", ".join(f"{k} {'OOM' if v is None else f'{v * 1e3:.3g} ms'}"
                     for k, v in self.seconds_per_model_step.items())
    src = "cached" if self.cached else f"measured in {self.probe_seconds:.1f} s"
    return f"strategy {self.strategy} ({src}; per model-step: {figs})"


_CHOICES: dict = {}


def _is_oom(e: Exception) -> bool:
  msg = str(e)
  return "RESOURCE_EXHAUSTED" in msg or "Out of memory" in msg or "out of memory" in msg


def _agree(t: float | None) -> float | None:
  """Multi-host: every process continues with process 0's time (``None`` if any process ran out of
  memory), so all of them try the same candidates and end with the same choice."""
  if jax.process_count() == 1:
    return t
  from jax.experimental import multihost_utils

  v = np.asarray(multihost_utils.process_allgather(np.asarray([-1.0 if t is None else t], np.float64)))
  v = v.reshape(-1)
  return None if (v < 0).any() else float(v[0])


def autotune_strategy(run_probe: Callable, *, per_device: int, tolerance: float = 1.1) -> StrategyChoice:
  """Picks the fastest strategy by running ``run_probe(candidate, models_per_device)``.

  Candidates, tried in this order: ``"sequential"``, groups ``4, 16, 64, ...`` below
  ``per_device``, then ``"vmap"`` (all ``per_device`` models in lockstep). The search stops at the
  first candidate slower than ``tolerance`` x the best so far (bigger groups rarely recover) or
  that runs out of device memory. Sequential and group probes run two groups' worth of models, so
  the cheap candidates stay cheap; ``"vmap"`` runs the real chunk (and so also proves it fits).
  In a multi-host run each candidate's time is process 0's (an out-of-memory anywhere counts), so
  every process makes the same choice.

  Args:
    run_probe: ``f(candidate, models_per_device) -> seconds per model per step``.
    per_device: models per device in one chunk of the real run.
    tolerance: see above.

  Returns:
    A :class:`StrategyChoice`.
  """
  t0 = time.perf_counter()
  if per_device <= 1:
    return StrategyChoice("vmap", {}, 0.0)
  cands = ["sequential"] + [g for g in (4, 16, 64, 256, 1024) if g < per_device] + ["vmap"]
  times: dict = {}
  best, best_t = None, float("inf")
  for cand in cands:
    n = per_device if cand == "vmap" else min(per_device, 2 * (1 if cand == "sequential" else cand))
    try:
      t = float(run_probe(cand, n))
    except Exception as e:  # noqa: BLE001 -- only memory exhaustion is a result; the rest re-raises
      if not _is_oom(e):
        raise
      t = None
    t = _agree(t)
    times[str(cand)] = t
    if t is None:
      break
    if t < best_t:
      best, best_t = cand, t
    elif t > tolerance * best_t:
      break
  if best is None:
    raise RuntimeError("every strategy ran out of device memory; use a smaller chunk_size")
  return StrategyChoice(best, times, time.perf_counter() - t0)


def choose_strategy(model: Model, config, data, *, chunk_size: int | None = None,
                    num_models: int | None = None, devices=None, steps: int = 6,
                    repeats: int = 2, fit_factory: Callable = make_fit) -> StrategyChoice:
  """Measures which strategy trains ``model`` fastest on these devices (see :func:`autotune_strategy`).

  Each candidate compiles :func:`train_many`'s program for a ``steps``-step run (one epoch of
  ``steps`` batches of ``config.batch_size`` from ``data``), runs it once to warm up, and keeps the
  best of ``repeats`` timed runs. The probe includes each model's initialisation, which a real run
  spreads over many more steps; it is small next to ``steps`` training steps for the networks
  here. Compilation dominates the cost (one per candidate tried); the result is cached per
  (trainer, model, config, models per device, devices, image shape and dtype).

  Args:
    model: the network.
    config: the training configuration of the real run.
    data: as in :func:`train_many` (only shapes and dtype matter for the timing).
    chunk_size: models per chunk of the real run (default ``num_models``).
    num_models: M of the real run (when ``chunk_size`` is not given).
    devices: devices of the model mesh (default all).
    steps: training steps per probe.
    repeats: timed runs per candidate.
    fit_factory: ``f(model, config, k) -> (init, fit)`` of the trainer to time
      (``jaxunlearn.train.make_fit``, or e.g. ``jaxunlearn.airbench.make_airbench_fit``; its
      ``config`` needs ``epochs`` and ``batch_size`` fields).

  Returns:
    A :class:`StrategyChoice` (``cached=True`` and ``probe_seconds=0`` when it came from the
    cache); pass ``.strategy`` to :func:`train_many`, :func:`unlearn_many`, ...
  """
  x, y = _train_data(data)
  if chunk_size is None and num_models is None:
    raise ValueError("give chunk_size or num_models")
  for nm, v in (("steps", steps), ("repeats", repeats)):
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) and v >= 1):
      raise ValueError(f"{nm} must be an int >= 1, got {v!r}")
  mesh = model_mesh(devices)
  chunk = _round_chunk(chunk_size if chunk_size is not None else num_models,
                       num_models if num_models is not None else chunk_size, mesh.size)
  key = (fit_factory, model, config, chunk // mesh.size, tuple(d.id for d in mesh.devices.flat),
         mesh.devices.flat[0].device_kind, tuple(np.shape(x)[1:]), str(np.asarray(x[:1]).dtype), steps)
  if key in _CHOICES:
    return dataclasses.replace(_CHOICES[key], cached=True, probe_seconds=0.0)
  n = int(np.shape(x)[0])
  probe_cfg = dataclasses.replace(config, epochs=1)
  k = config.batch_size * steps  # `steps` full batches (examples repeat when the data set is smaller)
  repl = NamedSharding(mesh, P())
  models_sh = NamedSharding(mesh, P(MODEL_AXIS))
  shared = {"key": _put(_key_parts(0)[0], repl), "x": _put(x, repl), "y": _put(np.asarray(y, np.int32), repl)}
  impl = _key_parts(0)[1]

  def run_probe(cand, per_dev):
    m = per_dev * mesh.size
    program = _train_program(model, probe_cfg, k, impl, cand, mesh, fit_factory)
    pm = {"m": _put(np.arange(m, dtype=np.int32), models_sh),
          "index": _put((np.arange(m * k, dtype=np.int64).reshape(m, k) % n).astype(np.int32), models_sh)}
    compiled = program.lower(pm, shared).compile()
    jax.block_until_ready(compiled(pm, shared))
    best = float("inf")
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(pm, shared))
      best = min(best, time.perf_counter() - t0)
    return best / (m * steps)

  choice = autotune_strategy(run_probe, per_device=chunk // mesh.size)
  _CHOICES[key] = choice
  return choice


def _manifest_strategies(folders) -> list:
  """The strategies recorded in the ``manifest.json`` of each existing folder (None: no manifest).

  Raises:
    ValueError: for a manifest that exists but cannot be read (before anything is measured).
  """
  manifests = (_read_manifest(Path(folder) / "manifest.json") for folder in folders)
  return [m.get("strategy") for m in manifests if m is not None]


def _read_manifest(path: Path) -> dict | None:
  """A run's ``manifest.json`` (None if there is none).

  Raises:
    ValueError: if it exists but is not a readable JSON object.
  """
  if not path.is_file():
    return None
  try:
    have = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"checkpoint manifest {str(path)!r} is unreadable ({e}); delete the folder") from None
  if not isinstance(have, dict):
    raise ValueError(f"checkpoint manifest {str(path)!r} is not a JSON object; delete the folder")
  return have


def resolve_strategy(strategy, model: Model, config, data, *, chunk_size: int | None = None,
                     num_models: int | None = None, devices=None, checkpoint_dir=None,
                     log: Callable[[str], None] | None = None):
  """A concrete strategy for a run: ``strategy`` itself unless it is ``"auto"``.

  ``"auto"``: the strategy recorded in the manifest of ``checkpoint_dir`` (a folder, or several:
  the checkpoint groups of one study) when a run is being resumed, so resumed chunks are computed
  exactly as the finished ones; else :func:`choose_strategy`'s measurement (reported through
  ``log``).

  Raises:
    ValueError: for a bad strategy or an unreadable manifest.
  """
  strategy = check_strategy(strategy)
  if strategy != "auto":
    return strategy
  folders = [] if checkpoint_dir is None else (
      [checkpoint_dir] if isinstance(checkpoint_dir, (str, os.PathLike)) else list(checkpoint_dir))
  for prev in _manifest_strategies(folders):
    if prev not in (None, "auto"):
      return check_strategy(prev, allow_auto=False)
  if log is not None:
    log("strategy auto: timing a few training steps of each candidate (one compilation each) ...")
  choice = choose_strategy(model, config, data, chunk_size=chunk_size, num_models=num_models, devices=devices)
  if log is not None:
    log(choice.describe())
  return choice.strategy


# ---------------------------------------------------------------------------------------------
# train_many
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _train_program(model: Model, cfg, k: int, impl: str, strategy: str, mesh: Mesh, fit_factory: Callable = make_fit):
  """The jitted per-chunk program of :func:`train_many`: ``fit_factory(model, cfg, k)`` gives the
  ``(init, fit)`` pair of one model's run (``jaxunlearn.train.make_fit``, or another trainer's with
  the same contract, e.g. ``jaxunlearn.airbench.make_airbench_fit``)."""
  init, fit = fit_factory(model, cfg, k)

  def one(pm, sh):
    km = jax.random.fold_in(jax.random.wrap_key_data(sh["key"], impl=impl), pm["m"])
    params, stats = model.init(jax.random.fold_in(km, 0))
    ts, hist = fit(init(params, stats), sh["x"], sh["y"], pm["index"], jax.random.fold_in(km, 1))
    return {"params": ts.params, "batch_stats": ts.batch_stats, "metrics": hist}

  fn = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)))


def train_many(key, data, keep_mask, config: TrainConfig, *, model: Model, chunk_size: int | None = None,
               strategy: str = "vmap", devices=None, checkpoint_dir=None, unbalanced: str = "error",
               progress: bool = True, desc: str = "train", on_chunk: Callable | None = None,
               to_host: bool = False) -> tuple[ModelState, dict]:
  """Trains M models from scratch, model m on the examples where ``keep_mask[m]`` is True.

  Numerically the same as M calls of ``jaxunlearn.train.train_model(model, config, x, y,
  flatnonzero(keep_mask[m]), jax.random.fold_in(key, m))`` (up to float reassociation), but as
  one compiled program over the model axis, chunked and sharded (see the module docstring).

  Args:
    key: PRNG key (or int seed); model m uses ``fold_in(key, m)``.
    data: ``(x [N, H, W, C], y [N])``, a ``jaxunlearn.data.Dataset`` (its train split) or an
      ``UnlearnData`` (its ``x``, ``y``).
    keep_mask: ``bool [M, N]``. Every row must keep the same number K of examples (see
      :func:`balanced_keep_mask`) unless ``unbalanced="resample"`` (see :func:`keep_indices`).
    config: the training configuration (every model the same).
    model: the network.
    chunk_size: models per compiled call (default: all M), rounded up to a multiple of the
      device count.
    strategy: ``"vmap"``, ``"sequential"``, an int group size or ``"auto"`` (measure and pick the
      fastest, see :func:`choose_strategy`; a resumed run keeps the choice its checkpoints used).
    devices: devices of the model mesh (default ``jax.devices()``).
    checkpoint_dir: save each finished chunk here and resume from it (see module docstring).
    unbalanced: ``"error"`` or ``"resample"`` for rows with different counts.
    progress: tqdm bar with models/s.
    desc: bar label.
    on_chunk: ``f(i, num_chunks, loaded)`` called after chunk i (loaded: restored from a checkpoint).
    to_host: return numpy arrays (gathered chunk by chunk) instead of device arrays.

  Returns:
    ``(states, metrics)``: a ``ModelState`` whose params / batch_stats have a leading axis M, and
    ``{"loss": [M, epochs], "acc": [M, epochs]}`` (per-epoch means over steps).

  Raises:
    ValueError / TypeError: on bad inputs, before anything is compiled.
  """
  if not isinstance(model, Model):
    raise TypeError(f"model must be a jaxunlearn Model, got {type(model).__name__}")
  if not isinstance(config, TrainConfig):
    raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
  x, y = _train_data(data)
  keep = _as_bool_mask(keep_mask)
  if keep.shape[1] != np.shape(x)[0]:
    raise ValueError(f"keep_mask has {keep.shape[1]} columns but data has {np.shape(x)[0]} examples")
  if tuple(np.shape(x)[1:]) != model.input_shape:
    raise ValueError(f"images are {tuple(np.shape(x)[1:])} but the model expects {model.input_shape}")
  kd, impl = _key_parts(key)
  idx = keep_indices(keep, key, unbalanced=unbalanced)
  check_training_set(model, x, y, idx)
  num_models = keep.shape[0]
  strategy = check_strategy(strategy)
  mesh = model_mesh(devices)
  chunk = _round_chunk(chunk_size, num_models, mesh.size)
  ckdir = _ckpt_dir(checkpoint_dir)
  strategy = resolve_strategy(strategy, model, config, (x, y), chunk_size=chunk, devices=mesh.devices.flat,
                              checkpoint_dir=ckdir, log=(lambda t: tqdm.write(f"{desc}: {t}")) if progress else None)
  fingerprint = None
  if ckdir is not None:
    fingerprint = {"kind": "train_many", "model": repr(model), "config": repr(config),
                   "num_models": num_models, "chunk_size": chunk, "strategy": strategy,
                   "key": kd.tolist(), "impl": impl, "index": _sha(idx),
                   "data": _sha(np.asarray(x), np.asarray(y))}
  program = _train_program(model, config, idx.shape[1], impl, strategy, mesh)
  run = _Run(program, {"m": np.arange(num_models, dtype=np.int32), "index": idx},
             {"key": kd, "x": jnp.asarray(x), "y": jnp.asarray(y, jnp.int32)}, num_models, chunk, mesh, ckdir,
             fingerprint, progress, desc, on_chunk, to_host)
  out = run()
  return ModelState(out["params"], out["batch_stats"], model), out["metrics"]


# ---------------------------------------------------------------------------------------------
# unlearn_many
# ---------------------------------------------------------------------------------------------

def _resolve_method(method):
  from jaxunlearn.unlearn import METHODS, Method, get_method

  if isinstance(method, str):
    m = get_method(method)
    return m.name, m.fn, m.config_cls
  if isinstance(method, Method):
    return method.name, method.fn, method.config_cls
  if callable(method):
    for m in METHODS.values():
      if m.fn is method:
        return m.name, m.fn, m.config_cls
    return getattr(method, "__name__", "custom"), method, None
  raise TypeError(f"method must be a registered name or a function, got {type(method).__name__}")


@functools.lru_cache(maxsize=32)
def _unlearn_program(fn, model: Model, config, num_classes: int, impl: str, has_mask: bool,
                     strategy: str, mesh: Mesh):
  from jaxunlearn.unlearn import UnlearnData

  def one(pm, sh):
    both = {**sh, **pm}  # per-model entries (params, retain, ...) where given, else shared ones
    km = jax.random.fold_in(jax.random.wrap_key_data(sh["key"], impl=impl), pm["m"])
    state = ModelState(both["params"], both["batch_stats"], model)
    data = UnlearnData(sh["x"], sh["y"], both["retain"], both["forget"], sh["x_val"], sh["y_val"],
                       num_classes=num_classes)
    kw = {"mask": sh["mask"]} if has_mask else {}
    new, metrics = fn(state, data, km, config, **kw)
    return {"params": new.params, "batch_stats": new.batch_stats, "metrics": metrics}

  fn_b = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn_b, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)))


def unlearn_many(states: ModelState, data_many, key, method, config=None, *, num_models: int | None = None,
                 mask=None, chunk_size: int | None = None, strategy: str = "vmap", devices=None,
                 checkpoint_dir=None, progress: bool = True, desc: str | None = None,
                 on_chunk: Callable | None = None, to_host: bool = False) -> tuple[ModelState, dict]:
  """Applies a registered unlearning method to M models in one compiled program.

  ``jax.jit(jax.vmap(method))`` over the model axis, chunked and sharded like :func:`train_many`;
  model m uses ``fold_in(key, m)``, so model m's result equals
  ``method(take(states, m), data_m, fold_in(key, m), config)``.

  Args:
    states: a stacked ``ModelState`` (leading axis M) or ONE state shared by all models (the
      NeurIPS-2023 challenge protocol: many unlearning runs from one original).
    data_many: an ``UnlearnData`` whose ``retain`` / ``forget`` are ``int32 [M, R]`` / ``[M, F]``
      (per model) or ``[R]`` / ``[F]`` (shared); ``x``, ``y``, ``x_val``, ``y_val`` are shared.
    key: PRNG key (or int seed).
    method: a registered method name (``"finetune"``, ``"scrub"``, ...), a ``Method`` or the
      method function.
    config: the method's config (default: its defaults).
    num_models: M when neither the states nor the splits carry a model axis.
    mask: optional params-shaped 0/1 mask shared by all models.
    chunk_size, strategy, devices, checkpoint_dir, progress, on_chunk, to_host: as in
      :func:`train_many`.
    desc: bar label (default: the method name).

  Returns:
    ``(states, metrics)`` with a leading model axis M on every leaf.
  """
  from jaxunlearn.unlearn import UnlearnData

  name, fn, config_cls = _resolve_method(method)
  if config is None:
    if config_cls is None:
      raise ValueError(f"method {name!r} is not registered: pass its config")
    config = config_cls()
  if config_cls is not None and not isinstance(config, config_cls):
    raise TypeError(f"config for {name!r} must be a {config_cls.__name__}, got {type(config).__name__}")
  if not isinstance(states, ModelState):
    raise TypeError(f"states must be a ModelState, got {type(states).__name__}")
  if not isinstance(data_many, UnlearnData):
    raise TypeError(f"data_many must be an UnlearnData, got {type(data_many).__name__}")
  if data_many.num_classes < 2:
    raise ValueError(f"data_many.num_classes={data_many.num_classes}: build it with UnlearnData.create(..., "
                     "num_classes=C) or pass num_classes >= 2")
  m_state = num_models_of(states)
  retain, forget = np.asarray(data_many.retain), np.asarray(data_many.forget)
  n = int(np.shape(data_many.x)[0])
  sizes = {}
  for nm, a in (("retain", retain), ("forget", forget)):
    if a.ndim not in (1, 2) or not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"data_many.{nm} must be int [K] or [M, K], got {a.dtype} {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n):
      raise ValueError(f"data_many.{nm} has indices outside [0, {n})")
    if a.shape[-1] == 0:
      raise ValueError(f"data_many.{nm} is empty")
    if a.ndim == 2:
      sizes[nm] = a.shape[0]
  ms = {v for v in (m_state, num_models, *sizes.values()) if v is not None}
  if len(ms) != 1:
    raise ValueError("cannot tell the number of models: states give "
                     f"{m_state}, retain/forget give {sizes or None}, num_models={num_models}"
                     if ms else "give num_models: neither the states nor the splits have a model axis")
  total = ms.pop()
  if total < 1:
    raise ValueError(f"number of models must be >= 1, got {total}")
  r2 = retain if retain.ndim == 2 else retain[None]
  f2 = forget if forget.ndim == 2 else forget[None]
  for j in range(max(r2.shape[0], f2.shape[0])):
    rr, ff = r2[min(j, r2.shape[0] - 1)], f2[min(j, f2.shape[0] - 1)]
    if np.intersect1d(rr, ff).size:
      raise ValueError(f"retain and forget overlap for model {j}")
  kd, impl = _key_parts(key)
  mesh, chunk, strategy = _setup(total, chunk_size, devices, strategy)
  stacked = m_state is not None
  program = _unlearn_program(fn, states.model, config, int(data_many.num_classes), impl, mask is not None,
                             strategy, mesh)
  pm = {"m": np.arange(total, dtype=np.int32)}
  sh = {"key": kd, "x": data_many.x, "y": data_many.y, "x_val": data_many.x_val, "y_val": data_many.y_val,
        "mask": mask}
  (pm if stacked else sh).update(params=states.params, batch_stats=states.batch_stats)
  (pm if retain.ndim == 2 else sh)["retain"] = retain.astype(np.int32)
  (pm if forget.ndim == 2 else sh)["forget"] = forget.astype(np.int32)
  ckdir = _ckpt_dir(checkpoint_dir)
  fingerprint = None
  if ckdir is not None:
    fingerprint = {"kind": "unlearn_many", "method": name, "config": repr(config),
                   "model": repr(states.model), "num_models": total, "chunk_size": chunk,
                   "strategy": strategy, "key": kd.tolist(), "impl": impl,
                   "splits": _sha(retain, forget), "data": _sha(np.asarray(data_many.x), np.asarray(data_many.y)),
                   "states": _digest_tree((states.params, states.batch_stats)),
                   "mask": None if mask is None else _digest_tree(mask)}
  run = _Run(program, pm, sh, total, chunk, mesh, ckdir,
             fingerprint, progress, desc or name, on_chunk, to_host)
  out = run()
  return ModelState(out["params"], out["batch_stats"], states.model), out["metrics"]


# ---------------------------------------------------------------------------------------------
# predict_many / confidences_many
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _predict_program(model: Model, n: int, batch_size: int, flip: bool, strategy: str, mesh: Mesh):
  nb = -(-n // batch_size)

  def one(pm, sh):
    params, stats, x = pm["params"], pm["batch_stats"], sh["x"]
    pad = nb * batch_size - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    xb = xp.reshape(nb, batch_size, *x.shape[1:])

    def f(b):
      out = [model.apply(params, stats, b, train=False)[0]]
      if flip:
        out.append(model.apply(params, stats, b[:, :, ::-1, :], train=False)[0])
      return jnp.stack(out, axis=1)  # [B, A, C]

    logits = jax.lax.map(f, xb)
    return logits.reshape(nb * batch_size, *logits.shape[2:])[:n]

  fn = batch_over_models(one, strategy, mesh.size)
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P(MODEL_AXIS)))


def predict_many(states: ModelState, x, *, flip: bool = False, batch_size: int = 512,
                 chunk_size: int | None = None, strategy: str = "vmap", devices=None,
                 progress: bool = False, desc: str = "predict") -> np.ndarray:
  """Eval-mode logits of M stacked models on images ``x [N, H, W, C]``.

  Args:
    states: stacked ``ModelState`` (leading axis M).
    x: images.
    flip: also query the mirror image (horizontal flip), the second LiRA augmentation.
    batch_size: images per forward pass (per model).
    chunk_size, strategy, devices, progress, desc: as in :func:`train_many`.

  Returns:
    ``float32`` numpy ``[M, N, C]``, or ``[M, N, 2, C]`` with ``flip`` (index 1 = mirrored).
  """
  m = num_models_of(states)
  if m is None:
    raise ValueError("predict_many needs stacked states (a leading model axis); use stack_states")
  if np.ndim(x) != 4 or tuple(np.shape(x)[1:]) != states.model.input_shape:
    raise ValueError(f"images must be [N, {', '.join(map(str, states.model.input_shape))}], got shape {np.shape(x)}")
  n = int(np.shape(x)[0])
  if n == 0:
    c = states.model.num_classes
    return np.zeros((m, 0, 2, c) if flip else (m, 0, c), np.float32)
  mesh, chunk, strategy = _setup(m, chunk_size, devices, strategy)
  program = _predict_program(states.model, n, max(1, min(batch_size, n)), bool(flip), strategy, mesh)
  run = _Run(program, {"params": states.params, "batch_stats": states.batch_stats}, {"x": jnp.asarray(x)},
             m, chunk, mesh,
             progress=progress, desc=desc, to_host=True)
  out = np.asarray(run(), np.float32)
  return out if flip else out[:, :, 0]


def confidences_many(states: ModelState, x, y, *, flip: bool = True, **kw) -> np.ndarray:
  """Logit-scaled confidences ``float64 [M, N, A]`` of M models (``A = 2`` with ``flip``, else 1).

  The score LiRA, U-LiRA and the challenge's forget quality use
  (``jaxunlearn.metrics.logit_confidence``), computed in float64 on the host from
  :func:`predict_many`'s logits. ``kw`` goes to :func:`predict_many`.
  """
  from jaxunlearn.metrics import logit_confidence

  y = np.asarray(y)
  if y.shape != (np.shape(x)[0],):
    raise ValueError(f"labels must have shape ({np.shape(x)[0]},), got {y.shape}")
  logits = predict_many(states, x, flip=flip, **kw)
  if not flip:
    logits = logits[:, :, None]
  return logit_confidence(logits, y[:, None])


def accuracies_many(states: ModelState, x, y, **kw) -> np.ndarray:
  """Accuracy ``float64 [M]`` of each of M stacked models on ``(x, y)``."""
  logits = predict_many(states, x, **kw)
  return (np.argmax(logits, -1) == np.asarray(y)[None]).mean(1)
