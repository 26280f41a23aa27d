"""The NeurIPS-2023 unlearning challenge's forget-quality metric, and how its value spreads with N.

Reproduce (CPU scale: Fashion-MNIST subset from ../shared/data, MLP, N = 64 per side; ~10 min on 2 cores):
    python experiments/challenge_metric.py
GPU scale (CIFAR-10 JPEG, ResNet-18 width 0.5, N = 512 per side as in the challenge):
    python experiments/challenge_metric.py --scale gpu
Smoke (digits, N = 6; run by the test suite):
    python experiments/challenge_metric.py --smoke --out /tmp/challenge_smoke

One original model is trained on the whole train split; N models are retrained from scratch on the
retain set (random 10 % forget set) and, for each method, N models are unlearned from that ONE
original with different keys (the challenge's protocol). Methods: finetune (the challenge's
baseline: 1 epoch, SGD lr 1e-3, momentum 0.9, wd 5e-4, cosine), neggrad_plus and scrub. Reported:
forget quality F, the challenge score F * RA_u/RA_r * TA_u/TA_r, and F recomputed on random subsets
of n < N models per side (mean and standard deviation over draws): the spread the organisers could
not afford to measure.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import report  # noqa: E402

from jaxunlearn import data as jdata  # noqa: E402
from jaxunlearn import metrics  # noqa: E402
from jaxunlearn import models as jmodels  # noqa: E402
from jaxunlearn import plotting  # noqa: E402
from jaxunlearn import studies  # noqa: E402
from jaxunlearn import unlearn as jun  # noqa: E402
from jaxunlearn.atomic import write_json_atomic  # noqa: E402
from jaxunlearn.train import TrainConfig  # noqa: E402

METHODS = (("finetune", "challenge", {}), ("neggrad_plus", None, {"epochs": "1"}), ("scrub", "large", {}))


def setting(scale: str, smoke: bool):
  if scale == "gpu":
    return dict(dataset=f"npz:{report.CIFAR}", model="resnet18", width=0.5, n=512, subsets=(16, 64, 256),
                train=TrainConfig(epochs=15, batch_size=256, lr=0.1, augment=True), ntr=None, nte=None)
  ds, ntr, nte = report.cpu_dataset(smoke)
  if smoke:
    return dict(dataset=ds, model="mlp", width=0.25, n=6, subsets=(3,), train=TrainConfig(epochs=1, batch_size=64, lr=0.05),
                ntr=ntr, nte=nte)
  return dict(dataset=ds, model="mlp", width=1.0, n=64, subsets=(8, 16, 32), ntr=ntr, nte=nte,
              train=TrainConfig(epochs=12, batch_size=64, lr=0.05))


def subset_spread(conf_u, conf_r, n, draws, rng):
  """Forget quality on random n-model subsets of each side: (mean, std) over ``draws`` draws."""
  vals = []
  for _ in range(draws):
    iu = rng.choice(conf_u.shape[0], n, replace=False)
    ir = rng.choice(conf_r.shape[0], n, replace=False)
    vals.append(metrics.forget_quality(conf_u[iu], conf_r[ir]).score)
  return float(np.mean(vals)), float(np.std(vals))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--scale", choices=("cpu", "gpu"), default="cpu")
  ap.add_argument("--smoke", action="store_true")
  ap.add_argument("--models", type=int, default=None, help="N per side (default: 64 on CPU, 512 on GPU)")
  ap.add_argument("--chunk-size", type=int, default=None, help="models per compiled call (default: all)")
  ap.add_argument("--strategy", type=report.strategy_arg, default="vmap",
                  help="vmap, sequential, an int group size, or auto (measured once; see BUILD.md)")
  ap.add_argument("--out", default=None)
  a = ap.parse_args(argv)
  report.check_data("challenge_metric.py", a.scale, a.smoke, a.out)
  s = setting(a.scale, a.smoke)
  n_models = a.models or s["n"]
  out = Path(a.out or f"experiments/results/challenge_{a.scale}")
  ds = jdata.load_dataset(s["dataset"])
  if s["ntr"]:
    ds = ds.subset(s["ntr"], s["nte"], seed=0)
  split = jdata.make_forget_split("random:0.1", ds.y_train, num_classes=ds.num_classes, seed=0)
  model = jmodels.create_model(s["model"], num_classes=ds.num_classes, input_shape=ds.image_shape,
                               mean=ds.mean, std=ds.std, width=s["width"])
  cfgs = {m: jun.make_config(m, ov, preset=pr) for m, pr, ov in METHODS}  # validate before work
  key = jax.random.key(0)
  t0 = time.perf_counter()
  ens = studies.challenge_ensemble(key, ds, split, model, s["train"], cfgs, num_models=n_models,
                                   chunk_size=a.chunk_size, strategy=a.strategy, progress=not a.smoke)
  conf_r, acc_r = ens.confidences["retrained"], ens.accuracy["retrained"]
  t_retrain = ens.seconds["retrained"]
  rng = np.random.default_rng(0)
  results = {"setting": {k: (str(v) if k == "train" else v) for k, v in s.items()}, "num_models": n_models,
             "sizes": {"retain": len(split.retain), "forget": len(split.forget), "test": len(ds.y_test)},
             "retrained": {"acc": {k: float(v.mean()) for k, v in acc_r.items()}, "seconds": t_retrain,
                           "models_per_second": n_models / t_retrain},
             "methods": {}, "env": report.env_info()}
  eps = {}
  for name, _, _ in METHODS:
    conf_u, acc_u, secs = ens.confidences[name], ens.accuracy[name], ens.seconds[name]
    fq = metrics.forget_quality(conf_u, conf_r)
    score = metrics.challenge_score(fq, acc_u["retain"], acc_r["retain"], acc_u["test"], acc_r["test"])
    spread = {str(k): subset_spread(conf_u, conf_r, k, 5 if a.smoke else 20, rng) for k in s["subsets"] if k < n_models}
    eps[name] = fq.epsilons
    results["methods"][name] = {"config": dataclasses.asdict(cfgs[name]), "forget_quality": fq.score, "challenge_score": score,
                                "acc": {k: float(v.mean()) for k, v in acc_u.items()}, "seconds": secs,
                                "models_per_second": n_models / secs, "epsilon_median": float(np.median(fq.epsilons)),
                                "spread": spread}
  # the two halves of the retrained models against each other: the best a method could score
  h = n_models // 2
  results["retrain_vs_retrain"] = metrics.forget_quality(conf_r[:h], conf_r[h:2 * h]).score if h >= 2 else None
  results["seconds_total"] = time.perf_counter() - t0
  out.mkdir(parents=True, exist_ok=True)
  plotting.plot_epsilon_hist(eps, out / "epsilons.png", title=f"Per-example epsilon, N={n_models} per side")
  write_json_atomic(out / "results.json", results)
  rows = ["| method | forget quality | challenge score | retain acc % | test acc % | forget acc % | unlearn models/s | "
          + " | ".join(f"F at n={k} (mean ± sd)" for k in s["subsets"] if k < n_models) + " |",
          "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len([k for k in s["subsets"] if k < n_models])]
  for name, r in results["methods"].items():
    rows.append(f"| {name} | {r['forget_quality']:.3f} | {r['challenge_score']:.3f} | {100 * r['acc']['retain']:.1f} | "
                f"{100 * r['acc']['test']:.1f} | {100 * r['acc']['forget']:.1f} | {r['models_per_second']:.1f} | "
                + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in r["spread"].values()) + " |")
  ra = results["retrained"]["acc"]
  rows.append(f"| retrain (reference) | {results['retrain_vs_retrain'] if results['retrain_vs_retrain'] is not None else float('nan'):.3f} (half vs half) |  | "
              f"{100 * ra['retain']:.1f} | {100 * ra['test']:.1f} | {100 * ra['forget']:.1f} | "
              f"{results['retrained']['models_per_second']:.1f} |" + " |" * len([k for k in s["subsets"] if k < n_models]))
  cmd = "python experiments/challenge_metric.py" + (" --smoke" if a.smoke else "") + f" --scale {a.scale}"
  md = report.write_markdown(out, f"NeurIPS-2023 forget quality, N = {n_models} per side", cmd,
                             [("scores", "\n".join(rows) + "\n\n![](epsilons.png)")], results["env"],
                             data=report.data_name(s["dataset"], s["ntr"], s["nte"]))
  print(md.read_text())
  return results


if __name__ == "__main__":
  main()
