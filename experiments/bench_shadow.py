"""Throughput of many-model training: ``train_many`` vs one model alone vs a Python loop (vs PyTorch).

For each architecture, M models are trained for ``--steps`` steps at a per-model batch of
``--batch`` with :func:`jaxunlearn.many.train_many` (strategy ``vmap`` and/or ``sequential``), and
compared with

* one model trained alone in JAX (the same pure ``make_fit`` program, jitted once),
* a Python loop of M single-model runs (that program called M times: what you would do without
  ``train_many``),
* the same network trained in PyTorch (only if ``torch`` is importable; same batch, same device
  kind, bf16 autocast when ``--dtype bfloat16``).

Reported: aggregate images/s, the ratios, XLA's FLOP count of one training step of one model
(``jax.jit(step).lower(...).cost_analysis()``, on the program before backend passes: a GPU's compiled
program calls cuDNN for convolutions, which its own count leaves out), and the FLOP utilisation of the
``train_many`` run against ``--peak-tflops`` (default 989, H100 SXM dense bf16; only reported on
GPU/TPU unless ``--peak-tflops`` is given explicitly).

Usage::

    python experiments/bench_shadow.py                 # GPU: cnn, resnet18@0.25, resnet18, wrn16_4; M=16
    python experiments/bench_shadow.py --tiny          # CPU-sized (default when no GPU/TPU is present)
    python experiments/bench_shadow.py --strategy vmap --strategy sequential --dtype bfloat16 --models 32

Results are printed and written as JSON (after every row) to
``experiments/results/bench_shadow_<device>[_<archs>].json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (experiments/report.py)

from jaxunlearn import data as jdata
from jaxunlearn import many as jmany
from jaxunlearn import models as jmodels
from jaxunlearn.train import TrainConfig
from jaxunlearn.train import make_fit
from jaxunlearn.train import make_optimizer
from jaxunlearn.train import make_step
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.train import supervised_loss
from jaxunlearn.train import TrainState

GPU_ARCHS = ("cnn", "resnet18@0.25", "resnet18", "wrn16_4")
TINY_ARCHS = ("cnn@0.5", "resnet18@0.125")


@dataclasses.dataclass
class Setting:
  arch: str
  width: float
  models: int
  batch: int
  steps: int
  image: tuple[int, int, int]
  num_classes: int
  dtype: str
  strategy: str | int
  chunk_size: int | None
  repeats: int


def _parse_arch(spec: str) -> tuple[str, float]:
  name, _, w = spec.partition("@")
  if name not in jmodels.MODEL_NAMES:
    raise SystemExit(f"unknown arch {name!r}; choose from {', '.join(jmodels.MODEL_NAMES)} (optionally @WIDTH)")
  return name, float(w) if w else 1.0


def _best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def _flops(stage) -> float | None:
  """FLOPs XLA's cost analysis counts for a lowered (or compiled) program; None where it cannot."""
  try:
    ca = stage.cost_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    return None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  if not ca:
    return None
  f = ca.get("flops")
  return float(f) if f is not None and f > 0 else None


