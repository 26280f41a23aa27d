"""``jaxunlearn run --seeds S`` and ``--tuned``: every model of the job for S seeds (one compiled program per model kind), mean +- std tables, per-seed values in results.json.

Seed s uses the keys of :mod:`jaxunlearn.sweeps.engine` (``fold_in(., s)`` of the job's keys); the data
split is the job's (``--seed``), the same for every seed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxunlearn import many
from jaxunlearn import run as jrun
from jaxunlearn import unlearn as jun
from jaxunlearn.atomic import write_json_atomic
from jaxunlearn.config import refuse_saved_reset
from jaxunlearn.errors import ConfigError
from jaxunlearn.evals import EVALS
from jaxunlearn.evals import EvalContext
from jaxunlearn.evals import eval_conventions
from jaxunlearn.evals import forget_validation_index
from jaxunlearn.health import model_warnings
from jaxunlearn.train import evaluate
from jaxunlearn.sweeps import engine

__all__ = ("check_seeds", "format_seeds", "run_job", "run_seeds", "tuned_config")

SPLITS = ("retain", "forget", "test")


def check_seeds(cfg) -> None:
  """What ``--seeds S > 1`` does not combine with (one line, before anything runs)."""
  if cfg.seeds == 1:
    return
  for flag, v in (("--mask", cfg.mask), ("--save-models", cfg.save_models), ("--original", cfg.original)):
    if v is not None:
      raise ConfigError(f"--seeds {cfg.seeds} does not combine with {flag} yet (run one seed at a time)")


def _eval_numbers(v, prefix: str = "") -> dict[str, float]:
  """An eval's JSON entry as ``{name: number}`` (a dict entry, e.g. IC's, flattened to ``name.field``)."""
  if isinstance(v, dict):
    out: dict[str, float] = {}
    for k, sub in v.items():
      out.update(_eval_numbers(sub, f"{prefix}.{k}" if prefix else k))
    return out
  return {prefix: float(v)}


def seed_evals(p, ctx: EvalContext, states, sets: dict, retrain_per_seed: dict | None, seeds: int) -> dict:
  """The ``--eval`` entries of S stacked models, each model evaluated as a single run evaluates it (seed s's
  unlearned model against seed s's oracle): ``{"evals": {name: mean}, "evals_std": {name: std},
  "evals_per_seed": {name: [S values]}}`` (dict entries such as IC's flattened to ``name.field``)."""
  per: dict[str, list[float]] = {}
  for s in range(seeds):
    st = many.take(states, s)
    ev = {k: evaluate(st.model, st.params, st.batch_stats, x, y) for k, (x, y) in sets.items()}
    ref = None if retrain_per_seed is None else {k: retrain_per_seed[k][s] for k in SPLITS}
    for name, v in _eval_numbers(ctx(ev, ref)).items():
      per.setdefault(name, []).append(v)
  return {"evals": {n: engine.seed_mean(np.asarray(v)) for n, v in per.items()},
          "evals_std": {n: engine.seed_std(np.asarray(v)) for n, v in per.items()},
          "evals_per_seed": per}


def _log(p, msg: str) -> None:
  if p.cfg.progress:
    print(msg, file=sys.stderr, flush=True)


def _entry(ev: engine.Evaluated, seconds: float) -> dict:
  acc = {s: np.where(ev.finite, ev.acc[s], np.nan) for s in SPLITS}
  mean = {s: engine.seed_mean(a) for s, a in acc.items()}
  std = {s: engine.seed_std(a) for s, a in acc.items()}
  return {"acc": mean, "acc_std": std, "acc_per_seed": {s: a.tolist() for s, a in acc.items()},
          "finite": ev.finite.tolist(), "seconds": seconds}


def run_seeds(p, on_model=None) -> dict:
  """Runs a prepared ``jaxunlearn run`` job (``p`` from :func:`jaxunlearn.run.prepare`) for
  ``p.cfg.seeds`` seeds; returns the results dict (``acc`` = mean over seeds, ``acc_std`` the
  population std (ddof 0), ``acc_per_seed`` the values).

  Resuming (``p.resume``, an interrupted run of the same job found by :func:`jaxunlearn.run.claim_out`): the
  models it finished keep their entries (``"resumed"`` lists them), the originals are loaded from
  ``OUT/.resume/originals`` (their finished chunks, saved as they finish), and the rest runs: a kill loses
  at most the model (all its seeds) that was running."""
  cfg, ds, sp = p.cfg, p.ds, p.split
  done = jrun.finished_models(p)
  seeds = cfg.seeds
  root = jax.random.key(cfg.seed)
  kw = dict(executor=cfg.executor, progress=cfg.progress)
  val = forget_validation_index(ds, sp)
  sets = {"retain": engine.EvalSet(ds.x_train[sp.retain], sp.y_train[sp.retain]),
          "forget": engine.EvalSet(ds.x_train[sp.forget], sp.y_train[sp.forget]),
          "test": engine.EvalSet(ds.x_test, ds.y_test)}
  x_val, y_val, source = jrun.forget_validation_set(p)
  data = engine.unlearn_data(ds.x_train, sp.y_train, sp.retain, sp.forget, ds.num_classes, x_val, y_val)
  results: dict[str, Any] = {
      "dataset": cfg.dataset, "model": cfg.model, "forget": cfg.forget, "seed": cfg.seed, "seeds": seeds,
      "std": "population standard deviation over seeds (ddof 0)",
      "sizes": {"retain": int(len(sp.retain)), "forget": int(len(sp.forget)), "test": int(len(ds.y_test))},
      "models": {},
      "config": {"train": dataclasses.asdict(p.train_cfg), "width": cfg.width,
                 "methods": {m: dataclasses.asdict(c) for m, c in p.method_cfgs.items()}},
      "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
      "timing": "seconds: the whole S-seed program of that model, compilation included",
      "forget_validation": source,
      "defaults": getattr(p, "defaults", {}),
  }
  jrun.carry_resumed(p, done, results)
  _log(p, f"[jaxunlearn] {cfg.dataset}: {len(sp.retain)} retain / {len(sp.forget)} forget / {len(ds.y_test)} test, "
          f"model {cfg.model}, forget {cfg.forget}, {seeds} seeds")
  t0 = time.perf_counter()
  originals, info = engine.train_originals(p.model, p.train_cfg, ds.x_train, sp.y_train, seeds, root, **kw,
                                           checkpoint_dir=p.out / jrun.RESUME_DIR / "originals")
  results["executor"] = info.get("executor")
  held = {"heldout": engine.EvalSet(ds.x_test[val], ds.y_test[val])}
  ev = engine.evaluate_states(originals, {**sets, **held})
  ctx = None
  if cfg.evals:
    results["mia_convention"] = eval_conventions(cfg.evals) or None
    ctx = EvalContext(p, ds.x_train[sp.forget], jax.random.fold_in(root, jrun.KEY_RANDOM_INIT))
    eval_sets = {k: (v.x, v.y) for k, v in sets.items()}
  if "original" in done:
    results["models"]["original"] = done["original"]
    results["resumed"].append("original")
    _log(p, "  original     (finished before: reused)")
  else:
    results["models"]["original"] = _entry(ev, time.perf_counter() - t0)
    if ctx is not None:  # per seed, as a single run evaluates a model (the timing above excludes it)
      results["models"]["original"].update(seed_evals(p, ctx, originals, eval_sets, None, seeds))
    _report(p, results, "original", None)
  heldout_acc = float(np.mean(ev.acc["heldout"]))
  if on_model:
    on_model(results)
  for name in ("retrain",) + tuple(m for m in cfg.methods if m != "retrain"):
    if name in done:  # finished by the interrupted run (same job, same data, same keys)
      results["models"][name] = done[name]
      results["resumed"].append(name)
      _log(p, f"  {name:<12} (finished before: reused)")
      continue
    t0 = time.perf_counter()
    states = engine.run_grid(name, p.method_cfgs[name], originals, data, root, seeds=seeds, **kw)
    jax.block_until_ready(states.params)
    entry = _entry(engine.evaluate_states(states, sets), time.perf_counter() - t0)
    if ctx is not None:
      ref = None if name == "retrain" else results["models"]["retrain"]["acc_per_seed"]
      entry.update(seed_evals(p, ctx, states, eval_sets, ref, seeds))
    results["models"][name] = entry
    _report(p, results, name, None if name == "retrain" else (heldout_acc, sp))
    if on_model:
      on_model(results)
  return results


def _report(p, results: dict, name: str, health) -> None:
  e = results["models"][name]
  _log(p, f"  {name:<12} " + "  ".join(f"{s} {_pm(e['acc'][s], e['acc_std'][s])}" for s in SPLITS)
          + f"  {e['seconds']:.1f}s")
  if not all(e["finite"]):
    _warn(p, results, f"{name}: weights became NaN/inf on {e['finite'].count(False)} of {len(e['finite'])} seeds "
                      "(lr too large?); its accuracies are not results")
  if health is None:
    return
  heldout_acc, sp = health
  for w in model_warnings(name, e["acc"], results["models"]["original"]["acc"], heldout_acc=heldout_acc,
                          whole_class=sp.whole_class, n_forget=len(sp.forget), finite=all(e["finite"]),
                          trains=jun.trains(p.method_cfgs[name])):
    _warn(p, results, w)


def _warn(p, results: dict, msg: str) -> None:
  if msg not in results.setdefault("warnings", []):
    results["warnings"].append(msg)
    _log(p, f"  warning: {msg}")


def _pm(mean, std) -> str:
  if mean is None or std is None or not (math.isfinite(mean) and math.isfinite(std)):
    return "nan"
  return f"{100 * mean:5.1f}±{100 * std:.1f}%"


def format_seeds(results: dict) -> str:
  """Plain-text table of mean ± std over seeds."""
  rows = [f"{'model':<14}{'retain':>14}{'forget':>14}{'test':>14}{'seconds':>9}"]
  for name, e in results["models"].items():
    rows.append(f"{name:<14}" + "".join(f"{_pm(e['acc'][s], e['acc_std'][s]):>14}" for s in SPLITS)
                + f"{e['seconds']:9.1f}")
  rows.append(f"(accuracy in %, mean ± std over {results['seeds']} seeds, std with ddof 0; seconds: all seeds of a "
              "model in one program, compilation included)")
  names = list(dict.fromkeys(n for e in results["models"].values() for n in e.get("evals", {})))
  if names:  # --eval: mean ± std over seeds, each model evaluated as a single run does
    rows.append("")
    rows.append(f"{'model':<14}" + "".join(f"{n:>16}" for n in names))
    for name, e in results["models"].items():
      ev, sd = e.get("evals", {}), e.get("evals_std", {})
      rows.append(f"{name:<14}" + "".join(f"{ev[n]:>9.3f}±{sd[n]:<6.3f}" if n in ev else f"{'':>16}" for n in names))
    conv = results.get("mia_convention") or {}
    rows += [f"({n}: {c})" for n, c in conv.items()]
  rows += [f"note: {w}" for w in results.get("notes", ())]
  rows += [f"warning: {w}" for w in results.get("warnings", ())]
  return "\n".join(rows)


def write_seeds(p, results: dict) -> None:
  """``OUT/results.json`` and ``OUT/accuracy.png`` with error bars."""
  from jaxunlearn import plotting  # noqa: PLC0415

  write_json_atomic(p.out / "results.json", results)
  ok = {n: e for n, e in results["models"].items() if all(math.isfinite(v) for v in e["acc"].values())}
  if ok:
    # the --eval numbers of the table (mean ± std over seeds; not IC's counts)
    names = dict.fromkeys(k for e in ok.values() for k in e.get("evals", {}) if k in EVALS and EVALS[k].legend)
    plotting.plot_accuracy_bars({n: e["acc"] for n, e in ok.items()}, p.out / "accuracy.png",
                                errors={n: e["acc_std"] for n, e in ok.items()},
                                scores={k: {n: e["evals"][k] for n, e in ok.items() if k in e.get("evals", {})}
                                        for k in names},
                                score_errors={k: {n: e["evals_std"][k] for n, e in ok.items()
                                                  if k in e.get("evals_std", {})} for k in names},
                                title=f"{plotting.dataset_label(results['dataset'])} / {results['model']} / "
                                      f"forget {results['forget']} ({results['seeds']} seeds)")


def tuned_config(cfg):
  """``cfg`` with every method's ``--tuned`` choice added to its overrides: runs ``jaxunlearn tune``
  (the method's default grid, ``cfg.seeds`` seeds, ``--select oracle``) into ``OUT/tune-METHOD``;
  returns ``(new cfg, {method: tune results})``."""
  from jaxunlearn.sweeps.tune import TuneConfig, run_tune  # noqa: PLC0415

  job = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TuneConfig) if hasattr(cfg, f.name)
         and f.name not in ("method", "out", "overrides", "preset", "seeds", "grid")}
  extra, tuned = [], {}
  presets = dict(cfg.presets)
  for m in cfg.methods:
    if m == "retrain":
      continue
    tc = TuneConfig(**job, method=m, out=f"{cfg.out}/tune-{m}", seeds=cfg.seeds, preset=presets.get(m),
                    overrides=tuple(o for o in cfg.overrides if o[0] in (m, "retrain")))
    res = run_tune(tc)
    tuned[m] = {"choice": res["choice"], "results": f"{cfg.out}/tune-{m}/results.json"}
    extra += [(m, k, v) for k, v in res["choice"]["overrides"].items()]
  return dataclasses.replace(cfg, overrides=tuple(cfg.overrides) + tuple(extra)), tuned


