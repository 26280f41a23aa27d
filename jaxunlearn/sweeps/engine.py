"""The sweep engine: S originals and oracles, then K configurations x S seeds of a method as one compiled program per static config, evaluated in float64 on the host.

Keys (so that a sweep's model equals a single run with the same key, tested): the original of seed s
trains with ``fold_in(fold_in(root, KEY_ORIGINAL), s)``; method ``name`` (the oracle ``retrain``
included) runs seed s with ``fold_in(method_key(root, name), s)`` for EVERY configuration (common
random numbers: configurations differ only in their hyperparameters, so their comparison is not
blurred by seed noise).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import many
from jaxunlearn import unlearn as jun
from jaxunlearn.mia import simple_mia
from jaxunlearn.run import KEY_ORIGINAL
from jaxunlearn.run import method_key
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainConfig
from jaxunlearn.train import resolve_executor

__all__ = ("EvalSet", "Evaluated", "evaluate_states", "original_key", "run_grid", "seed_key", "train_originals")


def sweep_strategy(executor: str, model) -> str:
  """How a sweep runs its models: one after another under the ``steps`` executor (a CPU runs a
  convolution fastest unbatched; every model reuses the same compiled step programs, measured by
  ``experiments/bench_sweep.py``), else all in lockstep (``vmap``)."""
  return "sequential" if resolve_executor(executor, model) == "steps" else "vmap"


CPU_CHUNK = 8  # models per call on a CPU: 32 MLPs vmapped at once ran 0.8x the loop's speed, chunks of 8 1.0x


def sweep_chunk(chunk_size: int | None) -> int | None:
  """Models per compiled call of a sweep: the user's ``chunk_size``; else all of them on an accelerator
  and :data:`CPU_CHUNK` on a CPU (wider batched kernels do not pay there; ``experiments/bench_sweep.py``)."""
  if chunk_size is not None:
    return chunk_size
  return CPU_CHUNK if jax.default_backend() == "cpu" else None


def original_key(root) -> jax.Array:
  """Key whose ``fold_in(., s)`` trains seed s's original (``train_many`` model s)."""
  return jax.random.fold_in(root, KEY_ORIGINAL)


def seed_key(root, name: str, s: int) -> jax.Array:
  """The key of method ``name`` for seed ``s``: what a single run must use to equal the sweep's model."""
  return jax.random.fold_in(method_key(root, name), s)


def train_originals(model, train_cfg: TrainConfig, x, y, seeds: int, root, *, executor: str = "auto",
                    progress: bool = True, chunk_size: int | None = None,
                    checkpoint_dir=None) -> tuple[ModelState, dict]:
  """``seeds`` originals trained on all of ``(x, y)`` as one program: ``(states [S], info)``; with
  ``checkpoint_dir`` each finished chunk is saved there and a rerun loads it (:func:`jaxunlearn.many.train_many`)."""
  info: dict = {}
  states, _ = many.train_many(original_key(root), (x, y), np.ones((seeds, len(y)), bool), train_cfg, model=model,
                              executor=executor, progress=progress, desc="original", info=info,
                              chunk_size=sweep_chunk(chunk_size), strategy=sweep_strategy(executor, model),
                              checkpoint_dir=checkpoint_dir)
  return states, info


def run_grid(name: str, config, originals: ModelState, data, root, *, seeds: int,
             hparams: Mapping[str, np.ndarray] | None = None, executor: str = "auto", progress: bool = True,
             chunk_size: int | None = None, mask=None, checkpoint_dir=None) -> ModelState:
  """K configurations (``hparams``: ``{option: [K]}``; none: K = 1) x S seeds of method ``name`` with
  ``config`` as ONE :func:`jaxunlearn.many.unlearn_many` program: states ``[K * S]``, model
  ``k * S + s`` being configuration k on seed s's original with seed s's key. With ``checkpoint_dir``
  each finished chunk is saved there and a rerun with the same arguments loads it."""
  hparams = dict(hparams or {})
  ks = {len(v) for v in hparams.values()}
  if len(ks) > 1:
    raise ValueError(f"every swept hparam needs the same number of values, got {sorted(ks)}")
  k = ks.pop() if ks else 1
  strategy = sweep_strategy(executor, originals.model)
  if k > 1 and not jun.trains(config):
    return _grid_per_seed(name, config, originals, data, root, seeds, k, hparams, executor, progress,
                          sweep_chunk(chunk_size), strategy, mask, checkpoint_dir)
  seed_of = np.tile(np.arange(seeds), k)
  states = ModelState(*jax.tree.map(lambda a: a[seed_of], (originals.params, originals.batch_stats)),
                      originals.model)
  hp = {n: np.repeat(np.asarray(v, np.float32), seeds) for n, v in hparams.items()}
  out, _ = many.unlearn_many(states, data, method_key(root, name), name, config, hparams=hp or None,
                             key_index=seed_of, executor=executor, progress=progress,
                             chunk_size=sweep_chunk(chunk_size),
                             strategy=strategy,
                             desc=f"{name} ({k} config{'s' if k > 1 else ''} x {seeds} seed{'s' if seeds > 1 else ''})",
                             mask=mask, checkpoint_dir=checkpoint_dir)
  return out


