"""How many models fit in one compiled call: the per-chunk program's memory (XLA's ``memory_analysis``)
against the device's free memory.

The default chunk of :func:`jaxunlearn.many.train_many` / ``unlearn_many`` (``chunk_size=None``) on a device
that reports its memory (GPU, TPU) is the largest multiple of the device count whose program fits in
``FRACTION`` of the free memory. The per-chunk program is compiled for one and two models per device; the
difference is what one more model costs (parameters, optimizer state, activations), the rest is fixed
(the shared data, XLA's workspace). On the CPU, which reports no memory, every model stays in one training
chunk, and a prediction chunk holds at most :data:`HOST_IMAGES_PER_STEP` images per step (:func:`host_chunk`).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

FRACTION = 0.8  # of the free device memory a chunk may plan to use (fragmentation, XLA's own buffers)
# Prediction on a device that reports no free memory (the CPU): at most this many images per program step per
# device (models x images per model): all 75 models of a tuning grid at batch 1024 through a CIFAR-sized CNN
# took 24 GB and were killed (2026-12-06); 16 models x 1024 images take a few GB.
HOST_IMAGES_PER_STEP = 16384


def compiled_bytes(compiled) -> int | None:
  """Peak bytes of a compiled program per device (arguments + outputs + temporaries - aliased), or None."""
  try:
    ma = compiled.memory_analysis()
  except Exception:  # noqa: BLE001  (a backend without the analysis)
    return None
  if ma is None:
    return None
  return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
             - ma.alias_size_in_bytes)


def free_bytes(devices) -> int | None:
  """The smallest free memory (``bytes_limit - bytes_in_use``) over ``devices``, or None where a device
  reports none (the CPU)."""
  free = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # noqa: BLE001
      return None
    if not stats or "bytes_limit" not in stats:
      return None
    free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
  return min(free) if free else None


def host_chunk(images_per_model: int, num_devices: int) -> int:
  """The models per chunk (a multiple of ``num_devices``) that keep a step of ``images_per_model`` images per
  model within :data:`HOST_IMAGES_PER_STEP` per device: the chunk rule where no memory is reported."""
  return max(1, HOST_IMAGES_PER_STEP // max(1, images_per_model)) * num_devices


def fit_chunk(measure: Callable[[int], int | None], num_models: int, num_devices: int, budget: int | None
              ) -> int | None:
  """The largest chunk (a multiple of ``num_devices``, at most ``num_models`` rounded up to one) whose
  program fits ``budget`` bytes per device, from ``measure(k)``: the per-device bytes of the program for
  ``k`` models per device (called for k = 1 and 2). None when the budget or the measure is unknown.

  Raises:
    MemoryError: when even one model per device does not fit.
  """
  if budget is None:
    return None
  one = measure(1)
  if one is None:
    return None
  if one > budget:
    raise MemoryError(f"one model per device needs {one / 2**30:.2f} GiB, more than the {budget / 2**30:.2f} GiB "
                      "available: use a smaller model, batch or dtype")
  most = max(1, -(-num_models // num_devices))
  if most == 1:
    return num_devices
  two = measure(2)
  per_model = max(1, (two - one) if two is not None else one)
  fixed = max(0, one - per_model)
  k = int(max(1, min(most, (budget - fixed) // per_model)))
  return k * num_devices


def auto_chunk(program, per_model, shared, num_models: int, mesh, *, fraction: float = FRACTION,
               budget: int | None = None) -> int | None:
  """:func:`fit_chunk` for a chunked program (``program(per_model[chunk], shared)``, a jitted function) on
  ``mesh``, with ``budget`` default ``fraction`` of the devices' free memory. None on the CPU."""
  if not hasattr(program, "lower"):  # a host-stepped program: no single compiled program to analyse
    return None
  devices = list(mesh.devices.flat)
  if budget is None:
    free = free_bytes(devices)
    budget = None if free is None else int(fraction * free)
  if budget is None:
    return None
  return fit_chunk(program_measure(program, per_model, shared, mesh), num_models, len(devices), budget)


def program_measure(program, per_model, shared, mesh) -> Callable[[int], int | None]:
  """``measure(k)``: per-device bytes of ``program`` compiled (from shapes alone) for ``k`` models per device."""
  from jax.sharding import NamedSharding  # noqa: PLC0415
  from jax.sharding import PartitionSpec as P  # noqa: PLC0415

  from jaxunlearn.many.engine import MODEL_AXIS  # noqa: PLC0415

  n_dev = mesh.size
  models_sh, repl = NamedSharding(mesh, P(MODEL_AXIS)), NamedSharding(mesh, P())

  def measure(k: int) -> int | None:
    c = k * n_dev
    pm = jax.tree.map(lambda a: jax.ShapeDtypeStruct((c, *np.shape(a)[1:]), _dtype(a), sharding=models_sh), per_model)
    sh = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), _dtype(a), sharding=repl), shared)
    return compiled_bytes(program.lower(pm, sh).compile())

  return measure


def _dtype(a):
  return a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
