"""The main job: train the original and the retrained oracle, unlearn, evaluate, write results.json.

Library code behind ``jaxunlearn run``; every check of the user's input happens in
:func:`prepare` before anything is compiled or written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn import models as jmodels
from jaxunlearn import unlearn as jun
from jaxunlearn.atomic import jsonable
from jaxunlearn.atomic import write_json_atomic
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainConfig
from jaxunlearn.train import evaluate
from jaxunlearn.train import train_model

EVAL_OPTIONS = ("mia", "zrf", "tow")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything ``jaxunlearn run`` needs; defaults are the embedded digits job."""

  dataset: str = "digits"
  model: str = "cnn"
  width: float = 1.0
  forget: str = "random:0.1"
  methods: tuple[str, ...] = ("finetune",)
  epochs: int = 15
  batch_size: int = 64
  lr: float = 0.05
  optimizer: str = "sgd"
  weight_decay: float = 5e-4
  augment: bool = False
  seed: int = 0
  out: str = "out/run"
  overrides: tuple[tuple[str, str, str], ...] = ()   # (method, option, value)
  presets: tuple[tuple[str, str], ...] = ()          # (method, preset)
  mask: str | None = None                            # del:0.3 | salun:0.5
  evals: tuple[str, ...] = ()
  train_subset: int | None = None
  test_subset: int | None = None
  data_dir: str | None = None
  download: bool = False
  progress: bool = True
  save_models: str | None = None   # folder: every trained/unlearned model saved there with orbax
  original: str | None = None      # checkpoint of an original model (from --save-models) to reuse


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


def check_out_dir(out: str) -> Path:
  """Checks (writing nothing that stays) that ``out`` is, or can become, a writable folder."""
  p = Path(out)
  if p.exists() and not p.is_dir():
    raise ValueError(f"output folder {out!r} exists and is not a folder")
  probe = p
  while not probe.exists():
    probe = probe.parent
  try:  # a real probe (os.access says yes to root even on read-only file systems); leaves nothing
    fd, tmp = tempfile.mkstemp(dir=probe, prefix=".jaxunlearn-probe-")
    os.close(fd)
    os.unlink(tmp)
  except OSError as e:
    raise ValueError(f"output folder {out!r} is not writable ({str(probe)!r}: {e.strerror})") from None
  return p


SEED_LIMIT = 2**32  # seeds are uint32 for jax.random.key and numpy's generators


def check_int(name: str, v, lo: int, hi: int | None = None, *, allow_none: bool = False) -> None:
  """``v`` is an int in ``[lo, hi)`` (``hi=None``: no upper bound), or None when allowed.

  Raises:
    ValueError: one line naming ``name`` and the bad value.
  """
  if v is None and allow_none:
    return
  ok = not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= lo and (hi is None or v < hi)
  if not ok:
    bound = f">= {lo}" if hi is None else f"in [{lo}, {'2**32' if hi == SEED_LIMIT else hi})"
    raise ValueError(f"{name} must be an int {bound}, got {v!r}")


