"""The main job: train the original and the retrained oracle, unlearn, evaluate, write results.json.

Library code behind ``jaxunlearn run``; every check of the user's input happens in
:func:`prepare` before anything is compiled or written.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxunlearn import checkpoint
from jaxunlearn import data as jdata
from jaxunlearn import health
from jaxunlearn import models as jmodels
from jaxunlearn import unlearn as jun
from jaxunlearn.atomic import jsonable
from jaxunlearn.atomic import write_json_atomic
from jaxunlearn.saved_models import check_original
from jaxunlearn.saved_models import load_model  # noqa: F401  (public: run.load_model)
from jaxunlearn.saved_models import save_model
from jaxunlearn.config import refuse_saved_reset
from jaxunlearn.config import JobConfig
from jaxunlearn.config import check_int
from jaxunlearn.config import check_out_dir
from jaxunlearn.errors import ConfigError
from jaxunlearn.errors import user_input
from jaxunlearn.evals import EVALS
from jaxunlearn.evals import EvalContext
from jaxunlearn.evals import eval_conventions
from jaxunlearn.evals import eval_options
from jaxunlearn.evals import forget_distribution_index
from jaxunlearn.evals import forget_validation_index
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainConfig
from jaxunlearn.train import count_steps
from jaxunlearn.train import evaluate
from jaxunlearn.train import resolve_executor
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.train import train_model
from jaxunlearn.train import use_executor


@dataclasses.dataclass(frozen=True)
class RunConfig(JobConfig):
  """Everything ``jaxunlearn run`` needs: :class:`jaxunlearn.config.JobConfig` (data, model,
  training of the original and the oracle) plus the unlearning job; defaults are the embedded
  digits job."""

  forget: str = "random:0.1"
  methods: tuple[str, ...] = ("finetune",)
  out: str = "out/run"
  overrides: tuple[tuple[str, str, str], ...] = ()   # (method, option, value)
  presets: tuple[tuple[str, str], ...] = ()          # (method, preset)
  mask: str | None = None                            # del:0.3 | salun:0.5
  evals: tuple[str, ...] = ()
  save_models: str | None = None   # folder: every trained/unlearned model saved there with orbax
  original: str | None = None      # checkpoint of an original model (from --save-models) to reuse
  seeds: int = 1                   # > 1: every model for this many seeds (jaxunlearn.sweeps.run_seeds)
  tuned: bool = False              # tune every method's default grid first (jaxunlearn.sweeps.tuned_config)
  holdout: float = 0.0             # > 0: this share of the training split is never trained on; SCRUB+Rewind
                                   # validates on its forget-distribution examples (else on test examples)
  overwrite: bool = False          # OUT holds another job's results.json (or this one's): start over
  command_line: str | None = None  # the command that made this config (recorded in results.json)


@dataclasses.dataclass
class Prepared:
  cfg: RunConfig
  ds: jdata.Dataset
  split: jdata.ForgetSplit
  model: jmodels.Model
  train_cfg: TrainConfig
  method_cfgs: dict[str, Any]
  out: Path
  original: ModelState | None = None
  defaults: dict = dataclasses.field(default_factory=dict)  # {method: {preset, overrides, rule}}
  holdout: tuple | None = None  # (x, y) of the held-out training examples (--holdout)
  job: dict | None = None       # job_record of the claimed --out (claim_out); None: OUT not claimed
  resume: dict | None = None    # the interrupted run's results.json whose finished models are reused
  reused: bool = False          # OUT already held this job's complete results: nothing was run


def prepare(cfg: RunConfig) -> Prepared:
  """Validates every input and loads the data; compiles and writes nothing.

  Raises:
    ConfigError: one line naming the bad value.
  """
  train_cfg = cfg.check()
  if not cfg.methods:
    raise ConfigError("no --method given")
  check_int("--seeds", cfg.seeds, 1, 4097)
  with user_input():
    for m in cfg.methods:
      jun.get_method(m)
  for e in cfg.evals:
    if e not in eval_options():
      raise ConfigError(f"unknown --eval option {e!r}; choose from {', '.join(eval_options())}")
  if len(set(cfg.methods)) != len(cfg.methods):
    raise ConfigError(f"a method is given twice in {list(cfg.methods)}")
  _check_method_keys(("retrain",) + tuple(m for m in cfg.methods if m != "retrain"))  # retrain always runs
  with user_input():
    jdata.parse_forget_spec(cfg.forget)
  if cfg.mask is not None:
    kind, _, frac = cfg.mask.partition(":")
    if kind not in ("del", "salun"):
      raise ConfigError(f"unknown mask {cfg.mask!r}; use del:FRAC or salun:FRAC")
    try:
      f = float(frac)
    except ValueError:
      raise ConfigError(f"mask {cfg.mask!r}: fraction {frac!r} is not a number") from None
    if not 0.0 < f <= 1.0:
      raise ConfigError(f"mask {cfg.mask!r}: fraction {f} must lie in (0, 1]")
  method_cfgs = {}
  presets = dict(cfg.presets)
  for m, _ in cfg.presets:
    if m not in cfg.methods:
      raise ConfigError(f"--preset for {m!r}, which is not among --method {list(cfg.methods)}")
  for m, k, _ in cfg.overrides:
    if m not in cfg.methods and m != "retrain":
      raise ConfigError(f"--set {m}.{k}: method {m!r} is not among --method {list(cfg.methods)}")
  for m in set(cfg.methods) | {"retrain"}:
    ov = {k: v for mm, k, v in cfg.overrides if mm == m}
    with user_input():
      method_cfgs[m] = jun.make_config(m, ov, preset=presets.get(m))
  # the oracle trains exactly like the original, on the retain set
  # (user --set retrain.x=... still wins)
  base = {k: getattr(train_cfg, k) for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "augment")}
  retrain_ov = {k for mm, k, _ in cfg.overrides if mm == "retrain"}
  method_cfgs["retrain"] = jun.replace(
      method_cfgs["retrain"], **{k: v for k, v in base.items() if k not in retrain_ov})
  out = check_out_dir(cfg.out)
  if cfg.save_models is not None:
    check_out_dir(cfg.save_models)
  if cfg.original is not None:
    check_original(cfg)
  if isinstance(cfg.holdout, bool) or not (isinstance(cfg.holdout, (int, float)) and 0.0 <= cfg.holdout <= 0.5):
    raise ConfigError(f"--holdout must lie in [0, 0.5], got {cfg.holdout!r}")
  ds = cfg.load_data()
  holdout = None
  if cfg.holdout > 0:
    full = ds
    ds, held = jdata.carve_holdout(full, cfg.holdout, cfg.seed)
    if held.size < 10:
      raise ConfigError(f"--holdout {cfg.holdout} holds out only {held.size} training examples (need >= 10)")
    holdout = (full.x_train[held], full.y_train[held])
  with user_input():
    split = jdata.make_forget_split(cfg.forget, ds.y_train, num_classes=ds.num_classes, seed=cfg.seed)
  if cfg.batch_size > len(split.retain):
    raise ConfigError(f"batch size {cfg.batch_size} is larger than the retain set ({len(split.retain)} examples)")
  defaults = _scale_defaults(cfg, split, ds.num_classes, train_cfg, method_cfgs, presets)
  model = cfg.create_model(ds)
  n_blocks = len(model.block_names())
  for m, mc in method_cfgs.items():
    if getattr(mc, "k", 0) > n_blocks:
      raise ConfigError(f"{m}.k={mc.k}: model {cfg.model!r} has only {n_blocks} blocks {model.block_names()}")
    with user_input():
      jun.check_model(m, model)  # e.g. ct refuses a model without convolutions
  if cfg.original is not None:
    refuse_saved_reset(method_cfgs, "a loaded --original (its initialisation is not recorded)")
  original = None
  if cfg.original is not None:
    with user_input():  # a checkpoint that does not load or holds NaN is bad input
      original = load_model(cfg.original, model)
  return Prepared(cfg, ds, split, model, train_cfg, method_cfgs, out, original, defaults, holdout)


# RunConfig fields that do not change what a job computes (how it reports, where it writes)
_NOT_JOB = ("progress", "out", "overwrite", "command_line", "download", "data_dir", "cache_dir")
RESUME_DIR = ".resume"          # OUT/.resume/original (a checkpoint; --seeds: originals, chunk checkpoints): an unfinished run's originals (removed when complete)
LOCK_FILE = ".jaxunlearn.lock"  # OUT's lock (an flock; holds the pid of the run writing OUT)
_LOCKS: dict[str, int] = {}     # folders this process holds: resolved path -> the lock file's descriptor


def job_record(cfg: RunConfig) -> dict:
  """What makes two ``jaxunlearn run`` calls the same job (results.json's ``job``, with the data's digest
  added by :func:`claim_out`): every :class:`RunConfig` field but how it reports and where it writes
  (``progress``, ``out``, ``overwrite``, ``command_line``; ``download``, ``data_dir`` and ``cache_dir``, where
  the data come from: their digest is compared instead)."""
  return jsonable({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _NOT_JOB})


def data_digest(p: Prepared) -> str:
  """sha256 (first 16 hex digits) of the job's data as loaded: subsets taken, ``--holdout`` carved."""
  h = hashlib.sha256()
  for a in (p.ds.x_train, p.ds.y_train, p.ds.x_test, p.ds.y_test, *(p.holdout or ())):
    a = np.ascontiguousarray(a)
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a)
  return h.hexdigest()[:16]