def bench_jax(s: Setting, key) -> dict:
  dtype = jnp.bfloat16 if s.dtype == "bfloat16" else jnp.float32
  model = jmodels.create_model(s.arch, num_classes=s.num_classes, input_shape=s.image, width=s.width,
                               dtype=dtype)
  k = s.batch * s.steps                        # examples per model: one epoch of `steps` steps
  n = 2 * k                                    # every model keeps a random half
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, (n, *s.image), dtype=np.uint8))
  y = jnp.asarray(rng.integers(0, s.num_classes, n), jnp.int32)
  cfg = TrainConfig(epochs=1, batch_size=s.batch, lr=0.05)
  keep = jdata.keep_mask(key, s.models, n)
  idx = jnp.asarray(jdata.keep_indices(keep))
  out = {"arch": s.arch, "width": s.width, "dtype": s.dtype, "strategy": s.strategy, "models": s.models,
         "batch": s.batch, "steps": s.steps, "image": list(s.image)}
  images = s.models * s.steps * s.batch

  # --- train_many ---------------------------------------------------------------------------
  strategy = s.strategy
  if strategy == "auto":  # measured once (not timed below); then the chosen strategy is timed
    choice = jmany.choose_strategy(model, cfg, (x, y), chunk_size=s.chunk_size, num_models=s.models)
    strategy = choice.strategy
    out["auto_choice"] = choice.strategy
    out["auto_probe"] = dataclasses.asdict(choice)

  def many():
    st, _ = jmany.train_many(key, (x, y), keep, cfg, model=model, chunk_size=s.chunk_size,
                              strategy=strategy, progress=False)
    jax.block_until_ready(st.params)

  t0 = time.perf_counter()
  many()
  out["many_first_call_s"] = time.perf_counter() - t0   # compile + run
  t_many = _best_time(many, s.repeats)
  out["many_s"] = t_many
  out["many_img_s"] = images / t_many

  # --- one model alone / Python loop of single-model runs ------------------------------------
  init, fit = make_fit(model, cfg, k)

  @jax.jit
  def single(kk, index):
    params, stats = model.init(jax.random.fold_in(kk, 0))
    ts, _ = fit(init(params, stats), x, y, index, jax.random.fold_in(kk, 1))
    return ts.params

  jax.block_until_ready(single(key, idx[0]))  # compile
  t_single = _best_time(lambda: jax.block_until_ready(single(key, idx[0])), s.repeats)
  out["single_img_s"] = s.steps * s.batch / t_single

  def loop():
    outs = [single(jax.random.fold_in(key, m), idx[m]) for m in range(s.models)]
    jax.block_until_ready(outs)

  t_loop = _best_time(loop, s.repeats)
  out["loop_img_s"] = images / t_loop
  out["ratio_many_vs_loop"] = out["many_img_s"] / out["loop_img_s"]
  out["ratio_many_vs_single"] = out["many_img_s"] / out["single_img_s"]

  # --- FLOPs of one step of one model ---------------------------------------------------------
  tx = make_optimizer(cfg, steps_per_epoch(k, s.batch))
  step = make_step(supervised_loss(model), tx)
  params, stats = model.init(key)
  ts = TrainState.create(params, stats, tx)
  # Counted on the lowered program (the HLO before backend passes): the GPU's compiled program calls
  # cuDNN for its convolutions, which its cost analysis leaves out (2.8e9 instead of 3.7e11 FLOPs per
  # ResNet-18 step on the first H200 run); the compiled count is the fallback.
  lowered = jax.jit(step).lower(ts, (x[: s.batch], y[: s.batch]), key)
  f = _flops(lowered) or _flops(lowered.compile())
  out["flops_per_step"] = f
  out["many_tflops_s"] = None if f is None else f * s.steps * s.models / t_many / 1e12
  return out


# ---------------------------------------------------------------------------------------------
# PyTorch side (optional)
# ---------------------------------------------------------------------------------------------

