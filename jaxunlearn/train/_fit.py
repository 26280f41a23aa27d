"""Whole training runs: the pure ``fit`` of one model (``lax.scan`` over epochs of the one loop) and
``train_model``, its driver with a progress bar."""

from __future__ import annotations

import time
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxunlearn.models import Model
from jaxunlearn.train._config import TrainConfig
from jaxunlearn.train._config import steps_per_epoch
from jaxunlearn.train._loop import epoch_batches
from jaxunlearn.train._loop import epoch_keys
from jaxunlearn.train._loop import resolve_executor
from jaxunlearn.train._loop import run_epochs
from jaxunlearn.train._loop import scan_steps
from jaxunlearn.train._loop import use_executor
from jaxunlearn.train._optim import make_optimizer
from jaxunlearn.train._state import ModelState
from jaxunlearn.train._state import TrainState
from jaxunlearn.train._step import LossFn
from jaxunlearn.train._step import make_step
from jaxunlearn.train._step import supervised_loss


def make_epoch(step, batch_size: int):
  """``epoch(state, x, y, index, key, epoch) -> (state, metrics[steps])``: one pass over ``index``.

  Batches are gathered on device from the full arrays ``x``/``y`` by the indices in ``index``; keys
  follow the one loop's convention (:func:`jaxunlearn.train.epoch_keys`). Metrics are per step.
  """

  def on_batch(carry, idx, k):  # one function for every epoch: the steps executor compiles it once
    st, x, y = carry
    st, m = step(st, (x[idx], y[idx]), k)
    return (st, x, y), m

  def epoch_fn(state, x, y, index, key, epoch):
    k_perm, k_steps = epoch_keys(key, epoch)
    (state, _, _), m = scan_steps(on_batch, (state, x, y), epoch_batches(k_perm, index, batch_size), k_steps)
    return state, m

  return epoch_fn


def make_fit(model: Model, cfg: TrainConfig, num_examples: int, *, tx=None, loss_fn: LossFn | None = None,
             hparams: Mapping | None = None):
  """A pure whole-run function: :func:`jaxunlearn.train.run_epochs` of supervised steps.

  Args:
    model: the network.
    cfg: training configuration.
    num_examples: size of the index set each run trains on (static).
    tx: optimizer (default: ``make_optimizer(cfg, ...)`` with ``hparams``).
    loss_fn: override of the supervised loss.
    hparams: traced values of the optimizer's continuous settings (``lr``, ``momentum``, ...).

  Returns:
    ``(init, fit)``: ``init(params, batch_stats) -> TrainState`` and
    ``fit(state, x, y, index, key) -> (state, metrics)`` where ``index`` is ``int32 [num_examples]``
    and metrics hold ``loss``/``acc`` per epoch (mean over steps). ``jax.vmap(fit)`` trains many models.
  """
  spe = steps_per_epoch(num_examples, cfg.batch_size)
  tx = tx if tx is not None else make_optimizer(cfg, spe, hparams=hparams)
  loss_fn = loss_fn or supervised_loss(model, augment=cfg.augment, label_smoothing=cfg.label_smoothing)
  step = make_step(loss_fn, tx)
  epoch_fn = make_epoch(step, cfg.batch_size)

  def init(params, batch_stats):
    return TrainState.create(params, batch_stats, tx)

  def fit(state, x, y, index, key):
    def on_batch(st, idx, k):
      return step(st, (x[idx], y[idx]), k)
    return run_epochs(on_batch, state, key, cfg.epochs, lambda kp, e: epoch_batches(kp, index, cfg.batch_size))

  fit.epoch_fn = epoch_fn  # for drivers that loop over epochs in Python (progress bars)
  fit.tx = tx
  return init, fit


def check_training_set(model: Model, x, y, index) -> None:
  """Host-side checks of what a training run gathers: ``x[index]``, ``y[index]``.

  Inside jit an out-of-range index is silently clamped by the gather and a label
  ``>= num_classes`` gives a zero one-hot (loss 0), so both are checked here first.

  Args:
    model: the network (for ``num_classes``).
    x: ``[N, ...]`` images.
    y: ``[N]`` labels.
    index: integer indices into ``x`` of any shape (``[K]`` for one model, ``[M, K]`` for many).

  Raises:
    ValueError: naming the bad range or shape.
  """
  index = np.asarray(index)
  n = int(np.shape(x)[0])
  if not np.issubdtype(index.dtype, np.integer):
    raise ValueError(f"index must hold integers, got dtype {index.dtype}")
  if index.min() < 0 or index.max() >= n:
    raise ValueError(f"index must lie in [0, {n}) (the number of images), got range [{index.min()}, {index.max()}]")
  if np.shape(y) != (n,):
    raise ValueError(f"labels must have shape ({n},), got {np.shape(y)}")
  yi = np.asarray(y)[np.unique(index)]
  if yi.min() < 0 or yi.max() >= model.num_classes:
    raise ValueError(f"labels must lie in [0, {model.num_classes}) for model {model.name!r}, got range "
                     f"[{yi.min()}, {yi.max()}]")


