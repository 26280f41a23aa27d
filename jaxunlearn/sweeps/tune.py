"""``jaxunlearn tune``: a method's hyperparameter grid x seeds as one compiled program per static config, a configuration chosen on a validation split carved from the training data, and results.json, a table and plots.

Protocol. A stratified ``val_fraction`` of the training split is set aside as the VALIDATION split; the
forget set is drawn from the rest (with ``seed``). S originals (all of the rest) and S oracles
(``retrain`` on the retain set) are trained once; every configuration of the grid runs on every seed.
The selection (:mod:`jaxunlearn.sweeps.select`) reads retain, forget and validation accuracies and the
simple MIA against held-out validation examples of the forget distribution -- never the test split,
whose accuracies are reported only.

Resuming. Every finished chunk of models is saved under ``OUT/.resume`` (:func:`resume_folder`): a killed
job run again with the same command loads them, loses at most the chunk it was running, and ends with
the uninterrupted job's numbers (``"resumed": true`` in results.json: its seconds cover the rest only).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn import unlearn as jun
from jaxunlearn.atomic import write_json_atomic
from jaxunlearn.config import JobConfig
from jaxunlearn.config import check_int
from jaxunlearn.config import refuse_saved_reset
from jaxunlearn.errors import ConfigError
from jaxunlearn.errors import user_input
from jaxunlearn.evals import forget_distribution_index
from jaxunlearn.health import model_warnings
from jaxunlearn.many.resume import sha
from jaxunlearn.run import RESUME_DIR
from jaxunlearn.run import job_record
from jaxunlearn.sweeps import engine
from jaxunlearn.sweeps.grid import Grid
from jaxunlearn.sweeps.grid import expand_grid
from jaxunlearn.sweeps.grid import parse_grid
from jaxunlearn.sweeps.select import SELECT_MODES
from jaxunlearn.sweeps.select import choose
from jaxunlearn.sweeps.select import edge_warnings
from jaxunlearn.sweeps.select import objective_no_oracle
from jaxunlearn.sweeps.select import objective_oracle

__all__ = ("TuneConfig", "default_grid", "execute_tune", "format_tune", "prepare_tune", "run_tune")

SPLITS = ("retain", "forget", "val", "heldout", "test")


def default_grid(name: str, config) -> tuple[str, ...]:
  """The grid ``--tuned`` uses: 5 learning rates log-spaced over [lr / 10, lr * 10] around the
  method's (default-rule) lr, times NegGrad+'s ``alpha`` in {0.9, 0.99, 0.999} and l1-sparse's ``l1``
  in {1e-5, 5e-5, 2e-4}; ``retrain`` has none; a method registered with ``tune_grid`` gives its own."""
  if name == "retrain":
    return ()
  spec = jun.get_method(name)
  if spec.tune_grid is not None:
    return tuple(spec.tune_grid(config))
  lr = float(config.optim.lr)
  grid = [f"{name}.lr=log:{lr / 10:.6g}:{lr * 10:.6g}:5"]
  if name == "neggrad_plus":
    grid.append(f"{name}.alpha=0.9,0.99,0.999")
  if name == "l1_sparse":
    grid.append(f"{name}.l1=1e-5,5e-5,2e-4")
  return tuple(grid)


@dataclasses.dataclass(frozen=True)
class TuneConfig(JobConfig):
  """:class:`jaxunlearn.config.JobConfig` plus the tuning job (defaults: the embedded digits).

  Attributes:
    method: the registered method to tune.
    forget: forget spec (see ``jaxunlearn.data.SPEC_HELP``).
    grid: ``--grid`` entries ``[METHOD.]OPTION=VALUES`` (empty: :func:`default_grid`).
    seeds: S; originals, oracles and every configuration run on each.
    select: ``oracle`` | ``no-oracle`` (see :mod:`jaxunlearn.sweeps.select`).
    val_fraction: the share of the training split held out as the validation split.
    retain_tolerance: ``no-oracle``: largest allowed drop of retain accuracy below the original's.
    max_eval: retain accuracy is measured on at most this many retain examples (a fixed random subset).
    overrides, preset: the method's base settings (``--set M.OPTION=V``, ``--preset``); the grid
      varies options on top of them.
    chunk_size: models per compiled call (default all).
    out: output folder.
  """

  method: str = "finetune"
  forget: str = "random:0.1"
  grid: tuple[str, ...] = ()
  seeds: int = 3
  select: str = "oracle"
  val_fraction: float = 0.1
  retain_tolerance: float = 0.05
  max_eval: int = 10000
  overrides: tuple[tuple[str, str, str], ...] = ()
  preset: str | None = None
  chunk_size: int | None = None
  out: str = "out/tune"


@dataclasses.dataclass
class PreparedTune:
  cfg: TuneConfig
  run: Any            # the jaxunlearn.run.Prepared of the job on the REDUCED training split
  grid: Grid
  points: list
  groups: list
  val_x: np.ndarray
  val_y: np.ndarray


def prepare_tune(cfg: TuneConfig) -> PreparedTune:
  """Validates every input and loads the data; compiles and writes nothing.

  Raises:
    ConfigError: one line naming the bad value.
  """
  from jaxunlearn import run as jrun  # noqa: PLC0415

  check_int("--seeds", cfg.seeds, 1, 4097)
  check_int("--max-eval", cfg.max_eval, 10)
  check_int("--chunk-size", cfg.chunk_size, 1, allow_none=True)
  if cfg.select not in SELECT_MODES:
    raise ConfigError(f"--select {cfg.select!r}: choose from {', '.join(SELECT_MODES)}")
  if not (isinstance(cfg.val_fraction, (int, float)) and 0.0 < cfg.val_fraction <= 0.5):
    raise ConfigError(f"--val-fraction must lie in (0, 0.5], got {cfg.val_fraction!r}")
  if not (isinstance(cfg.retain_tolerance, (int, float)) and 0.0 <= cfg.retain_tolerance < 1.0):
    raise ConfigError(f"--retain-tolerance must lie in [0, 1), got {cfg.retain_tolerance!r}")
  if cfg.method == "retrain":
    raise ConfigError("--method retrain: the oracle has nothing to tune")
  for m, k, _ in cfg.overrides:
    if m not in (cfg.method, "retrain"):
      raise ConfigError(f"--set {m}.{k}: method {m!r} is not the tuned method {cfg.method!r}")
  job = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(JobConfig)}
  rc = jrun.RunConfig(**job, forget=cfg.forget, methods=(cfg.method,), out=cfg.out, overrides=cfg.overrides,
                      presets=((cfg.method, cfg.preset),) if cfg.preset else ())
  p = jrun.prepare(rc)  # every shared check, the method's default-rule config, the data
  refuse_saved_reset(p.method_cfgs, "jaxunlearn tune (many models in one program)")
  grid = parse_grid(cfg.method, cfg.grid or default_grid(cfg.method, p.method_cfgs[cfg.method]))
  points, groups = expand_grid(grid, p.method_cfgs[cfg.method])
  ds, val = jdata.carve_holdout(p.ds, cfg.val_fraction, cfg.seed)
  if val.size < 10:
    raise ConfigError(f"--val-fraction {cfg.val_fraction} leaves only {val.size} validation examples (need >= 10)")
  with user_input():
    split = jdata.make_forget_split(cfg.forget, ds.y_train, num_classes=ds.num_classes, seed=cfg.seed)
  if cfg.batch_size > len(split.retain):
    raise ConfigError(f"batch size {cfg.batch_size} is larger than the retain set ({len(split.retain)} examples)")
  run_p = dataclasses.replace(p, ds=ds, split=split)
  return PreparedTune(cfg, run_p, grid, points, groups, p.ds.x_train[val], p.ds.y_train[val])


_PAIRS: dict = {}


def _pair_fingerprint(pt: PreparedTune, data) -> tuple:
  """What determines a tuning job's originals and oracles (everything but the tuned method)."""
  from jaxunlearn.many.resume import sha  # noqa: PLC0415

  p, cfg = pt.run, pt.cfg
  return (repr(p.model), repr(p.train_cfg), repr(p.method_cfgs["retrain"]), cfg.seeds, cfg.seed, cfg.executor,
          cfg.chunk_size, sha(np.asarray(data.x), np.asarray(data.y), np.asarray(data.retain), np.asarray(data.forget),
                              np.asarray(data.x_val), np.asarray(data.y_val)))


