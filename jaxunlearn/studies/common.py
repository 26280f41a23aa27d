"""What the three many-model studies share: their config base, input checks, shadow-call settings, ROC summaries and output."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import jax

from jaxunlearn import many
from jaxunlearn.atomic import write_json_atomic
from jaxunlearn.config import JobConfig
from jaxunlearn.config import check_int
from jaxunlearn.config import check_out_dir
from jaxunlearn.config import refuse_saved_reset
from jaxunlearn.errors import ConfigError
from jaxunlearn.errors import user_input
from jaxunlearn.train import TrainConfig

__all__ = ("StudyConfig", "check_study", "format_attacks", "format_result", "method_config")


@dataclasses.dataclass(frozen=True)
class StudyConfig(JobConfig):
  """:class:`jaxunlearn.config.JobConfig` (with its defaults, as every front end) plus how the many
  models run.

  Attributes:
    chunk_size: models per compiled call (default all).
    strategy: ``vmap`` | ``sequential`` | group size | ``auto`` (see :mod:`jaxunlearn.many`).
    checkpoint_dir: resumable orbax checkpoints of every group of models below it.
  """

  chunk_size: int | None = None
  strategy: str | int = "vmap"
  checkpoint_dir: str | None = None


def check_study(cfg: StudyConfig, cls: type) -> tuple[TrainConfig, Path]:
  """Checks the fields every study has (nothing compiled or written): ``(train config, out folder)``."""
  if not isinstance(cfg, cls):
    raise TypeError(f"config must be a {cls.__name__}, got {type(cfg).__name__}")
  tcfg = cfg.check()
  check_int("chunk_size", cfg.chunk_size, 1, allow_none=True)
  check_int("train_subset", cfg.train_subset, 8, allow_none=True)
  with user_input():
    many.check_strategy(cfg.strategy)
  if cfg.checkpoint_dir is not None:
    check_out_dir(cfg.checkpoint_dir, "checkpoint folder")
  return tcfg, check_out_dir(cfg.out)


def check_targets(cfg) -> None:
  check_int("num_models", cfg.num_models, 4)
  check_int("targets", cfg.targets, 1, allow_none=True)
  if cfg.targets is not None and cfg.targets > cfg.num_models:
    raise ConfigError(f"targets ({cfg.targets}) cannot exceed num_models ({cfg.num_models})")


def method_config(method: str, overrides, preset, train_config: TrainConfig | None = None):
  """The method's config from ``(option, value)`` overrides (``option`` may be ``method.option``).

  ``retrain`` with a ``train_config`` is :func:`retrain_recipe`: the oracle trains as the study's models
  train from scratch (its epochs, batch size, optimizer and augmentation), not with ``RetrainConfig``'s
  defaults; options the overrides set still win."""
  from jaxunlearn import unlearn as jun

  ov = _user_overrides(method, overrides)
  with user_input():
    mcfg = jun.make_config(method, ov, preset=preset)
  if method == "retrain" and train_config is not None:
    mcfg = retrain_recipe(mcfg, train_config, keep=ov)
  refuse_saved_reset({method: mcfg}, "the lira / ulira / challenge studies (many models in one program)")
  return mcfg


def _user_overrides(method: str, overrides) -> dict:
  """``{option: value}`` from ``(option, value)`` pairs (``option`` may be ``method.option``)."""
  from jaxunlearn import unlearn as jun

  with user_input():
    jun.get_method(method)
  ov = {}
  for item in overrides:
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
      raise ConfigError(f"method override {item!r} must be (option, value)")
    k, v = item
    if "." in k:
      m, k = k.split(".", 1)
      if m != method:
        raise ConfigError(f"--set {m}.{k}: method {m!r} is not the chosen method {method!r}")
    ov[k] = v
  return ov


def scaled_method_config(cfg, scale, train_config: TrainConfig):
  """``(config, defaults)``: the study's method config from the data-scale rules of
  :func:`jaxunlearn.unlearn.default_config` at ``scale`` (a ``DataScale``), as ``jaxunlearn run`` and
  ``tune`` start every method (the user's ``--preset`` and ``--set`` still win), so a study runs the
  method ``run`` would. ``defaults`` is the rule applied (``{"preset", "overrides", "rule"}``, printed as a
  ``[defaults]`` line), or None for ``retrain``, which trains with the study's recipe."""
  from jaxunlearn import unlearn as jun

  if cfg.method == "retrain":
    return method_config(cfg.method, cfg.overrides, cfg.preset, train_config), None
  ov = _user_overrides(cfg.method, cfg.overrides)
  with user_input():
    mcfg, choice = jun.default_config(cfg.method, scale, preset=cfg.preset, overrides=ov)
  refuse_saved_reset({cfg.method: mcfg}, "the lira / ulira / challenge studies (many models in one program)")
  log(cfg, f"[defaults] {choice.rule}")
  return mcfg, {"preset": choice.preset, "overrides": dict(choice.overrides), "rule": choice.rule}


def retrain_recipe(config, train_config: TrainConfig, keep=()):
  """``retrain``'s ``config`` with ``train_config``'s recipe (epochs, batch size, augmentation and every
  optimizer field), as ``jaxunlearn run`` trains its oracle: "retrain" means the same training everywhere.
  Options named in ``keep`` (the user's ``--set retrain.X``) keep ``config``'s values."""
  from jaxunlearn import unlearn as jun

  recipe = {"epochs": train_config.epochs, "batch_size": train_config.batch_size, "augment": train_config.augment,
            **{f.name: getattr(train_config.optim, f.name) for f in dataclasses.fields(train_config.optim)}}
  return jun.replace(config, **{k: v for k, v in recipe.items() if k not in keep})


def check_model(method: str, model) -> None:
  """One line (ConfigError) when ``method`` cannot run on ``model`` (e.g. ct on a model without
  convolutions), before anything trains."""
  from jaxunlearn import unlearn as jun

  with user_input():
    jun.check_model(method, model)


def ckpt(cfg: StudyConfig, name: str):
  return None if cfg.checkpoint_dir is None else os.path.join(cfg.checkpoint_dir, name)


def shadow_kw(cfg: StudyConfig, tcfg: TrainConfig, model, x, y, num_models: int, groups: tuple[str, ...]) -> dict:
  """``chunk_size`` / ``strategy`` for every shadow call of a study; ``"auto"`` is resolved once
  (or taken from any of the study's checkpoint ``groups`` being resumed) so training, unlearning
  and prediction agree."""
  folders = [] if cfg.checkpoint_dir is None else [ckpt(cfg, g) for g in groups]
  strategy = many.resolve_strategy(cfg.strategy, model, tcfg, (x, y), chunk_size=cfg.chunk_size,
                                     num_models=num_models, checkpoint_dir=folders, executor=cfg.executor,
                                     log=lambda t: log(cfg, f"[strategy] {t}"))
  return dict(chunk_size=cfg.chunk_size, strategy=strategy)


def log(cfg: StudyConfig, msg: str):
  if cfg.progress:
    print(msg, file=sys.stderr, flush=True)


def write(out: Path, results: dict) -> None:
  """results.json, written atomically; in a multi-host run only process 0 writes."""
  if jax.process_index() == 0:
    write_json_atomic(out / "results.json", results)


def versions() -> dict:
  return {"jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count(),
          "processes": jax.process_count()}


# How the lira / ulira studies read their tables (written into every results.json, printed under
# every table). Defaults: TPR at FPR <= target (``metrics.tpr_at_fpr``, strict=False; the LiRA reference
# reads FPR < target: ``tpr_strict``) and LiRA's "ours" convention (``mia.lira``: all shadow models,
# per-side pooled fixed sigma, one-sided cdf offline test) with median centres.
TPR_READOUT = "fpr <= target"
LIRA_CONVENTION = "ours"
CONVENTIONS = {
    "ours": "all shadow models, pooled OUT sigma, one-sided cdf offline",
    "reference": "first min-count shadow models, IN sigma for both sides, -log pdf offline (plot.py)",
}
STATISTICS = ("median", "mean")


@dataclasses.dataclass(frozen=True)
class AttackOptions:
  """How the lira / ulira studies score and read their attacks (``mia.lira``'s options).

  Attributes:
    lira_convention: ``ours`` or ``reference`` (tensorflow/privacy ``plot.py``'s scoring).
    statistic: centres of the Gaussians, ``median`` (LiRA's code) or ``mean`` (DeepUnlearn's U-LiRA).
    tpr_strict: read TPR at FPR < target (the LiRA reference) instead of <= target.
  """

  lira_convention: str = LIRA_CONVENTION
  statistic: str = "median"
  tpr_strict: bool = False


def check_attack(cfg: AttackOptions) -> None:
  if cfg.lira_convention not in CONVENTIONS:
    raise ConfigError(f"lira convention must be one of {', '.join(CONVENTIONS)}, got {cfg.lira_convention!r}")
  if cfg.statistic not in STATISTICS:
    raise ConfigError(f"statistic must be one of {', '.join(STATISTICS)}, got {cfg.statistic!r}")
  if not isinstance(cfg.tpr_strict, bool):
    raise ConfigError(f"tpr_strict must be a bool, got {cfg.tpr_strict!r}")


def attack_kw(cfg: AttackOptions) -> dict:
  """``convention`` / ``statistic`` for :func:`jaxunlearn.mia.lira_attacks`."""
  return {"convention": cfg.lira_convention, "statistic": cfg.statistic}


def attack_fields(cfg: AttackOptions) -> dict:
  """What results.json records of the attack options."""
  return {"tpr_readout": "fpr < target" if cfg.tpr_strict else TPR_READOUT, "lira_convention": cfg.lira_convention,
          "lira_statistic": cfg.statistic}


def readout_line(results: dict) -> str:
  """The line printed under a lira / ulira table: which TPR read-out and LiRA convention it uses."""
  readout = results.get("tpr_readout", TPR_READOUT)  # results written before the field: <=
  conv = results.get("lira_convention", LIRA_CONVENTION)
  stat = results.get("lira_statistic", "median")
  ref = "as the LiRA reference" if readout == "fpr < target" else "the LiRA reference reads FPR < target"
  return (f"TPR read-out: FPR {readout.removeprefix('fpr ')} ({ref}); "
          f"LiRA convention {conv!r}: {CONVENTIONS.get(conv, conv)}; {stat} centres")


def summarise(attacks: dict, out: Path, title: str, *, strict: bool = False) -> tuple[dict, str]:
  """Per attack ``{auc, tpr@0.1%, tpr@1%, best_accuracy}`` (``strict``: TPR at FPR < target), and their
  ROC curves in ``out/roc.png``."""
  from jaxunlearn import metrics
  from jaxunlearn import mia
  from jaxunlearn import plotting

  summary, curves = {}, {}
  for name, (scores, y) in attacks.items():
    if y.all() or not y.any():
      raise ValueError(f"attack {name}: the pooled examples are all members or all non-members")
    summary[name] = mia.evaluate_attack(scores, y, strict=strict)
    fpr, tpr, _ = metrics.roc_curve(scores, y)
    curves[name] = (fpr, tpr)
  if jax.process_index() == 0:  # multi-host: one writer
    plotting.plot_roc(curves, out / "roc.png", title=title)
  return summary, "roc.png"


def format_attacks(summary: dict) -> str:
  rows = [f"{'attack':<24}{'AUC':>8}{'TPR@0.1%':>10}{'TPR@1%':>9}{'best acc':>10}"]
  for name, s in summary.items():
    rows.append(f"{name:<24}{s['auc']:8.3f}{100 * s['tpr@0.1%']:9.2f}%{100 * s['tpr@1%']:8.2f}%"
                f"{100 * s['best_accuracy']:9.1f}%")
  return "\n".join(rows)


def format_result(results: dict) -> str:
  """The plain-text summary the command line prints for a study's results."""
  if results["study"] in ("lira", "ulira"):
    lines = [format_attacks(results["attacks"]), readout_line(results)]
    if results["study"] == "ulira":
      a = results["accuracy"]
      lines.append("accuracy  " + "  ".join(f"{k}: retain {100 * v['retain']:.1f}% forget {100 * v['forget']:.1f}% "
                                            f"test {100 * v['test']:.1f}%" for k, v in a.items()))
    return "\n".join(lines)
  a = results["accuracy"]
  lines = [f"forget quality {results['forget_quality']:.4f}   challenge score {results['challenge_score']:.4f}"
           f"   (N={results['num_models']} models per side)"]
  c = results.get("ceiling")  # results written before the ceiling have none
  if c:
    lines.append(f"retrain-vs-retrain ceiling at N={c['num_models']}: forget quality {c['forget_quality']:.4f}   "
                 f"challenge score {c['challenge_score']:.4f}   [an exact retrain scored against the retrained "
                 f"models; the best to expect at this N, not 1"
                 + ("; here the method itself" if c.get("source", "").startswith("the method") else "") + "]")
  if "klom" in results:  # results written before KLOM have none
    k = results["klom"]
    lines.append("KLOM p95 (median)  " + "  ".join(f"{s} {k[s]['p95']:.3f} ({k[s]['p50']:.3f})"
                                                  for s in ("forget", "retain", "test"))
                 + f"   [KL(unlearned || retrained) of {k['bins']}-bin margin histograms; 0 = like retraining]")
  for k, v in a.items():
    lines.append(f"{k:<10} retain {100 * v['retain']:5.1f}%  forget {100 * v['forget']:5.1f}%  test {100 * v['test']:5.1f}%")
  lines += [f"warning: {w}" for w in results.get("warnings", ())]
  return "\n".join(lines)
