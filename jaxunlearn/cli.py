"""Command line: ``jaxunlearn run | tune | lira | ulira | challenge | data convert``: every flag, and the exit codes; the work lives in the library.

Exit status: 0 done; 2 bad input (argparse, or a :class:`jaxunlearn.errors.ConfigError`), printed
as one line ``jaxunlearn: error: ...``; 130 ``run`` interrupted (Ctrl-C: one line, the finished models kept); any other exception (a bug, a JAX tracer error, ...)
propagates with its traceback (status 1 under ``python -m jaxunlearn`` / the ``jaxunlearn`` script).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap

from jaxunlearn.errors import ConfigError

STUDIES = ("lira", "ulira", "challenge")


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2
    self.exit(2, f"jaxunlearn: error: {message}\n")


def _kv_set(s: str):
  """``method.option=value`` -> (method, option, value)."""
  if "=" not in s or "." not in s.split("=", 1)[0]:
    raise argparse.ArgumentTypeError(f"--set {s!r}: expected METHOD.OPTION=VALUE")
  lhs, v = s.split("=", 1)
  m, k = lhs.split(".", 1)
  return (m, k, v)


def _kv_preset(s: str):
  if "=" not in s:
    raise argparse.ArgumentTypeError(f"--preset {s!r}: expected METHOD=PRESET")
  m, p = s.split("=", 1)
  return (m, p)


def _kv(s: str):
  """``option=value`` (or ``method.option=value``) -> (option, value): a study's one method."""
  if "=" not in s:
    raise argparse.ArgumentTypeError(f"--set {s!r}: expected OPTION=VALUE (or METHOD.OPTION=VALUE)")
  k, v = s.split("=", 1)
  return (k.strip(), v)


def add_job_flags(p: argparse.ArgumentParser, d) -> None:
  """The flags of :class:`jaxunlearn.config.JobConfig` (data, model, training), with ``d``'s defaults."""
  from jaxunlearn.models import MODEL_NAMES
  from jaxunlearn.train import OPTIMIZERS

  p.add_argument("--dataset", default=d.dataset, help="digits | npz:PATH | tfds name (cifar10, ...)")
  p.add_argument("--model", default=d.model, help=" | ".join(MODEL_NAMES))
  p.add_argument("--width", type=float, default=d.width, help="channel multiplier")
  p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of every model trained from scratch")
  p.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size of every model trained from scratch")
  p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (cosine schedule)")
  p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimizer")
  p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 weight decay")
  p.add_argument("--augment", action="store_true", default=d.augment, help="random crop + flip while training")
  p.add_argument("--train-subset", type=int, default=d.train_subset, help="use N random train examples")
  p.add_argument("--test-subset", type=int, default=d.test_subset, help="use N random test examples")
  p.add_argument("--data-dir", default=d.data_dir, help="tfds data_dir")
  p.add_argument("--download", action="store_true", default=d.download, help="let tfds download (needs network)")
  p.add_argument("--cache-dir", default=d.cache_dir, metavar="DIR",
                 help="cache of decoded JPEG npz files (default: $XDG_CACHE_HOME/jaxunlearn or ~/.cache/jaxunlearn)")
  p.add_argument("--executor", default=d.executor, choices=("auto", "scan", "steps"),
                 help="training loops as one compiled scan, or one jitted call per step (auto: steps on CPU "
                      "for convolutional nets, 6-30x faster there)")
  p.add_argument("--seed", type=int, default=d.seed, help="seed of the data split(s), inits and batches")
  p.add_argument("--quiet", action="store_true", help="no progress output")


