"""Saved models of ``jaxunlearn run`` (``--save-models``): their orbax state and metadata, loading one,
and the checks before one is reused as ``--original``."""

from __future__ import annotations

import json
from pathlib import Path

import jax

from jaxunlearn import data as jdata
from jaxunlearn import models as jmodels
from jaxunlearn import unlearn as jun
from jaxunlearn.atomic import write_json_atomic
from jaxunlearn.errors import ConfigError
from jaxunlearn.train import ModelState

_META = "jaxunlearn_model.json"


def save_model(path: Path, state: ModelState, cfg, ds: jdata.Dataset) -> None:
  """Saves a model's params and batch statistics with orbax, plus what is needed to rebuild it."""
  from jaxunlearn import checkpoint

  checkpoint.save(path / "state", {"params": state.params, "batch_stats": state.batch_stats})
  meta = {"model": cfg.model, "width": cfg.width, "dataset": cfg.dataset, "num_classes": ds.num_classes,
          "input_shape": list(ds.image_shape), "forget": cfg.forget, "seed": cfg.seed,
          "train_subset": cfg.train_subset, "train": {k: getattr(cfg, k) for k in _TRAIN_KEYS}}
  write_json_atomic(path / _META, meta)


# the training settings of a from-scratch model (the original; the oracle copies them)
_TRAIN_KEYS = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "augment")


def check_original(cfg) -> None:
  """``cfg.original`` (a folder saved by :func:`save_model`) was trained on this run's training set with
  this run's training settings; else a one-line :class:`~jaxunlearn.errors.ConfigError`."""
  path = Path(cfg.original)
  meta_path = path / _META
  if not meta_path.is_file():
    raise ConfigError(f"--original {cfg.original!r} is not a saved model (no {_META}; save one with --save-models)")
  try:
    meta = json.loads(meta_path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"--original {cfg.original!r}: unreadable {_META} ({e})") from None
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
      raise ConfigError(f"--original {cfg.original!r} was trained with {flag} {meta.get(k)!r}, not "
                       f"{getattr(cfg, k)!r}: it must have been trained on this run's training set")
  # The retrained oracle trains with this run's settings, and results.json records them as the
  # original's: a checkpoint trained otherwise is refused (not silently re-labelled). Metadata saved
  # before these were recorded has no "train" entry and is not checked.
  saved = meta.get("train")
  if isinstance(saved, dict):
    for k in _TRAIN_KEYS:
      if k in saved and saved[k] != getattr(cfg, k):
        flag = "--" + k.replace("_", "-")
        raise ConfigError(f"--original {cfg.original!r} was trained with {flag} {saved[k]!r}, not "
                          f"{getattr(cfg, k)!r}: give the settings it was trained with (the oracle retrains "
                          "with them)")


def load_model(path: str | Path, model: jmodels.Model) -> ModelState:
  """Loads a model saved by :func:`save_model` into ``model``'s structure; checks it is finite."""
  from jaxunlearn import checkpoint

  params, stats = jax.eval_shape(model.init, jax.random.key(0))
  tree = checkpoint.load(Path(path) / "state", {"params": params, "batch_stats": stats})
  state = ModelState(tree["params"], tree["batch_stats"], model)
  jun.check_finite_params(state)
  return state
