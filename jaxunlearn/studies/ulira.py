"""``jaxunlearn ulira``: U-LiRA (Hayes et al., 2024) of one unlearning method: M models each unlearn their half of a candidate pool, then leave-one-out U-LiRA."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn import many
from jaxunlearn.config import check_int
from jaxunlearn.errors import ConfigError
from jaxunlearn.mia.pooling import lira_attacks
from jaxunlearn.studies import common as C

__all__ = ("UliraConfig", "run_ulira")


@dataclasses.dataclass(frozen=True)
class UliraConfig(C.StudyConfig, C.AttackOptions):
  """``jaxunlearn ulira``: U-LiRA of an unlearning method.

  Attributes:
    num_models: M (>= 4) original models on balanced random halves.
    method: registered unlearning method.
    overrides: ``((option, value), ...)`` string overrides of the method's config.
    preset: a named preset of the method.
    pool_size: forget candidates; every model trains on exactly ``pool_size // 2`` of them and
      unlearns exactly those (so each candidate is "unlearned" in about M/2 models and "never
      seen" in the others).
    targets, flip: as in :class:`jaxunlearn.studies.LiraConfig`.
    out: output folder.
    lira_convention, statistic, tpr_strict: see :class:`jaxunlearn.studies.common.AttackOptions`
      (``statistic="mean"``: DeepUnlearn's U-LiRA centres).
  """

  num_models: int = 16
  method: str = "finetune"
  overrides: tuple[tuple[str, str], ...] = ()
  preset: str | None = None
  pool_size: int = 200
  targets: int | None = None
  flip: bool | None = None
  out: str = "out/ulira"


def _prepare(cfg: UliraConfig):
  tcfg, out = C.check_study(cfg, UliraConfig)
  C.check_targets(cfg)
  C.check_attack(cfg)
  check_int("pool_size", cfg.pool_size, 2)
  C.method_config(cfg.method, cfg.overrides, cfg.preset, tcfg)  # bad options fail here, before the data loads
  ds = cfg.load_data()
  model = cfg.create_model(ds)
  C.check_model(cfg.method, model)
  n = len(ds.y_train)
  if cfg.pool_size > n - 4:
    raise ConfigError(f"pool_size {cfg.pool_size} leaves too few other examples (train split has {n})")
  retain_size = (n - cfg.pool_size) // 2
  if cfg.batch_size > retain_size:
    raise ConfigError(f"batch size {cfg.batch_size} is larger than a model's retain set ({retain_size})")
  from jaxunlearn import unlearn as jun

  # each model retains (n - pool) // 2 examples and unlearns pool // 2 random ones (run_ulira)
  scale = jun.DataScale(retain_size, cfg.pool_size // 2, ds.num_classes, tcfg.epochs, tcfg.batch_size)
  mcfg, defaults = C.scaled_method_config(cfg, scale, tcfg)
  return tcfg, mcfg, defaults, out, ds, model


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
     "tpr_readout": "fpr <= target", "lira_convention": "ours" (as in run_lira),
     "accuracy": {"original": {"retain", "forget", "test"}, "unlearned": {...}},
     "seconds", "models_per_second", "strategy_used", "plots": {"roc", "roc_original"}, "versions"}
  """
  from jaxunlearn import unlearn as jun

  tcfg, mcfg, defaults, out, ds, model = _prepare(cfg)
  t0 = time.perf_counter()
  key = jax.random.key(cfg.seed)
  n, m_total = len(ds.y_train), cfg.num_models
  rng = np.random.default_rng(cfg.seed)
  pool = np.sort(rng.permutation(n)[: cfg.pool_size])
  keep = jdata.keep_mask(jax.random.fold_in(key, 0), m_total, n, pool=pool)
  in_pool = np.zeros(n, bool)
  in_pool[pool] = True
  forget = np.stack([np.flatnonzero(keep[m] & in_pool) for m in range(m_total)]).astype(np.int32)
  retain = np.stack([np.flatnonzero(keep[m] & ~in_pool) for m in range(m_total)]).astype(np.int32)
  C.log(cfg, f"[ulira] {cfg.dataset}: {m_total} x {cfg.model}, method {cfg.method}; each model trains on "
              f"{retain.shape[1]} + {forget.shape[1]} examples and unlearns the {forget.shape[1]}")
  kw = C.shadow_kw(cfg, tcfg, model, ds.x_train, ds.y_train, m_total, ("originals", "unlearned"))
  originals, _ = many.train_many(jax.random.fold_in(key, 1), (ds.x_train, ds.y_train), keep, tcfg,
                                   model=model, checkpoint_dir=C.ckpt(cfg, "originals"),
                                   progress=cfg.progress, desc="train", executor=cfg.executor, **kw)
  t_train = time.perf_counter() - t0
  # forget-validation set (SCRUB+Rewind): the forget sets are random, so held-out test examples
  data = jun.UnlearnData(jnp.asarray(ds.x_train), jnp.asarray(ds.y_train, jnp.int32), retain, forget,
                         jnp.asarray(ds.x_test), jnp.asarray(ds.y_test, jnp.int32), num_classes=ds.num_classes)
  t1 = time.perf_counter()
  unlearned, _ = many.unlearn_many(originals, data, jax.random.fold_in(key, 2), cfg.method, mcfg,
                                     checkpoint_dir=C.ckpt(cfg, "unlearned"), progress=cfg.progress, executor=cfg.executor, **kw)
  t_unlearn = time.perf_counter() - t1

  xp, yp = ds.x_train[pool], ds.y_train[pool]
  flip = ds.flip_ok if cfg.flip is None else bool(cfg.flip)  # default: mirror queries where flips keep the class
  member = keep[:, pool]

  def conf_of(states):  # computed on the device in float32; [M, pool, A] comes back (float64)
    return many.confidences_many(states, xp, yp, flip=flip, **kw)

  targets = range(cfg.targets if cfg.targets is not None else m_total)
  u_att = lira_attacks(conf_of(unlearned), member, targets, ulira=True, **C.attack_kw(cfg))
  o_att = lira_attacks(conf_of(originals), member, targets, **C.attack_kw(cfg))
  summary, roc = C.summarise(u_att, out, f"U-LiRA, {cfg.method}, {m_total} models", strict=cfg.tpr_strict)
  roc_dir = out / "original"
  o_summary, _ = C.summarise(o_att, roc_dir, f"LiRA on the originals, {m_total} models", strict=cfg.tpr_strict)

  def accs(states):
    lg = many.predict_many(states, ds.x_train, **kw)
    correct = np.argmax(lg, -1) == ds.y_train[None]
    rows = np.arange(m_total)[:, None]
    return {"retain": float(correct[rows, retain].mean()), "forget": float(correct[rows, forget].mean()),
            "test": float(many.accuracies_many(states, ds.x_test, ds.y_test, **kw).mean())}

  total = time.perf_counter() - t0
  results = {
      "study": "ulira", "config": dataclasses.asdict(cfg), "method": cfg.method,
      "method_config": dataclasses.asdict(mcfg), "defaults": defaults, "dataset": cfg.dataset, "model": cfg.model,
      "num_models": m_total, "pool_size": int(pool.size), "forget_per_model": int(forget.shape[1]),
      "retain_per_model": int(retain.shape[1]), "targets": len(targets),
      "pooled_examples": int(u_att["online"][1].size),
      "attacks": summary, "original_attacks": o_summary,
      **C.attack_fields(cfg),
      "accuracy": {"original": accs(originals), "unlearned": accs(unlearned)},
      "seconds": {"train": t_train, "unlearn": t_unlearn, "total": total},
      "models_per_second": {"train": m_total / t_train, "unlearn": m_total / t_unlearn},
      "strategy_used": kw["strategy"],
      "plots": {"roc": roc, "roc_original": os.path.join("original", "roc.png")}, "versions": C.versions(),
  }
  C.write(out, results)
  return results