def prepare(cfg: RunConfig) -> Prepared:
  """Validates every input and loads the data; compiles and writes nothing.

  Raises:
    ValueError: one line naming the bad value.
  """
  if cfg.model not in jmodels.MODEL_NAMES:
    raise ValueError(f"unknown model {cfg.model!r}; choose from {', '.join(jmodels.MODEL_NAMES)}")
  check_int("--seed", cfg.seed, 0, SEED_LIMIT)
  check_int("--epochs", cfg.epochs, 1)
  check_int("--train-subset", cfg.train_subset, 1, allow_none=True)
  check_int("--test-subset", cfg.test_subset, 1, allow_none=True)
  if not cfg.methods:
    raise ValueError("no --method given")
  for m in cfg.methods:
    jun.get_method(m)
  for e in cfg.evals:
    if e not in EVAL_OPTIONS:
      raise ValueError(f"unknown --eval option {e!r}; choose from {', '.join(EVAL_OPTIONS)}")
  if len(set(cfg.methods)) != len(cfg.methods):
    raise ValueError(f"a method is given twice in {list(cfg.methods)}")
  jdata.parse_forget_spec(cfg.forget)
  if cfg.mask is not None:
    kind, _, frac = cfg.mask.partition(":")
    if kind not in ("del", "salun"):
      raise ValueError(f"unknown mask {cfg.mask!r}; use del:FRAC or salun:FRAC")
    try:
      f = float(frac)
    except ValueError:
      raise ValueError(f"mask {cfg.mask!r}: fraction {frac!r} is not a number") from None
    if not 0.0 < f <= 1.0:
      raise ValueError(f"mask {cfg.mask!r}: fraction {f} must lie in (0, 1]")
  train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
                          weight_decay=cfg.weight_decay, augment=cfg.augment)
  method_cfgs = {}
  presets = dict(cfg.presets)
  for m, _ in cfg.presets:
    if m not in cfg.methods:
      raise ValueError(f"--preset for {m!r}, which is not among --method {list(cfg.methods)}")
  for m, k, _ in cfg.overrides:
    if m not in cfg.methods and m != "retrain":
      raise ValueError(f"--set {m}.{k}: method {m!r} is not among --method {list(cfg.methods)}")
  for m in set(cfg.methods) | {"retrain"}:
    ov = {k: v for mm, k, v in cfg.overrides if mm == m}
    method_cfgs[m] = jun.make_config(m, ov, preset=presets.get(m))
  # the oracle trains exactly like the original, on the retain set
  # (user --set retrain.x=... still wins)
  base = {k: getattr(train_cfg, k) for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "augment")}
  retrain_ov = {k for mm, k, _ in cfg.overrides if mm == "retrain"}
  method_cfgs["retrain"] = dataclasses.replace(
      method_cfgs["retrain"], **{k: v for k, v in base.items() if k not in retrain_ov})
  out = check_out_dir(cfg.out)
  if cfg.save_models is not None:
    check_out_dir(cfg.save_models)
  if cfg.original is not None:
    _check_original(cfg)
  ds = jdata.load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download)
  if cfg.train_subset is not None or cfg.test_subset is not None:
    ds = ds.subset(cfg.train_subset, cfg.test_subset, seed=cfg.seed)
  split = jdata.make_forget_split(cfg.forget, ds.y_train, num_classes=ds.num_classes, seed=cfg.seed)
  if cfg.batch_size > len(split.retain):
    raise ValueError(f"batch size {cfg.batch_size} is larger than the retain set ({len(split.retain)} examples)")
  model = jmodels.create_model(cfg.model, num_classes=ds.num_classes, input_shape=ds.image_shape,
                               mean=ds.mean, std=ds.std, width=cfg.width)
  n_blocks = len(model.block_names())
  for m, mc in method_cfgs.items():
    if getattr(mc, "k", 0) > n_blocks:
      raise ValueError(f"{m}.k={mc.k}: model {cfg.model!r} has only {n_blocks} blocks {model.block_names()}")
  original = load_model(cfg.original, model) if cfg.original is not None else None
  return Prepared(cfg, ds, split, model, train_cfg, method_cfgs, out, original)


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
  results: dict[str, Any] = {
      "dataset": cfg.dataset, "model": cfg.model, "forget": cfg.forget, "seed": cfg.seed,
      "sizes": {"retain": int(len(sp.retain)), "forget": int(len(sp.forget)), "test": int(len(ds.y_test))},
      "models": {},
      "config": {"train": dataclasses.asdict(p.train_cfg), "width": cfg.width, "mask": cfg.mask,
                 "methods": {m: dataclasses.asdict(c) for m, c in p.method_cfgs.items()}},
      "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
  }
  _log(p, f"[jaxunlearn] {cfg.dataset}: {len(sp.retain)} retain / {len(sp.forget)} forget / "
          f"{len(ds.y_test)} test, model {cfg.model}, forget {cfg.forget}")
  if cfg.original is not None:
    original = p.original
    hist = {"seconds": 0.0, "compile_seconds": 0.0}
    results["original_checkpoint"] = str(cfg.original)
  else:
    original, hist = train_model(p.model, p.train_cfg, ds.x_train, sp.y_train, all_idx,
                                 jax.random.fold_in(key, 1), progress=cfg.progress, desc="original")
  save = (lambda name, st: save_model(Path(cfg.save_models) / name, st, cfg, ds)) if cfg.save_models else None
  if save and cfg.original is None:
    save("original", original)
  sets = _eval_sets(p)
  acc, ev = _evaluate_all(original, sets)
  results["models"]["original"] = {"acc": acc, "seconds": hist["seconds"],
                                   "compile_seconds": hist["compile_seconds"]}
  if cfg.forget.startswith("confuse:"):
    results["confused_classes"] = list(sp.classes)
  _log(p, f"  original  {_fmt(acc)}  {hist['seconds']:.1f}s")

  val = forget_validation_index(ds, sp)
  data = jun.UnlearnData.create(ds.x_train, sp.y_train, sp.retain, sp.forget, num_classes=ds.num_classes,
                                x_val=ds.x_test[val], y_val=ds.y_test[val])
  extra = _Extras(p, sets["forget"][0], jax.random.fold_in(key, 4))
  results["models"]["original"].update(extra(ev, None))
  if on_model is not None:
    on_model(results)
  mask = None
  if cfg.mask is not None:
    mask = _build_mask(cfg.mask, original, data, jax.random.fold_in(key, 3))
  for name in ("retrain",) + tuple(m for m in cfg.methods if m != "retrain"):
    m = jun.get_method(name)
    use_mask = mask if (m.supports_mask and name != "retrain") else None
    mkey = jax.random.fold_in(key, zlib.crc32(name.encode()) % (2**31))
    t0 = time.perf_counter()
    # compile ahead of time so that "seconds" is the unlearning work alone, comparable across methods
    compiled = jax.jit(m.fn, static_argnames=("config",)).lower(
        original, data, mkey, p.method_cfgs[name], mask=use_mask).compile()
    t1 = time.perf_counter()
    state, metrics = compiled(original, data, mkey, mask=use_mask)
    jax.block_until_ready(state.params)
    secs = time.perf_counter() - t1
    acc, ev = _evaluate_all(state, sets)
    entry = {"acc": acc, "seconds": secs, "compile_seconds": t1 - t0}
    if name != "retrain":
      entry["speedup_vs_retrain"] = results["models"]["retrain"]["seconds"] / max(secs, 1e-9)
    entry["metrics"] = jsonable(metrics or {})
    entry.update(extra(ev, results["models"]["retrain"]["acc"] if name != "retrain" else None))
    results["models"][name] = entry
    if save:
      save(name, state)
    _log(p, f"  {name:<9} {_fmt(acc)}  {secs:.1f}s")
    if on_model is not None:
      on_model(results)
  return results