def resume_folder(pt: PreparedTune) -> Path:
  """``OUT/.resume/tune-DIGEST``: where a tuning job saves every finished chunk of models (its originals,
  oracles and each grid program), so that the same command after a kill loads them and loses at most the
  chunk it was running. DIGEST fingerprints the job (:func:`jaxunlearn.run.job_record` of its config, and
  the data as loaded); :func:`run_tune` removes the folder once results.json is written."""
  ds = pt.run.ds
  job = np.frombuffer(json.dumps(job_record(pt.cfg), sort_keys=True).encode(), np.uint8)
  digest = sha(job, ds.x_train, ds.y_train, ds.x_test, ds.y_test, pt.val_x, pt.val_y)
  return Path(pt.run.out) / RESUME_DIR / f"tune-{digest}"


def _has_chunks(ck: Path) -> bool:
  """Whether ``ck`` holds a finished chunk to load (a folder with only manifests has nothing)."""
  return any(ck.rglob("chunk_*"))


def _claim_resume(pt: PreparedTune) -> Path:
  """:func:`resume_folder`, after removing what other tuning jobs left in ``OUT/.resume`` (this job's
  results.json replaces theirs anyway); says when it resumes."""
  ck = resume_folder(pt)
  for other in ck.parent.glob("tune-*"):
    if other != ck:
      _log(pt.cfg, f"[tune] removing {str(other)!r}: the unfinished chunks of another tuning job")
      shutil.rmtree(other, ignore_errors=True)
  if _has_chunks(ck):
    _log(pt.cfg, f"[tune] resuming: the chunks this job finished before it stopped are loaded from {str(ck)!r}")
  return ck