def lock_out(out: Path) -> None:
  """Takes ``OUT/.jaxunlearn.lock`` for this process (an exclusive ``flock``: the system releases it when the
  process ends, however it ends), creating OUT. Held by another process: a ConfigError naming the folder and
  that process's pid. Re-entrant within a process; a no-op where ``flock`` is unavailable (Windows, or a
  file system without locks)."""
  try:
    import fcntl
  except ImportError:  # Windows
    return
  key = str(out.resolve())
  if key in _LOCKS:
    return
  out.mkdir(parents=True, exist_ok=True)
  fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    if e.errno in (errno.EAGAIN, errno.EACCES):
      raise ConfigError(f"output folder {str(out)!r} is in use by another jaxunlearn run (pid {other}); wait for "
                        "it to finish or choose another --out") from None
    return  # no locks on this file system (e.g. some network mounts)
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  _LOCKS[key] = fd


def unlock_out(out: Path) -> None:
  """Releases :func:`lock_out`'s lock of ``out`` (if this process holds it)."""
  fd = _LOCKS.pop(str(out.resolve()), None)
  if fd is not None:
    os.close(fd)  # (closing releases the flock; the file stays, so no two runs ever lock different files)


def _differences(old: dict, new: dict) -> str:
  keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  parts = ["the data" if k == "data_sha256" else f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys]
  return ", ".join(parts[:4]) + (f" and {len(parts) - 4} more" if len(parts) > 4 else "")


