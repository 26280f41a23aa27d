"""Choosing the strategy by measurement: time a few training steps of each candidate, cache the choice."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxunlearn.many.engine import MODEL_AXIS
from jaxunlearn.many.engine import key_parts
from jaxunlearn.many.engine import model_mesh
from jaxunlearn.many.engine import put_on
from jaxunlearn.many.engine import train_arrays
from jaxunlearn.many.engine import round_chunk
from jaxunlearn.many.programs import train_program
from jaxunlearn.many.resume import manifest_strategies
from jaxunlearn.many.strategy import check_strategy
from jaxunlearn.models import Model
from jaxunlearn.train import make_fit
from jaxunlearn.train import resolve_executor


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


def clear_strategy_cache() -> None:
  """Forgets every cached :func:`choose_strategy` result of this process."""
  _CHOICES.clear()


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

  Each candidate compiles :func:`jaxunlearn.many.train_many`'s program for a ``steps``-step run (one epoch of
  ``steps`` batches of ``config.batch_size`` from ``data``), runs it once to warm up, and keeps the
  best of ``repeats`` timed runs. The probe includes each model's initialisation, which a real run
  spreads over many more steps; it is small next to ``steps`` training steps for the networks
  here. Compilation dominates the cost (one per candidate tried); the result is cached per
  (trainer, model, config, models per device, devices, image shape and dtype).

  Args:
    model: the network.
    config: the training configuration of the real run.
    data: as in :func:`jaxunlearn.many.train_many` (only shapes and dtype matter for the timing).
    chunk_size: models per chunk of the real run (default ``num_models``).
    num_models: M of the real run (when ``chunk_size`` is not given).
    devices: devices of the model mesh (default all).
    steps: training steps per probe.
    repeats: timed runs per candidate.
    fit_factory: ``f(model, config, k) -> (init, fit)`` of the trainer to time
      (``jaxunlearn.train.make_fit``, or e.g. ``jaxunlearn.recipes.make_airbench_fit``; its
      ``config`` needs ``epochs`` and ``batch_size`` fields).

  Returns:
    A :class:`StrategyChoice` (``cached=True`` and ``probe_seconds=0`` when it came from the
    cache); pass ``.strategy`` to :func:`jaxunlearn.many.train_many`, :func:`jaxunlearn.many.unlearn_many`, ...
  """
  x, y = train_arrays(data)
  if chunk_size is None and num_models is None:
    raise ValueError("give chunk_size or num_models")
  for nm, v in (("steps", steps), ("repeats", repeats)):
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) and v >= 1):
      raise ValueError(f"{nm} must be an int >= 1, got {v!r}")
  mesh = model_mesh(devices)
  chunk = round_chunk(chunk_size if chunk_size is not None else num_models,
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
  shared = {"key": put_on(key_parts(0)[0], repl), "x": put_on(x, repl), "y": put_on(np.asarray(y, np.int32), repl)}
  impl = key_parts(0)[1]

  def run_probe(cand, per_dev):
    m = per_dev * mesh.size
    program = train_program(model, probe_cfg, k, impl, cand, mesh, fit_factory)
    pm = {"m": put_on(np.arange(m, dtype=np.int32), models_sh),
          "index": put_on((np.arange(m * k, dtype=np.int64).reshape(m, k) % n).astype(np.int32), models_sh)}
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


def resolve_choice(strategy, model: Model, config, data, *, chunk_size: int | None = None,
                   num_models: int | None = None, devices=None, checkpoint_dir=None,
                   log: Callable[[str], None] | None = None, fit_factory: Callable = make_fit,
                   executor: str = "auto"):
  """``(strategy, choice)``: a concrete strategy for a run, and the :class:`StrategyChoice` when
  ``"auto"`` measured it (else ``None``).

  ``strategy`` itself unless it is ``"auto"``. ``"auto"``: the strategy recorded in the manifest
  of ``checkpoint_dir`` (a folder, or several: the checkpoint groups of one study) when a run is
  being resumed, so resumed chunks are computed exactly as the finished ones; else
  :func:`choose_strategy`'s measurement of ``fit_factory``'s trainer (reported through ``log``), except
  when the run will use the ``steps`` executor (``executor`` resolved for ``model``): that runs a
  chunk's models in lockstep, so ``"vmap"``, unmeasured.

  Raises:
    ValueError: for a bad strategy or an unreadable manifest.
  """
  strategy = check_strategy(strategy)
  if strategy != "auto":
    return strategy, None
  folders = [] if checkpoint_dir is None else (
      [checkpoint_dir] if isinstance(checkpoint_dir, (str, os.PathLike)) else list(checkpoint_dir))
  for prev in manifest_strategies(folders):
    if prev not in (None, "auto"):
      return check_strategy(prev, allow_auto=False), None
  if resolve_executor(executor, model) == "steps":
    return "vmap", None
  if log is not None:
    log("strategy auto: timing a few training steps of each candidate (one compilation each) ...")
  choice = choose_strategy(model, config, data, chunk_size=chunk_size, num_models=num_models, devices=devices,
                           fit_factory=fit_factory)
  if log is not None:
    log(choice.describe())
  return choice.strategy, choice


def resolve_strategy(strategy, model: Model, config, data, *, chunk_size: int | None = None,
                     num_models: int | None = None, devices=None, checkpoint_dir=None,
                     log: Callable[[str], None] | None = None, fit_factory: Callable = make_fit,
                     executor: str = "auto"):
  """A concrete strategy for a run: :func:`resolve_choice`'s strategy alone."""
  return resolve_choice(strategy, model, config, data, chunk_size=chunk_size, num_models=num_models,
                        devices=devices, checkpoint_dir=checkpoint_dir, log=log, fit_factory=fit_factory,
                        executor=executor)[0]
