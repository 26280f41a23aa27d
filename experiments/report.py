"""Shared by the experiment scripts: run a set of `jaxunlearn run` jobs, tabulate, plot, save.

Each experiment is a list of (label, RunConfig); every job trains its own original and oracle and
runs all its methods in one go (so methods of one job share the original and the oracle).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import jax

from jaxunlearn import plotting
from jaxunlearn.run import RunConfig
from jaxunlearn.run import execute
from jaxunlearn.run import prepare
from jaxunlearn.atomic import write_json_atomic

FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion_mnist.npz"
CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_jpeg.npz"


def strategy_arg(text: str):
  """argparse ``type`` for ``--strategy``: vmap, sequential, auto or an int group size."""
  import argparse

  from jaxunlearn.many import check_strategy

  try:
    return check_strategy(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def check_data(prog: str, scale: str, smoke: bool, out) -> None:
  """Refuses (one line, exit 2) what would put other results than the committed ones into
  ``experiments/results/``: without ``--out``, ``--smoke`` or a CPU scale whose Fashion-MNIST file
  (:data:`FASHION`) is missing (the fallback to the embedded digits is only taken into a folder the user
  names, with a printed note); the GPU scale without :data:`CIFAR` in any case."""
  if scale == "gpu":
    if not CIFAR.is_file():
      _refuse(prog, f"--scale gpu needs {CIFAR}, which does not exist (copy cifar10_jpeg.npz there)")
    return
  if out is None and smoke:
    _refuse(prog, "--smoke needs --out DIR (the default folder holds the committed results)")
  if not smoke and not FASHION.is_file():
    if out is None:
      _refuse(prog, f"{FASHION} does not exist: the committed results under experiments/results/ were made with "
                    "it; copy it there, or give --out DIR to run on the embedded digits instead")
    print(f"{prog}: note: {FASHION} does not exist: running on the embedded digits", file=sys.stderr, flush=True)


def _refuse(prog: str, msg: str):
  print(f"{prog}: error: {msg}", file=sys.stderr, flush=True)
  raise SystemExit(2)


def data_name(dataset: str, train_subset=None, test_subset=None) -> str:
  """A job's data for a results README: ``npz:fashion_mnist.npz (3000 train / 1000 test examples)``."""
  name = f"npz:{Path(dataset[4:]).name}" if dataset.startswith("npz:") else dataset
  if name == "digits":
    name = "digits (the embedded 8x8 digits)"
  sizes = [f"{n} {s}" for n, s in ((train_subset, "train"), (test_subset, "test")) if n is not None]
  return name + (f" ({' / '.join(sizes)} examples)" if sizes else "")


def cpu_dataset(smoke: bool) -> tuple[str, int | None, int | None]:
  """(dataset, train_subset, test_subset) for the CPU scale: Fashion-MNIST subset if the shared
  data is there, else the embedded digits (:func:`check_data` decides first whether that is allowed)."""
  if smoke:
    return "digits", 200, 60
  if FASHION.is_file():
    return f"npz:{FASHION}", 3000, 1000
  return "digits", None, None