def claim_out(p: Prepared) -> Prepared:
  """Claims ``p.out`` for this job before anything is compiled: locks it (:func:`lock_out`) and reads the
  ``results.json`` already there. None there, or ``--overwrite``: a fresh run. This same job's (same
  :func:`job_record` and :func:`data_digest`): its finished models are reused (``p.resume``; a complete one:
  nothing runs, ``p.reused``). Another job's, or one without a job record or unreadable: a ConfigError
  (nothing is overwritten without ``--overwrite``). Returns ``p`` with ``job`` / ``resume`` / ``reused`` set.
  """
  cfg = p.cfg
  lock_out(p.out)
  try:
    job = {**job_record(cfg), "data_sha256": data_digest(p)}
    path = p.out / "results.json"
    have = None
    if cfg.overwrite:
      shutil.rmtree(p.out / RESUME_DIR, ignore_errors=True)
    elif path.exists():
      fix = "use --overwrite to replace it, or choose another --out"
      try:
        have = json.loads(path.read_text())
      except (OSError, ValueError) as e:
        raise ConfigError(f"output folder {str(p.out)!r} holds an unreadable results.json "
                          f"({' '.join(str(e).split())[:200]}); {fix}") from None
      old = have.get("job") if isinstance(have, dict) else None
      if not isinstance(old, dict):
        raise ConfigError(f"output folder {str(p.out)!r} already holds the results.json of another run (no job "
                          f"record: another command or an older version); {fix}")
      if old != job:
        raise ConfigError(f"output folder {str(p.out)!r} holds the results of a different job "
                          f"({_differences(old, job)}); {fix}")
  except BaseException:
    unlock_out(p.out)
    raise
  for stale in p.out.glob("results.json.*.tmp"):
    stale.unlink(missing_ok=True)  # what a run killed mid-write left (we hold the lock: no writer is running)
  checkpoint.remove_stale_tmp(p.out / RESUME_DIR)
  p.job, p.reused = job, bool(have and have.get("complete") is True)
  p.resume = have
  return p


