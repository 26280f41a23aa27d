"""The front ends train_many / unlearn_many: many models trained or unlearned as one compiled program.

Membership attacks (LiRA, U-LiRA) and the NeurIPS-2023 forget-quality score need tens to hundreds of
models that differ only in their data and seeds. :mod:`jaxunlearn.many` trains, unlearns and
evaluates M such models as ONE jitted program, ``vmap``-ed over a leading model axis:

* :func:`train_many` -- model ``m`` is a fresh initialisation trained (``jaxunlearn.train.make_fit``,
  a pure nested ``lax.scan``, or another ``fit_factory`` such as
  ``jaxunlearn.recipes.make_airbench_fit``) on the examples where ``keep_mask[m]`` is True.
* :func:`unlearn_many` -- a registered unlearning method applied to M states (or to one shared
  original), each with its own retain / forget indices and key.
* ``predict_many`` / ``confidences_many`` (:mod:`jaxunlearn.many.predict`) -- logits /
  logit-scaled confidences of all models on a set of images, optionally also on the mirror image
  (horizontal flip), ``[M, N, A]``, or with airbench's test-time augmentation (``tta=1 | 2``).

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
  hosts after ``jax.distributed.initialize()`` (see BUILD.md, section "Many models on several devices and hosts").
* **Strategies.** ``"vmap"`` (default): all models of a chunk advance in lockstep, one batched
  kernel per layer (``vmap`` turns a convolution over M weight sets into ONE grouped convolution,
  fast for thin networks, slow for wide ones on cuDNN). ``"sequential"``: ``lax.map`` over the
  models of a chunk on each device (one model at a time per device; less memory, plain kernels).
  An int ``G``: groups of ``G`` models in lockstep, one group after another (``lax.map`` with
  ``batch_size=G``) -- the middle ground. ``"auto"`` (:func:`train_many` only): measure a few
  training steps of each candidate on the actual devices (``jaxunlearn.many.choose_strategy``) and use the
  fastest per model; the choice is cached per model, config, chunk and device kind (and, in a
  multi-host run, process 0's choice is broadcast so every process compiles the same program).
* **Checkpoints.** With ``checkpoint_dir``, each finished chunk's outputs are saved with orbax
  (:mod:`jaxunlearn.checkpoint`); a rerun with the same arguments loads the finished chunks instead
  of recomputing them and so ends with exactly the results of an uninterrupted run. A
  ``manifest.json`` fingerprints the run; a folder written by a different run is refused.
"""


from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxunlearn.data import as_keep_mask
from jaxunlearn.data import keep_indices
from jaxunlearn.errors import ConfigError
from jaxunlearn.many.autotune import resolve_choice
from jaxunlearn.many.engine import ChunkedRun
from jaxunlearn.many.engine import key_parts
from jaxunlearn.many.engine import model_mesh
from jaxunlearn.many.engine import prepare
from jaxunlearn.many.engine import round_chunk
from jaxunlearn.many.engine import train_arrays
from jaxunlearn.many.memory import auto_chunk
from jaxunlearn.many.method_call import resolve_method
from jaxunlearn.many.method_call import unlearn_program
from jaxunlearn.many.programs import train_program
from jaxunlearn.many.resume import checkpoint_folder
from jaxunlearn.many.resume import digest_tree
from jaxunlearn.many.resume import read_manifest
from jaxunlearn.many.resume import sha
from jaxunlearn.many.stack import num_models_of
from jaxunlearn.many.strategy import check_strategy
from jaxunlearn.models import Model
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainConfig
from jaxunlearn.train import check_training_set
from jaxunlearn.train import resolve_executor
from jaxunlearn.train import make_fit