_META = "jaxunlearn_model.json"


def save_model(path: Path, state: ModelState, cfg: RunConfig, ds: jdata.Dataset) -> None:
  """Saves a model's params and batch statistics with orbax, plus what is needed to rebuild it."""
  from jaxunlearn import checkpoint

  checkpoint.save(path / "state", {"params": state.params, "batch_stats": state.batch_stats})
  meta = {"model": cfg.model, "width": cfg.width, "dataset": cfg.dataset, "num_classes": ds.num_classes,
          "input_shape": list(ds.image_shape), "forget": cfg.forget, "seed": cfg.seed,
          "train_subset": cfg.train_subset}
  write_json_atomic(path / _META, meta)


def _check_original(cfg: RunConfig) -> None:
  path = Path(cfg.original)
  meta_path = path / _META
  if not meta_path.is_file():
    raise ValueError(f"--original {cfg.original!r} is not a saved model (no {_META}; save one with --save-models)")
  try:
    meta = json.loads(meta_path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"--original {cfg.original!r}: unreadable {_META} ({e})") from None
  # The original must have been trained on THIS run's training set (same data, subset and, where the
  # seed picks the subset or the confused labels, same seed); only the forget set may differ.
  confused = cfg.forget.startswith("confuse:") or str(meta.get("forget", "")).startswith("confuse:")
  same = ["model", "width", "dataset"]
  if "train_subset" in meta:  # saved by this version (older metadata did not record it)
    same.append("train_subset")
  if cfg.train_subset is not None or meta.get("train_subset") is not None or confused:
    same.append("seed")
  if confused:
    same.append("forget")
  for k in same:
    if meta.get(k) != getattr(cfg, k):
      flag = "--" + k.replace("_", "-")
      raise ValueError(f"--original {cfg.original!r} was trained with {flag} {meta.get(k)!r}, not "
                       f"{getattr(cfg, k)!r}: it must have been trained on this run's training set")


def load_model(path: str | Path, model: jmodels.Model) -> ModelState:
  """Loads a model saved by :func:`save_model` into ``model``'s structure; checks it is finite."""
  from jaxunlearn import checkpoint

  params, stats = jax.eval_shape(model.init, jax.random.key(0))
  tree = checkpoint.load(Path(path) / "state", {"params": params, "batch_stats": stats})
  state = ModelState(tree["params"], tree["batch_stats"], model)
  jun.check_finite_params(state)
  return state


def forget_validation_index(ds: jdata.Dataset, sp: jdata.ForgetSplit) -> np.ndarray:
  """Indices into the test split of held-out examples of the forget set's distribution (SCRUB+Rewind's
  forget-validation set, the simple MIA's reference): the forget classes' test examples for
  class-type specs, all test examples for ``random:`` and ``confuse:``."""
  if sp.classes and not sp.spec.startswith("confuse:"):
    keep = np.flatnonzero(np.isin(ds.y_test, sp.classes))
    if keep.size:
      return keep
  return np.arange(len(ds.y_test))


