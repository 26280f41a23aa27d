"""Many-model studies behind ``jaxunlearn lira``, ``jaxunlearn ulira`` and ``jaxunlearn challenge``.

Each study is a function of a frozen dataclass config that validates every input (and loads the
data) before anything is compiled, trains / unlearns / evaluates its models with
:mod:`jaxunlearn.shadow` (one compiled program per stage, progress bars with models/s, optional
resumable orbax checkpoints), writes ``results.json`` atomically and its plots into ``config.out``,
and returns the results dict.

* :func:`run_lira` -- LiRA (Carlini et al., 2022) against M models trained on balanced random halves,
  leave-one-out: each of the first ``targets`` models in turn is the target and the other M - 1
  are its shadow models; the per-example scores of all targets are pooled into one ROC.
* :func:`run_ulira` -- U-LiRA (Hayes et al., 2024) for one unlearning method: every model forgets the
  half of a candidate pool it was trained on; per example, "in" = models that trained on it and
  then unlearned it, "out" = models that never saw it; leave-one-out over targets as for LiRA.
* :func:`run_challenge` -- the NeurIPS-2023 unlearning challenge: N models retrained without a fixed
  forget set and N unlearned from ONE original; forget quality, final score, epsilon histogram.

:func:`add_subcommands` / :func:`dispatch` connect them to ``argparse``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn import models as jmodels
from jaxunlearn import shadow
from jaxunlearn.atomic import write_json_atomic
from jaxunlearn.run import SEED_LIMIT
from jaxunlearn.run import check_int as _check_int
from jaxunlearn.train import OPTIMIZERS
from jaxunlearn.train import TrainConfig

__all__ = (
    "ChallengeConfig", "ChallengeEnsemble", "LiraConfig", "UliraConfig", "add_subcommands",
    "challenge_ensemble", "dispatch", "lira_attacks", "run_challenge", "run_lira", "run_ulira", "ulira_attacks",
)

ATTACKS = ("online", "online_fixed_variance", "offline", "offline_fixed_variance", "global_threshold")


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Common:
  """Fields shared by the three studies (data, network, training of the from-scratch models)."""

  dataset: str = "digits"
  model: str = "cnn"
  width: float = 0.5
  epochs: int = 10
  batch_size: int = 64
  lr: float = 0.05
  optimizer: str = "sgd"
  weight_decay: float = 5e-4
  augment: bool = False
  chunk_size: int | None = None
  strategy: str | int = "vmap"
  checkpoint_dir: str | None = None
  train_subset: int | None = None
  test_subset: int | None = None
  data_dir: str | None = None
  download: bool = False
  seed: int = 0
  progress: bool = True

  def train_config(self) -> TrainConfig:
    return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                       optimizer=self.optimizer, weight_decay=self.weight_decay, augment=self.augment)


@dataclasses.dataclass(frozen=True)
class LiraConfig(_Common):
  """``jaxunlearn lira``: M models on balanced random halves of the train split; LiRA.

  Attributes:
    num_models: M (>= 4); every example is in about M/2 models.
    targets: leave-one-out over the first ``targets`` models (default: all M).
    flip: query the mirror image too (A = 2 augmentations, as in the LiRA reference).
    out: output folder for ``results.json`` and ``roc.png``.
  """

  num_models: int = 16
  targets: int | None = None
  flip: bool = True
  out: str = "out/lira"


@dataclasses.dataclass(frozen=True)
class UliraConfig(_Common):
  """``jaxunlearn ulira``: U-LiRA of an unlearning method.

  Attributes:
    num_models: M (>= 4) original models on balanced random halves.
    method: registered unlearning method.
    overrides: ``((option, value), ...)`` string overrides of the method's config.
    preset: a named preset of the method.
    pool_size: forget candidates; every model trains on exactly ``pool_size // 2`` of them and
      unlearns exactly those (so each candidate is "unlearned" in about M/2 models and "never
      seen" in the others).
    targets, flip: as in :class:`LiraConfig`.
    out: output folder.
  """

  num_models: int = 16
  method: str = "finetune"
  overrides: tuple[tuple[str, str], ...] = ()
  preset: str | None = None
  pool_size: int = 200
  targets: int | None = None
  flip: bool = True
  out: str = "out/ulira"


@dataclasses.dataclass(frozen=True)
class ChallengeConfig(_Common):
  """``jaxunlearn challenge``: the NeurIPS-2023 unlearning challenge's evaluation.

  Attributes:
    models: N models per side (>= 3): N retrained from scratch on the retain set, N unlearned
      (different keys) from ONE original trained on the whole train split.
    method: registered unlearning method.
    overrides, preset: method settings (see :class:`UliraConfig`).
    forget: the fixed forget set (``jaxunlearn.data.make_forget_split`` spec).
    out: output folder for ``results.json`` and ``epsilons.png``.
  """

  models: int = 16
  method: str = "finetune"
  overrides: tuple[tuple[str, str], ...] = ()
  preset: str | None = None
  forget: str = "random:0.1"
  out: str = "out/challenge"


# ---------------------------------------------------------------------------------------------
# Validation (nothing compiled, nothing written)
# ---------------------------------------------------------------------------------------------

def _check_common(cfg: _Common) -> tuple[TrainConfig, Path]:
  if cfg.model not in jmodels.MODEL_NAMES:
    raise ValueError(f"unknown model {cfg.model!r}; choose from {', '.join(jmodels.MODEL_NAMES)}")
  if not (isinstance(cfg.width, (int, float)) and cfg.width > 0):
    raise ValueError(f"width must be positive, got {cfg.width!r}")
  if cfg.optimizer not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
  _check_int("epochs", cfg.epochs, 1)
  _check_int("seed", cfg.seed, 0, SEED_LIMIT)
  _check_int("batch_size", cfg.batch_size, 1)
  if not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0):
    raise ValueError(f"lr must be positive, got {cfg.lr!r}")
  _check_int("chunk_size", cfg.chunk_size, 1, allow_none=True)
  _check_int("train_subset", cfg.train_subset, 8, allow_none=True)
  _check_int("test_subset", cfg.test_subset, 1, allow_none=True)
  shadow.check_strategy(cfg.strategy)
  if cfg.checkpoint_dir is not None and Path(cfg.checkpoint_dir).exists() and not Path(cfg.checkpoint_dir).is_dir():
    raise ValueError(f"checkpoint folder {cfg.checkpoint_dir!r} exists and is not a folder")
  tcfg = cfg.train_config()  # validates the optimizer fields
  from jaxunlearn.run import check_out_dir

  return tcfg, check_out_dir(cfg.out)


def _method_config(method: str, overrides, preset):
  from jaxunlearn import unlearn as jun

  jun.get_method(method)
  ov = {}
  for item in overrides:
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
      raise ValueError(f"method override {item!r} must be (option, value)")
    k, v = item
    if "." in k:
      m, k = k.split(".", 1)
      if m != method:
        raise ValueError(f"--set {m}.{k}: method {m!r} is not the chosen method {method!r}")
    ov[k] = v
  return jun.make_config(method, ov, preset=preset)


def _load(cfg: _Common):
  ds = jdata.load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download)
  if cfg.train_subset or cfg.test_subset:
    ds = ds.subset(cfg.train_subset, cfg.test_subset, seed=cfg.seed)
  model = jmodels.create_model(cfg.model, num_classes=ds.num_classes, input_shape=ds.image_shape,
                               mean=ds.mean, std=ds.std, width=cfg.width)
  return ds, model


def _ckpt(cfg: _Common, name: str):
  return None if cfg.checkpoint_dir is None else os.path.join(cfg.checkpoint_dir, name)


def _shadow_kw(cfg: _Common, tcfg: TrainConfig, model, x, y, num_models: int, groups: tuple[str, ...]) -> dict:
  """``chunk_size`` / ``strategy`` for every shadow call of a study; ``"auto"`` is resolved once
  (or taken from any of the study's checkpoint ``groups`` being resumed) so training, unlearning
  and prediction agree."""
  folders = [] if cfg.checkpoint_dir is None else [_ckpt(cfg, g) for g in groups]
  strategy = shadow.resolve_strategy(cfg.strategy, model, tcfg, (x, y), chunk_size=cfg.chunk_size,
                                     num_models=num_models, checkpoint_dir=folders,
                                     log=lambda t: _log(cfg, f"[strategy] {t}"))
  return dict(chunk_size=cfg.chunk_size, strategy=strategy)


def _log(cfg: _Common, msg: str):
  if cfg.progress:
    print(msg, file=sys.stderr, flush=True)


def _write(out: Path, results: dict) -> None:
  """results.json, written atomically; in a multi-host run only process 0 writes."""
  if jax.process_index() == 0:
    write_json_atomic(out / "results.json", results)


def _versions() -> dict:
  return {"jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count(),
          "processes": jax.process_count()}


# ---------------------------------------------------------------------------------------------
# Attacks on score tensors (pure numpy; used by the studies, testable alone)
# ---------------------------------------------------------------------------------------------

def lira_attacks(conf: np.ndarray, member: np.ndarray, targets, *, ulira: bool = False,
                 columns=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Leave-one-out LiRA / U-LiRA over target models, pooled.

  For each target t, the shadow models are all others; examples (``columns``, default all) that
  have no "in" or no "out" shadow model are left out for that target.

  Args:
    conf: ``[M, N, A]`` logit confidences.
    member: ``bool [M, N]``: trained on (LiRA) / trained on then unlearned (U-LiRA). For U-LiRA
      every model outside ``member`` must never have seen the example in ``columns``.
    targets: iterable of target model indices.
    ulira: use :func:`jaxunlearn.mia.ulira` (else :func:`jaxunlearn.mia.lira`).
    columns: example indices to attack (default all N).

  Returns:
    ``{attack: (scores [P], is_member [P])}`` pooled over targets, for every name in ``ATTACKS``.
  """
  from jaxunlearn import mia

  fn = mia.ulira if ulira else mia.lira
  m_total, n, _ = conf.shape
  cols = np.arange(n) if columns is None else np.asarray(columns)
  pooled: dict[str, list] = {a: [] for a in ATTACKS}
  labels: list = []
  for t in targets:
    others = np.array([m for m in range(m_total) if m != t])
    sh_in = member[others][:, cols]
    ok = sh_in.any(0) & (~sh_in).any(0)
    c = cols[ok]
    if c.size == 0:
      continue
    tgt, sh, mem = conf[t][c], conf[others][:, c], member[others][:, c]
    for name, online, fixed in (("online", True, False), ("online_fixed_variance", True, True),
                                ("offline", False, False), ("offline_fixed_variance", False, True)):
      pooled[name].append(fn(tgt, sh, mem, online=online, fixed_variance=fixed))
    pooled["global_threshold"].append(tgt.mean(-1))
    labels.append(member[t, c])
  if not labels:
    raise ValueError("no example has both in and out shadow models: use more models")
  y = np.concatenate(labels)
  return {a: (np.concatenate(v), y) for a, v in pooled.items()}


def ulira_attacks(conf: np.ndarray, unlearned: np.ndarray, targets, *, columns=None) -> dict:
  """:func:`lira_attacks` with U-LiRA (``member`` = trained on and then unlearned)."""
  return lira_attacks(conf, unlearned, targets, ulira=True, columns=columns)


def _summarise(attacks: dict, out: Path, title: str) -> tuple[dict, str]:
  from jaxunlearn import mia
  from jaxunlearn import metrics
  from jaxunlearn import plotting

  summary, curves = {}, {}
  for name, (scores, y) in attacks.items():
    if y.all() or not y.any():
      raise ValueError(f"attack {name}: the pooled examples are all members or all non-members")
    summary[name] = mia.evaluate_attack(scores, y)
    fpr, tpr, _ = metrics.roc_curve(scores, y)
    curves[name] = (fpr, tpr)
  if jax.process_index() == 0:  # multi-host: one writer
    plotting.plot_roc(curves, out / "roc.png", title=title)
  return summary, "roc.png"


def _format_attacks(summary: dict) -> str:
  rows = [f"{'attack':<24}{'AUC':>8}{'TPR@0.1%':>10}{'TPR@1%':>9}{'best acc':>10}"]
  for name, s in summary.items():
    rows.append(f"{name:<24}{s['auc']:8.3f}{100 * s['tpr@0.1%']:9.2f}%{100 * s['tpr@1%']:8.2f}%"
                f"{100 * s['best_accuracy']:9.1f}%")
  return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# LiRA
# ---------------------------------------------------------------------------------------------

def _prepare_lira(cfg: LiraConfig):
  if not isinstance(cfg, LiraConfig):
    raise TypeError(f"config must be a LiraConfig, got {type(cfg).__name__}")
  tcfg, out = _check_common(cfg)
  _check_int("num_models", cfg.num_models, 4)
  _check_int("targets", cfg.targets, 1, allow_none=True)
  if cfg.targets is not None and cfg.targets > cfg.num_models:
    raise ValueError(f"targets ({cfg.targets}) cannot exceed num_models ({cfg.num_models})")
  ds, model = _load(cfg)
  half = len(ds.y_train) // 2
  if cfg.batch_size > half:
    raise ValueError(f"batch size {cfg.batch_size} is larger than a model's training half ({half} examples)")
  return tcfg, out, ds, model


def run_lira(cfg: LiraConfig) -> dict:
  """Trains ``cfg.num_models`` models on balanced random halves and runs leave-one-out LiRA.

  Returns (and writes to ``cfg.out/results.json``)::

    {"study": "lira", "config", "dataset", "model", "num_models", "num_examples", "targets",
     "augmentations", "attacks": {attack: {"auc", "tpr@0.1%", "tpr@1%", "best_accuracy"}},
     "accuracy": {"train_mean", "heldout_mean", "test_mean"}, "seconds": {...},
     "models_per_second", "strategy_used", "plots": {"roc": "roc.png"}, "versions"}

  with attacks ``online``, ``online_fixed_variance``, ``offline``, ``offline_fixed_variance``
  (LiRA) and ``global_threshold`` (the target's confidence itself).
  """
  tcfg, out, ds, model = _prepare_lira(cfg)
  t0 = time.perf_counter()
  key = jax.random.key(cfg.seed)
  n, m_total = len(ds.y_train), cfg.num_models
  keep = shadow.balanced_keep_mask(jax.random.fold_in(key, 0), m_total, n)
  _log(cfg, f"[lira] {cfg.dataset}: {m_total} x {cfg.model} on {n // 2} of {n} examples each, "
            f"{cfg.epochs} epochs, {jax.device_count()} device(s)")
  kw = _shadow_kw(cfg, tcfg, model, ds.x_train, ds.y_train, m_total, ("models",))
  states, _ = shadow.train_many(jax.random.fold_in(key, 1), (ds.x_train, ds.y_train), keep, tcfg,
                                model=model, checkpoint_dir=_ckpt(cfg, "models"), progress=cfg.progress,
                                desc="train", **kw)
  t_train = time.perf_counter() - t0
  logits = shadow.predict_many(states, ds.x_train, flip=cfg.flip, **kw)
  if not cfg.flip:
    logits = logits[:, :, None]
  from jaxunlearn.metrics import logit_confidence

  conf = logit_confidence(logits, ds.y_train[:, None])
  correct = np.argmax(logits[:, :, 0], -1) == ds.y_train[None]
  test_acc = shadow.accuracies_many(states, ds.x_test, ds.y_test, **kw)
  targets = range(cfg.targets if cfg.targets is not None else m_total)
  attacks = lira_attacks(conf, keep, targets)
  summary, roc = _summarise(attacks, out, f"LiRA, {m_total} models ({cfg.dataset}, {cfg.model})")
  total = time.perf_counter() - t0
  results = {
      "study": "lira", "config": dataclasses.asdict(cfg), "dataset": cfg.dataset, "model": cfg.model,
      "num_models": m_total, "num_examples": n, "targets": len(targets),
      "augmentations": int(conf.shape[-1]), "pooled_examples": int(attacks["online"][1].size),
      "attacks": summary,
      "accuracy": {"train_mean": float(correct[keep].mean()), "heldout_mean": float(correct[~keep].mean()),
                   "test_mean": float(test_acc.mean())},
      "seconds": {"train": t_train, "total": total}, "models_per_second": m_total / t_train,
      "strategy_used": kw["strategy"],
      "plots": {"roc": roc}, "versions": _versions(),
  }
  _write(out, results)
  return results


# ---------------------------------------------------------------------------------------------
# U-LiRA
# ---------------------------------------------------------------------------------------------

def _prepare_ulira(cfg: UliraConfig):
  if not isinstance(cfg, UliraConfig):
    raise TypeError(f"config must be a UliraConfig, got {type(cfg).__name__}")
  tcfg, out = _check_common(cfg)
  _check_int("num_models", cfg.num_models, 4)
  _check_int("targets", cfg.targets, 1, allow_none=True)
  if cfg.targets is not None and cfg.targets > cfg.num_models:
    raise ValueError(f"targets ({cfg.targets}) cannot exceed num_models ({cfg.num_models})")
  _check_int("pool_size", cfg.pool_size, 2)
  mcfg = _method_config(cfg.method, cfg.overrides, cfg.preset)
  ds, model = _load(cfg)
  n = len(ds.y_train)
  if cfg.pool_size > n - 4:
    raise ValueError(f"pool_size {cfg.pool_size} leaves too few other examples (train split has {n})")
  retain_size = (n - cfg.pool_size) // 2
  if cfg.batch_size > retain_size:
    raise ValueError(f"batch size {cfg.batch_size} is larger than a model's retain set ({retain_size})")
  return tcfg, mcfg, out, ds, model


def run_ulira(cfg: UliraConfig) -> dict:
  """U-LiRA of ``cfg.method``: M originals on balanced halves, each unlearning its pool half.

  A random pool of ``pool_size`` candidates is drawn; the keep mask is balanced separately inside
  and outside the pool, so model m trains on exactly ``pool_size // 2`` candidates ``F_m`` and
  ``(N - pool_size) // 2`` other examples ``R_m``. Model m then unlearns ``F_m`` (retain set
  ``R_m``) with the method (key ``fold_in(key, m)``). Leave-one-out over targets: per candidate,
  "in" = shadow models that unlearned it, "out" = shadow models that never saw it; the target's
  ground truth is whether it unlearned the candidate. AUC near 0.5 = unlearned examples look
  like never-seen ones (good unlearning).

  Returns (and writes)::

    {"study": "ulira", "config", "method", "method_config", "num_models", "pool_size",
     "forget_per_model", "retain_per_model", "targets", "attacks": {...U-LiRA...},
     "original_attacks": {...LiRA on the originals over the same candidates...},
     "accuracy": {"original": {"retain", "forget", "test"}, "unlearned": {...}},
     "seconds", "models_per_second", "strategy_used", "plots": {"roc", "roc_original"}, "versions"}
  """
  from jaxunlearn import unlearn as jun
  from jaxunlearn.metrics import logit_confidence

  tcfg, mcfg, out, ds, model = _prepare_ulira(cfg)
  t0 = time.perf_counter()
  key = jax.random.key(cfg.seed)
  n, m_total = len(ds.y_train), cfg.num_models
  rng = np.random.default_rng(cfg.seed)
  pool = np.sort(rng.permutation(n)[: cfg.pool_size])
  keep = shadow.balanced_keep_mask(jax.random.fold_in(key, 0), m_total, n, pool=pool)
  in_pool = np.zeros(n, bool)
  in_pool[pool] = True
  forget = np.stack([np.flatnonzero(keep[m] & in_pool) for m in range(m_total)]).astype(np.int32)
  retain = np.stack([np.flatnonzero(keep[m] & ~in_pool) for m in range(m_total)]).astype(np.int32)
  _log(cfg, f"[ulira] {cfg.dataset}: {m_total} x {cfg.model}, method {cfg.method}; each model trains on "
            f"{retain.shape[1]} + {forget.shape[1]} examples and unlearns the {forget.shape[1]}")
  kw = _shadow_kw(cfg, tcfg, model, ds.x_train, ds.y_train, m_total, ("originals", "unlearned"))
  originals, _ = shadow.train_many(jax.random.fold_in(key, 1), (ds.x_train, ds.y_train), keep, tcfg,
                                   model=model, checkpoint_dir=_ckpt(cfg, "originals"),
                                   progress=cfg.progress, desc="train", **kw)
  t_train = time.perf_counter() - t0
  # forget-validation set (SCRUB+Rewind): the forget sets are random, so held-out test examples
  data = jun.UnlearnData(jax.numpy.asarray(ds.x_train), jax.numpy.asarray(ds.y_train, jax.numpy.int32),
                         retain, forget, jax.numpy.asarray(ds.x_test), jax.numpy.asarray(ds.y_test, jax.numpy.int32),
                         num_classes=ds.num_classes)
  t1 = time.perf_counter()
  unlearned, _ = shadow.unlearn_many(originals, data, jax.random.fold_in(key, 2), cfg.method, mcfg,
                                     checkpoint_dir=_ckpt(cfg, "unlearned"), progress=cfg.progress, **kw)
  t_unlearn = time.perf_counter() - t1

  xp, yp = ds.x_train[pool], ds.y_train[pool]
  member = keep[:, pool]

  def conf_of(states):
    lg = shadow.predict_many(states, xp, flip=cfg.flip, **kw)
    return logit_confidence(lg if cfg.flip else lg[:, :, None], yp[:, None])

  targets = range(cfg.targets if cfg.targets is not None else m_total)
  u_att = lira_attacks(conf_of(unlearned), member, targets, ulira=True)
  o_att = lira_attacks(conf_of(originals), member, targets)
  summary, roc = _summarise(u_att, out, f"U-LiRA, {cfg.method}, {m_total} models")
  roc_dir = out / "original"
  o_summary, _ = _summarise(o_att, roc_dir, f"LiRA on the originals, {m_total} models")

  def accs(states):
    lg = shadow.predict_many(states, ds.x_train, **kw)
    correct = np.argmax(lg, -1) == ds.y_train[None]
    rows = np.arange(m_total)[:, None]
    return {"retain": float(correct[rows, retain].mean()), "forget": float(correct[rows, forget].mean()),
            "test": float(shadow.accuracies_many(states, ds.x_test, ds.y_test, **kw).mean())}

  total = time.perf_counter() - t0
  results = {
      "study": "ulira", "config": dataclasses.asdict(cfg), "method": cfg.method,
      "method_config": dataclasses.asdict(mcfg), "dataset": cfg.dataset, "model": cfg.model,
      "num_models": m_total, "pool_size": int(pool.size), "forget_per_model": int(forget.shape[1]),
      "retain_per_model": int(retain.shape[1]), "targets": len(targets),
      "pooled_examples": int(u_att["online"][1].size),
      "attacks": summary, "original_attacks": o_summary,
      "accuracy": {"original": accs(originals), "unlearned": accs(unlearned)},
      "seconds": {"train": t_train, "unlearn": t_unlearn, "total": total},
      "models_per_second": {"train": m_total / t_train, "unlearn": m_total / t_unlearn},
      "strategy_used": kw["strategy"],
      "plots": {"roc": roc, "roc_original": os.path.join("original", "roc.png")}, "versions": _versions(),
  }
  _write(out, results)
  return results


# ---------------------------------------------------------------------------------------------
# Challenge
# ---------------------------------------------------------------------------------------------

def _prepare_challenge(cfg: ChallengeConfig):
  if not isinstance(cfg, ChallengeConfig):
    raise TypeError(f"config must be a ChallengeConfig, got {type(cfg).__name__}")
  tcfg, out = _check_common(cfg)
  _check_int("models", cfg.models, 3)
  jdata.parse_forget_spec(cfg.forget)
  mcfg = _method_config(cfg.method, cfg.overrides, cfg.preset)
  ds, model = _load(cfg)
  split = jdata.make_forget_split(cfg.forget, ds.y_train, num_classes=ds.num_classes, seed=cfg.seed)
  if cfg.batch_size > len(split.retain):
    raise ValueError(f"batch size {cfg.batch_size} is larger than the retain set ({len(split.retain)} examples)")
  return tcfg, mcfg, out, ds, model, split


@dataclasses.dataclass
class ChallengeEnsemble:
  """The models of one NeurIPS-2023 challenge evaluation, reduced to what its scores need.

  Attributes:
    confidences: ``{"retrained" | method: float64 [N, F]}``, logit-scaled confidences of each
      model on the forget examples (one query, no flip).
    accuracy: ``{"original" | "retrained" | method: {"retain" | "forget" | "test": [N]}}`` per-model
      accuracies (``[1]`` for the original).
    seconds: wall time per group of models (``"original"``, ``"retrained"``, each method).
    strategy: the concrete strategy every group used (``"auto"`` resolved).
  """

  confidences: dict
  accuracy: dict
  seconds: dict
  strategy: Any = "vmap"


def challenge_ensemble(key, ds, split, model, train_config: TrainConfig, methods: dict, *, num_models: int,
                       checkpoint_dir=None, progress: bool = True, chunk_size: int | None = None,
                       strategy="vmap", log=None) -> ChallengeEnsemble:
  """Trains the challenge's ensembles: one original, N retrained, N unlearned per method.

  The original trains on the whole train split (key ``fold_in(key, 0)``); N models retrain from
  scratch on ``split.retain`` (``fold_in(fold_in(key, 1), m)``); every method unlearns N models from
  that ONE original (``fold_in(fold_in(key, 2), m)``, the same keys for every method). Each model
  is evaluated with one forward pass over the train split (sliced into retain / forget) and one
  over the test split.

  Args:
    key: PRNG key.
    ds: a ``jaxunlearn.data.Dataset``.
    split: its ``ForgetSplit`` (``split.y_train`` are the labels used, e.g. after confusion).
    model: the network.
    train_config: training of the original and the retrained models.
    methods: ``{name: config}`` of registered unlearning methods.
    num_models: N per side.
    checkpoint_dir: per-group orbax checkpoints below it (``original``, ``retrained``,
      ``unlearned`` for a single method, ``unlearned_<name>`` for several); resumable.
    progress: progress bars.
    chunk_size, strategy: as in :func:`jaxunlearn.shadow.train_many`; ``"auto"`` is resolved once
      (from the checkpoints when resuming) and used by every group.
    log: ``f(text)`` for the line that reports a measured strategy.

  Returns:
    A :class:`ChallengeEnsemble`.
  """
  from jaxunlearn import unlearn as jun
  from jaxunlearn.metrics import logit_confidence

  ck = lambda name: None if checkpoint_dir is None else os.path.join(checkpoint_dir, name)  # noqa: E731
  groups = ["original", "retrained"] + (["unlearned"] if len(methods) == 1 else [f"unlearned_{m}" for m in methods])
  x, y, n = ds.x_train, split.y_train, len(ds.y_train)
  strategy = shadow.resolve_strategy(strategy, model, train_config, (x, y), chunk_size=chunk_size,
                                     num_models=num_models, log=log,
                                     checkpoint_dir=[] if checkpoint_dir is None else [ck(g) for g in groups])
  kw = dict(chunk_size=chunk_size, strategy=strategy)
  yf = y[split.forget]

  def evaluate(states):
    lg = shadow.predict_many(states, x, **kw)
    correct = np.argmax(lg, -1) == y[None]
    test = shadow.accuracies_many(states, ds.x_test, ds.y_test, **kw)
    acc = {"retain": correct[:, split.retain].mean(1), "forget": correct[:, split.forget].mean(1), "test": test}
    return logit_confidence(lg[:, split.forget], yf), acc

  seconds, conf, acc = {}, {}, {}
  t = time.perf_counter()
  original, _ = shadow.train_many(jax.random.fold_in(key, 0), (x, y), np.ones((1, n), bool), train_config,
                                  model=model, checkpoint_dir=ck("original"), progress=progress,
                                  desc="original", **kw)
  seconds["original"] = time.perf_counter() - t
  _, acc["original"] = evaluate(original)
  keep = np.zeros((num_models, n), bool)
  keep[:, split.retain] = True
  t = time.perf_counter()
  retrained, _ = shadow.train_many(jax.random.fold_in(key, 1), (x, y), keep, train_config, model=model,
                                   checkpoint_dir=ck("retrained"), progress=progress, desc="retrain", **kw)
  seconds["retrained"] = time.perf_counter() - t
  conf["retrained"], acc["retrained"] = evaluate(retrained)
  data = jun.UnlearnData.create(x, y, split.retain, split.forget, num_classes=ds.num_classes)
  for name, mcfg in methods.items():
    t = time.perf_counter()
    unlearned, _ = shadow.unlearn_many(shadow.take(original, 0), data, jax.random.fold_in(key, 2), name, mcfg,
                                       num_models=num_models, progress=progress,
                                       checkpoint_dir=ck(groups[2 + list(methods).index(name)]), **kw)
    seconds[name] = time.perf_counter() - t
    conf[name], acc[name] = evaluate(unlearned)
  return ChallengeEnsemble(conf, acc, seconds, strategy)


def run_challenge(cfg: ChallengeConfig) -> dict:
  """The NeurIPS-2023 challenge evaluation of ``cfg.method`` with N = ``cfg.models`` per side.

  One original is trained on the whole train split; N models are retrained from scratch on the
  retain set (keys ``fold_in(k, m)``) and N unlearned from the original (keys ``fold_in(k', m)``).
  The forget examples' logit confidences (one query, no flip) give the forget quality
  (``jaxunlearn.metrics.forget_quality``) and, with mean retain / test accuracies, the final
  ``challenge_score``.

  Returns (and writes)::

    {"study": "challenge", "config", "method", "method_config", "forget", "num_models",
     "sizes": {"retain", "forget", "test"}, "forget_quality", "challenge_score", "max_epsilon",
     "epsilon": {"mean", "median", "max"}, "epsilons": [F],
     "accuracy": {"original": {...}, "retrained": {"retain", "forget", "test"}, "unlearned": {...}},
     "seconds", "models_per_second", "strategy_used", "plots": {"epsilons": "epsilons.png"}, "versions"}
  """
  from jaxunlearn import metrics
  from jaxunlearn import plotting

  tcfg, mcfg, out, ds, model, split = _prepare_challenge(cfg)
  t0 = time.perf_counter()
  n, n_models = len(ds.y_train), cfg.models
  _log(cfg, f"[challenge] {cfg.dataset}: forget {cfg.forget} ({len(split.forget)} of {n}), "
            f"{n_models} retrained + {n_models} unlearned ({cfg.method}) {cfg.model} models")
  ens = challenge_ensemble(jax.random.key(cfg.seed), ds, split, model, tcfg, {cfg.method: mcfg},
                           num_models=n_models, checkpoint_dir=cfg.checkpoint_dir, progress=cfg.progress,
                           chunk_size=cfg.chunk_size, strategy=cfg.strategy,
                           log=lambda t: _log(cfg, f"[strategy] {t}"))
  acc_o, acc_r, acc_u = ens.accuracy["original"], ens.accuracy["retrained"], ens.accuracy[cfg.method]
  fq = metrics.forget_quality(ens.confidences[cfg.method], ens.confidences["retrained"])
  score = metrics.challenge_score(fq, acc_u["retain"], acc_r["retain"], acc_u["test"], acc_r["test"])
  t_retrain, t_unlearn = ens.seconds["retrained"], ens.seconds[cfg.method]
  if jax.process_index() == 0:  # multi-host: one writer
    plotting.plot_epsilon_hist({cfg.method: fq.epsilons}, out / "epsilons.png",
                               title=f"Per-example epsilon, {cfg.method}, N={n_models}",
                               max_epsilon=fq.max_epsilon)
  mean = lambda d: {k: float(np.mean(v)) for k, v in d.items()}  # noqa: E731
  total = time.perf_counter() - t0
  results = {
      "study": "challenge", "config": dataclasses.asdict(cfg), "method": cfg.method,
      "method_config": dataclasses.asdict(mcfg), "dataset": cfg.dataset, "model": cfg.model,
      "forget": cfg.forget, "num_models": n_models,
      "sizes": {"retain": int(len(split.retain)), "forget": int(len(split.forget)), "test": int(len(ds.y_test))},
      "forget_quality": fq.score, "challenge_score": score, "max_epsilon": fq.max_epsilon,
      "epsilon": {"mean": float(np.mean(fq.epsilons)), "median": float(np.median(fq.epsilons)),
                  "max": float(np.max(fq.epsilons))},
      "epsilons": fq.epsilons,
      "accuracy": {"original": mean(acc_o), "retrained": mean(acc_r), "unlearned": mean(acc_u)},
      "seconds": {"original": ens.seconds["original"], "retrain": t_retrain, "unlearn": t_unlearn, "total": total},
      "models_per_second": {"retrain": n_models / t_retrain, "unlearn": n_models / t_unlearn},
      "strategy_used": ens.strategy,
      "plots": {"epsilons": "epsilons.png"}, "versions": _versions(),
  }
  _write(out, results)
  return results


# ---------------------------------------------------------------------------------------------
# argparse
# ---------------------------------------------------------------------------------------------

def _kv(s: str):
  if "=" not in s:
    raise argparse.ArgumentTypeError(f"--set {s!r}: expected OPTION=VALUE (or METHOD.OPTION=VALUE)")
  k, v = s.split("=", 1)
  return (k.strip(), v)


def _add_common(p: argparse.ArgumentParser, d: _Common) -> None:
  p.add_argument("--dataset", default=d.dataset, help="digits | npz:PATH | tfds name (cifar10, ...)")
  p.add_argument("--model", default=d.model, help=" | ".join(jmodels.MODEL_NAMES))
  p.add_argument("--width", type=float, default=d.width, help="channel multiplier")
  p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of every model trained from scratch")
  p.add_argument("--batch-size", type=int, default=d.batch_size, help="per-model batch size")
  p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
  p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimizer")
  p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 weight decay")
  p.add_argument("--augment", action="store_true", default=d.augment, help="random crop + flip while training")
  p.add_argument("--chunk-size", type=int, default=d.chunk_size,
                 help="models per compiled call (default: all; rounded up to a multiple of the device count)")
  p.add_argument("--strategy", default=d.strategy,
                 help="vmap: models in lockstep; sequential: lax.map over models per device; an int G: "
                      "groups of G in lockstep; auto: measure a few steps of each and use the fastest")
  p.add_argument("--checkpoint-dir", default=d.checkpoint_dir,
                 help="save every finished chunk here; rerunning the same command resumes")
  p.add_argument("--train-subset", type=int, default=d.train_subset, help="use N random train examples")
  p.add_argument("--test-subset", type=int, default=d.test_subset, help="use N random test examples")
  p.add_argument("--data-dir", default=d.data_dir, help="tfds data_dir")
  p.add_argument("--download", action="store_true", default=d.download, help="let tfds download (needs network)")
  p.add_argument("--seed", type=int, default=d.seed, help="seed of keep masks, inits and batches")
  p.add_argument("--quiet", action="store_true", help="no progress output")
  p.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() first: multi-host runs (SLURM, Open MPI and TPU pods "
                      "are auto-detected; see BUILD.md)")


def _add_method(p: argparse.ArgumentParser, d) -> None:
  p.add_argument("--method", default=d.method, help="registered unlearning method")
  p.add_argument("--set", action="append", type=_kv, dest="overrides", default=[], metavar="OPTION=VALUE",
                 help="method option, e.g. lr=0.01 or finetune.lr=0.01 (repeatable)")
  p.add_argument("--preset", default=d.preset, help="named method preset")


def add_subcommands(subparsers) -> None:
  """Adds ``lira``, ``ulira`` and ``challenge`` to an ``argparse`` subparsers object.

  Every option shows its default (``ArgumentDefaultsHelpFormatter``). Use :func:`dispatch` on
  the parsed arguments.
  """
  fmt = argparse.ArgumentDefaultsHelpFormatter
  d = LiraConfig()
  p = subparsers.add_parser("lira", formatter_class=fmt,
                            help="train M shadow models on random halves; LiRA membership inference",
                            description=run_lira.__doc__.split("\n")[0])
  p.add_argument("--models", "--num-models", dest="num_models", type=int, default=d.num_models,
                 help="number of models M (each is a target in turn, leave-one-out)")
  p.add_argument("--targets", type=int, default=d.targets, help="leave-one-out over the first T models (default all)")
  p.add_argument("--no-flip", dest="flip", action="store_false", help="query only the image, not its mirror")
  p.add_argument("--out", default=d.out, help="output folder for results.json and roc.png")
  _add_common(p, d)

  d = UliraConfig()
  p = subparsers.add_parser("ulira", formatter_class=fmt,
                            help="U-LiRA: per-example membership test of an unlearning method",
                            description=run_ulira.__doc__.split("\n")[0])
  p.add_argument("--models", "--num-models", dest="num_models", type=int, default=d.num_models,
                 help="number of original models M")
  _add_method(p, d)
  p.add_argument("--pool-size", type=int, default=d.pool_size,
                 help="forget candidates; each model trains on and unlearns half of them")
  p.add_argument("--targets", type=int, default=d.targets, help="leave-one-out over the first T models (default all)")
  p.add_argument("--no-flip", dest="flip", action="store_false", help="query only the image, not its mirror")
  p.add_argument("--out", default=d.out, help="output folder for results.json and roc.png")
  _add_common(p, d)

  d = ChallengeConfig()
  p = subparsers.add_parser("challenge", formatter_class=fmt,
                            help="NeurIPS-2023 challenge: forget quality of N unlearned vs N retrained models",
                            description=run_challenge.__doc__.split("\n")[0])
  p.add_argument("--models", type=int, default=d.models, help="N models per side")
  _add_method(p, d)
  p.add_argument("--forget", default=d.forget, help=f"the fixed forget set: {jdata.SPEC_HELP}")
  p.add_argument("--out", default=d.out, help="output folder for results.json and epsilons.png")
  _add_common(p, d)


def _config_from_args(args) -> Any:
  common = {f.name for f in dataclasses.fields(_Common)}
  cls = {"lira": LiraConfig, "ulira": UliraConfig, "challenge": ChallengeConfig}[args.command]
  kw = {}
  for f in dataclasses.fields(cls):
    if f.name == "progress":
      kw["progress"] = not getattr(args, "quiet", False)
    elif f.name == "overrides":
      kw["overrides"] = tuple(args.overrides)
    elif hasattr(args, f.name):
      kw[f.name] = getattr(args, f.name)
    elif f.name not in common:
      raise ValueError(f"missing option --{f.name.replace('_', '-')}")
  return cls(**kw)


def _print_result(results: dict) -> None:
  if results["study"] in ("lira", "ulira"):
    print(_format_attacks(results["attacks"]))
    if results["study"] == "ulira":
      a = results["accuracy"]
      print("accuracy  " + "  ".join(f"{k}: retain {100 * v['retain']:.1f}% forget {100 * v['forget']:.1f}% "
                                     f"test {100 * v['test']:.1f}%" for k, v in a.items()))
  else:
    a = results["accuracy"]
    print(f"forget quality {results['forget_quality']:.4f}   challenge score {results['challenge_score']:.4f}")
    for k, v in a.items():
      print(f"{k:<10} retain {100 * v['retain']:5.1f}%  forget {100 * v['forget']:5.1f}%  test {100 * v['test']:5.1f}%")


def dispatch(args) -> int:
  """Runs the study named by ``args.command``; prints a summary. Returns the exit code.

  A ``ValueError`` / ``TypeError`` (bad input, mismatched checkpoint folder) is printed as one
  line ``jaxunlearn: error: ...`` and gives 2.
  """
  runners = {"lira": run_lira, "ulira": run_ulira, "challenge": run_challenge}
  if getattr(args, "command", None) not in runners:
    print(f"jaxunlearn: error: unknown command {getattr(args, 'command', None)!r}", file=sys.stderr)
    return 2
  try:
    cfg = _config_from_args(args)
    if getattr(args, "distributed", False):
      jax.distributed.initialize()  # before any computation; every process runs this same command
    results = runners[args.command](cfg)
  except (ValueError, TypeError) as e:
    msg = " ".join(str(e).split())
    print(f"jaxunlearn: error: {msg}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    _print_result(results)
    print(f"wrote {os.path.join(cfg.out, 'results.json')}")
  return 0