def _add_run(sub, fmt) -> None:
  from jaxunlearn.data import SPEC_HELP
  from jaxunlearn.evals import eval_options
  from jaxunlearn.run import RunConfig

  d = RunConfig()
  r = sub.add_parser("run", help="train original + retrained oracle, unlearn, evaluate", formatter_class=fmt)
  add_job_flags(r, d)
  r.add_argument("--forget", default=d.forget, help=SPEC_HELP)
  names, presets = _methods_help()
  r.add_argument("--method", action="append", dest="methods", default=None,
                 help=f"unlearning method (repeatable; default {d.methods[0]}): {names}")
  r.add_argument("--out", default=d.out, help="output folder for results.json (locked while a run writes it; "
                 "a rerun of the same job resumes its finished models, another job's results are refused)")
  r.add_argument("--overwrite", action="store_true", default=d.overwrite,
                 help="replace the results.json already in --out (another job's, or this job's: run it again)")
  r.add_argument("--set", action="append", type=_kv_set, dest="overrides", default=[],
                 metavar="METHOD.OPTION=VALUE", help="method option, e.g. scrub.alpha=0.5 (repeatable)")
  r.add_argument("--preset", action="append", type=_kv_preset, dest="presets", default=[],
                 metavar="METHOD=PRESET", help=f"named setting, e.g. scrub=large ({presets})")
  r.add_argument("--mask", default=d.mask, help="localise every method: del:FRAC or salun:FRAC")
  r.add_argument("--eval", action="append", dest="evals", default=[], choices=eval_options(),
                 help="extra evaluations (repeatable)")
  r.add_argument("--save-models", default=d.save_models, metavar="DIR",
                 help="save every model (original, retrain, methods) with orbax under DIR/NAME")
  r.add_argument("--original", default=d.original, metavar="CKPT",
                 help="reuse an original model saved with --save-models (DIR/original) instead of training")
  r.add_argument("--holdout", type=float, default=d.holdout,
                 help="hold out this share of the training split (never trained on); SCRUB+Rewind validates on its "
                      "examples of the forget distribution, as the SCRUB code does (0: on test examples)")
  r.add_argument("--seeds", type=int, default=d.seeds,
                 help="run every model for S seeds (one compiled program per model); the table shows mean ± std")
  r.add_argument("--tuned", action="store_true", default=d.tuned,
                 help="tune each method first (jaxunlearn tune with its default grid, --select oracle, --seeds "
                      "seeds, into OUT/tune-METHOD) and run it with the chosen setting")


def _add_tune(sub, fmt) -> None:
  from jaxunlearn.data import SPEC_HELP
  from jaxunlearn.sweeps import GRID_HELP, SELECT_MODES, TuneConfig
  from jaxunlearn.sweeps import tune as tune_module

  d = TuneConfig()
  names, presets = _methods_help()
  t = sub.add_parser("tune", formatter_class=fmt, help="a method's hyperparameter grid x seeds in one program; "
                     "choose on a validation split", description=tune_module.__doc__.split("\n")[0])
  add_job_flags(t, d)
  t.add_argument("--method", default=d.method, help=f"the method to tune: {names}")
  t.add_argument("--forget", default=d.forget, help=SPEC_HELP)
  t.add_argument("--grid", action="append", dest="grid", default=[], metavar="METHOD.OPTION=VALUES",
                 help=f"swept option (repeatable; the grid is their product): {GRID_HELP}; none: the method's "
                      "default grid (5 learning rates over lr/10..lr*10)")
  t.add_argument("--seeds", type=int, default=d.seeds, help="seeds S: originals, oracles and every configuration")
  t.add_argument("--select", default=d.select, choices=SELECT_MODES,
                 help="oracle: smallest gaps to the retrained oracle (retain/forget/validation accuracy, MIA); "
                      "no-oracle: forget accuracy nearest held-out accuracy (0 for whole classes) keeping retain "
                      "within --retain-tolerance of the original")
  t.add_argument("--val-fraction", type=float, default=d.val_fraction,
                 help="share of the training split held out for the selection (the test split is never read by it)")
  t.add_argument("--retain-tolerance", type=float, default=d.retain_tolerance, help="no-oracle: allowed retain drop")
  t.add_argument("--max-eval", type=int, default=d.max_eval, help="retain accuracy on at most this many examples")
  t.add_argument("--set", action="append", type=_kv, dest="overrides", default=[],
                 metavar="METHOD.OPTION=VALUE", help="base setting the grid varies around, e.g. scrub.alpha=0.5 "
                 "(or alpha=0.5: the tuned method's; repeatable)")
  t.add_argument("--preset", default=d.preset, metavar="METHOD=PRESET",
                 help=f"the method's base preset, e.g. scrub=privacy (or privacy) ({presets})")
  t.add_argument("--chunk-size", type=int, default=d.chunk_size, help="models per compiled call (default all)")
  t.add_argument("--out", default=d.out, help="output folder for results.json and sweep.png")