class _Extras:
  """Per-model extra evaluations (IC error for confuse specs, simple MIA, ZRF, ToW), computed from the
  per-split evaluations the job already made: no further forward pass."""

  def __init__(self, p: Prepared, x_forget, key):
    self.p = p
    ds, sp = p.ds, p.split
    self.random_logits = None
    if "zrf" in p.cfg.evals:
      params, stats = p.model.init(key)
      self.random_logits = evaluate(p.model, params, stats, x_forget, sp.y_train[sp.forget])["logits"]
    self.mia_ref = forget_validation_index(ds, sp)
    if len(self.mia_ref) < 10:  # too few held-out examples of those classes for a 10-split attack
      self.mia_ref = np.arange(len(ds.y_test))
    self.ab = np.flatnonzero(np.isin(ds.y_test, sp.classes)) if sp.spec.startswith("confuse:") else None

  def __call__(self, ev: dict, retrain_acc) -> dict:
    from jaxunlearn import metrics as jmet
    from jaxunlearn.mia import simple_mia

    p, ds, sp = self.p, self.p.ds, self.p.split
    out: dict[str, Any] = {}
    ev_f, ev_t = ev["forget"], ev["test"]
    if "tow" in p.cfg.evals and retrain_acc is not None:
      out["tow"] = float(jmet.tow({k: v["acc"] for k, v in ev.items()}, retrain_acc))
    if self.ab is not None:
      a, b = sp.classes
      ic_test = jmet.interclass_confusion(ev_t["logits"][self.ab], ds.y_test[self.ab], a, b)
      # the correct labels of the confused examples
      ic_forget = jmet.interclass_confusion(ev_f["logits"], ds.y_train[sp.forget], a, b)
      out["ic"] = {"test_error": ic_test.error, "test_count": ic_test.count,
                   "forget_error": ic_forget.error, "forget_count": ic_forget.count}
    if "mia" in p.cfg.evals:
      # forget losses vs held-out losses of the same classes, as in the SCRUB code
      out["mia"] = float(simple_mia(ev_f["losses"], ev_t["losses"][self.mia_ref], seed=p.cfg.seed))
    if "zrf" in p.cfg.evals:
      out["zrf"] = float(jmet.zrf(ev_f["logits"], self.random_logits))
    return out


def _build_mask(spec: str, original: ModelState, data, key):
  kind, _, frac = spec.partition(":")
  from jaxunlearn.unlearn import masks  # arrives with the localisation work
  return masks.build_mask(kind, original, data, float(frac))


def _fmt(acc: dict) -> str:
  return "  ".join(f"{k} {100 * v:5.1f}%" for k, v in acc.items())


def format_table(results: dict) -> str:
  """A plain-text table of accuracies and times."""
  rows = [f"{'model':<14}{'retain':>8}{'forget':>8}{'test':>8}{'seconds':>9}{'speed-up':>9}{'compile s':>10}"]
  for name, e in results["models"].items():
    a = e["acc"]
    su = e.get("speedup_vs_retrain")
    rows.append(f"{name:<14}{100 * a['retain']:8.1f}{100 * a['forget']:8.1f}{100 * a['test']:8.1f}"
                f"{e['seconds']:9.2f}{(f'{su:8.1f}x' if su else ''):>9}{e.get('compile_seconds', 0.0):10.1f}")
  rows.append("(accuracy in %; seconds exclude compilation; speed-up = retrain seconds / method seconds)")
  return "\n".join(rows)


def write_outputs(p: Prepared, results: dict) -> None:
  """``OUT/results.json`` (atomic) and ``OUT/accuracy.png`` (retain/forget/test bars per model)."""
  from jaxunlearn import plotting

  write_json_atomic(p.out / "results.json", results)
  plotting.plot_accuracy_bars({n: e["acc"] for n, e in results["models"].items()}, p.out / "accuracy.png",
                              title=f"{results['dataset']} / {results['model']} / forget {results['forget']}")


def execute_and_write(p: Prepared) -> dict:
  """:func:`execute` + :func:`write_outputs`, rewriting ``OUT/results.json`` (atomically) after every
  model with ``"complete": false``, so a killed run keeps the numbers of every model it finished;
  the final file has ``"complete": true`` and the plot."""

  def partial(results):
    write_json_atomic(p.out / "results.json", {**results, "complete": False})

  results = execute(p, on_model=partial)
  results["complete"] = True
  write_outputs(p, results)
  return results


def run(cfg: RunConfig) -> dict:
  """prepare + :func:`execute_and_write`: ``OUT/results.json`` and ``OUT/accuracy.png``."""
  return execute_and_write(prepare(cfg))
