"""``jaxunlearn lira``: M models on balanced random halves, then leave-one-out LiRA (Carlini et al., 2022) pooled into one ROC."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn import many
from jaxunlearn.errors import ConfigError
from jaxunlearn.metrics import logit_confidence
from jaxunlearn.mia.pooling import lira_attacks
from jaxunlearn.studies import common as C

__all__ = ("LiraConfig", "run_lira")


@dataclasses.dataclass(frozen=True)
class LiraConfig(C.StudyConfig, C.AttackOptions):
  """``jaxunlearn lira``: M models on balanced random halves of the train split; LiRA.

  Attributes:
    num_models: M (>= 4); every example is in about M/2 models.
    targets: leave-one-out over the first ``targets`` models (default: all M).
    flip: query the mirror image too (A = 2 augmentations, as in the LiRA reference); default None:
      the dataset's ``flip_ok`` (no mirror queries for digits, whose mirror images change class).
    out: output folder for ``results.json`` and ``roc.png``.
    lira_convention, statistic, tpr_strict: see :class:`jaxunlearn.studies.common.AttackOptions`
      (the models' halves are ours either way: ``train_many`` needs every model to keep ``N // 2``).
  """

  num_models: int = 16
  targets: int | None = None
  flip: bool | None = None
  out: str = "out/lira"


def _prepare(cfg: LiraConfig):
  tcfg, out = C.check_study(cfg, LiraConfig)
  C.check_targets(cfg)
  C.check_attack(cfg)
  ds = cfg.load_data()
  model = cfg.create_model(ds)
  half = len(ds.y_train) // 2
  if cfg.batch_size > half:
    raise ConfigError(f"batch size {cfg.batch_size} is larger than a model's training half ({half} examples)")
  return tcfg, out, ds, model


def run_lira(cfg: LiraConfig) -> dict:
  """Trains ``cfg.num_models`` models on balanced random halves and runs leave-one-out LiRA.

  Returns (and writes to ``cfg.out/results.json``)::

    {"study": "lira", "config", "dataset", "model", "num_models", "num_examples", "targets",
     "augmentations", "attacks": {attack: {"auc", "tpr@0.1%", "tpr@1%", "best_accuracy"}},
     "tpr_readout": "fpr <= target", "lira_convention": "ours", "lira_statistic": "median",
     "accuracy": {"train_mean", "heldout_mean", "test_mean"}, "seconds": {...},
     "models_per_second", "strategy_used", "plots": {"roc": "roc.png"}, "versions"}

  with attacks ``online``, ``online_fixed_variance``, ``offline``, ``offline_fixed_variance``
  (LiRA) and ``global_threshold`` (the target's confidence itself). ``tpr_readout``: the TPRs are
  read at FPR <= 0.1 % / 1 % (``metrics.tpr_at_fpr``; the LiRA reference reads FPR < target:
  ``tpr_strict`` gives ``"fpr < target"``); ``lira_convention`` / ``lira_statistic``: the options of
  :func:`jaxunlearn.mia.lira` used (defaults ``"ours"``, ``"median"``).
  """
  tcfg, out, ds, model = _prepare(cfg)
  t0 = time.perf_counter()
  key = jax.random.key(cfg.seed)
  n, m_total = len(ds.y_train), cfg.num_models
  keep = jdata.keep_mask(jax.random.fold_in(key, 0), m_total, n)
  C.log(cfg, f"[lira] {cfg.dataset}: {m_total} x {cfg.model} on {n // 2} of {n} examples each, "
              f"{cfg.epochs} epochs, {jax.device_count()} device(s)")
  kw = C.shadow_kw(cfg, tcfg, model, ds.x_train, ds.y_train, m_total, ("models",))
  states, _ = many.train_many(jax.random.fold_in(key, 1), (ds.x_train, ds.y_train), keep, tcfg,
                                model=model, checkpoint_dir=C.ckpt(cfg, "models"), progress=cfg.progress,
                                desc="train", executor=cfg.executor, **kw)
  t_train = time.perf_counter() - t0
  flip = ds.flip_ok if cfg.flip is None else bool(cfg.flip)
  logits = many.predict_many(states, ds.x_train, flip=flip, **kw)
  if not flip:
    logits = logits[:, :, None]
  conf = logit_confidence(logits, ds.y_train[:, None])
  correct = np.argmax(logits[:, :, 0], -1) == ds.y_train[None]
  test_acc = many.accuracies_many(states, ds.x_test, ds.y_test, **kw)
  targets = range(cfg.targets if cfg.targets is not None else m_total)
  attacks = lira_attacks(conf, keep, targets, **C.attack_kw(cfg))
  summary, roc = C.summarise(attacks, out, f"LiRA, {m_total} models ({cfg.dataset}, {cfg.model})",
                             strict=cfg.tpr_strict)
  total = time.perf_counter() - t0
  results = {
      "study": "lira", "config": dataclasses.asdict(cfg), "dataset": cfg.dataset, "model": cfg.model,
      "num_models": m_total, "num_examples": n, "targets": len(targets),
      "augmentations": int(conf.shape[-1]), "pooled_examples": int(attacks["online"][1].size),
      "attacks": summary,
      **C.attack_fields(cfg),
      "accuracy": {"train_mean": float(correct[keep].mean()), "heldout_mean": float(correct[~keep].mean()),
                   "test_mean": float(test_acc.mean())},
      "seconds": {"train": t_train, "total": total}, "models_per_second": m_total / t_train,
      "strategy_used": kw["strategy"],
      "plots": {"roc": roc}, "versions": C.versions(),
  }
  C.write(out, results)
  return results