def _scale_defaults(cfg: RunConfig, split, num_classes: int, train_cfg: TrainConfig, method_cfgs: dict,
                    presets: dict) -> dict:
  """Replaces each method's config (not the oracle's) by :func:`jaxunlearn.unlearn.default_config`'s
  at the data's scale (the user's preset and --set still win); prints and returns the rules applied."""
  scale = jun.DataScale.of_split(split, num_classes, train_cfg.epochs, train_cfg.batch_size)
  out = {}
  for m in cfg.methods:
    if m == "retrain":
      continue
    ov = {k: v for mm, k, v in cfg.overrides if mm == m}
    with user_input():
      method_cfgs[m], choice = jun.default_config(m, scale, preset=presets.get(m), overrides=ov)
    out[m] = {"preset": choice.preset, "overrides": dict(choice.overrides), "rule": choice.rule}
    if cfg.progress:
      print(f"[defaults] {choice.rule}", file=sys.stderr, flush=True)
  return out


def forget_validation_set(p: Prepared) -> tuple[np.ndarray, np.ndarray, str]:
  """``(x_val, y_val, source)``: the held-out examples of the forget set's distribution that SCRUB+Rewind
  validates on: from the held-out TRAINING examples with ``--holdout`` (as the SCRUB code does), else
  from the test split (:func:`jaxunlearn.evals.forget_validation_index`)."""
  if p.holdout is None:
    val = forget_validation_index(p.ds, p.split)
    return p.ds.x_test[val], p.ds.y_test[val], f"test split ({len(val)} examples of the forget distribution)"
  x, y = p.holdout
  idx = forget_distribution_index(y, p.split, min_count=10)
  return x[idx], y[idx], f"held-out training examples (--holdout; {len(idx)} of the forget distribution)"


def _eval_sets(p: Prepared) -> dict:
  """The three evaluation splits, moved to the device once per job: ``{split: (x, y)}``."""
  ds, sp = p.ds, p.split
  return {"retain": (jnp.asarray(ds.x_train[sp.retain]), sp.y_train[sp.retain]),
          "forget": (jnp.asarray(ds.x_train[sp.forget]), sp.y_train[sp.forget]),
          "test": (jnp.asarray(ds.x_test), ds.y_test)}


def _evaluate_all(state: ModelState, sets: dict) -> tuple[dict, dict]:
  """One forward pass per split: ``({split: acc}, {split: evaluate(...) dict})``."""
  ev = {k: evaluate(state.model, state.params, state.batch_stats, x, y) for k, (x, y) in sets.items()}
  return {k: v["acc"] for k, v in ev.items()}, ev


def _finite_params(state: ModelState) -> bool:
  return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves((state.params, state.batch_stats)))


def _warn(results: dict, msg: str, progress: bool = True, *, key: str = "warnings") -> None:
  """Adds ``msg`` to ``results[key]`` (``warnings`` or ``notes``; printed again under
  :func:`format_table`) and prints it on stderr; once (a resumed run has its finished models' already)."""
  if msg in results.get(key, ()):
    return
  results.setdefault(key, []).append(msg)
  if progress:
    print(f"  {key[:-1]}: {msg}", file=sys.stderr, flush=True)


def _checked_acc(results: dict, name: str, state: ModelState, acc: dict, progress: bool = True) -> dict:
  """``acc``, or NaN accuracies (``null`` in results.json) and a warning when the model's weights or
  accuracies are not finite (e.g. ``--lr`` far too large): an argmax over NaN logits is not a result."""
  if _finite_params(state) and all(math.isfinite(v) for v in acc.values()):
    return acc
  _warn(results, health.nonfinite_warning(name), progress)
  return {k: float("nan") for k in acc}


def _log(p: Prepared, msg: str):
  if p.cfg.progress:
    print(msg, file=sys.stderr, flush=True)