def train_many(key, data, keep_mask, config, *, model: Model, fit_factory: Callable | None = None,
               chunk_size: int | None = None, strategy: str = "vmap", devices=None, checkpoint_dir=None,
               unbalanced: str = "error", progress: bool = True, desc: str = "train",
               on_chunk: Callable | None = None, to_host: bool = True, info: dict | None = None,
               executor: str = "auto") -> tuple[ModelState, dict]:
  """Trains M models from scratch, model m on the examples where ``keep_mask[m]`` is True.

  Numerically the same as M calls of ``jaxunlearn.train.train_model(model, config, x, y,
  flatnonzero(keep_mask[m]), jax.random.fold_in(key, m))`` (up to float reassociation), but as
  one compiled program over the model axis, chunked and sharded (see the module docstring).

  Args:
    key: PRNG key (or int seed); model m uses ``fold_in(key, m)``.
    data: ``(x [N, H, W, C], y [N])``, a ``jaxunlearn.data.Dataset`` (its train split) or an
      ``UnlearnData`` (its ``x``, ``y``).
    keep_mask: ``bool [M, N]``. Every row must keep the same number K of examples (see
      :func:`jaxunlearn.data.keep_mask`) unless ``unbalanced="resample"`` (see :func:`jaxunlearn.data.keep_indices`).
    config: the training configuration (every model the same): a ``TrainConfig`` for the default
      trainer, else whatever ``fit_factory`` takes (``"auto"`` needs ``epochs`` and ``batch_size``).
    model: the network.
    fit_factory: ``f(model, config, K) -> (init, fit)`` of one model's run (the contract of
      ``jaxunlearn.train.make_fit``, the default; e.g. ``jaxunlearn.recipes.make_airbench_fit``).
    chunk_size: models per compiled call (default: all M), rounded up to a multiple of the
      device count.
    strategy: ``"vmap"``, ``"sequential"``, an int group size or ``"auto"`` (measure and pick the
      fastest, see :func:`jaxunlearn.many.choose_strategy`; a resumed run keeps the choice its checkpoints used).
    devices: devices of the model mesh (default ``jax.devices()``).
    checkpoint_dir: save each finished chunk here and resume from it (see module docstring).
    unbalanced: ``"error"`` or ``"resample"`` for rows with different counts.
    progress: tqdm bar with models/s.
    desc: bar label.
    on_chunk: ``f(i, num_chunks, loaded)`` called after chunk i (loaded: restored from a checkpoint).
    to_host: move every finished chunk to host memory (numpy; the default), so the device holds one
      chunk's models at a time and a run of many chunks is bounded by host memory, not device memory;
      False keeps every chunk on the device and concatenates them there (about twice the stack at peak).
    info: a dict to fill with how the run went: ``"strategy"`` (the one used), ``"strategy_probe"``
      (``"auto"``'s :class:`StrategyChoice` as a dict, else None), ``"chunk_size"``,
      ``"compile_seconds"`` (the first computed chunk is then compiled ahead of time, so that
      compilation is timed apart) and ``"train_seconds"`` (all chunks, compilation excluded),
      ``"executor"``.
    executor: ``"auto"`` | ``"scan"`` | ``"steps"``: each chunk one jitted program, or the chunk's
      models vmapped with every step its own jitted call (the CPU default for convolutional nets;
      see :func:`run_settings`).

  Returns:
    ``(states, metrics)``: a ``ModelState`` whose params / batch_stats have a leading axis M, and
    ``{"loss": [M, epochs], "acc": [M, epochs]}`` (per-epoch means over steps).

  Raises:
    ValueError / TypeError: on bad inputs, before anything is compiled.
  """
  if not isinstance(model, Model):
    raise TypeError(f"model must be a jaxunlearn Model, got {type(model).__name__}")
  if fit_factory is None:
    if not isinstance(config, TrainConfig):
      raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    factory = make_fit
  elif callable(fit_factory):
    factory = fit_factory
  else:
    raise TypeError(f"fit_factory must be callable, got {type(fit_factory).__name__}")
  x, y = train_arrays(data)
  keep = as_keep_mask(keep_mask)
  if keep.shape[1] != np.shape(x)[0]:
    raise ValueError(f"keep_mask has {keep.shape[1]} columns but data has {np.shape(x)[0]} examples")
  if tuple(np.shape(x)[1:]) != model.input_shape:
    raise ValueError(f"images are {tuple(np.shape(x)[1:])} but the model expects {model.input_shape}")
  kd, impl = key_parts(key)
  idx = keep_indices(keep, key, unbalanced=unbalanced)
  check_training_set(model, x, y, idx)
  num_models = keep.shape[0]
  strategy = check_strategy(strategy)
  run_settings(executor, strategy, model)  # a bad executor / strategy pair fails before any measuring
  mesh = model_mesh(devices)
  chunk = round_chunk(chunk_size, num_models, mesh.size)
  ckdir = checkpoint_folder(checkpoint_dir)
  strategy, choice = resolve_choice(strategy, model, config, (x, y), chunk_size=chunk, devices=mesh.devices.flat,
                                    checkpoint_dir=ckdir, fit_factory=factory, executor=executor,
                                    log=(lambda t: tqdm.write(f"{desc}: {t}")) if progress else None)
  executor, strategy = run_settings(executor, strategy, model)
  program = train_program(model, config, idx.shape[1], impl, strategy, mesh, factory, executor)
  per_model = {"m": np.arange(num_models, dtype=np.int32), "index": idx}
  shared = {"key": kd, "x": jnp.asarray(x), "y": jnp.asarray(y, jnp.int32)}
  chunk = default_chunk(chunk_size, chunk, program, per_model, shared, num_models, mesh, ckdir)
  fingerprint = None
  if ckdir is not None:
    fingerprint = {"kind": "train_many", "model": repr(model), "config": repr(config),
                   "num_models": num_models, "chunk_size": chunk, "strategy": strategy,
                   "key": kd.tolist(), "impl": impl, "index": sha(idx),
                   "data": sha(np.asarray(x), np.asarray(y))}
    if fit_factory is not None:  # (the default trainer's manifests stay as they were)
      fingerprint["fit"] = f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', repr(factory))}"
  run = ChunkedRun(program, per_model, shared, num_models, chunk, mesh, ckdir,
                   fingerprint, progress, desc, on_chunk, to_host, compile_first=info is not None)
  t0 = time.perf_counter()
  out = run()
  if info is not None:
    info.update(strategy=strategy, strategy_probe=None if choice is None else dataclasses.asdict(choice),
                chunk_size=run.chunk, compile_seconds=run.compile_seconds, executor=executor,
                train_seconds=time.perf_counter() - t0 - run.compile_seconds)
  return ModelState(out["params"], out["batch_stats"], model), out["metrics"]