def _sets(pt: PreparedTune) -> dict:
  p, cfg = pt.run, pt.cfg
  ds, sp = p.ds, p.split
  rng = np.random.default_rng([cfg.seed, 0xE7A])
  retain = sp.retain if len(sp.retain) <= cfg.max_eval else np.sort(rng.permutation(sp.retain)[:cfg.max_eval])
  held = forget_distribution_index(pt.val_y, sp, min_count=10)
  return {"retain": engine.EvalSet(ds.x_train[retain], sp.y_train[retain]),
          "forget": engine.EvalSet(ds.x_train[sp.forget], sp.y_train[sp.forget]),
          "val": engine.EvalSet(pt.val_x, pt.val_y),
          "heldout": engine.EvalSet(pt.val_x[held], pt.val_y[held]),
          "test": engine.EvalSet(ds.x_test, ds.y_test)}


def _log(cfg, msg: str) -> None:
  if cfg.progress:
    print(msg, file=sys.stderr, flush=True)


def _summary(ev: engine.Evaluated, mia: np.ndarray, rows: np.ndarray) -> dict:
  """Per-seed lists and mean/std of accuracies and MIA of the models ``rows`` (one per seed)."""
  out = {"acc": {s: ev.acc[s][rows].tolist() for s in SPLITS}, "mia": mia[rows].tolist(),
         "finite": ev.finite[rows].tolist()}
  out["mean"], out["std"] = _mean_std({**{s: ev.acc[s][rows] for s in SPLITS}, "mia": mia[rows]})
  return out