def execute(p: Prepared, on_model: Callable[[dict], None] | None = None) -> dict:
  """Runs the job prepared by :func:`prepare`; returns the results dict.

  ``on_model(results)`` is called after each model (original, retrain, every method) with the
  results so far (:func:`run` writes them, so a killed run keeps every finished model's numbers).
  """
  cfg, ds, sp = p.cfg, p.ds, p.split
  key = jax.random.key(cfg.seed)
  all_idx = np.arange(len(ds.y_train))
  done = finished_models(p)  # an interrupted run of this job (claim_out): its finished models' entries
  results: dict[str, Any] = {
      "dataset": cfg.dataset, "model": cfg.model, "forget": cfg.forget, "seed": cfg.seed,
      "sizes": {"retain": int(len(sp.retain)), "forget": int(len(sp.forget)), "test": int(len(ds.y_test)),
                **({"holdout": int(len(p.holdout[1]))} if p.holdout is not None else {})},
      "models": {},
      "config": {"train": dataclasses.asdict(p.train_cfg), "width": cfg.width, "mask": cfg.mask,
                 "methods": {m: dataclasses.asdict(c) for m, c in p.method_cfgs.items()}},
      "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
      "executor": resolve_executor(cfg.executor, p.model),
      "defaults": p.defaults,
      **_job_entries(p),
  }
  carry_resumed(p, done, results)
  if eval_conventions(cfg.evals):  # which membership-inference convention each number is
    results["mia_convention"] = eval_conventions(cfg.evals)
  if ds.notes:  # what the loader changed in the input (e.g. channels-first images transposed)
    results["notes"] = list(ds.notes)
  _log(p, f"[jaxunlearn] {cfg.dataset}: {len(sp.retain)} retain / {len(sp.forget)} forget / "
          f"{len(ds.y_test)} test, model {cfg.model}, forget {cfg.forget}")
  reused_original = None
  if cfg.original is not None:
    original = p.original
    hist = {"seconds": 0.0, "compile_seconds": 0.0}
    results["original_checkpoint"] = str(cfg.original)
  elif "original" in done and (reused_original := _load_resume_original(p)) is not None:
    original = reused_original
  else:
    original, hist = train_model(p.model, p.train_cfg, ds.x_train, sp.y_train, all_idx,
                                 jax.random.fold_in(key, KEY_ORIGINAL), progress=cfg.progress, desc="original",
                                 executor=cfg.executor)
    if p.job is not None:  # kept until the run completes, so that a rerun after an interruption reuses it
      _save_resume_original(p, original)
  save = (lambda name, st: save_model(Path(cfg.save_models) / name, st, cfg, ds)) if cfg.save_models else None
  if save and cfg.original is None and reused_original is None:
    save("original", original)
  sets = _eval_sets(p)
  if cfg.forget.startswith("confuse:"):
    results["confused_classes"] = list(sp.classes)
  if "original" in done and (reused_original is not None or cfg.original is not None):
    results["models"]["original"] = done["original"]
    results["resumed"].append("original")
    _log(p, f"  original  {_fmt(done['original']['acc'])}  (finished before: reused)")
  else:
    acc, ev = _evaluate_all(original, sets)
    acc = _checked_acc(results, "original", original, acc, cfg.progress)
    n_orig = len(all_idx)
    results["models"]["original"] = {"acc": acc, "seconds": hist["seconds"],
                                     "compile_seconds": hist["compile_seconds"],
                                     "steps": p.train_cfg.epochs * steps_per_epoch(n_orig, p.train_cfg.batch_size)}
    _log(p, f"  original  {_fmt(acc)}  {hist['seconds']:.1f}s  {results['models']['original']['steps']} steps")

  val = forget_validation_index(ds, sp)
  heldout = evaluate(original.model, original.params, original.batch_stats, ds.x_test[val], ds.y_test[val])["acc"]
  x_val, y_val, results["forget_validation"] = forget_validation_set(p)
  # the original's initialisation key (train_model draws the initial weights from fold_in(key, 0)), for
  # methods that reset blocks to it (EU-k reset=saved); a loaded --original does not record it
  init_key = None if cfg.original is not None else jax.random.fold_in(jax.random.fold_in(key, KEY_ORIGINAL), 0)
  data = jun.UnlearnData.create(ds.x_train, sp.y_train, sp.retain, sp.forget, num_classes=ds.num_classes,
                                x_val=x_val, y_val=y_val, init_key=init_key)
  extra = EvalContext(p, sets["forget"][0], jax.random.fold_in(key, KEY_RANDOM_INIT))
  if results["models"]["original"] is not done.get("original"):
    results["models"]["original"].update(extra(ev, None))
  if on_model is not None:
    on_model(results)
  names = ("retrain",) + tuple(m for m in cfg.methods if m != "retrain")
  mask = None
  if cfg.mask is not None and not set(names) <= set(done):
    mask = _build_mask(cfg.mask, original, data, jax.random.fold_in(key, KEY_MASK))
  executor = resolve_executor(cfg.executor, p.model)
  for name in names:
    if name in done:  # finished by the interrupted run (same job, same data, same keys)
      results["models"][name] = done[name]
      results["resumed"].append(name)
      _log(p, f"  {name:<9} {_fmt(done[name]['acc'])}  (finished before: reused)")
      continue
    m = jun.get_method(name)
    use_mask = mask if (m.supports_mask and name != "retrain") else None
    state, metrics, secs, compile_secs, counted = _unlearn(m, original, data, method_key(key, name),
                                                         p.method_cfgs[name], use_mask, executor, cfg.progress)
    acc, ev = _evaluate_all(state, sets)
    acc = _checked_acc(results, name, state, acc, cfg.progress)
    if name != "retrain":  # collapse / not forgotten (the NaN warning is _checked_acc's)
      for w in health.model_warnings(name, acc, results["models"]["original"]["acc"], heldout_acc=heldout,
                                     whole_class=sp.whole_class, n_forget=len(sp.forget),
                                     trains=jun.trains(p.method_cfgs[name])):
        if w not in results.get("warnings", ()):
          _warn(results, w, cfg.progress)
    steps = counted.steps
    entry = {"acc": acc, "seconds": secs, "compile_seconds": compile_secs, "steps": steps}
    if not counted.exact:  # a step loop inside a traced lax.cond: its longer side was counted
      entry["steps_upper_bound"] = True
    if name != "retrain":
      entry["speedup_vs_retrain"] = results["models"]["retrain"]["seconds"] / max(secs, 1e-9)
      if entry["speedup_vs_retrain"] < 1:
        _warn(results, f"{name}: took longer than retraining (speed-up {entry['speedup_vs_retrain']:.2f}x; "
                       f"{'at most ' if not counted.exact else ''}{steps} optimizer steps vs retrain's {results['models']['retrain']['steps']})",
              p.cfg.progress, key="timing_notes")  # wall-clock based: kept apart from the deterministic notes
    entry["metrics"] = jsonable(metrics or {})
    entry.update(extra(ev, results["models"]["retrain"]["acc"] if name != "retrain" else None))
    results["models"][name] = entry
    if save:
      save(name, state)
    _log(p, f"  {name:<9} {_fmt(acc)}  {secs:.1f}s  {steps} steps")
    if on_model is not None:
      on_model(results)
  return results


