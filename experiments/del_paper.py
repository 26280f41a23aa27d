"""DEL (Torkzadehmahani et al. 2024): localised unlearning at a 30 % parameter budget.

Reproduce (CPU scale, Fashion-MNIST subset from ../shared/data, MLP 256-256; a few minutes on 2 cores):
    python experiments/del_paper.py
GPU scale (CIFAR-10 JPEG, ResNet-18, the paper's 30 epochs of DEL finetuning):
    python experiments/del_paper.py --scale gpu
Smoke (digits, seconds; run by the test suite):
    python experiments/del_paper.py --smoke --out /tmp/del_smoke

10 % forget set, IID (``random:0.1``) and non-IID (``noniid:2,5:0.1``, drawn from classes 2 and 5).
DEL vs finetune, neggrad_plus, random_label, salun, and the same four methods under the DEL mask
(``--mask del:0.3``); forget/retain/test accuracy, their gaps to the oracle, and ToW.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402

from jaxunlearn.run import RunConfig  # noqa: E402

BASELINES = ("finetune", "neggrad_plus", "random_label", "salun")


def jobs(scale: str, smoke: bool) -> list[tuple[str, RunConfig]]:
  if scale == "gpu":
    base = RunConfig(dataset=f"npz:{report.CIFAR}", model="resnet18", epochs=30, batch_size=128, lr=0.1,
                     augment=True)
    ov: list = []
  else:
    ds, ntr, nte = report.cpu_dataset(smoke)
    ep = 1 if smoke else 12
    base = RunConfig(dataset=ds, model="mlp", width=0.25 if smoke else 1.0, epochs=ep, batch_size=64, lr=0.05,
                     train_subset=ntr, test_subset=nte, progress=not smoke)
    ov = [("del", "epochs", str(1 if smoke else 5))] + [(m, "epochs", str(1 if smoke else 4)) for m in BASELINES]
  out = []
  for tag, forget in (("IID", "random:0.1"), ("non-IID", "noniid:2,5:0.1")):
    out.append((f"{tag}", report.cfg_replace(base, forget=forget, methods=("del",) + BASELINES,
                                              overrides=tuple(ov), evals=("tow",))))
    out.append((f"{tag} + DEL mask", report.cfg_replace(base, forget=forget, methods=BASELINES, mask="del:0.3",
                                                         overrides=tuple(o for o in ov if o[0] != "del"),
                                                         evals=("tow",))))
  return out


def main(argv=None):
  return report.main(argv, doc=__doc__, name="del_paper", title="DEL paper: localised unlearning", plot_prefix="DEL paper", jobs=jobs,
                     columns=lambda label: ("forget_acc", "retain_acc", "test_acc", "gap_forget", "gap_retain", "gap_test", "tow",
                                                 "seconds"))


if __name__ == "__main__":
  main()