def unlearn_many(states: ModelState, data_many, key, method, config=None, *, hparams=None,
                 num_models: int | None = None, mask=None, chunk_size: int | None = None, strategy: str = "vmap", devices=None,
                 checkpoint_dir=None, progress: bool = True, desc: str | None = None,
                 on_chunk: Callable | None = None, to_host: bool = True, executor: str = "auto",
                 key_index=None) -> tuple[ModelState, dict]:
  """Applies a registered unlearning method to M models in one compiled program.

  ``jax.jit(jax.vmap(method))`` over the model axis, chunked and sharded like :func:`train_many`;
  model m uses ``fold_in(key, m)`` and its row of ``hparams``, so model m's result equals
  ``make(name, config)(take(states, m), data_m, fold_in(key, m), hparams_m)``. A grid of K
  hyperparameter settings x S seeds is M = K * S models in one program: pass each hyperparameter as an
  ``[M]`` array (e.g. ``np.repeat(values, S)``) and give ``key_index=np.tile(np.arange(S), K)`` so that
  every configuration sees the same S seeds (common random numbers: configurations differ only in
  their hyperparameters).

  Args:
    states: a stacked ``ModelState`` (leading axis M) or ONE state shared by all models (the
      NeurIPS-2023 challenge protocol: many unlearning runs from one original).
    data_many: an ``UnlearnData`` whose ``retain`` / ``forget`` are ``int32 [M, R]`` / ``[M, F]``
      (per model) or ``[R]`` / ``[F]`` (shared); ``x``, ``y``, ``x_val``, ``y_val`` are shared.
    key: PRNG key (or int seed).
    method: a registered method name (``"finetune"``, ``"scrub"``, ...), a configured ``Method``
      (``unlearn.make(...)``) or the registered function (``unlearn.scrub``).
    config: the method's config (default: its defaults; not with a configured ``Method``).
    hparams: ``{name: value}`` of the method's hyperparameters (``Method.hparams``): scalars shared by
      all models or ``[M]`` arrays, one value per model; missing ones take the config's values.
    num_models: M when neither the states nor the splits carry a model axis.
    mask: optional params-shaped 0/1 mask shared by all models.
    chunk_size, strategy, devices, checkpoint_dir, progress, on_chunk, to_host, executor: as in
      :func:`train_many` (a method without a training loop, :func:`jaxunlearn.unlearn.trains`, runs as one
      compiled program whatever the executor: it has no step to run on the host).
    desc: bar label (default: the method name).
    key_index: ``int [M]``; model m uses ``fold_in(key, key_index[m])`` (default ``m``).

  Returns:
    ``(states, metrics)`` with a leading model axis M on every leaf.
  """
  from jaxunlearn.unlearn import UnlearnData
  from jaxunlearn.unlearn import trains

  meth = resolve_method(method, config)
  name, config = meth.name, meth.config
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
  hp_shared, hp_model = split_hparams(meth, hparams, total)
  r2 = retain if retain.ndim == 2 else retain[None]
  f2 = forget if forget.ndim == 2 else forget[None]
  for j in range(max(r2.shape[0], f2.shape[0])):
    rr, ff = r2[min(j, r2.shape[0] - 1)], f2[min(j, f2.shape[0] - 1)]
    if np.intersect1d(rr, ff).size:
      raise ValueError(f"retain and forget overlap for model {j}")
  kd, impl = key_parts(key)
  executor, strategy = run_settings(executor, check_strategy(strategy, allow_auto=False), states.model)
  if executor == "steps" and not trains(config):
    # nothing to step (SSD, LFSSD, Fisher, influence): one compiled program, as a single run does
    # (jaxunlearn.run._unlearn); under ``steps`` every operation outside a step would run eagerly
    executor = "scan"
  mesh, chunk, strategy = prepare(total, chunk_size, devices, strategy)
  stacked = m_state is not None
  if mask is not None and not meth.supports_mask:
    raise ValueError(f"{name} takes no mask")
  program = unlearn_program(meth, states.model, int(data_many.num_classes), impl, mask is not None, strategy, mesh,
                            executor, stacked)
  if key_index is None:
    key_index = np.arange(total, dtype=np.int32)
  key_index = np.asarray(key_index)
  if key_index.shape != (total,) or not np.issubdtype(key_index.dtype, np.integer) or (key_index < 0).any():
    raise ValueError(f"key_index must be non-negative ints of shape ({total},), got {key_index.dtype} {key_index.shape}")
  pm = {"m": key_index.astype(np.int32), "hparams": hp_model}
  sh = {"key": kd, "x": data_many.x, "y": data_many.y, "x_val": data_many.x_val, "y_val": data_many.y_val,
        "mask": mask, "hparams": hp_shared}
  if hp_model and not stacked and retain.ndim == 1 and forget.ndim == 1 and (key_index == key_index[0]).all():
    # one state, one key, one split, K hyperparameter settings: the key is shared too, so whatever the
    # method computes before its hyperparameters enter (SSD's and Fisher's importances, influence's
    # gradients) is computed once per chunk instead of once per model (sweeps.engine.run_grid)
    sh["m"] = pm.pop("m")[0]
  (pm if stacked else sh).update(params=states.params, batch_stats=states.batch_stats)
  (pm if retain.ndim == 2 else sh)["retain"] = retain.astype(np.int32)
  (pm if forget.ndim == 2 else sh)["forget"] = forget.astype(np.int32)
  ckdir = checkpoint_folder(checkpoint_dir)
  chunk = default_chunk(chunk_size, chunk, program, pm, sh, total, mesh, ckdir)
  fingerprint = None
  if ckdir is not None:
    fingerprint = {"kind": "unlearn_many", "method": name, "config": repr(config),
                   "model": repr(states.model), "num_models": total, "chunk_size": chunk,
                   "strategy": strategy, "key": kd.tolist(), "impl": impl,
                   "splits": sha(retain, forget), "data": sha(np.asarray(data_many.x), np.asarray(data_many.y)),
                   "states": digest_tree((states.params, states.batch_stats)),
                   "mask": None if mask is None else digest_tree(mask),
                   "hparams": {k: np.asarray(v).tolist() for k, v in sorted({**hp_shared, **hp_model}.items())}}
    if not np.array_equal(key_index, np.arange(total)):  # (manifests of the default stay as they were)
      fingerprint["key_index"] = sha(key_index.astype(np.int32))
  run = ChunkedRun(program, pm, sh, total, chunk, mesh, ckdir,
                   fingerprint, progress, desc or name, on_chunk, to_host)
  out = run()
  return ModelState(out["params"], out["batch_stats"], states.model), out["metrics"]


