"""Command line: ``jaxunlearn run | lira | ulira | challenge``. Flags only; the work lives in the library."""

from __future__ import annotations

import argparse
import sys

RUN_DEFAULTS = None  # filled lazily to keep `--help` fast


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


def build_parser() -> argparse.ArgumentParser:
  from jaxunlearn.data import SPEC_HELP
  from jaxunlearn.models import MODEL_NAMES
  from jaxunlearn.run import RunConfig

  d = RunConfig()
  fmt = argparse.ArgumentDefaultsHelpFormatter
  parser = _Parser(prog="jaxunlearn", description="Deep machine unlearning in JAX.", formatter_class=fmt)
  sub = parser.add_subparsers(dest="command", parser_class=_Parser)
  r = sub.add_parser("run", help="train original + retrained oracle, unlearn, evaluate", formatter_class=fmt)
  r.add_argument("--dataset", default=d.dataset, help="digits | npz:PATH | tfds name (cifar10, ...)")
  r.add_argument("--model", default=d.model, help=" | ".join(MODEL_NAMES))
  r.add_argument("--width", type=float, default=d.width, help="channel multiplier")
  r.add_argument("--forget", default=d.forget, help=SPEC_HELP)
  r.add_argument("--method", action="append", dest="methods", default=None,
                 help=f"unlearning method (repeatable; default {d.methods[0]})")
  r.add_argument("--epochs", type=int, default=d.epochs, help="epochs of the original and the oracle")
  r.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size of the original and the oracle")
  r.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (cosine schedule)")
  r.add_argument("--optimizer", default=d.optimizer, choices=("sgd", "adam", "adamw"), help="optimizer")
  r.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 weight decay")
  r.add_argument("--augment", action="store_true", help="random crop + flip while training")
  r.add_argument("--seed", type=int, default=d.seed, help="seed of the forget split, inits and batches")
  r.add_argument("--out", default=d.out, help="output folder for results.json")
  r.add_argument("--set", action="append", type=_kv_set, dest="overrides", default=[],
                 metavar="METHOD.OPTION=VALUE", help="method option, e.g. scrub.alpha=0.5 (repeatable)")
  r.add_argument("--preset", action="append", type=_kv_preset, dest="presets", default=[],
                 metavar="METHOD=PRESET", help="named setting, e.g. scrub=large")
  r.add_argument("--mask", default=None, help="localise every method: del:FRAC or salun:FRAC")
  r.add_argument("--eval", action="append", dest="evals", default=[], choices=("mia", "zrf", "tow"),
                 help="extra evaluations (repeatable)")
  r.add_argument("--train-subset", type=int, default=None, help="use N random train examples")
  r.add_argument("--test-subset", type=int, default=None, help="use N random test examples")
  r.add_argument("--data-dir", default=None, help="tfds data_dir")
  r.add_argument("--download", action="store_true", help="let tfds download (needs network)")
  r.add_argument("--save-models", default=None, metavar="DIR",
                 help="save every model (original, retrain, methods) with orbax under DIR/NAME")
  r.add_argument("--original", default=None, metavar="CKPT",
                 help="reuse an original model saved with --save-models (DIR/original) instead of training")
  r.add_argument("--quiet", action="store_true", help="no progress output")
  from jaxunlearn import studies

  studies.add_subcommands(sub)
  return parser


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
    argv = ["run"] + argv  # `jaxunlearn` alone runs the embedded default job
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.command == "run":
    return _run(args)
  if args.command in ("lira", "ulira", "challenge"):
    from jaxunlearn import studies

    return studies.dispatch(args)
  parser.print_help()
  return 2


def _run(args) -> int:
  from jaxunlearn.run import RunConfig, execute_and_write, format_table, prepare

  try:
    cfg = RunConfig(dataset=args.dataset, model=args.model, width=args.width, forget=args.forget,
                    methods=tuple(args.methods or RunConfig.methods), epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                    weight_decay=args.weight_decay, augment=args.augment, seed=args.seed, out=args.out,
                    overrides=tuple(args.overrides), presets=tuple(args.presets), mask=args.mask,
                    evals=tuple(args.evals), train_subset=args.train_subset, test_subset=args.test_subset,
                    data_dir=args.data_dir, download=args.download, progress=not args.quiet,
                    save_models=args.save_models, original=args.original)
    prepared = prepare(cfg)
  except (ValueError, TypeError) as e:
    print(f"jaxunlearn: error: {e}", file=sys.stderr)
    return 2
  results = execute_and_write(prepared)
  print(format_table(results))
  print(f"wrote {prepared.out / 'results.json'} and {prepared.out / 'accuracy.png'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