def _grid_per_seed(name, config, originals, data, root, seeds, k, hparams, executor, progress, chunk, strategy,
                   mask, checkpoint_dir) -> ModelState:
  """:func:`run_grid` for a method without a training loop (SSD, LFSSD, Fisher, influence): per seed, ONE
  original and ONE key with the K settings vmapped over them, so the method's work before its
  hyperparameters enter (the importances, the gradients) is done once per seed and chunk, not K times
  (LFSSD's 15-point grid on Fashion-MNIST took 26 minutes). Same models, same order ``k * S + s``."""
  hp = {n: np.asarray(v, np.float32) for n, v in hparams.items()}
  outs = []
  for s in range(seeds):  # one compiled program: unlearn_many's is cached by method, model and strategy
    o, _ = many.unlearn_many(many.take(originals, s), data, method_key(root, name), name, config, hparams=hp,
                             num_models=k, key_index=np.full(k, s, np.int32), executor=executor, progress=progress,
                             chunk_size=chunk, strategy=strategy, mask=mask,
                             desc=f"{name} ({k} configs, seed {s + 1} of {seeds})",
                             checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / f"seed_{s}")
    outs.append(o)
  inter = lambda *a: np.stack([np.asarray(x) for x in a], axis=1).reshape(k * seeds, *np.shape(a[0])[1:])  # noqa: E731
  return ModelState(jax.tree.map(inter, *[o.params for o in outs]),
                    jax.tree.map(inter, *[o.batch_stats for o in outs]), originals.model)


def seed_mean(a) -> float:
  """Mean over seeds in float64; NaN when any seed's value is not finite (a NaN model is not a result)."""
  a = np.asarray(a, np.float64)
  return float(a.mean()) if np.isfinite(a).all() else float("nan")


def seed_std(a) -> float:
  """Population standard deviation over seeds (ddof 0, the convention results.json states); NaN as
  :func:`seed_mean`."""
  a = np.asarray(a, np.float64)
  return float(a.std()) if np.isfinite(a).all() else float("nan")


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """Images and labels of one evaluation split."""

  x: np.ndarray
  y: np.ndarray


@dataclasses.dataclass
class Evaluated:
  """Per-model results on each split: ``acc[split]`` ``float64 [M]``, ``losses[split]`` ``float64 [M, N]``
  (cross-entropy, for the simple MIA), ``finite`` ``bool [M]`` (weights and logits finite)."""

  acc: dict[str, np.ndarray]
  losses: dict[str, np.ndarray]
  finite: np.ndarray


def evaluate_states(states: ModelState, sets: Mapping[str, EvalSet], *, batch_size: int = 1024) -> Evaluated:
  """Accuracy and per-example cross-entropy of every model on every split, in float64 on the host."""
  m = many.num_models_of(states)
  finite = np.ones(m, bool)
  for leaf in jax.tree.leaves((states.params, states.batch_stats)):
    a = np.asarray(leaf).reshape(m, -1)
    finite &= np.isfinite(a).all(1)
  acc, losses = {}, {}
  for name, s in sets.items():
    logits = np.asarray(many.predict_many(states, jnp.asarray(s.x), batch_size=batch_size), np.float64)
    y = np.asarray(s.y)
    finite &= np.isfinite(logits).reshape(m, -1).all(1)
    z = logits - logits.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1))
    losses[name] = lse - np.take_along_axis(z, y[None, :, None], -1)[..., 0]
    acc[name] = (logits.argmax(-1) == y[None]).mean(1)
  return Evaluated(acc, losses, finite)


def mia_scores(ev: Evaluated, forget: str = "forget", heldout: str = "heldout", *, seed: int = 0) -> np.ndarray:
  """The simple loss-based MIA (:func:`jaxunlearn.mia.simple_mia`) of every model: forget vs held-out
  examples of the same distribution; NaN for a model whose losses are not finite."""
  out = np.full(len(ev.finite), np.nan)
  for i in range(len(out)):
    f, h = ev.losses[forget][i], ev.losses[heldout][i]
    if np.isfinite(f).all() and np.isfinite(h).all():
      out[i] = simple_mia(f, h, seed=seed)
  return out


def unlearn_data(x, y, retain, forget, num_classes: int, x_val, y_val):
  """The shared :class:`jaxunlearn.unlearn.UnlearnData` of a sweep (forget-distribution held-out
  examples as its validation set, as ``jaxunlearn run`` does)."""
  return jun.UnlearnData.create(x, y, retain, forget, num_classes=num_classes, x_val=x_val, y_val=y_val)