def _add_study_flags(p: argparse.ArgumentParser, d) -> None:
  """:func:`add_job_flags` plus how a study runs its many models (:class:`jaxunlearn.studies.StudyConfig`)."""
  add_job_flags(p, d)
  p.add_argument("--chunk-size", type=int, default=d.chunk_size,
                 help="models per compiled call (default: all; rounded up to a multiple of the device count)")
  p.add_argument("--strategy", default=d.strategy,
                 help="vmap: models in lockstep; sequential: lax.map over models per device; an int G: "
                      "groups of G in lockstep; auto: measure a few steps of each and use the fastest")
  p.add_argument("--checkpoint-dir", default=d.checkpoint_dir,
                 help="save every finished chunk here; rerunning the same command resumes")
  p.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() first: multi-host runs (SLURM, Open MPI and TPU pods "
                      "are auto-detected; see BUILD.md)")


def _add_attack_flags(p: argparse.ArgumentParser, d) -> None:
  """How a lira / ulira study scores and reads its attacks (:class:`jaxunlearn.studies.common.AttackOptions`)."""
  p.add_argument("--lira-convention", default=d.lira_convention,
                 help="ours: all shadow models, pooled OUT sigma, one-sided cdf offline; reference: "
                      "tensorflow/privacy plot.py's scoring")
  p.add_argument("--statistic", default=d.statistic, help="Gaussian centres: median (LiRA's code) or mean "
                 "(DeepUnlearn's U-LiRA)")
  p.add_argument("--tpr-strict", action="store_true", default=d.tpr_strict,
                 help="read TPR at FPR < target, as the LiRA reference (default: FPR <= target)")


def _methods_help() -> tuple[str, str]:
  """``(methods, presets)``: the registered method names and their named presets, for ``--help``."""
  from jaxunlearn import unlearn  # noqa: PLC0415

  names = ", ".join(sorted(unlearn.METHODS))
  presets = "; ".join(f"{n}: {', '.join(s.presets)}" for n, s in sorted(unlearn.METHODS.items()) if s.presets)
  return names, presets


def _add_method_flags(p: argparse.ArgumentParser, d) -> None:
  names, presets = _methods_help()
  p.add_argument("--method", default=d.method, help=f"registered unlearning method: {names}")
  p.add_argument("--set", action="append", type=_kv, dest="overrides", default=[], metavar="METHOD.OPTION=VALUE",
                 help="method option, e.g. finetune.lr=0.01 (or lr=0.01: the method's; repeatable)")
  p.add_argument("--preset", default=d.preset, metavar="METHOD=PRESET",
                 help=f"named method preset, e.g. scrub=privacy (or privacy) ({presets})")


def _one_method(args) -> None:
  """``--preset`` / ``--set`` of a one-method command (``tune``, ``ulira``, ``challenge``): run's
  syntax (``METHOD=PRESET``, ``METHOD.OPTION=VALUE``) or the shorthand without ``METHOD``; a METHOD
  named must be ``--method``'s (``tune`` also takes ``retrain.OPTION``, the oracle's). Rewrites
  ``args`` into the config's fields: ``preset`` a bare name; ``tune``'s overrides
  ``(method, option, value)``, the studies' ``(option, value)``."""
  if args.preset is not None and "=" in args.preset:
    m, p = args.preset.split("=", 1)
    if m != args.method:
      raise ConfigError(f"--preset {args.preset}: method {m!r} is not the chosen --method {args.method!r}")
    args.preset = p
  ov = []
  for k, v in args.overrides:
    m, _, opt = k.partition(".")
    if args.command == "tune":
      ov.append((m, opt, v) if opt else (args.method, m, v))
    else:  # (another method's METHOD.OPTION stays: the study refuses it, naming both)
      ov.append((opt, v) if opt and m == args.method else (k, v))
  args.overrides = ov


