"""CPU training speed: the one training loop's two executors side by side, and PyTorch where it imports.

    python experiments/bench_cpu.py                  # cnn (28x28x1), resnet18@0.25 (32x32x3), mlp; batch 128
    python experiments/bench_cpu.py --tiny           # seconds-long smoke version (the test suite runs it)
    PYTHONPATH=/path/to/torch python experiments/bench_cpu.py --arch cnn   # with the PyTorch column

For each network, one run each, back to back in one process, same data, batch and thread count:

* ``scan``: ``jaxunlearn.train.train_model(executor="scan")``, every epoch one jitted ``lax.scan`` of steps
  (how GPUs/TPUs run it);
* ``steps``: ``train_model(executor="steps")``, each step its own jitted call (the CPU default for
  convolutional nets since this benchmark);
* ``torch``: the same network in PyTorch (SGD momentum, same batch), if ``torch`` imports
  (never installed by CI; ``pip install -e ".[bench]"``).

Images/s exclude compilation (``train_model``'s ``seconds``; the ``steps`` executor's first step,
which compiles, is excluded too). Prints a table with the ratios steps/scan and steps/torch and writes
``experiments/results/bench_cpu.json`` (after every row, so a run cut short keeps its rows).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (experiments/report.py)

from jaxunlearn import models as jmodels  # noqa: E402
from jaxunlearn.atomic import write_json_atomic  # noqa: E402
from jaxunlearn.train import TrainConfig  # noqa: E402
from jaxunlearn.train import train_model  # noqa: E402

# name -> (model, width, image shape, steps per timed epoch)
ARCHS = {
    "cnn": ("cnn", 1.0, (28, 28, 1), 20),
    "resnet18@0.25": ("resnet18", 0.25, (32, 32, 3), 6),
    "mlp": ("mlp", 1.0, (28, 28, 1), 60),
}
TINY = {
    "cnn": ("cnn", 0.25, (8, 8, 1), 4),
    "resnet18@0.25": ("resnet18", 0.125, (8, 8, 3), 2),
    "mlp": ("mlp", 0.25, (8, 8, 1), 4),
}


def bench_jax(arch: str, width: float, image, steps: int, batch: int, executor: str) -> dict:
  model = jmodels.create_model(arch, num_classes=10, input_shape=image, width=width)
  n = steps * batch
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, *image), dtype=np.uint8)
  y = rng.integers(0, 10, n).astype(np.int32)
  cfg = TrainConfig(epochs=2, batch_size=batch, lr=0.05)  # epoch 1 warms caches; both epochs timed
  _, hist = train_model(model, cfg, x, y, np.arange(n), jax.random.key(0), progress=False, executor=executor)
  return {"img_s": cfg.epochs * n / hist["seconds"], "seconds": hist["seconds"],
          "compile_seconds": hist["compile_seconds"], "executor": hist["executor"]}


def _torch_net(arch: str, width: float, image):
  import bench_shadow  # noqa: PLC0415  (the PyTorch twins of our networks)
  from torch import nn  # noqa: PLC0415

  if arch == "mlp":
    d = int(np.prod(image))
    h = max(1, int(256 * width))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))
  return bench_shadow._torch_model(arch, width, 10, image[2], image[0])


def bench_torch(arch: str, width: float, image, steps: int, batch: int) -> dict | None:
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  net = _torch_net(arch, width, image)
  opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  x = torch.randint(0, 256, (batch, image[2], image[0], image[1]), dtype=torch.uint8)
  y = torch.randint(0, 10, (batch,))

  def run(k):
    for _ in range(k):
      loss = torch.nn.functional.cross_entropy(net(x.float() / 255.0), y)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()

  run(2)
  t = time.perf_counter()
  run(2 * steps)
  secs = time.perf_counter() - t
  return {"img_s": 2 * steps * batch / secs, "seconds": secs, "torch": torch.__version__,
          "threads": torch.get_num_threads()}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arch", action="append", choices=tuple(ARCHS), help="network (repeatable; default all)")
  p.add_argument("--batch", type=int, default=128, help="batch size")
  p.add_argument("--tiny", action="store_true", help="a seconds-long smoke version")
  p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_cpu.json"),
                 help="JSON output")
  a = p.parse_args(argv)
  if a.batch < 1:
    print(f"bench_cpu: error: --batch must be >= 1, got {a.batch}", file=sys.stderr)
    return 2
  table = TINY if a.tiny else ARCHS
  batch = 8 if a.tiny else a.batch
  rows = []
  out = {"benchmark": "bench_cpu", "batch": batch, "tiny": a.tiny, "cpu_count": os.cpu_count(),
         "env": report.env_info(), "rows": rows}
  print(f"{'network':<16}{'scan img/s':>12}{'steps img/s':>13}{'torch img/s':>13}{'steps/scan':>12}{'steps/torch':>13}")
  for name in a.arch or tuple(table):
    arch, width, image, steps = table[name]
    row = {"network": name, "model": arch, "width": width, "image": list(image)}
    for ex in ("scan", "steps"):
      row[ex] = bench_jax(arch, width, image, steps, batch, ex)
    row["torch"] = None if a.tiny else bench_torch(arch, width, image, steps, batch)
    row["steps_over_scan"] = row["steps"]["img_s"] / row["scan"]["img_s"]
    row["steps_over_torch"] = None if row["torch"] is None else row["steps"]["img_s"] / row["torch"]["img_s"]
    rows.append(row)
    write_json_atomic(Path(a.out), out)
    t = "-" if row["torch"] is None else f"{row['torch']['img_s']:.0f}"
    r = "-" if row["steps_over_torch"] is None else f"{row['steps_over_torch']:.2f}"
    print(f"{name:<16}{row['scan']['img_s']:>12.0f}{row['steps']['img_s']:>13.0f}{t:>13}"
          f"{row['steps_over_scan']:>11.1f}x{r:>12}")
  print(f"wrote {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
