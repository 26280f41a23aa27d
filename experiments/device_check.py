"""The one command to run first on an accelerator: correctness, airbench accuracy, throughput, SCRUB timing.

Run it whenever a GPU/TPU is available (``BUILD.md``)::

    export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
    python experiments/device_check.py                       # <= 9 minutes (--budget-s 540) on one H200
    python experiments/device_check.py --only scrub --only sweep --only memory   # what the budget skipped
    python experiments/device_check.py --tiny                # CPU smoke version (< 2 minutes; run by the tests)

It writes ONE JSON (``experiments/results/device_check_<device>.json`` or ``--out``) after every section,
in this order (what the first H200 run, 2026-11-28, did not measure comes first):

1. ``correctness``: ``train_many`` of 4 small models equals 4 single runs within 1e-4, run in the exact mode
   (``EXACT_ENV``: float32 matmuls, deterministic GPU reductions); the logit confidences made ON THE DEVICE
   (``confidences_many``, float32) equal the float64 host path, and so do the forget quality and LiRA
   computed from them.
2. ``throughput``: aggregate img/s of ResNet-18 (width 1 ``sequential``; width 0.25 ``vmap``) and the small
   CNN (``vmap``) vs one model alone and a Python loop at per-model batch 128, with PyTorch where ``torch``
   imports, and the FLOP utilisation (``experiments/bench_shadow.py``).
3. ``airbench``: 8 airbench94 models on the CIFAR-10 JPEG file (flip-TTA test accuracy per model), then the
   models/hour of a 32-model ``sequential`` run, extrapolated to 256 (``experiments/airbench_shadows.py``).
4. ``scrub``: SCRUB (``large`` preset) on ResNet-18 / CIFAR-10 JPEG: unlearning vs retraining seconds
   (``jaxunlearn run``).
5. ``sweep``: a K-learning-rate sweep as one program vs K separate runs (``experiments/bench_sweep.py
   --executor scan``).
6. ``memory``: peak bytes per model of the per-chunk training program (XLA's memory analysis) for the small
   CNN, ResNet-18 and airbench94, and the chunk the default rule picks for an 80 GB device and for this one.

Each section runs in its own child process (not with ``--tiny`` or ``--in-process``): on the first H200 run
one compilation lost the CUDA context (illegal memory access in XLA's autotuner) and every later section of
the same process failed with it. Every section runs under a global time budget (``--budget-s``): one that
would not fit is recorded as skipped, one cut off keeps the rows it had saved, one that fails is
recorded with its traceback (the other sections still run; the exit status is 1 if any section failed).
The estimates add up to about 15 minutes on an H200, so the default budget runs the first three or
four sections; run the rest with ``--only`` (repeatable) in the next session. The data path
(``--data``) defaults to the git-ignored ``.data/`` folder of the repository, so the file can travel with
the code to a bare device machine. With ``--tiny`` and no file, a small synthetic CIFAR-shaped file is
written to a temporary folder (its accuracies mean nothing and the JSON says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jaxunlearn import __version__  # noqa: E402
from jaxunlearn import data as jdata  # noqa: E402
from jaxunlearn import many as jmany  # noqa: E402
from jaxunlearn import metrics  # noqa: E402
from jaxunlearn import mia  # noqa: E402
from jaxunlearn import models as jmodels  # noqa: E402
from jaxunlearn import train as jtrain  # noqa: E402
from jaxunlearn.atomic import write_json_atomic  # noqa: E402

DEFAULT_DATA = HERE.parent / ".data" / "cifar10_jpeg.npz"
# Parameters of train_many vs single runs differ by float rounding only: float32 on the CPU, and on a GPU/TPU
# in the exact mode the correctness section's child process runs in (EXACT_ENV). Under a device's default
# precision the difference is rounding amplified by training (0.26 after 3 epochs on an H200) and no
# verdict is given.
TOLERANCE = 1e-4
# The correctness section's child process: matmuls in full float32 and deterministic GPU reductions, so
# train_many can be compared with single runs at the CPU's tolerance. Under the defaults (TF32 / bf16
# passes, atomics) the first H200 run differed by 0.26 in a parameter after 3 epochs: rounding
# differences that training amplifies, not a difference of programs (1.8e-6 in this mode, same run).
EXACT_ENV = {"JAX_DEFAULT_MATMUL_PRECISION": "highest", "XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}


def _device() -> dict:
  d = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": str(d), "device_kind": getattr(d, "device_kind", ""),
          "device_count": jax.device_count()}


def _versions() -> dict:
  out = {"jaxunlearn": __version__, "jax": jax.__version__, "python": platform.python_version()}
  for name in ("flax", "optax", "jaxlib", "torch"):
    try:
      out[name] = __import__(name).__version__
    except Exception:  # noqa: BLE001  (optional packages: a version or nothing)
      pass
  return out


def _max_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def correctness(a, data: Path, work: Path, row: dict, save) -> None:
  """train_many == single runs; device confidences / forget quality / LiRA == the float64 host path."""
  # 384 / 1024 examples: every model's half is whole batches of 32. A last partial batch (e.g. 8 examples)
  # through BatchNorm amplifies the batched convolution's rounding differences (3e-4 on one of 4 models on
  # the CPU), which would test BatchNorm's conditioning, not the device
  ds = jdata.load_dataset("digits").subset(384 if a.tiny else 1024, 200, seed=0)
  model = jmodels.create_model("cnn", num_classes=ds.num_classes, input_shape=ds.x_train.shape[1:],
                               width=0.25 if a.tiny else 0.5)
  cfg = jtrain.TrainConfig(epochs=1 if a.tiny else 3, batch_size=32, lr=0.05)
  key, m_total = jax.random.key(0), 4
  keep = jdata.keep_mask(jax.random.fold_in(key, 0), m_total, len(ds.y_train))
  t0 = time.perf_counter()
  states, _ = jmany.train_many(key, (ds.x_train, ds.y_train), keep, cfg, model=model, progress=False)
  t_many = time.perf_counter() - t0
  init, fit = jtrain.make_fit(model, cfg, int(keep[0].sum()))
  xd, yd = jax.numpy.asarray(ds.x_train), jax.numpy.asarray(ds.y_train)

  @jax.jit
  def single(k, index):  # one model alone, compiled once: model m of train_many's keys and data
    ts, _ = fit(init(*model.init(jax.random.fold_in(k, 0))), xd, yd, index, jax.random.fold_in(k, 1))
    return ts.params, ts.batch_stats

  diffs = []
  for m in range(m_total):
    one = single(jax.random.fold_in(key, m), jax.numpy.asarray(np.flatnonzero(keep[m]), jax.numpy.int32))
    mine = jmany.take(states, m)
    diffs.append(_max_diff(one, (mine.params, mine.batch_stats)))
  exact = jax.default_backend() == "cpu" or (
      jax.config.jax_default_matmul_precision == EXACT_ENV["JAX_DEFAULT_MATMUL_PRECISION"]
      and EXACT_ENV["XLA_FLAGS"] in os.environ.get("XLA_FLAGS", ""))
  # confidences: on the device in float32 vs the host float64 formula on the same logits
  x, y = ds.x_train, ds.y_train
  dev = jmany.confidences_many(states, x, y, flip=False)[..., 0]
  host = metrics.logit_confidence(jmany.predict_many(states, x).astype(np.float64), y)
  conf_diff = float(np.max(np.abs(dev - host)))
  half = m_total // 2
  fq_dev = metrics.forget_quality(dev[:half, :64], dev[half:, :64]).score
  fq_host = metrics.forget_quality(host[:half, :64], host[half:, :64]).score
  auc = {}
  for name, conf in (("device", dev), ("host", host)):
    att = mia.lira_attacks(conf[:, :, None], keep, range(m_total))
    auc[name] = mia.evaluate_attack(*att["online"])["auc"]
  row.update({
      "train_many_vs_single": {"max_abs_param_diff": max(diffs), "per_model": diffs, "models": m_total,
                               "train_many_seconds": t_many,
                               **({"tolerance": TOLERANCE, "pass": max(diffs) <= TOLERANCE} if exact else
                                  {"note": "default device precision: rounding differences amplified by "
                                           "training, no verdict (the isolated run uses the exact mode)"})},
      "confidence": {"max_abs_diff_device_f32_vs_host_f64": conf_diff, "tolerance": 1e-3,
                     "pass": conf_diff <= 1e-3},
      "forget_quality": {"device": fq_dev, "host": fq_host, "pass": abs(fq_dev - fq_host) <= 1e-3,
                         "note": "models 0-1 vs 2-3 of train_many, first 64 examples (a consistency check)"},
      "lira_online_auc": {**auc, "pass": abs(auc["device"] - auc["host"]) <= 1e-3},
  })


def memory_rows(a, data: Path, work: Path, row: dict, save) -> None:
  """Peak bytes per model of train_many's per-chunk program (XLA's memory analysis, from shapes alone) for
  the small CNN, ResNet-18 and airbench94 on CIFAR-shaped data (half of 50,000 images each, batch 128 /
  airbench's 1024), and the chunk the default rule picks for an 80 GB device and for this device."""
  from jaxunlearn import recipes  # noqa: PLC0415
  from jaxunlearn.many.engine import key_parts  # noqa: PLC0415
  from jaxunlearn.many.engine import model_mesh  # noqa: PLC0415
  from jaxunlearn.many.memory import FRACTION, fit_chunk, free_bytes, program_measure  # noqa: PLC0415
  from jaxunlearn.many.programs import train_program  # noqa: PLC0415

  side, n = (16, 256) if a.tiny else (32, 50000)
  accel = jax.default_backend() in ("gpu", "tpu")
  dtype = jax.numpy.bfloat16 if accel else jax.numpy.float32
  mesh = model_mesh()
  kd, impl = key_parts(0)
  free = free_bytes(list(mesh.devices.flat))
  models = {}
  archs = [("cnn", 0.25)] if a.tiny else [("cnn", 1.0), ("resnet18", 1.0), ("resnet18", 0.25), ("airbench", 1.0)]
  for name, width in archs:
    if name == "airbench":
      model = jmodels.create_airbench(10, (side, side, 3), dtype=dtype)
      cfg, factory = recipes.AirbenchConfig(), recipes.make_airbench_fit
    else:
      model = jmodels.create_model(name, num_classes=10, input_shape=(side, side, 3), width=width, dtype=dtype)
      cfg, factory = jtrain.TrainConfig(epochs=1, batch_size=32 if a.tiny else 128), jtrain.make_fit
    program = train_program(model, cfg, n // 2, impl, "vmap", mesh, factory)
    pm = {"m": np.zeros((1,), np.int32), "index": np.zeros((1, n // 2), np.int32)}
    sh = {"key": kd, "x": jax.ShapeDtypeStruct((n, side, side, 3), np.uint8), "y": jax.ShapeDtypeStruct((n,), np.int32)}
    measure = program_measure(program, pm, sh, mesh)
    t0 = time.perf_counter()
    one, two = measure(1), measure(2)
    per_model = None if one is None or two is None else two - one
    gib = 2 ** 30
    m_row = {"bytes_1_model": one, "bytes_2_models": two, "per_model_gib": None if per_model is None else per_model / gib,
             "fixed_gib": None if per_model is None else (one - per_model) / gib,
             "chunk_for_80gb": fit_chunk(measure, 256, 1, int(FRACTION * 80 * gib)),
             "chunk_here": None if free is None else fit_chunk(measure, 256, mesh.size, int(FRACTION * free)),
             "compile_seconds": time.perf_counter() - t0, "dtype": str(np.dtype(dtype))}
    models[f"{name}@{width}"] = m_row
  row.update({"free_bytes_per_device": free, "fraction": FRACTION, "models": models,
              "note": "per model: the bytes one more model per device adds (parameters, optimizer state, activations)"})


def airbench(a, data: Path, work: Path, row: dict, save) -> None:
  """8 models for accuracy (saved at once), then a speed run of 32 models one after another.

  The first H200 run (2026-11-28) lost its CUDA context compiling a 64-model ``vmap`` airbench program
  (XLA's autotuner: illegal memory access); ``vmap`` of 8 ran. ResNet-18 at width 1 trains 2x slower
  under ``vmap`` than one model at a time there, so the speed run uses ``sequential``.
  """
  import airbench_shadows  # noqa: PLC0415  (experiments/airbench_shadows.py)

  with tempfile.TemporaryDirectory() as tmp:
    common = ["--data", str(data), "--no-progress"] + (["--tiny", "--train-limit", "256", "--test-limit", "256", "--width", "8,16,16"]
                                                       if a.tiny else ["--bf16"])
    acc_path, speed_path = Path(tmp) / "acc.json", Path(tmp) / "speed.json"
    airbench_shadows.main(common + ["--models", "2" if a.tiny else "8", "--out", str(acc_path)])
    row["accuracy_run"] = json.loads(acc_path.read_text())
    save()
    if not a.tiny:
      airbench_shadows.main(common + ["--models", "32", "--strategy", "sequential", "--out", str(speed_path)])
      speed = json.loads(speed_path.read_text())
      row["speed_run_32_sequential"] = speed
      mph = speed.get("results", speed).get("models_per_hour")
      if mph:
        row["minutes_for_256"] = 256 / mph * 60


def throughput(a, data: Path, work: Path, row: dict, save) -> None:
  """bench_shadow: train_many img/s per strategy vs one model alone, a Python loop and PyTorch.

  ResNet-18 (width 1) ``sequential`` (the first H200 run measured its ``vmap`` of 16 at 0.53x of one model
  alone), width 0.25 and the small CNN ``vmap``: one bench_shadow call each, saved after each, so a section
  cut off keeps the calls it finished (``runs``).
  """
  import bench_shadow  # noqa: PLC0415  (experiments/bench_shadow.py)

  path = work / "throughput.json"
  if a.tiny:
    # the wiring only (the MLP, one strategy): bench_shadow's own test covers its strategies and the probe
    calls = [["--tiny", "--arch", "mlp", "--image", "8", "--models", "2", "--batch", "8", "--steps", "2",
              "--repeats", "1", "--no-torch", "--strategy", "vmap"]]
  else:
    common = ["--models", "16", "--batch", "128", "--steps", "20", "--repeats", "2", "--dtype", "bfloat16"]
    calls = [["--arch", "resnet18", "--strategy", "sequential", *common],
             ["--arch", "resnet18@0.25", "--strategy", "vmap", *common],
             ["--arch", "cnn", "--strategy", "vmap", *common]]
  row["runs"] = []
  for argv in calls:
    bench_shadow.main(argv + ["--out", str(path)])
    row["runs"].append(json.loads(path.read_text()))
    save()


def scrub(a, data: Path, work: Path, row: dict, save) -> None:
  from jaxunlearn import cli  # noqa: PLC0415

  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "run"
    if a.tiny:
      argv = ["--train-subset", "192", "--test-subset", "128", "--model", "cnn", "--width", "0.25",
              "--epochs", "1", "--set", "scrub.epochs=1", "--set", "scrub.msteps=1"]
    else:
      argv = ["--model", "resnet18", "--epochs", "10", "--batch-size", "256", "--lr", "0.1"]
    code = cli.main(["run", "--dataset", f"npz:{data}", "--method", "scrub", "--preset", "scrub=large",
                     "--forget", "random:0.1", "--quiet", "--out", str(out)] + argv)
    if code != 0:
      raise RuntimeError(f"jaxunlearn run exited with {code}")
    r = json.loads((out / "results.json").read_text())
  m = r["models"]
  row.update({"config": r["config"], "sizes": r["sizes"],
          "seconds": {k: m[k]["seconds"] for k in ("original", "retrain", "scrub")},
          "compile_seconds": {k: m[k].get("compile_seconds") for k in ("original", "retrain", "scrub")},
          "steps": {k: m[k].get("steps") for k in ("original", "retrain", "scrub")},
          "speedup_vs_retrain": m["scrub"].get("speedup_vs_retrain"),
          "acc": {k: m[k]["acc"] for k in ("original", "retrain", "scrub")}})


def sweep(a, data: Path, work: Path, row: dict, save) -> None:
  import bench_sweep  # noqa: PLC0415  (experiments/bench_sweep.py)

  with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "sweep.json"
    argv = (["--tiny", "--model", "mlp"] if a.tiny else
            ["--dataset", f"npz:{data}", "--train-subset", "5000", "--model", "cnn", "--model", "resnet18",
             "--width", "0.25", "--k", "32"])
    code = bench_sweep.main(argv + ["--executor", "scan", "--out", str(path)])
    if code:
      raise RuntimeError(f"bench_sweep exited with {code}")
    row.update(json.loads(path.read_text()))


# Each section: fn(a, data, work, row, save) filling ``row`` (and calling ``save`` after each sub-step), and
# its estimated seconds (compilation and a child's start included) on one H200, measured there on
# 2026-11-28 where a section ran, for the budget; then on 2 CPU cores with --tiny. In this order.
SECTIONS = {"correctness": (correctness, (35, 20)), "throughput": (throughput, (300, 25)),
            "airbench": (airbench, (180, 30)), "scrub": (scrub, (90, 25)), "sweep": (sweep, (60, 20)),
            "memory": (memory_rows, (210, 10))}
ORDER = tuple(SECTIONS)


def synthetic_cifar(path: Path, n_train: int = 512, n_test: int = 256) -> Path:
  """A CIFAR-shaped npz of random images (labels from a fixed random linear map, so it is learnable)."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
  w = rng.normal(size=(32 * 32 * 3, 10))
  y = np.argmax((x.reshape(len(x), -1) / 255.0 - 0.5) @ w, -1).astype(np.int64)
  np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
  return path


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--data", default=str(DEFAULT_DATA), help="the CIFAR-10 JPEG npz (../shared/data/cifar10_jpeg.npz)")
  p.add_argument("--tiny", action="store_true", help="CPU smoke version (< 2 minutes; sections run in this process)")
  p.add_argument("--budget-s", type=float, default=None, help="skip sections that would not fit (default 540; tiny 110)")
  p.add_argument("--only", action="append", choices=ORDER, help="run only these sections (repeatable)")
  p.add_argument("--out", default=None, help="JSON path (default experiments/results/device_check_<device>.json)")
  p.add_argument("--in-process", action="store_true",
                 help="run every section in this process (default without --tiny: one child process per section, "
                      "so a crashed device context or a section cut off by the budget spares the others)")
  p.add_argument("--child", choices=ORDER, help=argparse.SUPPRESS)        # internal: run one section, write
  p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)     # its row to --child-out
  p.add_argument("--work", default=None, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.budget_s is None:
    a.budget_s = 110.0 if a.tiny else 540.0
  if a.budget_s <= 0:
    p.error(f"--budget-s must be positive, got {a.budget_s}")
  return a


def _run_child(a, data: Path) -> int:
  """One section in this process; its row (with the device and versions) goes to ``--child-out`` after every
  sub-step and at the end, its traceback included if it fails."""
  path = Path(a.child_out)
  row = {"device_info": _device(), "versions": _versions()}
  save = lambda: write_json_atomic(path, row)  # noqa: E731
  save()
  try:
    SECTIONS[a.child][0](a, data, Path(a.work), row, save)
  except Exception:  # noqa: BLE001  (recorded with its traceback for the parent)
    row["error"] = traceback.format_exc()
    save()
    print(row["error"], file=sys.stderr, flush=True)
    return 1
  save()
  return 0


def _in_child(sec: str, a, data: Path, work: Path, timeout: float) -> dict:
  """Runs one section in a child process (its own device context) within ``timeout`` seconds; a crash or a
  timeout keeps what the child had saved, with the error and the end of its stderr."""
  child_out, err_path = work / f"{sec}.row.json", work / f"{sec}.stderr"
  cmd = [sys.executable, str(Path(__file__).resolve()), "--child", sec, "--child-out", str(child_out),
         "--work", str(work), "--data", str(data), "--budget-s", str(a.budget_s)]
  env = dict(os.environ)
  if sec == "correctness":
    env["JAX_DEFAULT_MATMUL_PRECISION"] = EXACT_ENV["JAX_DEFAULT_MATMUL_PRECISION"]
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + EXACT_ENV["XLA_FLAGS"]).strip()
  with open(err_path, "w") as err:
    try:
      rc = subprocess.run(cmd, env=env, stderr=err, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
      rc = None
  row = json.loads(child_out.read_text()) if child_out.is_file() else {}
  if rc is None:
    row["error"] = f"cut off after {timeout:.0f} s (the budget left)"
  elif rc != 0 and "error" not in row:
    row["error"] = f"child process exited with {rc}"
  if rc != 0:
    row["stderr_tail"] = "\n".join(l for l in err_path.read_text(errors="replace").splitlines()
                                   if not l.startswith(("E1", "W1", "===", "external/")))[-3000:]
  if sec == "correctness":
    row["mode"] = "exact: " + ", ".join(f"{k}={v}" for k, v in EXACT_ENV.items())
  return row


def main(argv=None) -> int:
  a = parse_args(argv)
  t_start = time.perf_counter()
  data = Path(a.data).expanduser()
  synthetic = False
  tmp = tempfile.TemporaryDirectory()
  work = Path(a.work) if a.work else Path(tmp.name)
  if not data.is_file():
    if not a.tiny:
      print(f"device_check: error: no CIFAR-10 file at {str(data)!r}: copy ../shared/data/cifar10_jpeg.npz to "
            ".data/ (and name .data in the device tool's carry) or pass --data PATH", file=sys.stderr)
      return 2
    data, synthetic = synthetic_cifar(Path(tmp.name) / "synthetic_cifar.npz"), True
  if a.child:
    return _run_child(a, data)
  isolate = not (a.tiny or a.in_process)  # the parent of isolated sections never touches the device
  result = {"command": "python " + " ".join([str(Path(sys.argv[0]).name)] + list(argv if argv is not None
                                                                                  else sys.argv[1:])),
            "tiny": a.tiny, "data": str(data), "synthetic_data": synthetic, "date": time.strftime("%Y-%m-%d"),
            **({} if isolate else {**_device(), "versions": _versions()}), "budget_s": a.budget_s,
            "isolated_sections": isolate, "sections": {}}
  out = Path(a.out) if a.out else None

  def write():
    nonlocal out
    if out is None:
      if "device_kind" not in result:
        return
      kind = result["device_kind"] or result["backend"]
      name = "".join(c if c.isalnum() else "_" for c in kind.lower()).strip("_")
      out = HERE / "results" / f"device_check_{name}{'_tiny' if a.tiny else ''}.json"  # (--out set it already)
    write_json_atomic(out, result)

  failed = False
  for sec in ORDER:
    if a.only and sec not in a.only:
      continue
    left = a.budget_s - (time.perf_counter() - t_start)
    need = SECTIONS[sec][1][1 if a.tiny else 0]
    if left < need:
      result["sections"][sec] = {"skipped": f"{left:.0f} s of the budget left, about {need} s needed"}
      print(f"[device_check] {sec}: skipped ({left:.0f} s left)", flush=True)
      continue
    print(f"[device_check] {sec} ...", flush=True)
    t0 = time.perf_counter()
    if isolate:
      row = _in_child(sec, a, data, work, timeout=left)
      if "device_info" in row and "device_kind" not in result:
        result.update(row["device_info"])
        result["versions"] = row.get("versions")
      row.pop("device_info", None)
      row.pop("versions", None)
    else:
      row = {}
      try:
        SECTIONS[sec][0](a, data, work, row, lambda: None)
      except Exception:  # noqa: BLE001  (recorded with its traceback; the other sections still run)
        row["error"] = traceback.format_exc()
        print(row["error"], file=sys.stderr, flush=True)
    failed = failed or "error" in row
    row["seconds"] = time.perf_counter() - t0
    result["sections"][sec] = row
    result["total_seconds"] = time.perf_counter() - t_start
    write()
    print(f"[device_check] {sec}: {row['seconds']:.1f} s{' (FAILED)' if 'error' in row else ''} -> {out}", flush=True)
  checks = result["sections"].get("correctness", {})
  verdicts = {k: v["pass"] for k, v in checks.items() if isinstance(v, dict) and "pass" in v}
  result["correctness_pass"] = all(verdicts.values()) if verdicts else None
  result["total_seconds"] = time.perf_counter() - t_start
  if "device_kind" not in result:  # no child reported its device (all skipped, or all died first)
    try:
      result.update(_device(), versions=_versions())
    except Exception as e:  # noqa: BLE001  (a device that fails to start: still write what we have)
      result.update(backend="unknown", device="unknown", device_kind="unknown", device_error=repr(e))
  write()
  tmp.cleanup()
  print(json.dumps({"correctness": verdicts, "total_seconds": round(result["total_seconds"], 1), "out": str(out)}))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