def _add_studies(sub, fmt) -> None:
  from jaxunlearn import data as jdata
  from jaxunlearn import studies

  no_flip = "query only the image, not its mirror (default: mirror queries unless the dataset is digits)"
  targets = "leave-one-out over the first T models (default all)"
  d = studies.LiraConfig()
  p = sub.add_parser("lira", formatter_class=fmt, help="train M shadow models on random halves; LiRA membership "
                     "inference", description=studies.run_lira.__doc__.split("\n")[0])
  p.add_argument("--models", "--num-models", dest="num_models", type=int, default=d.num_models,
                 help="number of models M (each is a target in turn, leave-one-out)")
  p.add_argument("--targets", type=int, default=d.targets, help=targets)
  p.add_argument("--no-flip", dest="flip", action="store_false", default=None, help=no_flip)
  p.add_argument("--out", default=d.out, help="output folder for results.json and roc.png")
  _add_attack_flags(p, d)
  _add_study_flags(p, d)

  d = studies.UliraConfig()
  q = sub.add_parser("ulira", formatter_class=fmt, help="U-LiRA: per-example membership test of an unlearning "
                     "method", description=studies.run_ulira.__doc__.split("\n")[0])
  q.add_argument("--models", "--num-models", dest="num_models", type=int, default=d.num_models,
                 help="number of original models M")
  _add_method_flags(q, d)
  q.add_argument("--pool-size", type=int, default=d.pool_size,
                 help="forget candidates; each model trains on and unlearns half of them")
  q.add_argument("--targets", type=int, default=d.targets, help=targets)
  q.add_argument("--no-flip", dest="flip", action="store_false", default=None, help=no_flip)
  q.add_argument("--out", default=d.out, help="output folder for results.json and roc.png")
  _add_attack_flags(q, d)
  _add_study_flags(q, d)

  d = studies.ChallengeConfig()
  c = sub.add_parser("challenge", formatter_class=fmt, help="NeurIPS-2023 challenge: forget quality of N unlearned "
                     "vs N retrained models", description=studies.run_challenge.__doc__.split("\n")[0])
  c.add_argument("--models", type=int, default=d.models, help="N models per side")
  _add_method_flags(c, d)
  c.add_argument("--forget", default=d.forget, help=f"the fixed forget set: {jdata.SPEC_HELP}")
  c.add_argument("--originals", default=d.originals, choices=studies.challenge.ORIGINALS,
                 help="one: all unlearned models start from one original (the challenge's protocol); per_model: "
                      "model m from its own original m (KLOM's protocol, N more models to train)")
  c.add_argument("--no-ceiling", dest="ceiling", action="store_false", default=None,
                 help="skip the retrain-vs-retrain ceiling (N more retrained models scored against the N retrained)")
  c.add_argument("--out", default=d.out, help="output folder for results.json and epsilons.png")
  _add_study_flags(c, d)


_CONVERT_HELP = """\
Turns a downloaded dataset into the npz file that --dataset npz:OUT reads (no TensorFlow needed).
SRC is a folder or a .tar / .tar.gz / .zip archive holding one of:
  - CIFAR-10 / CIFAR-100, python or binary version, as downloaded (cifar-10-python.tar.gz,
    cifar-10-binary.tar.gz, cifar-100-python.tar.gz, cifar-100-binary.tar.gz; CIFAR-100: fine labels);
  - image folders train/CLASS/IMAGE and test/CLASS/IMAGE (or val/, valid/, validation/), one image
    size throughout; classes are the sorted folder names.
OUT holds x_train, y_train, x_test, y_test (uint8 NHWC) and classes, or with --jpeg the JPEG-bytes
layout (train_jpeg, train_offsets, ...; JPEG files are copied unchanged, other images encoded).
Then: jaxunlearn run --dataset npz:OUT"""


