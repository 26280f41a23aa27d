"""``jaxunlearn challenge``: the NeurIPS-2023 unlearning challenge's evaluation: N models retrained without a fixed forget set vs N unlearned from one original; forget quality and final score."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from jaxunlearn import data as jdata
from jaxunlearn import many
from jaxunlearn.atomic import atomic_savez
from jaxunlearn.config import check_int
from jaxunlearn.errors import ConfigError
from jaxunlearn.errors import user_input
from jaxunlearn.studies import common as C
from jaxunlearn.train import TrainConfig

__all__ = ("ChallengeConfig", "ChallengeEnsemble", "challenge_ensemble", "run_challenge")


@dataclasses.dataclass(frozen=True)
class ChallengeConfig(C.StudyConfig):
  """``jaxunlearn challenge``: the NeurIPS-2023 unlearning challenge's evaluation.

  Attributes:
    models: N models per side (>= 3): N retrained from scratch on the retain set, N unlearned
      (different keys) from ONE original trained on the whole train split (see ``originals``).
    method: registered unlearning method.
    overrides, preset: method settings (see :class:`jaxunlearn.studies.UliraConfig`).
    forget: the fixed forget set (``jaxunlearn.data.make_forget_split`` spec).
    originals: ``one``: every unlearned model starts from ONE original (the challenge's protocol);
      ``per_model``: N originals (different keys), unlearned model m from original m -- the protocol
      of KLOM's paper, whose unlearned models then vary over training seeds as the retrained ones do
      (from one original they vary only over the unlearning's randomness, which inflates KLOM).
    ceiling: also train N more models from scratch on the retain set (the exact retrain as a method) and
      score them against the N retrained ones: the retrain-vs-retrain ceiling at this N, printed beside
      the method's score (not needed, and not trained, when ``method`` is ``retrain`` with the run's
      recipe: its own score is that ceiling).
    out: output folder for ``results.json`` and ``epsilons.png``.
  """

  models: int = 16
  method: str = "finetune"
  overrides: tuple[tuple[str, str], ...] = ()
  preset: str | None = None
  forget: str = "random:0.1"
  originals: str = "one"
  ceiling: bool = True
  out: str = "out/challenge"


SPLITS = ("retain", "forget", "test")
ORIGINALS = ("one", "per_model")
# Below this N the forget quality cannot tell methods apart: simulated with normal confidences (200
# forget examples, 4 draws), a method whose forget-set confidences sit half a retrained standard
# deviation off scores 0.210 vs an exact retrain's 0.217 at N = 6, 0.180 vs 0.185 at N = 8 and
# 0.149 vs 0.167 at N = 12, but 0.144 vs 0.171 at N = 16 and 0.134 vs 0.180 at N = 20.
MIN_SEPARATING_MODELS = 16


def klom_fields() -> dict:
  """How the study's KLOM numbers are computed (written into results.json next to them)."""
  from jaxunlearn import metrics

  return {"convention": metrics.KLOM_CONVENTION, "margin": "z_y - logsumexp_{j != y} z_j",
          "direction": "KL(unlearned || retrained)", "bins": metrics.KLOM_BINS, "eps": metrics.KLOM_EPS,
          "clip": metrics.KLOM_CLIP}


def _prepare(cfg: ChallengeConfig):
  tcfg, out = C.check_study(cfg, ChallengeConfig)
  check_int("models", cfg.models, 3)
  if cfg.originals not in ORIGINALS:
    raise ConfigError(f"originals must be one of {', '.join(ORIGINALS)}, got {cfg.originals!r}")
  if not isinstance(cfg.ceiling, bool):
    raise ConfigError(f"ceiling must be True or False, got {cfg.ceiling!r}")
  with user_input():
    jdata.parse_forget_spec(cfg.forget)
  C.method_config(cfg.method, cfg.overrides, cfg.preset, tcfg)  # bad options fail here, before the data loads
  ds = cfg.load_data()
  model = cfg.create_model(ds)
  C.check_model(cfg.method, model)
  with user_input():
    split = jdata.make_forget_split(cfg.forget, ds.y_train, num_classes=ds.num_classes, seed=cfg.seed)
  if cfg.batch_size > len(split.retain):
    raise ConfigError(f"batch size {cfg.batch_size} is larger than the retain set ({len(split.retain)} examples)")
  from jaxunlearn import unlearn as jun

  scale = jun.DataScale.of_split(split, ds.num_classes, tcfg.epochs, tcfg.batch_size)
  mcfg, defaults = C.scaled_method_config(cfg, scale, tcfg)
  return tcfg, mcfg, defaults, out, ds, model, split


@dataclasses.dataclass
class ChallengeEnsemble:
  """The models of one NeurIPS-2023 challenge evaluation, reduced to what its scores need.

  Attributes:
    confidences: ``{"retrained" | method | "reference": float64 [N, F]}``, logit-scaled confidences of each
      model on the forget examples (one query, no flip); ``"reference"`` (N more retrained models, the
      retrain-vs-retrain ceiling) only when asked for.
    accuracy: ``{"original" | "retrained" | method | "reference": {"retain" | "forget" | "test": [N]}}``
      per-model accuracies (``[1]`` for one original, ``[N]`` with ``originals="per_model"``).
    seconds: wall time per group of models (``"original"``, ``"retrained"``, each method, ``"reference"``).
    strategy: the concrete strategy every group used (``"auto"`` resolved).
    margins: ``{"retrained" | method: {"retain" | "forget" | "test": float64 [N, E]}}``, KLOM's margins
      (``jaxunlearn.metrics.margins``) of each model on every example of the split, from the same
      forward passes.
  """

  confidences: dict
  accuracy: dict
  seconds: dict
  strategy: Any = "vmap"
  margins: dict = dataclasses.field(default_factory=dict)


def challenge_ensemble(key, ds, split, model, train_config: TrainConfig, methods: dict, *, num_models: int,
                       checkpoint_dir=None, progress: bool = True, chunk_size: int | None = None,
                       strategy="vmap", log=None, executor: str = "auto",
                       originals: str = "one", reference: bool = False) -> ChallengeEnsemble:
  """Trains the challenge's ensembles: one original, N retrained, N unlearned per method.

  The original trains on the whole train split (key ``fold_in(fold_in(key, 0), 0)``); N models
  retrain from scratch on ``split.retain`` (``fold_in(fold_in(key, 1), m)``); every method unlearns N
  models from that ONE original (``fold_in(fold_in(key, 2), m)``, the same keys for every method).
  With ``originals="per_model"`` N originals train (``fold_in(fold_in(key, 0), m)``; the first is the
  one original of the default) and unlearned model m starts from original m (KLOM's protocol). With
  ``reference``, N more models retrain exactly like the retrained ones (``fold_in(fold_in(key, 3), m)``):
  an exact retrain as the "method", whose score against the retrained models is the best one can expect
  at this N. Each model
  is evaluated with one forward pass over the train split (sliced into retain / forget) and one
  over the test split; those logits give the accuracies, the forget confidences and the margins.

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
    chunk_size, strategy: as in :func:`jaxunlearn.many.train_many`; ``"auto"`` is resolved once
      (from the checkpoints when resuming) and used by every group.
    log: ``f(text)`` for the line that reports a measured strategy.
    executor: how the training loops run (see :func:`jaxunlearn.many.train_many`).
    originals: ``"one"`` or ``"per_model"`` (above).
    reference: also train the N reference retrains (above; checkpoint group ``reference``).

  Returns:
    A :class:`ChallengeEnsemble`.
  """
  from jaxunlearn import unlearn as jun
  from jaxunlearn.metrics import logit_confidence
  from jaxunlearn.metrics import margins

  if originals not in ORIGINALS:
    raise ValueError(f"originals must be one of {', '.join(ORIGINALS)}, got {originals!r}")
  n_orig = 1 if originals == "one" else num_models
  ck = lambda name: None if checkpoint_dir is None else os.path.join(checkpoint_dir, name)  # noqa: E731
  groups = ["original", "retrained"] + (["unlearned"] if len(methods) == 1 else [f"unlearned_{m}" for m in methods])
  groups += ["reference"] if reference else []
  x, y, n = ds.x_train, split.y_train, len(ds.y_train)
  strategy = many.resolve_strategy(strategy, model, train_config, (x, y), chunk_size=chunk_size,
                                     num_models=num_models, log=log, executor=executor,
                                     checkpoint_dir=[] if checkpoint_dir is None else [ck(g) for g in groups])
  kw = dict(chunk_size=chunk_size, strategy=strategy)
  loops = dict(kw, executor=executor)  # for the calls that train (prediction has no loop)
  yf = y[split.forget]

  def evaluate(states, with_margins=True):
    lg = many.predict_many(states, x, **kw)
    lg_test = many.predict_many(states, ds.x_test, **kw)
    correct = np.argmax(lg, -1) == y[None]
    test = (np.argmax(lg_test, -1) == np.asarray(ds.y_test)[None]).mean(1)
    acc = {"retain": correct[:, split.retain].mean(1), "forget": correct[:, split.forget].mean(1), "test": test}
    marg = None
    if with_margins:
      marg = {"retain": margins(lg[:, split.retain], y[split.retain]), "forget": margins(lg[:, split.forget], yf),
              "test": margins(lg_test, ds.y_test)}
    return logit_confidence(lg[:, split.forget], yf), acc, marg

  seconds, conf, acc, marg = {}, {}, {}, {}
  t = time.perf_counter()
  original, _ = many.train_many(jax.random.fold_in(key, 0), (x, y), np.ones((n_orig, n), bool), train_config,
                                  model=model, checkpoint_dir=ck("original"), progress=progress,
                                  desc="original", **loops)
  seconds["original"] = time.perf_counter() - t
  _, acc["original"], _ = evaluate(original, with_margins=False)
  keep = np.zeros((num_models, n), bool)
  keep[:, split.retain] = True
  t = time.perf_counter()
  retrained, _ = many.train_many(jax.random.fold_in(key, 1), (x, y), keep, train_config, model=model,
                                   checkpoint_dir=ck("retrained"), progress=progress, desc="retrain", **loops)
  seconds["retrained"] = time.perf_counter() - t
  conf["retrained"], acc["retrained"], marg["retrained"] = evaluate(retrained)
  data = jun.UnlearnData.create(x, y, split.retain, split.forget, num_classes=ds.num_classes)
  for name, mcfg in methods.items():
    t = time.perf_counter()
    start = many.take(original, 0) if n_orig == 1 else original  # one shared original, or model m's own
    unlearned, _ = many.unlearn_many(start, data, jax.random.fold_in(key, 2), name, mcfg,
                                       num_models=num_models, progress=progress,
                                       checkpoint_dir=ck(groups[2 + list(methods).index(name)]), **loops)
    seconds[name] = time.perf_counter() - t
    conf[name], acc[name], marg[name] = evaluate(unlearned)
  if reference:  # the same training as the retrained side, other keys
    t = time.perf_counter()
    ref, _ = many.train_many(jax.random.fold_in(key, 3), (x, y), keep, train_config, model=model,
                             checkpoint_dir=ck("reference"), progress=progress, desc="reference retrain", **loops)
    seconds["reference"] = time.perf_counter() - t
    conf["reference"], acc["reference"], _ = evaluate(ref, with_margins=False)
  return ChallengeEnsemble(conf, acc, seconds, strategy, marg)


def run_challenge(cfg: ChallengeConfig) -> dict:
  """The NeurIPS-2023 challenge evaluation of ``cfg.method`` with N = ``cfg.models`` per side.

  One original is trained on the whole train split; N models are retrained from scratch on the
  retain set (keys ``fold_in(k, m)``) and N unlearned from the original (keys ``fold_in(k', m)``).
  The forget examples' logit confidences (one query, no flip) give the forget quality
  (``jaxunlearn.metrics.forget_quality``) and, with mean retain / test accuracies, the final
  ``challenge_score``. The same models' margins give KLOM (Georgiev et al. 2024,
  ``jaxunlearn.metrics.klom``: per example, the KL divergence of the N unlearned models' margin
  histogram from the N retrained ones') on every retain, forget and test (the paper's validation)
  example, summarised by percentiles per split (``originals="per_model"`` for the paper's protocol); the margins and per-example values are written
  to ``margins.npz`` (``{retrained,unlearned}_{retain,forget,test}`` ``[N, E]`` and
  ``klom_{retain,forget,test}`` ``[E]``).

  The retrain-vs-retrain ceiling: the forget quality and score of an exact retrain at this N, i.e. of N
  more models trained from scratch on the retain set exactly as the retrained ones (other keys) scored
  against them -- the best a method can expect here (identical distributions do not score 1 at finite
  N). With ``method="retrain"`` at the run's recipe (the default for ``retrain``) the method's own
  models are that exact retrain, and nothing more trains. ``ceiling=False`` skips it (``"ceiling": null``).
  Below ``MIN_SEPARATING_MODELS`` models per side, ``warnings`` says N is too small to separate methods.

  Returns (and writes)::

    {"study": "challenge", "config", "method", "method_config", "forget", "num_models",
     "sizes": {"retain", "forget", "test"}, "forget_quality", "challenge_score", "max_epsilon",
     "epsilon": {"mean", "median", "max"}, "epsilons": [F],
     "klom": {"convention", "margin", "direction", "bins", "eps", "clip", "originals",
              "retain" | "forget" | "test": {"p5", "p25", "p50", "p75", "p95", "p99", "mean"}},
     "accuracy": {"original": {...}, "retrained": {"retain", "forget", "test"}, "unlearned": {...}},
     "ceiling": {"forget_quality", "challenge_score", "num_models", "source", "accuracy"} | null,
     "seconds", "models_per_second", "strategy_used", "plots": {"epsilons": "epsilons.png"},
     "arrays": {"margins": "margins.npz"}, "warnings": [str], "versions"}
  """
  from jaxunlearn import metrics
  from jaxunlearn import plotting

  tcfg, mcfg, defaults, out, ds, model, split = _prepare(cfg)
  t0 = time.perf_counter()
  n, n_models = len(ds.y_train), cfg.models
  # retrain at the run's recipe IS the exact retrain: its own score is the ceiling
  exact = cfg.method == "retrain" and mcfg == C.retrain_recipe(mcfg, tcfg)
  reference = cfg.ceiling and not exact
  warnings = []
  if n_models < MIN_SEPARATING_MODELS:
    warnings.append(f"N={n_models} models per side is too few to separate methods: below {MIN_SEPARATING_MODELS} "
                    f"a method half a retrained standard deviation off scores within ~10 % of an exact retrain "
                    f"(use --models {MIN_SEPARATING_MODELS} or more; the challenge used 512)")
    C.log(cfg, f"[challenge] warning: {warnings[-1]}")
  C.log(cfg, f"[challenge] {cfg.dataset}: forget {cfg.forget} ({len(split.forget)} of {n}), "
              f"{n_models} retrained + {n_models} unlearned ({cfg.method}) {cfg.model} models"
              + (f" + {n_models} reference retrains (the retrain-vs-retrain ceiling)" if reference else ""))
  ens = challenge_ensemble(jax.random.key(cfg.seed), ds, split, model, tcfg, {cfg.method: mcfg},
                           num_models=n_models, checkpoint_dir=cfg.checkpoint_dir, progress=cfg.progress,
                           chunk_size=cfg.chunk_size, strategy=cfg.strategy, executor=cfg.executor,
                           log=lambda t: C.log(cfg, f"[strategy] {t}"), originals=cfg.originals,
                           reference=reference)
  acc_o, acc_r, acc_u = ens.accuracy["original"], ens.accuracy["retrained"], ens.accuracy[cfg.method]
  fq = metrics.forget_quality(ens.confidences[cfg.method], ens.confidences["retrained"])
  score = metrics.challenge_score(fq, acc_u["retain"], acc_r["retain"], acc_u["test"], acc_r["test"])
  ceiling, fq_ref = None, None
  if exact or reference:
    side = cfg.method if exact else "reference"
    acc_x = ens.accuracy[side]
    fq_ref = fq if exact else metrics.forget_quality(ens.confidences["reference"], ens.confidences["retrained"])
    ceiling = {"forget_quality": fq_ref.score, "num_models": n_models,
               "challenge_score": metrics.challenge_score(fq_ref, acc_x["retain"], acc_r["retain"], acc_x["test"],
                                                          acc_r["test"]),
               "source": ("the method's own models (retrain at the run's recipe)" if exact else
                          f"{n_models} more models retrained from scratch on the retain set exactly as the retrained "
                          "ones (keys fold_in(key, 3)), scored against them"),
               "accuracy": {k: float(np.mean(v)) for k, v in acc_x.items()}}
  t_retrain, t_unlearn = ens.seconds["retrained"], ens.seconds[cfg.method]
  m_r, m_u = ens.margins["retrained"], ens.margins[cfg.method]
  klom = {k: metrics.klom(m_u[k], m_r[k]) for k in SPLITS}
  if jax.process_index() == 0:  # multi-host: one writer
    atomic_savez(out / "margins.npz", **{f"retrained_{k}": m_r[k] for k in SPLITS},
                 **{f"unlearned_{k}": m_u[k] for k in SPLITS}, **{f"klom_{k}": klom[k] for k in SPLITS})
    eps = {cfg.method: fq.epsilons, **({"exact retrain (ceiling)": fq_ref.epsilons} if reference else {})}
    plotting.plot_epsilon_hist(eps, out / "epsilons.png",
                               title=f"Per-example epsilon, {cfg.method}, N={n_models}",
                               max_epsilon=fq.max_epsilon)
  mean = lambda d: {k: float(np.mean(v)) for k, v in d.items()}  # noqa: E731
  total = time.perf_counter() - t0
  results = {
      "study": "challenge", "config": dataclasses.asdict(cfg), "method": cfg.method,
      "method_config": dataclasses.asdict(mcfg), "defaults": defaults, "dataset": cfg.dataset, "model": cfg.model,
      "forget": cfg.forget, "num_models": n_models,
      "sizes": {"retain": int(len(split.retain)), "forget": int(len(split.forget)), "test": int(len(ds.y_test))},
      "forget_quality": fq.score, "challenge_score": score, "max_epsilon": fq.max_epsilon,
      "epsilon": {"mean": float(np.mean(fq.epsilons)), "median": float(np.median(fq.epsilons)),
                  "max": float(np.max(fq.epsilons))},
      "epsilons": fq.epsilons,
      "klom": {**klom_fields(), "originals": cfg.originals, **{k: metrics.klom_summary(klom[k]) for k in SPLITS}},
      "accuracy": {"original": mean(acc_o), "retrained": mean(acc_r), "unlearned": mean(acc_u)},
      "ceiling": ceiling,
      "seconds": {"original": ens.seconds["original"], "retrain": t_retrain, "unlearn": t_unlearn,
                  **({"reference": ens.seconds["reference"]} if reference else {}), "total": total},
      "models_per_second": {"retrain": n_models / t_retrain, "unlearn": n_models / t_unlearn},
      "strategy_used": ens.strategy,
      "plots": {"epsilons": "epsilons.png"}, "arrays": {"margins": "margins.npz"}, "warnings": warnings,
      "versions": C.versions(),
  }
  C.write(out, results)
  return results