def _torch_model(arch: str, width: float, num_classes: int, in_ch: int, hw: int):
  import torch
  from torch import nn

  def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout, momentum=0.1),
                         nn.ReLU(inplace=True))

  if arch == "cnn":
    c, h = max(1, int(32 * width)), max(1, int(128 * width))
    side = hw // 4 if hw >= 4 else 1
    return nn.Sequential(conv_bn(in_ch, c), nn.MaxPool2d(2), conv_bn(c, 2 * c), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(2 * c * side * side, h), nn.ReLU(inplace=True), nn.Linear(h, num_classes))

  class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.b1 = nn.BatchNorm2d(cout)
      self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.b2 = nn.BatchNorm2d(cout)
      self.sc = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                 if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
      o = torch.relu(self.b1(self.c1(x)))
      return torch.relu(self.sc(x) + self.b2(self.c2(o)))

  class Wide(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.b1 = nn.BatchNorm2d(cin)
      self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.b2 = nn.BatchNorm2d(cout)
      self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.sc = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
      o = torch.relu(self.b1(x))
      y = self.c2(torch.relu(self.b2(self.c1(o))))
      return (self.sc(o) if self.sc is not None else x) + y

  if arch == "resnet18":
    w = lambda c: max(1, int(round(c * width)))  # noqa: E731
    layers = [nn.Conv2d(in_ch, w(64), 3, 1, 1, bias=False), nn.BatchNorm2d(w(64)), nn.ReLU(inplace=True)]
    cin = w(64)
    for stage, c in enumerate((64, 128, 256, 512)):
      for j in range(2):
        layers.append(Basic(cin, w(c), 2 if stage > 0 and j == 0 else 1))
        cin = w(c)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
  if arch in ("wrn16_4", "wrn28_2"):
    depth, widen = (16, 4) if arch == "wrn16_4" else (28, 2)
    widen = max(1, int(round(widen * width)))
    nb = (depth - 4) // 6
    layers = [nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)]
    cin = 16
    for stage, c in enumerate((16 * widen, 32 * widen, 64 * widen)):
      for j in range(nb):
        layers.append(Wide(cin, c, 2 if stage > 0 and j == 0 else 1))
        cin = c
    return nn.Sequential(*layers, nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(cin, num_classes))
  return None


def bench_torch(s: Setting) -> dict | None:
  try:
    import torch
  except ImportError:
    return None
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  net = _torch_model(s.arch, s.width, s.num_classes, s.image[2], s.image[0])
  if net is None:
    return None
  torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest kernels, as a tuned PyTorch script does
  net = net.to(dev).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  x = torch.randint(0, 256, (s.batch, s.image[2], s.image[0], s.image[1]), device=dev, dtype=torch.uint8)
  y = torch.randint(0, s.num_classes, (s.batch,), device=dev)
  use_bf16 = s.dtype == "bfloat16"

  def run(steps):
    for _ in range(steps):
      xb = (x.float() / 255.0).contiguous(memory_format=torch.channels_last)
      with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=use_bf16):
        loss = torch.nn.functional.cross_entropy(net(xb), y)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    if dev == "cuda":
      torch.cuda.synchronize()

  run(3)  # warm-up (cudnn autotune)
  t = _best_time(lambda: run(s.steps), s.repeats)
  return {"torch_img_s": s.steps * s.batch / t, "torch_device": dev, "torch": torch.__version__}


# ---------------------------------------------------------------------------------------------