def train_model(model: Model, cfg: TrainConfig, x, y, index, key: jax.Array, *,
                init: ModelState | None = None, progress: bool = True, desc: str = "train",
                executor: str = "auto") -> tuple[ModelState, dict]:
  """Trains one model on ``x[index], y[index]`` with a progress bar.

  The same run as the pure ``make_fit(...)[1]`` (same keys, same order of updates), executed one jitted
  epoch at a time (``executor="scan"``) or one jitted step at a time (``"steps"``, the CPU default for
  convolutional nets; equal to ``scan`` up to float32 rounding, see :func:`jaxunlearn.train.resolve_executor`).

  Args:
    model: the network.
    cfg: training configuration.
    x: ``[N, H, W, C]`` train images (host or device).
    y: ``int [N]`` labels.
    index: ``int [K]`` indices into ``x`` to train on.
    key: PRNG key; initialisation uses ``fold_in(key, 0)``, the run ``fold_in(key, 1)``.
    init: start from these weights instead of a fresh initialisation.
    progress: show a tqdm bar (epochs with ``scan``, steps with ``steps``).
    desc: bar label.
    executor: ``auto`` | ``scan`` | ``steps``.

  Returns:
    ``(ModelState, history)`` with per-epoch ``loss``/``acc`` lists, ``seconds`` (training, after
    compilation), ``compile_seconds`` (with ``steps``: the first step, its compilation included) and
    ``executor``.
  """
  index = np.asarray(index)
  if index.ndim != 1 or index.size == 0:
    raise ValueError(f"index must be a non-empty 1-D array, got shape {index.shape}")
  check_training_set(model, x, y, index)
  if init is None:
    params, stats = model.init(jax.random.fold_in(key, 0))
  else:
    params, stats = init.params, init.batch_stats
  init_fn, fit = make_fit(model, cfg, len(index))
  state = init_fn(params, stats)
  xd, yd, idx = jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(index, jnp.int32)
  rkey = jax.random.fold_in(key, 1)
  executor = resolve_executor(executor, model)
  hist = {"loss": [], "acc": []}

  def record(m, bar):
    loss, acc = float(jnp.mean(m["loss"])), float(jnp.mean(m["acc"]))
    hist["loss"].append(loss)
    hist["acc"].append(acc)
    bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")

  if executor == "scan":
    tc = time.perf_counter()
    epoch = jax.jit(fit.epoch_fn, donate_argnums=(0,)).lower(state, xd, yd, idx, rkey, jnp.int32(0)).compile()
    compile_seconds = time.perf_counter() - tc
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc=desc, disable=not progress, leave=False, unit="ep")
    for e in bar:
      state, m = epoch(state, xd, yd, idx, rkey, jnp.int32(e))
      record(m, bar)
    jax.block_until_ready(state.params)
  else:
    spe = steps_per_epoch(len(index), cfg.batch_size)
    bar = tqdm(total=cfg.epochs * spe, desc=desc, disable=not progress, leave=False, unit="step")
    first = []

    def on_step():
      if not first:  # the first call returns once its step is compiled (and dispatched)
        first.append(time.perf_counter())
      bar.update(1)

    tc = time.perf_counter()
    with use_executor("steps", on_step=on_step):
      for e in range(cfg.epochs):
        state, m = fit.epoch_fn(state, xd, yd, idx, rkey, e)
        record(m, bar)
    jax.block_until_ready(state.params)
    bar.close()
    t0 = first[0] if first else time.perf_counter()
    compile_seconds = t0 - tc
  hist["seconds"] = time.perf_counter() - t0
  hist["compile_seconds"] = compile_seconds
  hist["executor"] = executor
  return ModelState(state.params, state.batch_stats, model), hist