def _mean_std(values: dict) -> tuple[dict, dict]:
  """``({name: mean over seeds}, {name: std over seeds})`` of ``{name: [S] values}``."""
  return {n: engine.seed_mean(v) for n, v in values.items()}, {n: engine.seed_std(v) for n, v in values.items()}


def execute_tune(pt: PreparedTune, checkpoint_dir: Path | None = None) -> dict:
  """Runs the prepared tuning job; returns the results dict (see :func:`run_tune`). With ``checkpoint_dir``
  every finished chunk of models is saved there, and those already there are loaded."""
  cfg, p = pt.cfg, pt.run
  ds, sp, name = p.ds, p.split, cfg.method
  s_count, k_count = cfg.seeds, len(pt.points)
  root = jax.random.key(cfg.seed)
  sets = _sets(pt)
  held = sets["heldout"]
  data = engine.unlearn_data(ds.x_train, sp.y_train, sp.retain, sp.forget, ds.num_classes, held.x, held.y)
  kw = dict(executor=cfg.executor, progress=cfg.progress, chunk_size=cfg.chunk_size)
  _log(cfg, f"[tune] {name}: {k_count} configurations x {s_count} seeds in {len(pt.groups)} program(s); "
            f"{len(sp.retain)} retain / {len(sp.forget)} forget / {len(pt.val_y)} validation")
  resumed = checkpoint_dir is not None and _has_chunks(checkpoint_dir)

  def sub(part: str) -> Path | None:
    return None if checkpoint_dir is None else checkpoint_dir / part

  t0 = time.perf_counter()
  fp = _pair_fingerprint(pt, data)
  if fp in _PAIRS:  # the same originals and oracles as an earlier tuning job of this process
    originals, oracles, info = _PAIRS[fp]
    _log(cfg, "[tune] originals and oracles: reused from an earlier tuning job of this process (same data, "
              "model, training and seeds)")
  else:
    originals, info = engine.train_originals(p.model, p.train_cfg, ds.x_train, sp.y_train, s_count, root, **kw,
                                             checkpoint_dir=sub("original"))
    oracles = engine.run_grid("retrain", p.method_cfgs["retrain"], originals, data, root, seeds=s_count, **kw,
                              checkpoint_dir=sub("retrain"))
    _PAIRS.clear()  # keep one pair: a process tuning several methods on one job reuses it
    _PAIRS[fp] = (originals, oracles, info)
  t_pair = time.perf_counter() - t0
  ev_o, ev_r = engine.evaluate_states(originals, sets), engine.evaluate_states(oracles, sets)
  mia_o, mia_r = engine.mia_scores(ev_o, seed=cfg.seed), engine.mia_scores(ev_r, seed=cfg.seed)
  acc = {s: np.full((k_count, s_count), np.nan) for s in SPLITS}
  mia, finite = np.full((k_count, s_count), np.nan), np.zeros((k_count, s_count), bool)
  t1 = time.perf_counter()
  for gi, g in enumerate(pt.groups):
    states = engine.run_grid(name, g.config, originals, data, root, seeds=s_count, hparams=g.hparams, **kw,
                             checkpoint_dir=sub(f"grid_{gi}"))
    ev = engine.evaluate_states(states, sets)
    rows = np.asarray(g.indices)
    for s in SPLITS:
      acc[s][rows] = ev.acc[s].reshape(len(rows), s_count)
    mia[rows] = engine.mia_scores(ev, seed=cfg.seed).reshape(len(rows), s_count)
    finite[rows] = ev.finite.reshape(len(rows), s_count)
  t_grid = time.perf_counter() - t1
  for s in SPLITS:  # a model with NaN weights has no accuracy (never "0 %")
    acc[s] = np.where(finite, acc[s], np.nan)
  warnings = []
  if cfg.select == "oracle":
    objective = objective_oracle(acc, mia, ev_r.acc, mia_r)
    feasible = np.isfinite(objective)
  else:
    objective, feasible = objective_no_oracle(acc, ev_o.acc["retain"], whole_class=pt.run.split.whole_class,
                                              retain_tolerance=cfg.retain_tolerance)
  objective = np.where(finite, objective, np.inf)
  best = choose(objective)
  if not np.isfinite(objective[best]).all():
    if cfg.select == "no-oracle" and np.isfinite(np.where(finite, acc["retain"], -np.inf)).any():
      best = int(np.nanargmax(np.where(finite, acc["retain"], -np.inf).mean(1)))
    warnings.append(f"no configuration met the selection on every seed (--select {cfg.select}); chose #{best}, "
                    "the one keeping the most retain accuracy -- widen the grid")
  obj_mean = np.where(np.isfinite(objective), objective, np.nan)
  results: dict[str, Any] = {
      "kind": "tune", "method": name, "dataset": cfg.dataset, "model": cfg.model, "forget": cfg.forget,
      "seed": cfg.seed, "seeds": s_count, "select": cfg.select,
      "selection_reads": ["retain", "forget", "val", "heldout", "mia(forget vs heldout)"],
      "objective": ("sum of |retain|, |forget|, |val| accuracy gaps and |MIA| gap to the same seed's oracle"
                    if cfg.select == "oracle" else
                    f"|forget - {'0' if pt.run.split.whole_class else 'heldout'} accuracy| among configurations keeping retain "
                    f"within {cfg.retain_tolerance:g} of the original's"),
      "std": "population standard deviation over seeds (ddof 0)",
      "sizes": {"retain": int(len(sp.retain)), "forget": int(len(sp.forget)), "val": int(len(pt.val_y)),
                "heldout": int(len(held.y)), "retain_evaluated": int(len(sets["retain"].y)),
                "test": int(len(ds.y_test))},
      "grid": {k: list(v) for k, v in pt.grid.axes}, "programs": len(pt.groups),
      "base_config": dataclasses.asdict(p.method_cfgs[name]), "defaults": p.defaults.get(name),
      "original": _summary(ev_o, mia_o, np.arange(s_count)),
      "oracle": _summary(ev_r, mia_r, np.arange(s_count)),
      "configs": [],
      "seconds": {"originals_and_oracles": t_pair, "grid": t_grid,
                  "grid_per_config_seed": t_grid / max(1, k_count * s_count)},
      "resumed": resumed,  # true: chunks of an interrupted run were loaded, so the seconds cover only the rest
      "executor": info.get("executor"),
      "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
  }
  for k, pt_values in enumerate(pt.points):
    entry = {"values": pt_values, "acc": {s: acc[s][k].tolist() for s in SPLITS}, "mia": mia[k].tolist(),
             "objective": obj_mean[k].tolist(), "feasible": feasible[k].tolist(), "finite": finite[k].tolist(),
             }
    entry["mean"], entry["std"] = _mean_std({**{s: acc[s][k] for s in SPLITS}, "mia": mia[k], "objective": obj_mean[k]})
    results["configs"].append(entry)
  results["choice"] = {"index": best, "values": pt.points[best], "overrides": {k: str(v) for k, v in pt.points[best].items()}}
  warnings += edge_warnings(name, pt.grid.axes, pt.points[best])
  results["warnings"] = warnings + _health(pt, results["configs"][best], results["original"])
  for w in results["warnings"]:
    _log(cfg, f"  warning: {w}")
  return results