def _add_data(sub, fmt) -> None:
  d = sub.add_parser("data", formatter_class=fmt, help="data tools: convert a downloaded archive into an npz file",
                     description="Data tools.")
  dsub = d.add_subparsers(dest="data_command", parser_class=_Parser, required=True, metavar="{convert}")
  c = dsub.add_parser("convert", formatter_class=argparse.RawDescriptionHelpFormatter,
                      help="a downloaded archive or image folder -> npz:OUT",
                      description=_CONVERT_HELP)
  c.add_argument("src", metavar="SRC", help="folder or .tar / .tar.gz / .zip archive (e.g. cifar-10-python.tar.gz)")
  c.add_argument("out", metavar="OUT", help="the .npz file to write")
  c.add_argument("--jpeg", action="store_true", help="write the JPEG-bytes layout (smaller; lossy for non-JPEG images)")
  c.add_argument("--jpeg-quality", type=int, default=75, help="JPEG quality of encoded images (default: 75)")
  c.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def _version() -> str:
  """The installed distribution's version (``importlib.metadata``); the package's ``__version__``
  when run from a source tree that is not installed."""
  from importlib import metadata  # noqa: PLC0415

  try:
    return metadata.version("jaxunlearn")
  except metadata.PackageNotFoundError:
    import jaxunlearn  # noqa: PLC0415  (the package itself, not a unit: imports stay one-way)
    return jaxunlearn.__version__


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows an option's default once: not when its help already names it, nor when it is empty
  (None, False, an empty list)."""

  def _get_help_string(self, action):
    h = action.help or ""
    if ("default" in h or action.default in (None, False, [], ()) or action.default is argparse.SUPPRESS
        or not action.option_strings):
      return h
    return super()._get_help_string(action)


def _epilog() -> str:
  """The top-level ``--help``'s list of methods, presets and where every option is described."""
  from jaxunlearn import unlearn  # noqa: PLC0415
  from jaxunlearn.models import MODEL_NAMES  # noqa: PLC0415

  with_presets = [f"  {n}: {', '.join(s.presets)}" for n, s in sorted(unlearn.METHODS.items()) if s.presets]
  return "\n".join([
      "`jaxunlearn` alone (or with run's options and no command) runs `jaxunlearn run`.",
      "Every option of a command, with its default: jaxunlearn COMMAND --help.",
      "",
      "methods (--method):",
      *[f"  {line}" for line in textwrap.wrap(", ".join(sorted(unlearn.METHODS)), 76)],
      "presets (--preset METHOD=PRESET; --set METHOD.OPTION=VALUE sets one option):",
      *with_presets,
      f"models (--model): {', '.join(MODEL_NAMES)}",
      "datasets (--dataset): digits (embedded), npz:PATH, or a tfds name (cifar10, ...; --download prepares it)",
  ])