def _job_entries(p: Prepared) -> dict:
  """results.json's record of the job: ``job`` (every setting, :func:`job_record`; with the data's digest
  when OUT was claimed) and ``command`` (the command line, when known)."""
  out = {"job": p.job if p.job is not None else job_record(p.cfg)}
  if p.cfg.command_line is not None:
    out["command"] = p.cfg.command_line
  return out


def _nan_for_null(v):
  """A results.json value read back: ``null`` (how :func:`jaxunlearn.atomic.jsonable` writes a NaN) -> NaN,
  in nested lists and dicts too (new containers: the input is not changed)."""
  if isinstance(v, dict):
    return {k: _nan_for_null(x) for k, x in v.items()}
  if isinstance(v, list):
    return [_nan_for_null(x) for x in v]
  return float("nan") if v is None else v


def finished_models(p: Prepared) -> dict:
  """``{name: entry}`` of the models an interrupted run of this job finished (``p.resume``, set by
  :func:`claim_out`), numbers read back as floats (every ``null`` -> NaN); empty for a fresh run."""
  if p.resume is None or p.resume.get("complete"):
    return {}
  done = {name: _nan_for_null(e) for name, e in (p.resume.get("models") or {}).items()}
  if done:
    _log(p, f"[jaxunlearn] resuming {str(p.out)!r}: {', '.join(done)} finished before (results.json); "
            "--overwrite starts over")
  return done


def carry_resumed(p: Prepared, done: dict, results: dict) -> None:
  """For a resumed run (``done``: :func:`finished_models`): ``results["resumed"]`` started (the reused models
  are appended as they are reached) and the finished models' warnings and timing notes carried over."""
  if not done:
    return
  results["resumed"] = []
  for k in ("warnings", "timing_notes"):
    if p.resume.get(k):
      results[k] = list(p.resume[k])


def _save_resume_original(p: Prepared, state: ModelState) -> None:
  """``OUT/.resume/original``: the original's weights (an orbax checkpoint, :mod:`jaxunlearn.checkpoint`), for a
  rerun after an interruption."""
  checkpoint.save(p.out / RESUME_DIR / "original", {"params": state.params, "batch_stats": state.batch_stats})


def _load_resume_original(p: Prepared) -> ModelState | None:
  """The original saved by :func:`_save_resume_original`; None (trained again) when it is missing or does
  not fit the model."""
  path = p.out / RESUME_DIR / "original"
  params, stats = jax.eval_shape(p.model.init, jax.random.key(0))
  try:
    tree = checkpoint.load(path, {"params": params, "batch_stats": stats})
  except ValueError:  # missing, unfinished, or another model's
    _log(p, f"  (no usable saved original in {str(path)!r}: training it again)")
    return None
  return ModelState(tree["params"], tree["batch_stats"], p.model)