def run_jobs(jobs: list[tuple[str, RunConfig]], out_dir: Path, *, keep: bool = False) -> dict:
  """Runs every job (validating all of them first); saves ``out_dir/results.json`` after each job.

  With ``keep``, jobs already in an existing ``out_dir/results.json`` and not run now are kept, so
  the jobs of one experiment can run in separate calls (``--job``) and end in one file.
  """
  prepared = [(label, prepare(cfg)) for label, cfg in jobs]  # every bad input fails before any work
  out: dict = {"jobs": {}, "env": env_info()}
  path = out_dir / "results.json"
  if keep and path.is_file():
    try:
      out["jobs"] = dict(json.loads(path.read_text()).get("jobs", {}))
    except (OSError, json.JSONDecodeError, AttributeError) as e:
      raise SystemExit(f"cannot extend {path}: {e}; delete it or use another --out") from None
  for label, p in prepared:
    print(f"== {label}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    r = execute(p)
    r["wall_seconds"] = time.perf_counter() - t0
    out["jobs"][label] = r
    write_json_atomic(path, out)  # after every job: a run cut short keeps the finished ones
  return out


def env_info() -> dict:
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "device": str(jax.devices()[0].device_kind), "python": platform.python_version(),
          "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}


def table(result: dict, columns=("retain_err", "forget_err", "test_err", "mia", "seconds", "speedup")) -> str:
  """A markdown table of one job: rows = models, columns as named (errors in %)."""
  heads = {"retain_err": "retain err %", "forget_err": "forget err %", "test_err": "test err %",
           "retain_acc": "retain acc %", "forget_acc": "forget acc %", "test_acc": "test acc %",
           "gap_retain": "Δretain", "gap_forget": "Δforget", "gap_test": "Δtest",
           "mia": "MIA", "zrf": "ZRF", "tow": "ToW", "ic_test": "IC err % (test)",
           "ic_forget": "IC err % (forget)", "seconds": "time s", "speedup": "speed-up"}
  lines = ["| model | " + " | ".join(heads[c] for c in columns) + " |",
           "|---|" + "---:|" * len(columns)]
  retrain = result["models"].get("retrain", {}).get("acc", {})
  for name, e in result["models"].items():
    cells = []
    for c in columns:
      acc = e["acc"]
      if c.endswith("_err"):
        v = f"{100 * (1 - acc[c[:-4]]):.1f}"
      elif c.endswith("_acc"):
        v = f"{100 * acc[c[:-4]]:.1f}"
      elif c.startswith("gap_"):
        s = c[4:]
        v = f"{100 * (acc[s] - retrain[s]):+.1f}" if retrain else ""
      elif c == "ic_test":
        v = f"{100 * e['ic']['test_error']:.1f}" if "ic" in e else ""
      elif c == "ic_forget":
        v = f"{100 * e['ic']['forget_error']:.1f}" if "ic" in e else ""
      elif c == "seconds":
        v = f"{e['seconds']:.1f}"
      elif c == "speedup":
        v = f"{e['speedup_vs_retrain']:.1f}x" if "speedup_vs_retrain" in e else ""
      else:
        v = f"{e[c]:.3f}" if c in e else ""
      cells.append(v)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def bars(result: dict, path: Path, title: str) -> str:
  return plotting.plot_accuracy_bars({n: e["acc"] for n, e in result["models"].items()}, path, title=title)


def write_markdown(out_dir: Path, title: str, command: str, sections: list[tuple[str, str]], env: dict,
                   data: str | None = None) -> Path:
  md = [f"# {title}", "", f"Command: `{command}`", ""]
  if data is not None:
    md += [f"Data: {data}", ""]
  md += [f"Device: {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}", ""]
  for head, body in sections:
    md += [f"## {head}", "", body, ""]
  path = out_dir / "README.md"
  path.write_text("\n".join(md))
  return path


def main(argv, *, doc: str, name: str, title: str, plot_prefix: str, jobs, columns) -> Path:
  """The command line shared by the paper scripts: ``--scale cpu|gpu``, ``--smoke``, ``--out``.

  Runs ``jobs(scale, smoke)``, then writes one table (``columns(label)`` names its columns) and one
  accuracy-bar plot per job into ``OUT/README.md``; returns OUT.
  """
  import argparse

  ap = argparse.ArgumentParser(description=doc.splitlines()[0])
  ap.add_argument("--scale", choices=("cpu", "gpu"), default="cpu")
  ap.add_argument("--smoke", action="store_true")
  ap.add_argument("--out", default=None)
  ap.add_argument("--job", action="append", default=None, metavar="LABEL",
                  help="run only this job (repeatable); the other jobs already in OUT/results.json are kept, "
                       "so a long experiment can be split over several calls")
  a = ap.parse_args(argv)
  check_data(f"{name}.py", a.scale, a.smoke, a.out)
  out = Path(a.out or f"experiments/results/{name}_{a.scale}")
  all_jobs = jobs(a.scale, a.smoke)
  labels = [label for label, _ in all_jobs]
  if a.job:
    unknown = [j for j in a.job if j not in labels]
    if unknown:
      ap.error(f"unknown --job {unknown[0]!r}; choose from {', '.join(repr(x) for x in labels)}")
  selected = [(label, c) for label, c in all_jobs if not a.job or label in a.job]
  res = run_jobs(selected, out, keep=bool(a.job))
  sections = []
  for label in [x for x in labels if x in res["jobs"]]:
    r = res["jobs"][label]
    fname = label.replace(" ", "_").replace("+", "plus").replace("%", "pct")
    png = bars(r, out / f"{fname}.png", f"{plot_prefix}: {label}")
    sections.append((f"{label} ({r['forget']}, {r['sizes']})",
                     table(r, columns(label)) + f"\n\n![]({Path(png).name})"))
  cmd = f"python experiments/{name}.py" + (" --smoke" if a.smoke else "") + f" --scale {a.scale}"
  if a.job:
    cmd += " --job LABEL (one call per job)"
  data = sorted({data_name(r["dataset"], c.train_subset, c.test_subset) for label, c in all_jobs
                 for r in [res["jobs"].get(label)] if r is not None})
  md = write_markdown(out, title, cmd, sections, res["env"], data="; ".join(data))
  print(md.read_text())
  return out


def cfg_replace(cfg: RunConfig, **kw) -> RunConfig:
  return dataclasses.replace(cfg, **kw)


def dump(obj) -> str:
  return json.dumps(obj, indent=2)
