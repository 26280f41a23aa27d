"""Every method at its default and tuned (``jaxunlearn tune --select oracle``), S seeds, on one dataset: a summary JSON and a markdown table (issue 12).

    python experiments/defaults_vs_tuned.py --dataset npz:../shared/data/fashion_mnist.npz --model mlp \\
        --forget class:7 --forget random:0.1 --seeds 3 --out experiments/results/defaults_vs_tuned

Per forget spec: ``jaxunlearn run --seeds S`` with every method at its default (full training split),
then ``jaxunlearn tune`` of each method with its default grid (a validation split of 10 % carved from
the training split; originals and oracles trained once and shared by the methods' grids). The tuned
numbers are the chosen configuration's inside the tuning job (models trained on the other 90 %).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxunlearn import run as jrun  # noqa: E402
from jaxunlearn import sweeps  # noqa: E402
from jaxunlearn import unlearn as jun  # noqa: E402
from jaxunlearn.atomic import write_json_atomic  # noqa: E402

SPLITS = ("retain", "forget", "test")


def _pm(m, s):
  return "nan" if m is None or s is None or not (math.isfinite(m) and math.isfinite(s)) else f"{100 * m:.1f} ± {100 * s:.1f}"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dataset", default="digits")
  ap.add_argument("--model", default="mlp")
  ap.add_argument("--epochs", type=int, default=10)
  ap.add_argument("--batch-size", type=int, default=128)
  ap.add_argument("--lr", type=float, default=0.05)
  ap.add_argument("--train-subset", type=int, default=None)
  ap.add_argument("--forget", action="append", default=None)
  ap.add_argument("--method", action="append", dest="methods", default=None)
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--skip-tuned", action="store_true")
  ap.add_argument("--chunk-size", type=int, default=None, help="models per compiled call in tuning (memory)")
  ap.add_argument("--out", default="experiments/results/defaults_vs_tuned")
  a = ap.parse_args(argv)
  methods = tuple(a.methods or sorted(m for m in jun.METHODS if m != "retrain"))
  job = dict(dataset=a.dataset, model=a.model, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
             train_subset=a.train_subset)
  summary = {"command": " ".join(sys.argv), "job": job, "seeds": a.seeds, "methods": list(methods), "forget": {}}
  path = os.path.join(a.out, "summary.json")
  if os.path.exists(path):  # another forget spec's earlier invocation: keep its entries
    with open(path) as f:
      old = json.load(f)
    if old.get("job") == job and old.get("seeds") == a.seeds:
      summary["forget"] = old["forget"]
      summary["command"] = old["command"] + " ; " + summary["command"]
      summary["methods"] = list(dict.fromkeys(old.get("methods", []) + list(methods)))
  for spec in a.forget or ["class:7", "random:0.1"]:
    tag = spec.replace(":", "_")
    t0 = time.perf_counter()
    _, res = sweeps.run_job(jrun.RunConfig(**job, forget=spec, methods=methods, seeds=a.seeds, overwrite=True,
                                           out=os.path.join(a.out, tag, "default")))
    entry = {"default": {n: {"acc": e["acc"], "acc_std": e["acc_std"], "seconds": e["seconds"]}
                         for n, e in res["models"].items()},
             "default_warnings": res.get("warnings", []), "defaults": res.get("defaults", {}),
             "default_seconds": time.perf_counter() - t0, "tuned": {}}
    prev = summary["forget"].get(spec)
    if prev:  # an earlier invocation with other methods: keep its rows (this one's win for its methods)
      entry["default"] = {**prev["default"], **entry["default"]}
      entry["defaults"] = {**prev.get("defaults", {}), **entry["defaults"]}
      entry["default_warnings"] = list(dict.fromkeys(prev.get("default_warnings", []) + entry["default_warnings"]))
      entry["tuned"] = {k: v for k, v in prev.get("tuned", {}).items() if k not in methods}
    summary["forget"][spec] = entry
    write_json_atomic(path, summary)
    print(sweeps.format_seeds(res), flush=True)
    if a.skip_tuned:
      continue
    for m in methods:
      t0 = time.perf_counter()
      r = sweeps.run_tune(sweeps.TuneConfig(**job, method=m, forget=spec, seeds=a.seeds, chunk_size=a.chunk_size,
                                            out=os.path.join(a.out, tag, f"tune-{m}")))
      c = r["configs"][r["choice"]["index"]]
      entry["tuned"][m] = {"choice": r["choice"]["values"], "acc": {s: c["mean"][s] for s in SPLITS},
                           "acc_std": {s: c["std"][s] for s in SPLITS}, "objective": c["mean"]["objective"],
                           "oracle": {s: r["oracle"]["mean"][s] for s in SPLITS},
                           "original": {s: r["original"]["mean"][s] for s in SPLITS},
                           "warnings": r["warnings"], "seconds": time.perf_counter() - t0,
                           "grid_seconds": r["seconds"]["grid"]}
      write_json_atomic(path, summary)
      print(f"[tuned] {spec} {m}: {r['choice']['values']}  " + "  ".join(
          f"{s} {_pm(c['mean'][s], c['std'][s])}" for s in SPLITS), flush=True)
  md = [f"Command: `{summary['command']}`", ""]
  for spec, e in summary["forget"].items():
    md += [f"### forget {spec}", "", "| model | default retain | default forget | default test | default s | tuned choice | "
           "tuned retain | tuned forget | tuned test |", "|---|---|---|---|---|---|---|---|---|"]
    for n, d in e["default"].items():
      t = e["tuned"].get(n)
      tuned = ([", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["choice"].items())]
               + [_pm(t["acc"][s], t["acc_std"][s]) for s in SPLITS]) if t else ["", "", "", ""]
      md.append(f"| {n} | " + " | ".join(_pm(d["acc"][s], d["acc_std"][s]) for s in SPLITS)
                + f" | {d['seconds']:.0f} | " + " | ".join(tuned) + " |")
    md += [""] + [f"- warning: {w}" for w in e["default_warnings"]] + [""]
  with open(os.path.join(a.out, "summary.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