def build_parser() -> argparse.ArgumentParser:
  """``jaxunlearn`` with the subcommands ``run``, ``tune``, ``lira``, ``ulira``, ``challenge`` and
  ``data convert``; every option shows its default once (:class:`_HelpFormatter`), the top-level
  help lists the methods and their presets, ``--version`` prints the installed version."""
  fmt = _HelpFormatter
  parser = _Parser(prog="jaxunlearn", description="Deep machine unlearning in JAX.", epilog=_epilog(),
                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
  sub = parser.add_subparsers(dest="command", parser_class=_Parser)
  _add_run(sub, fmt)
  _add_tune(sub, fmt)
  _add_studies(sub, fmt)
  _add_data(sub, fmt)
  return parser


def config_from_args(cls, args):
  """The ``cls`` config (a :class:`jaxunlearn.config.JobConfig`) from parsed arguments: every
  field taken from the flag of its name (lists become tuples; an unset flag keeps the default)."""
  kw = {}
  for f in dataclasses.fields(cls):
    if f.name == "progress":
      kw["progress"] = not getattr(args, "quiet", False)
    elif getattr(args, f.name, None) is not None:
      v = getattr(args, f.name)
      kw[f.name] = tuple(v) if isinstance(v, list) else v
  return cls(**kw)


def _error(e: ConfigError) -> int:
  print(f"jaxunlearn: error: {' '.join(str(e).split())}", file=sys.stderr)
  return 2


def _interrupted(out: str) -> str:
  """The one line of an interrupted ``run``: results.json is rewritten after every model."""
  res = os.path.join(out, "results.json")
  if os.path.exists(res):
    return f"jaxunlearn: interrupted; {res} keeps every finished model (the same command resumes from them)"
  return "jaxunlearn: interrupted before any model finished"


def _exit_on_interrupt(out: str, newline: bool = True) -> None:
  """When this process is the command: Ctrl-C (SIGINT) prints :func:`_interrupted`'s line and ends the process
  with status 130 at once, even inside an XLA compilation. Python's own handler waits for the compilation to
  end, printed a traceback (a segfault after it was seen), and its KeyboardInterrupt can land in JAX's
  garbage-collection callback, which swallows it: the run went on (seen in 1 of 7 tries here).
  ``signal.set_wakeup_fd`` hands the signal to a watching thread the moment it arrives; results.json is
  written atomically, so an exit mid-write leaves the previous one whole."""
  import signal
  import threading

  if threading.current_thread() is not threading.main_thread():
    return  # (signals reach the main thread only: KeyboardInterrupt as usual)
  r, w = os.pipe()
  os.set_blocking(w, False)
  signal.set_wakeup_fd(w)
  signal.signal(signal.SIGINT, lambda signum, frame: None)  # the watcher, not a KeyboardInterrupt, handles it

  def watch():
    while True:
      data = os.read(r, 64)
      if signal.SIGINT in data:
        os.write(2, f"{chr(10) if newline else ''}{_interrupted(out)}\n".encode())  # (below a progress bar)
        os._exit(130)

  threading.Thread(target=watch, name="jaxunlearn-sigint", daemon=True).start()


def _run(args, argv, own_process: bool = False) -> int:
  import shlex

  from jaxunlearn.run import RunConfig, format_table
  from jaxunlearn.sweeps import format_seeds, run_job

  cfg = dataclasses.replace(config_from_args(RunConfig, args), command_line=shlex.join(["jaxunlearn", *argv]))
  if own_process:
    _exit_on_interrupt(cfg.out, newline=cfg.progress)
  try:
    prepared, results = run_job(cfg)
  except ConfigError as e:  # every input is checked before any compute; nothing else is caught
    return _error(e)
  except KeyboardInterrupt:  # (called as a function) results.json holds every finished model
    print(_interrupted(cfg.out), file=sys.stderr, flush=True)
    return 130
  print(format_seeds(results) if results.get("seeds", 1) > 1 else format_table(results))
  if prepared.reused:
    print(f"{prepared.out / 'results.json'} already held these results: nothing was run (--overwrite runs it again)")
  else:
    print(f"wrote {prepared.out / 'results.json'} and {prepared.out / 'accuracy.png'}")
  return 0


def _tune(args) -> int:
  from jaxunlearn.sweeps import TuneConfig, format_tune, run_tune

  try:
    _one_method(args)
    cfg = config_from_args(TuneConfig, args)
    results = run_tune(cfg)
  except ConfigError as e:
    return _error(e)
  print(format_tune(results))
  method = results["method"]
  chosen = " ".join(f"--set {method}.{k}={v}" for k, v in results["choice"]["overrides"].items())
  print(f"chosen: {chosen}")
  print(f"wrote {os.path.join(cfg.out, 'results.json')} and {os.path.join(cfg.out, 'sweep.png')}")
  return 0


def _study(args) -> int:
  import jax

  from jaxunlearn import studies

  cls = {"lira": studies.LiraConfig, "ulira": studies.UliraConfig, "challenge": studies.ChallengeConfig}[args.command]
  try:
    if args.command != "lira":
      _one_method(args)
  except ConfigError as e:
    return _error(e)
  cfg = config_from_args(cls, args)
  if args.distributed:
    jax.distributed.initialize()  # before any computation; every process runs this same command
  try:
    results = studies.RUNNERS[args.command](cfg)
  except ConfigError as e:  # every input is checked before any compute; nothing else is caught
    return _error(e)
  if jax.process_index() == 0:
    print(studies.format_result(results))
    print(f"wrote {os.path.join(cfg.out, 'results.json')}")
  return 0


def _data(args) -> int:
  from jaxunlearn.data import convert_archive  # noqa: PLC0415
  from jaxunlearn.errors import user_input  # noqa: PLC0415

  try:
    with user_input():
      r = convert_archive(args.src, args.out, jpeg=args.jpeg, jpeg_quality=args.jpeg_quality,
                          overwrite=args.overwrite)
  except ConfigError as e:
    return _error(e)
  shape = "x".join(map(str, r["image_shape"]))
  names = ", ".join(r["classes"][:10]) + (", ..." if len(r["classes"]) > 10 else "")
  print(f"wrote {r['out']} ({r['layout']}{', JPEG bytes' if r['jpeg'] else ''}): {r['train']} train / "
        f"{r['test']} test images of {shape}, {len(r['classes'])} classes ({names})")
  print(f"use it with: jaxunlearn run --dataset npz:{r['out']}")
  return 0


def main(argv=None) -> int:
  own_process = argv is None  # the jaxunlearn script / python -m jaxunlearn: this process is the command
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
    argv = ["run"] + argv  # `jaxunlearn` alone runs the embedded default job
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.command == "run":
    return _run(args, argv, own_process)
  if args.command == "tune":
    return _tune(args)
  if args.command in STUDIES:
    return _study(args)
  if args.command == "data":
    return _data(args)
  parser.print_help()
  return 2


if __name__ == "__main__":
  sys.exit(main())