def _health(pt: PreparedTune, chosen: dict, original: dict) -> list[str]:
  """The post-run checks of :mod:`jaxunlearn.health` on the chosen configuration's mean accuracies."""
  acc = {s: chosen["mean"][s] for s in ("retain", "forget", "test")}
  orig = {s: original["mean"][s] for s in ("retain", "forget", "test")}
  return model_warnings(f"{pt.cfg.method} (chosen)", acc, orig, heldout_acc=original["mean"]["heldout"],
                        whole_class=pt.run.split.whole_class, n_forget=len(pt.run.split.forget),
                        finite=all(chosen["finite"]), trains=jun.trains(pt.run.method_cfgs[pt.cfg.method]))


def _pm(mean: float, std: float) -> str:
  if mean is None or std is None or not (math.isfinite(mean) and math.isfinite(std)):
    return f"{'nan':>13}"
  return f"{100 * mean:6.1f}±{100 * std:<5.1f}"[:13].rjust(13)


def format_tune(results: dict, top: int = 10) -> str:
  """Plain-text table: the original, the oracle and the ``top`` configurations by objective."""
  names = list(results["grid"])
  head = "".join(f"{n:>11}" for n in names)
  rows = [f"{'':<10}{head}{'retain':>13}{'forget':>13}{'val':>13}{'test':>13}{'MIA':>13}{'objective':>13}"]
  for label in ("original", "oracle"):
    e = results[label]
    rows.append(f"{label:<10}{'':>{11 * len(names)}}" + "".join(_pm(e["mean"][s], e["std"][s]) for s in
                                                               ("retain", "forget", "val", "test", "mia")))
  order = sorted(range(len(results["configs"])),
                 key=lambda i: (lambda v: v if v is not None and math.isfinite(v) else math.inf)(
                     results["configs"][i]["mean"]["objective"]))
  for i in order[:top]:
    c = results["configs"][i]
    vals = "".join(f"{_fmt_value(c['values'][n]):>11}" for n in names)
    mark = "*" if i == results["choice"]["index"] else " "
    obj = c["mean"]["objective"]
    rows.append(f"{mark}#{i:<8}{vals}" + "".join(_pm(c["mean"][s], c["std"][s]) for s in
                                                 ("retain", "forget", "val", "test", "mia"))
                + (f"{obj:8.4f}±{c['std']['objective']:.3f}" if obj is not None and math.isfinite(obj) else f"{'inf':>13}"))
  rows.append(f"(accuracy and MIA in %, mean ± std over {results['seeds']} seed(s); * = chosen by --select "
              f"{results['select']} on validation data; the test column is reported, never read by the choice; "
              f"{len(results['configs'])} configurations, best {min(top, len(order))} shown)")
  rows += [f"warning: {w}" for w in results.get("warnings", ())]
  return "\n".join(rows)


