"""Layer Attack Unlearning (Kim, Lee, Woo, AAAI 2024): class unlearning and random 10 % forgetting.

Reproduce (CPU scale, Fashion-MNIST subset from ../shared/data, MLP 256-256; a few minutes on 2 cores):
    python experiments/lau_paper.py
GPU scale (CIFAR-10 JPEG, ResNet-18):
    python experiments/lau_paper.py --scale gpu
Smoke (digits, seconds; run by the test suite):
    python experiments/lau_paper.py --smoke --out /tmp/lau_smoke

LAU vs finetune and neggrad_plus: forget accuracy, test accuracy, ZRF and wall time.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402

from jaxunlearn.run import RunConfig  # noqa: E402

METHODS = ("lau", "finetune", "neggrad_plus")


def jobs(scale: str, smoke: bool) -> list[tuple[str, RunConfig]]:
  if scale == "gpu":
    base = RunConfig(dataset=f"npz:{report.CIFAR}", model="resnet18", epochs=30, batch_size=128, lr=0.1,
                     augment=True)
    ov: tuple = ()
  else:
    ds, ntr, nte = report.cpu_dataset(smoke)
    base = RunConfig(dataset=ds, model="mlp", width=0.25 if smoke else 1.0, epochs=1 if smoke else 12,
                     batch_size=64, lr=0.05, train_subset=ntr, test_subset=nte, progress=not smoke)
    ov = (("finetune", "epochs", "1" if smoke else "4"), ("neggrad_plus", "epochs", "1" if smoke else "4"))
  return [(label, report.cfg_replace(base, forget=f, methods=METHODS, overrides=ov, evals=("zrf",)))
          for label, f in (("class unlearning", "class:3"), ("random 10 %", "random:0.1"))]


def main(argv=None):
  return report.main(argv, doc=__doc__, name="lau_paper", title="Layer Attack Unlearning", plot_prefix="LAU", jobs=jobs,
                     columns=lambda label: ("forget_acc", "retain_acc", "test_acc", "zrf", "seconds", "speedup"))


if __name__ == "__main__":
  main()