def _device_name() -> str:
  d = jax.devices()[0]
  kind = str(getattr(d, "device_kind", "") or d.platform)
  name = d.platform if kind.lower() == d.platform else f"{d.platform}_{kind}"
  return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def main(argv=None) -> int:
  has_accel = jax.default_backend() in ("gpu", "tpu")
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--tiny", action="store_true", default=not has_accel,
                 help="CPU-sized settings (default when no GPU/TPU)")
  p.add_argument("--arch", action="append", default=None,
                 help=f"NAME[@WIDTH] (repeatable); default {', '.join(GPU_ARCHS)} (tiny: {', '.join(TINY_ARCHS)})")
  p.add_argument("--strategy", action="append", type=report.strategy_arg, default=None,
                 help="train_many strategy: vmap, sequential, an int group size or auto (measured; the "
                      "chosen one is timed) (repeatable; default vmap, sequential and auto; tiny: vmap)")
  p.add_argument("--models", type=int, default=None, help="M (default 16; tiny 4)")
  p.add_argument("--batch", type=int, default=None, help="per-model batch (default 128; tiny 32)")
  p.add_argument("--steps", type=int, default=None, help="timed steps per model (default 20; tiny 4)")
  p.add_argument("--image", type=int, default=None, help="image side, 3 channels (default 32; tiny 16)")
  p.add_argument("--num-classes", type=int, default=10)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                 help="compute dtype (default bfloat16 on GPU/TPU, float32 on CPU)")
  p.add_argument("--chunk-size", type=int, default=None, help="train_many chunk size (default: all M)")
  p.add_argument("--repeats", type=int, default=None, help="timed repeats, best kept (default 3; tiny 2)")
  p.add_argument("--peak-tflops", type=float, default=None,
                 help="device peak for the utilisation column (default 989 = H100 dense bf16 on GPU)")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
  p.add_argument("--out", default=None, help="JSON path (default experiments/results/bench_shadow_<device>[_<archs>].json)")
  a = p.parse_args(argv)

  tiny = a.tiny
  archs = a.arch or list(TINY_ARCHS if tiny else GPU_ARCHS)
  strategies = a.strategy or (["vmap"] if tiny else ["vmap", "sequential", "auto"])
  m = a.models or (4 if tiny else 16)
  batch = a.batch or (32 if tiny else 128)
  steps = a.steps or (4 if tiny else 20)
  side = a.image or (16 if tiny else 32)
  dtype = a.dtype or ("bfloat16" if has_accel else "float32")
  repeats = a.repeats or (2 if tiny else 3)
  peak = a.peak_tflops if a.peak_tflops is not None else (989.0 if has_accel else None)
  key = jax.random.key(0)

  # one file per device, and per architecture list when --arch is given, so split runs do not collide
  suffix = "" if a.arch is None else "_" + re.sub(r"[^A-Za-z0-9]+", "_", "_".join(a.arch)).strip("_").lower()
  out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"bench_shadow_{_device_name()}{suffix}.json"

  def write(rows):
    result = {
        "device": str(jax.devices()[0]), "device_kind": getattr(jax.devices()[0], "device_kind", ""),
        "backend": jax.default_backend(), "device_count": jax.device_count(), "jax": jax.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "tiny": tiny,
        "peak_tflops": peak, "command": " ".join([os.path.basename(sys.argv[0])] + list(argv or sys.argv[1:])),
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)

  rows = []
  header = (f"{'arch':<16}{'strategy':<17}{'M':>4}{'many img/s':>12}{'single':>10}{'loop':>10}"
            f"{'many/loop':>10}{'many/1':>8}{'TFLOP/s':>9}{'util':>7}{'torch':>9}{'jax1/torch':>11}")
  print(f"# {jax.devices()[0]} | jax {jax.__version__} | {dtype} | batch {batch}/model | {steps} steps | "
        f"{side}x{side}x3", flush=True)
  print(header, flush=True)
  for spec in archs:
    name, width = _parse_arch(spec)
    t_row = None
    for strat in strategies:
      s = Setting(name, width, m, batch, steps, (side, side, 3), a.num_classes, dtype, strat, a.chunk_size, repeats)
      r = bench_jax(s, key)
      r["arch_spec"] = spec
      if t_row is None and not a.no_torch:
        t_row = bench_torch(s)
      if t_row:
        r.update(t_row)
        r["ratio_jax_single_vs_torch"] = r["single_img_s"] / t_row["torch_img_s"]
        r["ratio_many_vs_torch"] = r["many_img_s"] / t_row["torch_img_s"]
      r["utilisation"] = (None if (peak is None or r["many_tflops_s"] is None) else r["many_tflops_s"] / peak)
      rows.append(r)
      write(rows)  # after every row: a run cut short (time limit) keeps what it measured
      def fmt(v, width, spec, suffix=""):
        return f"{'-':>{width}}" if v is None else f"{format(v, spec) + suffix:>{width}}"

      util = None if r["utilisation"] is None else 100 * r["utilisation"]
      label = f"auto:{r['auto_choice']}" if strat == "auto" else str(strat)
      print(f"{spec:<16}{label:<17}{m:>4}{r['many_img_s']:12.0f}{r['single_img_s']:10.0f}{r['loop_img_s']:10.0f}"
            f"{r['ratio_many_vs_loop']:9.2f}x{r['ratio_many_vs_single']:7.2f}x{fmt(r['many_tflops_s'], 9, '.3f')}"
            f"{fmt(util, 7, '.1f', '%')}{fmt(r.get('torch_img_s'), 9, '.0f')}"
            f"{fmt(r.get('ratio_jax_single_vs_torch'), 11, '.2f', 'x')}", flush=True)

  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