def _fmt_value(v) -> str:
  return f"{v:.3g}" if isinstance(v, float) else str(v)


def write_tune(out, results: dict) -> None:
  """``OUT/results.json`` and ``OUT/sweep.png`` (objective and accuracies against every swept option)."""
  from jaxunlearn import plotting  # noqa: PLC0415

  write_json_atomic(out / "results.json", results)
  numeric = [n for n in results["grid"] if all(isinstance(c["values"][n], (int, float)) for c in results["configs"])]
  if not numeric:
    return
  cs = results["configs"]

  def ms(split):
    return (np.array([_nan(c["mean"][split]) for c in cs]), np.array([_nan(c["std"][split]) for c in cs]))

  plotting.plot_sweep({n: [float(c["values"][n]) for c in cs] for n in numeric},
                      {s: ms(s) for s in ("retain", "forget", "val")}, out / "sweep.png", objective=ms("objective"),
                      chosen=results["choice"]["index"],
                      title=f"{results['method']} on {results['dataset']} / forget {results['forget']}")


def _nan(v) -> float:
  return float("nan") if v is None else float(v)


def run_tune(cfg: TuneConfig) -> dict:
  """prepare + tune + write: ``OUT/results.json`` (every configuration x seed, the choice, the
  objective) and ``OUT/sweep.png``. A job killed before the end keeps every chunk of models it finished
  in :func:`resume_folder`; the same command loads them and runs the rest."""
  pt = prepare_tune(cfg)
  ck = _claim_resume(pt)
  results = execute_tune(pt, ck)
  write_tune(pt.run.out, results)
  shutil.rmtree(ck, ignore_errors=True)
  if ck.parent.is_dir() and not any(ck.parent.iterdir()):
    ck.parent.rmdir()
  return results