def run_job(cfg) -> tuple[Any, dict]:
  """``jaxunlearn run``: ``--tuned`` first, then one seed (:func:`jaxunlearn.run.execute_and_write`) or
  ``--seeds S`` (:func:`run_seeds`); returns ``(prepared, results)``."""
  check_seeds(cfg)
  tuned = {}
  p = jrun.prepare(cfg)  # every input checked before the tuning runs
  if cfg.seeds > 1:
    refuse_saved_reset(p.method_cfgs, f"--seeds {cfg.seeds} (many models in one program)")
  p = jrun.claim_out(p)  # OUT locked; this job's finished models found (the user's settings, before tuning)
  try:
    if cfg.tuned and not p.reused:
      cfg, tuned = tuned_config(cfg)
      p = dataclasses.replace(jrun.prepare(cfg), job=p.job, resume=p.resume, reused=p.reused)
      if cfg.seeds > 1:
        refuse_saved_reset(p.method_cfgs, f"--seeds {cfg.seeds} (many models in one program)")
  except BaseException:
    jrun.unlock_out(p.out)
    raise
  many_seeds = {} if cfg.seeds == 1 else {"execute_fn": run_seeds, "write_fn": write_seeds}
  return p, jrun.execute_and_write(p, extra={"tuned": tuned} if tuned else None, **many_seeds)