def _unlearn(m, original, data, mkey, config, use_mask, executor: str = "scan", progress: bool = False):
  """Runs one method: ``(state, metrics, seconds, compile_seconds, counted)``.

  ``counted``: a :class:`jaxunlearn.train.StepCount` of the optimizer steps it took (counted by :func:`jaxunlearn.train.count_steps`: every step
  of the ``steps`` executor, or the static scan lengths of the compiled program).

  ``scan``: compiled ahead of time, so ``seconds`` is the unlearning work alone. ``steps`` (each step one
  jitted call): ``compile_seconds`` is the time to the first step (its compilation and any work before
  it, e.g. a mask's gradients), ``seconds`` the rest. A method without a training loop (:func:`jaxunlearn.unlearn.trains`:
  nothing to step, all its work would count as compilation) runs under ``scan``; one that still took no
  step (e.g. 0 epochs) is run again under ``scan``.
  """
  t0 = time.perf_counter()
  method = jun.make(m.name, config)
  if executor == "steps" and not jun.trains(config):
    executor = "scan"
  if executor == "steps":
    first = []
    bar = tqdm(desc=m.name, unit="step", disable=not progress, leave=False)  # steps are counted as they run

    def on_step():
      if not first:
        first.append(time.perf_counter())
      bar.update(1)

    with count_steps() as counted, use_executor("steps", on_step=on_step):
      state, metrics = method(original, data, mkey, mask=use_mask)
    jax.block_until_ready(state.params)
    bar.close()
    if not first:  # no step taken (e.g. 0 epochs): time it as one compiled program
      return _unlearn(m, original, data, mkey, config, use_mask, "scan", progress)
    t2 = time.perf_counter()
    return state, metrics, t2 - first[0], first[0] - t0, counted
  # compile ahead of time so that "seconds" is the unlearning work alone, comparable across methods
  with count_steps() as counted:
    lowered = jax.jit(method).lower(original, data, mkey, mask=use_mask)
  compiled = lowered.compile()
  t1 = time.perf_counter()
  state, metrics = compiled(original, data, mkey, mask=use_mask)
  jax.block_until_ready(state.params)
  secs = time.perf_counter() - t1
  return state, metrics, secs, t1 - t0, counted


# fold_in data of the job's fixed PRNG keys; 0 .. _RESERVED - 1 are never a method's
KEY_ORIGINAL, KEY_MASK, KEY_RANDOM_INIT = 1, 3, 4
_RESERVED = 16


def method_key_data(name: str) -> int:
  """The ``fold_in`` data of method ``name``'s key: ``crc32(name) mod 2**31`` (the derivation the
  committed results used), moved to ``2**31 + crc`` when it would fall among the reserved fixed
  data ``[0, 16)``; so a method's key never equals the original's, the mask's or ZRF's."""
  c = zlib.crc32(name.encode()) % 2**31
  return c if c >= _RESERVED else 2**31 + c


def method_key(key, name: str):
  """Method ``name``'s PRNG key in a job with key ``key``."""
  return jax.random.fold_in(key, method_key_data(name))


def _check_method_keys(names) -> None:
  seen: dict[int, str] = {}
  for n in names:
    d = method_key_data(n)
    if d in seen:
      raise ConfigError(f"methods {seen[d]!r} and {n!r} would get the same PRNG key (crc32 collision); rename one")
    seen[d] = n


def _build_mask(spec: str, original: ModelState, data, key):
  kind, _, frac = spec.partition(":")
  from jaxunlearn.unlearn import masks  # arrives with the localisation work
  return masks.build_mask(kind, original, data, float(frac))


def _fmt(acc: dict) -> str:
  return "  ".join(f"{k} {100 * v:5.1f}%" for k, v in acc.items())


