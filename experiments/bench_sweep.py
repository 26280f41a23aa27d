"""A hyperparameter sweep as one program: ``unlearn_many`` over K learning rates vs K separate runs (issue 12).

    python experiments/bench_sweep.py                        # mlp + cnn on digits, finetune + scrub, K = 32
    python experiments/bench_sweep.py --tiny                 # seconds-long smoke version (the test suite runs it)
    python experiments/bench_sweep.py --model cnn --executor scan --executor steps --k 8
    python experiments/bench_sweep.py --dataset npz:../shared/data/fashion_mnist.npz --train-subset 3000

One original is trained per model (on the whole training split), a forget set is drawn (``--forget``,
default ``class:3``) and, for each method, K learning rates log-spaced around the method's default
(``default * 10 ** linspace(-1, 1, K)``) are run two ways, back to back in one process, same device:

* ``loop``: K separate runs, the way one would without ``unlearn_many``: for config k, the method
  (``unlearn.make(name)``) called once with ``hparams={"lr": lrs[k]}`` and key ``fold_in(key, k)``:
  ``scan`` executor: one ``jax.jit`` of the method, compiled once ahead of time (the learning rate is data,
  so the K calls share it); ``steps`` executor: the method called eagerly under ``use_executor("steps")``,
  every optimizer step one jitted call.
* ``sweep``: ONE ``jaxunlearn.many.unlearn_many(original, data, key, name, hparams={"lr": lrs},
  executor=..., strategy=sweep_strategy(...), chunk_size=sweep_chunk(None))`` call, what ``jaxunlearn tune``
  runs (chunks of 8 models on a CPU): the K runs
  ``vmap``-ed over the model axis under ``scan`` (M = K models from one shared original), one after
  another under ``steps`` (every model reusing the same compiled step programs).

Compilation is measured with ``jax.monitoring`` (tracing + lowering + XLA compile durations during a call)
and reported apart: ``loop s`` / ``sweep s`` are the wall time minus the compilation inside it (best of
``--repeats`` timed calls, each ended with ``block_until_ready``); the ``+compile`` columns are the first
call's wall time, what a fresh process pays. Under the ``steps`` executor the step programs are cached
by their traced structure (``jaxunlearn.train``), so the loop's K calls compile once.

Before timing, the two sides are checked to agree: for a few configs (first, middle, last), the final
parameters (max abs difference over the max abs value) and the test accuracy of the loop's run and of the
sweep's model k (same key, same learning rate) must match within float32 tolerance.

Prints a table (model, method, K, executor, loop s, sweep s, ratio = loop / sweep, configs/s of both) and
writes ``experiments/results/bench_sweep.json`` (strict JSON; after every row, so a run cut short keeps
its rows).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (experiments/report.py)

from jaxunlearn import data as jdata  # noqa: E402
from jaxunlearn import many as jmany  # noqa: E402
from jaxunlearn import models as jmodels  # noqa: E402
from jaxunlearn import unlearn  # noqa: E402
from jaxunlearn.atomic import write_json_atomic  # noqa: E402
from jaxunlearn.sweeps.engine import sweep_chunk  # noqa: E402
from jaxunlearn.sweeps.engine import sweep_strategy  # noqa: E402
from jaxunlearn.train import TrainConfig  # noqa: E402
from jaxunlearn.train import resolve_executor  # noqa: E402
from jaxunlearn.train import train_model  # noqa: E402
from jaxunlearn.train import use_executor  # noqa: E402

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
# agreement tolerances (float32 reassociation: vmap vs a single run, grouped vs plain convolutions)
PARAM_RTOL = 1e-3     # max |loop - sweep| over max |loop|, over all parameters
ACC_TOL = 0.01        # test accuracy (fraction)


class CompileClock:
  """Sums the compilation durations ``jax.monitoring`` reports while active (tracing, lowering, XLA compile)."""

  def __init__(self):
    self.seconds, self.count, self._on = 0.0, 0, False
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **_):
    if self._on and event in COMPILE_EVENTS:
      self.seconds += duration
      self.count += event == COMPILE_EVENTS[-1]

  def timed(self, fn):
    """``(result, wall seconds, compile seconds, XLA compilations)`` of ``fn()`` (ended by block_until_ready)."""
    self.seconds, self.count, self._on = 0.0, 0, True
    try:
      t0 = time.perf_counter()
      out = jax.block_until_ready(fn())
      wall = time.perf_counter() - t0
    finally:
      self._on = False
    return out, wall, self.seconds, self.count


def lr_grid(default: float, k: int) -> np.ndarray:
  """K learning rates log-spaced over a decade either side of ``default`` (K = 1: the default)."""
  if k == 1:
    return np.asarray([default], np.float32)
  return (default * 10.0 ** np.linspace(-1.0, 1.0, k)).astype(np.float32)


def loop_runner(method, original, ud, key, lrs, executor: str):
  """``run()`` -> the K loop results (a list of (params, batch_stats)), one separate run per config."""
  keys = [jax.random.fold_in(key, k) for k in range(len(lrs))]
  lr_dev = [jnp.float32(v) for v in lrs]
  if executor == "scan":
    jitted = jax.jit(method)
    box = {}

    def run():
      if "c" not in box:  # compiled ahead of time on the first call (one program for all K learning rates)
        box["c"] = jitted.lower(original, ud, keys[0], {"lr": lr_dev[0]}).compile()
      outs = [box["c"](original, ud, kk, {"lr": lr}) for kk, lr in zip(keys, lr_dev)]
      return [(s.params, s.batch_stats) for s, _ in outs]
    return run

  def run():
    outs = []
    with use_executor("steps"):
      for kk, lr in zip(keys, lr_dev):
        s, _ = method(original, ud, kk, {"lr": lr})
        outs.append((s.params, s.batch_stats))
    return outs
  return run


def sweep_runner(method, original, ud, key, lrs, executor: str):
  def run():
    st, _ = jmany.unlearn_many(original, ud, key, method, hparams={"lr": lrs}, num_models=len(lrs),
                                  executor=executor, progress=False,
                                  strategy=sweep_strategy(executor, original.model), chunk_size=sweep_chunk(None))
    return st.params, st.batch_stats
  return run


def agreement(model, loop_out, sweep_out, x_test, y_test, picks) -> dict:
  """Loop vs sweep for configs ``picks``: relative max parameter difference and test accuracies."""
  acc_fn = jax.jit(lambda p, s: jnp.mean(jnp.argmax(model.apply(p, s, x_test, train=False)[0], -1) == y_test))
  rows = []
  for k in picks:
    p_l, s_l = loop_out[k]
    p_s, s_s = jax.tree.map(lambda a: a[k], sweep_out)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p_l), jax.tree.leaves(p_s)))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(p_l))
    a_l, a_s = float(acc_fn(p_l, s_l)), float(acc_fn(p_s, s_s))
    rows.append({"config": int(k), "param_rel_diff": diff / max(scale, 1e-12), "test_acc_loop": a_l,
                 "test_acc_sweep": a_s})
  ok = all(r["param_rel_diff"] <= PARAM_RTOL and abs(r["test_acc_loop"] - r["test_acc_sweep"]) <= ACC_TOL
           for r in rows)
  return {"ok": ok, "param_rtol": PARAM_RTOL, "acc_tol": ACC_TOL, "configs": rows,
          "max_param_rel_diff": max(r["param_rel_diff"] for r in rows),
          "max_acc_diff": max(abs(r["test_acc_loop"] - r["test_acc_sweep"]) for r in rows)}


def bench_row(clock, model, method, original, ud, test, key, k: int, executor: str, repeats: int) -> dict:
  lrs = lr_grid(float(method.hparams["lr"]), k)
  loop = loop_runner(method, original, ud, key, lrs, executor)
  sweep = sweep_runner(method, original, ud, key, lrs, executor)
  row = {"k": k, "executor": executor, "lrs": lrs.tolist(), "repeats": repeats}
  for side, fn in (("loop", loop), ("sweep", sweep)):
    walls, nets, comps, counts = [], [], [], []
    out = None
    for _ in range(repeats):
      out, wall, comp, n = clock.timed(fn)
      walls.append(wall), comps.append(comp), counts.append(n), nets.append(max(wall - comp, 0.0))
      if side == "loop":
        loop_out = out
    row[side] = {"first_call_s": walls[0], "first_compile_s": comps[0], "first_compilations": counts[0],
                 "wall_s": walls, "compile_s": comps, "compilations": counts, "net_s": nets,
                 "min_s": min(nets), "median_s": statistics.median(nets)}
    if side == "sweep":
      sweep_out = out
  picks = sorted({0, k // 2, k - 1})
  row["agreement"] = agreement(model, loop_out, sweep_out, test[0], test[1], picks)
  row["ratio"] = row["loop"]["min_s"] / max(row["sweep"]["min_s"], 1e-12)
  row["ratio_median"] = row["loop"]["median_s"] / max(row["sweep"]["median_s"], 1e-12)
  row["ratio_with_compile"] = row["loop"]["first_call_s"] / max(row["sweep"]["first_call_s"], 1e-12)
  row["loop_configs_s"] = k / max(row["loop"]["min_s"], 1e-12)
  row["sweep_configs_s"] = k / max(row["sweep"]["min_s"], 1e-12)
  return row


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", action="append", choices=("mlp", "cnn", "allcnn", "resnet18"),
                 help="network (repeatable; default mlp and cnn)")
  p.add_argument("--method", action="append", help="unlearning method (repeatable; default finetune and scrub; "
                 "tiny: finetune)")
  p.add_argument("--k", type=int, default=None, help="number of learning rates K (default 32; tiny 2)")
  p.add_argument("--executor", action="append", choices=("auto", "scan", "steps"),
                 help="executor of both sides (repeatable; default auto: steps on CPU for conv nets, else scan)")
  p.add_argument("--dataset", default="digits", help="digits (embedded) or npz:PATH")
  p.add_argument("--train-subset", type=int, default=None, help="use N random train examples")
  p.add_argument("--test-subset", type=int, default=1000, help="test examples for the agreement check")
  p.add_argument("--forget", default="class:3", help="forget set (jaxunlearn run's --forget syntax)")
  p.add_argument("--width", type=float, default=1.0, help="model width multiplier")
  p.add_argument("--train-epochs", type=int, default=None, help="epochs of the original (default 15; tiny 1)")
  p.add_argument("--repeats", type=int, default=None,
                 help="timed calls per side, the first one included (compile subtracted); default 2, tiny 1")
  p.add_argument("--tiny", action="store_true", help="a seconds-long smoke version")
  p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_sweep.json"),
                 help="JSON output")
  a = p.parse_args(argv)
  k = a.k if a.k is not None else (2 if a.tiny else 32)
  repeats = a.repeats if a.repeats is not None else (1 if a.tiny else 2)
  if k < 1 or repeats < 1:
    print(f"bench_sweep: error: --k and --repeats must be >= 1, got {k} and {repeats}", file=sys.stderr)
    return 2
  models = a.model or ["mlp", "cnn"]
  methods = a.method or (["finetune"] if a.tiny else ["finetune", "scrub"])
  executors = a.executor or ["auto"]
  for name in methods:
    unlearn.get_method(name)  # unknown names fail before any work
    if "lr" not in unlearn.make(name).hparams:
      print(f"bench_sweep: error: method {name!r} has no hyperparameter 'lr'", file=sys.stderr)
      return 2

  ds = jdata.load_dataset(a.dataset)
  train_subset = 200 if a.tiny and a.train_subset is None else a.train_subset
  test_subset = 100 if a.tiny else a.test_subset
  ds = ds.subset(train_subset, test_subset, seed=0)
  split = jdata.make_forget_split(a.forget, ds.y_train, num_classes=ds.num_classes, seed=0)
  ud = unlearn.UnlearnData.create(ds.x_train, split.y_train, split.retain, split.forget, num_classes=ds.num_classes)
  test = (jnp.asarray(ds.x_test), jnp.asarray(ds.y_test))
  key = jax.random.key(0)
  clock = CompileClock()

  dev = jax.devices()[0]
  rows = []
  out = {"benchmark": "bench_sweep", "tiny": a.tiny, "k": k, "repeats": repeats, "dataset": a.dataset,
         "train_examples": int(len(ds.y_train)), "forget": a.forget, "forget_size": int(len(split.forget)),
         "retain_size": int(len(split.retain)), "lr_grid": "default * 10 ** linspace(-1, 1, K)",
         "backend": jax.default_backend(), "device": str(dev), "device_kind": getattr(dev, "device_kind", ""),
         "device_count": jax.device_count(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
         "python": platform.python_version(), "env": report.env_info(),
         "command": " ".join([os.path.basename(sys.argv[0])] + list(sys.argv[1:] if argv is None else argv)),
         "timing": "seconds exclude compilation (jax.monitoring durations subtracted); min and median over "
                   "repeats; ratio = loop / sweep", "rows": rows}
  print(f"# {dev} | jax {jax.__version__} | {a.dataset} ({len(ds.y_train)} train, forget {a.forget}: "
        f"{len(split.forget)}) | K = {k} | repeats {repeats}", flush=True)
  print(f"{'model':<7}{'method':<10}{'K':>4}  {'executor':<9}{'loop s':>8}{'sweep s':>9}{'ratio':>7}"
        f"{'loop cfg/s':>11}{'sweep cfg/s':>12}{'+compile':>10}{'agree':>7}", flush=True)
  width = 0.25 if a.tiny else a.width
  for arch in models:
    model = jmodels.create_model(arch, num_classes=ds.num_classes, input_shape=ds.image_shape, mean=ds.mean,
                                 std=ds.std, width=width)
    epochs = a.train_epochs or (1 if a.tiny else 15)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05)
    t0 = time.perf_counter()
    original, _ = train_model(model, cfg, ds.x_train, split.y_train, np.arange(len(ds.y_train)),
                              jax.random.fold_in(key, 1), progress=False)
    train_s = time.perf_counter() - t0
    for name in methods:
      overrides = {"epochs": "1"} if a.tiny else None
      method = unlearn.make(name, overrides=overrides)
      for ex in executors:
        executor = resolve_executor(ex, model)
        r = bench_row(clock, model, method, original, ud, test, jax.random.fold_in(key, 2), k, executor, repeats)
        r.update(model=arch, width=width, method=name, executor_arg=ex, config=repr(method.config),
                 original_train_s=train_s)
        rows.append(r)
        write_json_atomic(Path(a.out), out)
        ag = r["agreement"]
        print(f"{arch:<7}{name:<10}{k:>4}  {executor:<9}{r['loop']['min_s']:>8.2f}{r['sweep']['min_s']:>9.2f}"
              f"{r['ratio']:>6.2f}x{r['loop_configs_s']:>11.2f}{r['sweep_configs_s']:>12.2f}"
              f"{r['ratio_with_compile']:>9.2f}x{'yes' if ag['ok'] else 'NO':>7}", flush=True)
        if not ag["ok"]:
          print(f"  disagreement: max param rel diff {ag['max_param_rel_diff']:.2e} (tol {PARAM_RTOL}), "
                f"max test acc diff {ag['max_acc_diff']:.4f} (tol {ACC_TOL})", flush=True)
  out["all_agree"] = all(r["agreement"]["ok"] for r in rows)
  write_json_atomic(Path(a.out), out)
  print("ratio = loop s / sweep s (compilation excluded); +compile: the same ratio of first calls, compilation "
        "included")
  print(f"wrote {a.out}")
  return 0 if out["all_agree"] else 1


if __name__ == "__main__":
  sys.exit(main())