def default_chunk(chunk_size, chunk: int, program, per_model, shared, num_models: int, mesh, ckdir) -> int:
  """The chunk of a run: ``chunk`` when the caller gave ``chunk_size``; else the one a resumed run's
  manifest recorded, or the largest that fits the device memory (:func:`jaxunlearn.many.memory.auto_chunk`;
  on the CPU, which reports no memory, ``chunk``: every model)."""
  if chunk_size is not None:
    return chunk
  if ckdir is not None:
    have = read_manifest(ckdir / "manifest.json")
    if have and isinstance(have.get("chunk_size"), int):
      return have["chunk_size"]
  derived = auto_chunk(program, per_model, shared, num_models, mesh)
  return chunk if derived is None else min(derived, chunk)


def split_hparams(method, hparams, total: int) -> tuple[dict, dict]:
  """``(shared, per_model)`` float32 hyperparameters of ``method`` for ``total`` models: the config's
  values and scalars in ``hparams`` are shared, ``[total]`` arrays are per model (checked on the host:
  names, shapes and finiteness, before anything is compiled)."""
  hparams = dict(hparams or {})
  method.hparams_with(**{k: 0.0 for k in hparams})  # unknown names: one clear error
  shared = {k: np.float32(v) for k, v in method.hparams.items() if k not in hparams}
  per_model = {}
  for k, v in hparams.items():
    a = np.asarray(v, np.float32)
    if not np.isfinite(a).all():
      raise ValueError(f"hparams[{k!r}] holds NaN or inf")
    if a.ndim == 0:
      shared[k] = a
    elif a.shape == (total,):
      per_model[k] = a
    else:
      raise ValueError(f"hparams[{k!r}] must be a scalar or have shape ({total},) (one value per model), "
                       f"got {a.shape}")
  return shared, per_model


def run_settings(executor: str, strategy, model) -> tuple[str, object]:
  """``(executor, strategy)`` of a many-model run.

  ``executor`` resolves with :func:`jaxunlearn.train.resolve_executor` (``auto``: ``steps`` on CPU for
  convolutional nets). The ``steps`` executor runs a chunk's models in lockstep (``vmap``) or one after
  another (``sequential``): with it a strategy ``auto`` becomes ``vmap`` without measuring; a group
  strategy (an int) keeps ``scan`` when the executor was ``auto`` and is refused with an explicit ``steps``.
  """
  chosen = resolve_executor(executor, model)
  if chosen == "steps" and strategy not in ("vmap", "auto", "sequential"):
    if executor == "auto":
      return "scan", strategy
    raise ConfigError(f"executor 'steps' runs the models of a chunk in lockstep (vmap) or one after another "
                      f"(sequential); strategy {strategy!r} needs executor 'scan'")
  return chosen, ("vmap" if chosen == "steps" and strategy == "auto" else strategy)