def format_table(results: dict) -> str:
  """A plain-text table of accuracies and times."""
  rows = [f"{'model':<14}{'retain':>8}{'forget':>8}{'test':>8}{'seconds':>9}{'speed-up':>9}{'compile s':>10}"
          f"{'steps':>8}"]

  def pct(v):  # NaN (or null read back from results.json): not a result, never "0.0"
    return f"{'nan':>8}" if v is None or not math.isfinite(v) else f"{100 * v:8.1f}"

  for name, e in results["models"].items():
    a = e["acc"]
    su = e.get("speedup_vs_retrain")
    rows.append(f"{name:<14}{pct(a['retain'])}{pct(a['forget'])}{pct(a['test'])}"
                f"{e['seconds']:9.2f}{(f'{su:8.1f}x' if su else ''):>9}{e.get('compile_seconds', 0.0):10.1f}"
                f"{('<=' if e.get('steps_upper_bound') else '') + str(e.get('steps', '')):>8}")
  rows.append("(accuracy in %; seconds exclude compilation; speed-up = retrain seconds / method seconds; "
              "steps = optimizer steps)")
  rows += _format_evals(results)
  rows += [f"note: {w}" for w in (*results.get("notes", ()), *results.get("timing_notes", ()))]
  rows += [f"warning: {w}" for w in results.get("warnings", ())]
  return "\n".join(rows)


def _format_evals(results: dict) -> list[str]:
  """The ``--eval`` numbers with a table column (those with a legend), one row per model, and the legend
  lines naming each one's convention; nothing when none was computed."""
  models = results["models"]
  cols = [n for n, e in EVALS.items() if e.legend and any(n in m for m in models.values())]
  if not cols:
    return []

  def cell(m, n):
    if n not in m:
      return f"{'':>8}"
    v = m[n]  # NaN (null read back from results.json): not a result
    return f"{'nan':>8}" if v is None or not math.isfinite(v) else f"{v:8.3f}"

  rows = ["", f"{'model':<14}" + "".join(f"{n:>8}" for n in cols)]
  rows += [f"{name:<14}" + "".join(cell(m, n) for n in cols) for name, m in models.items()]
  return rows + [f"({EVALS[n].legend})" for n in cols]


def write_outputs(p: Prepared, results: dict) -> None:
  """``OUT/results.json`` (atomic) and ``OUT/accuracy.png`` (retain/forget/test bars of every model with
  finite accuracies, beside the table's ``--eval`` numbers; no plot when there is none)."""
  from jaxunlearn import plotting

  write_json_atomic(p.out / "results.json", results)
  # models whose accuracies are not results (NaN weights) are left out of the plot
  bars = {n: e["acc"] for n, e in results["models"].items() if all(math.isfinite(v) for v in e["acc"].values())}
  if bars:
    scores = {n: {m: e[n] for m, e in results["models"].items() if m in bars and n in e}
              for n, ev in EVALS.items() if ev.legend}  # the --eval columns of the table
    plotting.plot_accuracy_bars(bars, p.out / "accuracy.png", scores={n: v for n, v in scores.items() if v},
                                title=f"{plotting.dataset_label(results['dataset'])} / {results['model']} / "
                                      f"forget {results['forget']}")


def execute_and_write(p: Prepared, extra: dict | None = None, *, execute_fn: Callable = execute,
                      write_fn: Callable = write_outputs) -> dict:
  """:func:`execute` + :func:`write_outputs`, rewriting ``OUT/results.json`` (atomically) after every
  model with ``"complete": false``, so a killed run keeps the numbers of every model it finished;
  the final file has ``"complete": true`` and the plot. ``extra`` entries are added to the results.
  ``execute_fn(p, on_model=)`` / ``write_fn(p, results)`` replace the two (``--seeds``:
  ``jaxunlearn.sweeps.run_seeds`` / ``write_seeds``)."""

  if p.reused:  # claim_out found this job's complete results
    _log(p, f"[jaxunlearn] {str(p.out / 'results.json')!r} already holds this job's complete results: nothing "
            "to run (--overwrite runs it again)")
    unlock_out(p.out)
    return p.resume
  extra = {**_job_entries(p), **(extra or {})}

  def partial(results):
    write_json_atomic(p.out / "results.json", {**results, **extra, "complete": False})

  try:
    results = execute_fn(p, on_model=partial)
    results.update(extra)
    results["complete"] = True
    write_fn(p, results)
    if p.job is not None:
      shutil.rmtree(p.out / RESUME_DIR, ignore_errors=True)
  finally:
    if p.job is not None:
      unlock_out(p.out)
  return results


def run(cfg: RunConfig) -> dict:
  """prepare + :func:`claim_out` + :func:`execute_and_write`: ``OUT/results.json`` and ``OUT/accuracy.png``
  (resuming an interrupted run of the same job; refusing another job's results without ``overwrite``)."""
  return execute_and_write(claim_out(prepare(cfg)))
