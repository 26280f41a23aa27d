"""experiments/benchmark.py: the smoke protocol runs job by job (resumable), and its summary equals an
independent recomputation from the evaluation job's own per-seed results."""

import importlib.util
import json
import math
import pathlib
import sys

import numpy as np
import pytest

EXP = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def bench():
  sys.path.insert(0, str(EXP))
  spec = importlib.util.spec_from_file_location("benchmark", EXP / "benchmark.py")
  mod = importlib.util.module_from_spec(spec)
  sys.modules["benchmark"] = mod
  spec.loader.exec_module(mod)
  return mod


def test_deepunlearn_smoke_resumes_job_by_job_and_summarizes_the_seeds(bench, tmp_path, capsys):
  out = str(tmp_path / "b")
  assert bench.main(["deepunlearn", "--scale", "smoke", "--out", out, "--job", "next", "--quiet"]) == 0
  r = json.loads((tmp_path / "b" / "results.json").read_text())
  first = json.loads((tmp_path / "b" / "class_3" / "tune-finetune" / "results.json").read_text())
  # a choice at its learning-rate grid's end adds a re-tuning job (on the smoke data finetune's does today)
  retune = {"retune/class:3/finetune": False} if bench.retune_grid("finetune", first) else {}
  assert r["jobs"] == {"tune/class:3/finetune": True, "tune/class:3/ssd": False, **retune, "eval/class:3": False}
  assert r["forget"] == {}  # no evaluation yet: no table
  assert bench.main(["deepunlearn", "--scale", "smoke", "--out", out, "--quiet"]) == 0
  r = json.loads((tmp_path / "b" / "results.json").read_text())
  assert all(r["jobs"].values()) and len(r["jobs"]) == 3 + len(retune)
  capsys.readouterr()
  assert bench.main(["deepunlearn", "--scale", "smoke", "--out", out, "--list"]) == 0
  assert capsys.readouterr().out.count("done ") == 3 + len(retune)
  # the evaluation ran every method at its best tuning's choice (the re-tuning's where it won beyond the noise) ...
  ev = json.loads((tmp_path / "b" / "class_3" / "eval" / "results.json").read_text())
  root = tmp_path / "b"
  assert sorted(map(tuple, ev["job"]["overrides"])) == sorted(bench.tuned_overrides(root, "class:3", ("finetune", "ssd")))
  tune = bench.best_tuning(root, "class:3", "ssd")[1]
  assert ev["config"]["methods"]["ssd"]["alpha"] == pytest.approx(float(tune["choice"]["overrides"]["alpha"]))
  if retune:
    kind, best = bench.best_tuning(root, "class:3", "finetune")
    verdict = bench.retune_verdict(first, bench.tunings(root, "class:3", "finetune")["retune"])
    assert kind == ("retune" if verdict["moved"] else "tune")
    assert ev["config"]["methods"]["finetune"]["optim"]["lr"] == pytest.approx(float(best["choice"]["overrides"]["lr"]))
    assert r["forget"]["class:3"]["retuned"]["finetune"]["used"] == kind
    assert r["forget"]["class:3"]["retuned"]["finetune"]["verdict"] == verdict
    assert "- re-tuned on a wider grid: finetune: tune lr=" in (root / "README.md").read_text()
  # ... and the summary's gaps are the per-seed |acc - oracle acc| averaged, recomputed here
  e = r["forget"]["class:3"]
  for m in ("finetune", "ssd"):
    for s in ("retain", "forget", "test"):
      gaps = np.abs(np.asarray(ev["models"][m]["acc_per_seed"][s]) - np.asarray(ev["models"]["retrain"]["acc_per_seed"][s]))
      assert e["rows"][m][f"{s}_gap"][0] == pytest.approx(gaps.mean()) and len(gaps) == 2
    assert e["rows"][m]["svc"][0] == pytest.approx(np.mean(ev["models"][m]["evals_per_seed"]["svc"]))
  # the ranking: mean rank over the metrics, recomputed for two methods
  a, b = "finetune", "ssd"
  wins = {a: 0.0, b: 0.0}
  for met in bench.RANK_METRICS:
    va, vb = (e["rows"][n][met][0] if isinstance(e["rows"][n][met], list) else e["rows"][n][met] for n in (a, b))
    wins[a] += 1 + (vb < va)
    wins[b] += 1 + (va < vb)
  assert e["ranks"][a]["mean"] == pytest.approx(wins[a] / 5) and e["ranks"][b]["mean"] == pytest.approx(wins[b] / 5)
  assert e["ranking"][0] == min((a, b), key=lambda n: (wins[n], n))
  md = (tmp_path / "b" / "README.md").read_text()
  assert "| retrain |" in md and "- tuned: ssd: alpha=" in md
  assert all((tmp_path / "b" / f).stat().st_size > 1000
             for f in ("accuracy_class_3.png", "ranks_class_3.png", "rank_intervals_class_3.png"))
  # the ranking's bootstrap over the evaluation's seeds is written beside it and reproducible from results.json
  iv = e["rank_intervals"]
  idx = bench.bootstrap_indices(len(ev["models"]["retrain"]["acc_per_seed"]["retain"]), iv["draws"], iv["seed"])
  assert iv["methods"] == bench.rank_intervals(bench.bootstrap_mean_ranks(ev, idx), iv["level"])
  assert set(iv["methods"]) == {a, b}
  # protocol 3 on the top-ranked method: its U-LiRA and challenge studies at the tuned setting, tabulated
  priv = tmp_path / "p"
  assert bench.main(["privacy", "--scale", "smoke", "--from", out, "--out", str(priv), "--models", "4", "--quiet"]) == 0
  p = json.loads((priv / "results.json").read_text())
  top = e["ranking"][0]
  assert list(p["forget"]) == [top] and all(p["jobs"].values())
  u = json.loads((priv / f"ulira-{top}" / "results.json").read_text())
  c = json.loads((priv / f"challenge-{top}" / "results.json").read_text())
  assert u["num_models"] == 4 and p["forget"][top]["ulira_online"] == u["attacks"]["online"]
  assert p["forget"][top]["forget_quality"] == c["forget_quality"] and p["forget"][top]["klom_forget"] == c["klom"]["forget"]
  assert p["forget"][top]["ceiling_forget_quality"] == c["ceiling"]["forget_quality"]
  chosen = bench.best_tuning(root, "class:3", top)[1]["choice"]["overrides"]
  for k, v in chosen.items():  # the studies ran the method at its tuned setting
    assert c["method_config"].get(k, c["method_config"].get("optim", {}).get(k)) == pytest.approx(float(v))


def test_salun_smoke_writes_salun_columns_recomputed_from_its_evaluation(bench, tmp_path, capsys):
  """Protocol 2 from its own command: SalUn's columns (UA = 100 - FA, the average gap over RA, UA, TA and
  MIA-efficacy in points) equal a recomputation from the evaluation job's per-seed results, and the table
  prints the published CIFAR-10 row beside ours."""
  out = tmp_path / "s"
  assert bench.main(["salun", "--scale", "smoke", "--method", "finetune", "--out", str(out), "--quiet"]) == 0
  r = json.loads((out / "results.json").read_text())
  assert r["protocol"] == "salun" and all(r["jobs"].values()) and list(r["forget"]) == ["random:0.1"]
  ev = json.loads((out / "random_0.1" / "eval" / "results.json").read_text())["models"]
  sal = r["forget"]["random:0.1"]["salun"]

  def pct(name, split):  # mean over seeds of the per-seed accuracies, in %
    return 100 * float(np.mean(ev[name]["acc_per_seed"][split]))

  for n in ("retrain", "finetune"):
    assert sal[n]["RA"] == pytest.approx(pct(n, "retain")) and sal[n]["TA"] == pytest.approx(pct(n, "test"))
    assert sal[n]["FA"] == pytest.approx(pct(n, "forget")) and math.isclose(sal[n]["UA"], 100 - sal[n]["FA"])
    assert sal[n]["MIA"] == pytest.approx(100 * float(np.mean(ev[n]["evals_per_seed"]["svc"])))
    assert len(ev[n]["acc_per_seed"]["retain"]) == 2
  rt, ft = sal["retrain"], sal["finetune"]
  gap = np.mean([abs(ft[k] - rt[k]) for k in ("RA", "UA", "TA", "MIA")])
  assert ft["avg_gap"] == pytest.approx(gap) and rt["avg_gap"] == 0.0
  md = (out / "README.md").read_text()
  assert "| finetune |" in md and " / ".join(f"{v:.2f}" for v in bench.SALUN_PUBLISHED["finetune"]) in md
  assert "- tuned: finetune: lr=" in md


def test_bad_arguments_exit_2_before_any_work(bench, tmp_path, capsys):
  assert bench.main(["deepunlearn", "--scale", "smoke", "--method", "nope", "--out", str(tmp_path / "x")]) == 2
  assert "unknown method 'nope'" in capsys.readouterr().err
  assert bench.main(["privacy", "--scale", "smoke", "--out", str(tmp_path / "p")]) == 2
  assert "needs a finished deepunlearn result" in capsys.readouterr().err
  assert bench.main(["deepunlearn", "--scale", "smoke", "--job", "tune/x", "--out", str(tmp_path / "y")]) == 2
  assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_method_that_refuses_the_scales_model_is_left_out_or_refused(bench, tmp_path, capsys):
  # ct needs convolution kernels: the default method list leaves it out with the reason (recorded in
  # the summary), an explicit --method ct is bad input (exit 2) before any job runs
  assert bench.main(["deepunlearn", "--scale", "smoke", "--method", "ct", "--out", str(tmp_path / "x")]) == 2
  assert "--method ct: ct transposes convolution kernels, and model 'mlp' has none" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()
  assert bench.refusals(("ct", "finetune", "msg"), bench.scale_job("cpu")).keys() == {"ct"}
  assert bench.refusals(("ct",), dict(bench.scale_job("cpu"), model="cnn")) == {}
  every = bench.scale_defaults("deepunlearn", "cpu")["methods"]
  assert "ct" in every  # so main must drop it: the list printed has no ct job
  assert bench.main(["deepunlearn", "--scale", "cpu", "--dataset", "digits", "--list",
                     "--out", str(tmp_path / "l")]) == 0
  io = capsys.readouterr()
  assert "leaving out ct" in io.err and "/ct" not in io.out and "tune/class:7/msg" in io.out


def test_ranks_across_forget_sets_average_each_methods_per_set_mean_rank(bench, tmp_path):
  """The cross-forget-set table: a method's score is the mean of its per-set mean ranks, over the sets it ran
  on; a method missing from a set is sorted after the methods that ran on every set, whatever its ranks."""
  forget = {"class:3": {"ranks": {"a": {"mean": 1.0}, "b": {"mean": 3.0}, "c": {"mean": 2.0}}},
            "random:0.1": {"ranks": {"a": {"mean": 4.0}, "b": {"mean": 1.0}, "c": {"mean": 2.5}}},
            "noniid:2,5:0.1": {"ranks": {"a": {"mean": 2.0}, "b": {"mean": 1.5}}}}
  order, table = bench.rank_across(forget)
  assert table["a"]["mean"] == pytest.approx(7 / 3) and table["b"]["mean"] == pytest.approx(5.5 / 3)
  assert table["c"] == {"class:3": 2.0, "random:0.1": 2.5, "mean": 2.25, "sets": 2}
  assert order == ["b", "a", "c"]  # c's 2.25 beats a's 2.33, but it ran on two sets of three
  md = bench.across_markdown(order, table, list(forget))
  assert md[4] == "| b | 3.0 | 1.0 | 1.5 | 1.83 |  | 3 |" and md[6] == "| c | 2.0 | 2.5 |  | 2.25 |  | 2 |"
  bench.plot_rank_across(order, table, list(forget), tmp_path / "x.png", "t")
  assert (tmp_path / "x.png").stat().st_size > 1000


def test_rank_intervals_resample_the_seeds_jointly_and_match_the_exact_bootstrap(bench):
  """The ranking's bootstrap: every method's per-seed values resampled at the same seeds (paired with the
  oracle's). Two methods tie on every metric but the retain gap: a's per-seed gaps 0, 0, 10 points, b's 5, 5, 5.
  a has the smaller mean gap, and so place 1, exactly when a resample holds seed 3 at most once: probability
  (2/3)^3 + 3 (1/3)(2/3)^2 = 20/27, counted by hand, not by the code under test."""
  def model(retain, seconds=1.0):
    n = len(retain)
    per = {"retain": list(retain), "forget": [0.5] * n, "test": [0.8] * n}
    return {"acc_per_seed": per, "evals_per_seed": {"mia": [0.5] * n},
            "acc": {k: float(np.mean(v)) for k, v in per.items()}, "acc_std": {k: 0.0 for k in per},
            "seconds": seconds}
  r = {"models": {"original": model([1.0] * 3), "retrain": model([1.0] * 3), "a": model([1.0, 1.0, 0.9]),
                  "b": model([0.95] * 3)}}
  idx = bench.bootstrap_indices(3, draws=4000, seed=1)
  assert idx.shape == (4000, 3) and set(np.unique(idx)) == {0, 1, 2}
  draws = bench.bootstrap_mean_ranks(r, idx)
  iv = bench.rank_intervals(draws, level=0.9)
  assert iv["a"]["p_first"] == pytest.approx(20 / 27, abs=0.025) and iv["b"]["p_first"] == pytest.approx(7 / 27, abs=0.025)
  assert iv["a"]["place"] == [1, 2] and iv["b"]["place"] == [1, 2]
  # mean rank over 5 metrics: 1 everywhere but the retain gap (1 or 2; a tie gives both 1)
  assert {d["a"] for d in draws} <= {1.0, 1.2} and iv["a"]["score"] == [1.0, 1.2]
  assert (bench.bootstrap_indices(3, draws=4000, seed=1) == idx).all()  # the seed makes the draws reproducible
  # seeds that agree leave nothing to resample: the interval is the point
  r["models"]["a"] = model([0.99] * 3)
  iv = bench.rank_intervals(bench.bootstrap_mean_ranks(r, bench.bootstrap_indices(3, 200)))
  assert iv["a"] == {"score": [1.0, 1.0], "place": [1, 1], "p_first": 1.0} and iv["b"]["place"] == [2, 2]
  assert bench._place(iv, "a") == "1" and bench._place({"x": {"place": [3, 7]}}, "x") == "3-7"
  # joint: a method that tracks the oracle seed by seed has a zero gap in EVERY draw, so it is always first;
  # resampling each model's seeds on its own would pair it with other seeds' oracles (gaps up to 10 points)
  r = {"models": {"original": model([1.0] * 3), "retrain": model([1.0, 1.0, 0.9]), "c": model([1.0, 1.0, 0.9]),
                  "d": model([0.97] * 3)}}
  iv = bench.rank_intervals(bench.bootstrap_mean_ranks(r, bench.bootstrap_indices(3, 300)))
  assert iv["c"]["p_first"] == 1.0 and iv["d"]["place"] == [2, 2]
  # equal scores that differ by an ulp (a mean of per-set means) tie: both placed first
  iv = bench.rank_intervals([{"x": (13.2 + 8.2 + 9.0 + 7.8) / 4, "y": (12.8 + 7.8 + 8.6 + 9.0) / 4}])
  assert iv["x"]["place"] == iv["y"]["place"] == [1, 1]


def _fake_tuning(path, grid: dict, values: dict, objective: float, configs=None):
  """A finished tuning's results.json: its grid, its choice and the choice's mean objective (``configs``: the
  ``(values, per-seed objectives)`` of every configuration, the choice among them, instead)."""
  path.mkdir(parents=True, exist_ok=True)
  points = [{"values": {}, "mean": {"objective": 9.0}}, {"values": values, "mean": {"objective": objective}}]
  index = 1
  if configs is not None:
    points = [{"values": v, "objective": o, "mean": {"objective": float(np.mean(np.asarray(o, np.float64)))}}
              for v, o in configs]
    index = [i for i, (v, _) in enumerate(configs) if v == values][0]
  r = {"grid": grid, "configs": points, "choice": {"index": index, "values": values,
                                                   "overrides": {k: str(v) for k, v in values.items()}}}
  (path / "results.json").write_text(json.dumps(r))


def test_a_grid_end_choice_is_retuned_on_a_wider_grid_and_the_better_tuning_is_evaluated(bench, tmp_path, capsys):
  """A tuning whose learning rate sits at its grid's end adds a re-tuning job on the log grid a decade either
  side (other axes kept); the evaluation uses the re-tuning's choice where it beats the first choice beyond the
  seeds' noise, and an evaluation recorded at other overrides is stale."""
  import types

  from jaxunlearn import sweeps

  a = types.SimpleNamespace(forget=("class:3",), methods=("neggrad_plus", "ssd"), tune_seeds=1, seeds=2,
                            progress=False, retune=True)
  job, root = bench.scale_job("smoke"), tmp_path
  names = lambda: [j.name for j in bench.method_jobs(a, job, root)]  # noqa: E731
  assert names() == ["tune/class:3/neggrad_plus", "tune/class:3/ssd", "eval/class:3"]
  grid = {"lr": ["0.001", "0.01", "0.1"], "alpha": ["0.9", "0.99", "0.999"]}
  _fake_tuning(root / "class_3" / "tune-neggrad_plus", grid, {"lr": 0.1, "alpha": 0.999}, 0.5)
  _fake_tuning(root / "class_3" / "tune-ssd", {"alpha": ["1", "10", "100"], "lam": ["0.1", "1"]},
               {"alpha": 10.0, "lam": 1.0}, 0.4)  # interior choice: no re-tuning
  assert names() == ["tune/class:3/neggrad_plus", "tune/class:3/ssd", "retune/class:3/neggrad_plus", "eval/class:3"]
  first = json.loads((root / "class_3" / "tune-neggrad_plus" / "results.json").read_text())
  wide = bench.retune_grid("neggrad_plus", first)
  assert wide == ("neggrad_plus.lr=log:0.01:1:5", "neggrad_plus.alpha=0.9,0.99,0.999")  # alpha: no decade, kept
  axes = dict(sweeps.parse_grid("neggrad_plus", wide).axes)
  assert len(axes["lr"]) == 5 and float(axes["lr"][2]) == pytest.approx(0.1) and axes["alpha"] == tuple(grid["alpha"])
  for flags, listed in (([], True), (["--no-retune"], False)):
    capsys.readouterr()
    assert bench.main(["deepunlearn", "--scale", "smoke", "--method", "neggrad_plus", "--forget", "class:3",
                       "--out", str(root), "--list", *flags]) == 0
    assert ("todo  retune/class:3/neggrad_plus" in capsys.readouterr().out) is listed
  ev = root / "class_3" / "eval"
  eval_job = lambda: bench.method_jobs(a, job, root)[-1]  # noqa: E731

  def evaluated(ov):  # an evaluation's results.json recording the overrides it ran with
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "results.json").write_text(json.dumps({"complete": True, "job": {"overrides": [list(o) for o in ov]}}))

  before = bench.tuned_overrides(root, "class:3", a.methods)
  assert set(before) == {("neggrad_plus", "lr", "0.1"), ("neggrad_plus", "alpha", "0.999"), ("ssd", "alpha", "10.0"),
                         ("ssd", "lam", "1.0")}
  evaluated(reversed(before))  # order does not matter
  assert eval_job().done()
  # the re-tuning's choice replaces the first one only where it wins beyond the seeds' noise (one-sided paired
  # t-test at 5 %), both measured inside the re-tuning job (per-seed objectives of the same seeds)
  wide_grid = {"lr": list(axes["lr"]), "alpha": grid["alpha"]}
  first_v, new_v = {"lr": 0.1, "alpha": 0.999}, {"lr": 0.316228, "alpha": 0.999}
  for first_obj, new_obj, moved in (([0.30, 0.50, 0.40], [0.28, 0.45, 0.41], False),  # gain 0.02 < std 0.030
                                    # gain 0.0117 > std 0.0076 but < the t-test's margin 2.92 * 0.0076 / sqrt(3)
                                    ([0.30, 0.50, 0.40], [0.29, 0.48, 0.395], False),
                                    ([0.30, 0.50, 0.40], [0.20, 0.41, 0.28], True),  # gain 0.103 > margin 0.026
                                    ([0.30, None, 0.40], [0.9, 0.9, 0.9], True),  # the first failed a seed (JSON null)
                                    ([0.30, 0.2, 0.40], [0.1, None, 0.1], False),  # the re-tuned one did
                                    ([0.30], [0.29], True)):  # one seed: no noise estimate, any gain
    _fake_tuning(root / "class_3" / "retune-neggrad_plus", wide_grid, new_v, float(np.mean(np.asarray(new_obj, float))),
                 configs=[({"lr": 0.0316228, "alpha": 0.999}, [1.0] * len(new_obj)), (first_v, first_obj),
                          (new_v, new_obj)])
    d = np.asarray(first_obj, np.float64) - np.asarray(new_obj, np.float64)
    v = bench.retune_verdict(first, json.loads((root / "class_3" / "retune-neggrad_plus" / "results.json").read_text()))
    assert v["moved"] is moved
    if np.isfinite(d).all() and len(d) > 1:
      assert v["gain"] == pytest.approx(d.mean()) and v["noise"] == pytest.approx(np.std(d, ddof=1))
      # t_{0.95, 2} = 2.919986 (Student's t table), not scipy's
      assert v["margin"] == pytest.approx(2.919986 * np.std(d, ddof=1) / np.sqrt(3), rel=1e-6)
      assert v["moved"] is bool(d.mean() > v["margin"])
    after = bench.tuned_overrides(root, "class:3", a.methods)
    assert (("neggrad_plus", "lr", "0.316228") in after) is moved and (("neggrad_plus", "lr", "0.1") in after) is not moved
    assert eval_job().done() is not moved  # a re-tuning that changed the setting stales the evaluation
    stale = bench.stale_overrides(json.loads((ev / "results.json").read_text()), after)
    assert stale == ({"evaluated_at": [("neggrad_plus", "lr", "0.1")], "tuned_now": [("neggrad_plus", "lr", "0.316228")]}
                     if moved else None)
    assert bench.best_tuning(root, "class:3", "neggrad_plus")[0] == ("retune" if moved else "tune")
  # a re-tuning whose grid does not hold the first choice (made for an earlier first tuning) keeps the first
  _fake_tuning(root / "class_3" / "retune-neggrad_plus", wide_grid, new_v, 0.2,
               configs=[({"lr": 0.0316228, "alpha": 0.999}, [0.5, 0.6]), (new_v, [0.2, 0.2])])
  v = bench.retune_verdict(first, bench._read(root / "class_3" / "retune-neggrad_plus" / "results.json"))
  assert not v["moved"] and "not in the re-tuning's grid" in v["why"]
  # a first choice with 6 significant digits is found in the grid parsed from its proposal (the log grid's centre
  # is computed, not copied)
  odd = {"grid": {"lr": ["0.000316228", "0.00316228", "0.0316228"]},
         "choice": {"index": 2, "values": {"lr": 0.0316228}, "overrides": {"lr": "0.0316228"}}}
  (entry,) = bench.retune_grid("finetune", odd)
  centre = [{"lr": float(x)} for x in dict(sweeps.parse_grid("finetune", (entry,)).axes)["lr"]]
  assert bench._first_in_retune(odd, {"configs": [{"values": c} for c in centre]}) == 2
  # a re-tuning that chose the first setting again keeps it
  _fake_tuning(root / "class_3" / "retune-neggrad_plus", wide_grid, first_v, 0.3,
               configs=[(new_v, [0.5, 0.6]), (first_v, [0.3, 0.3])])
  assert bench.retune_verdict(first, bench._read(root / "class_3" / "retune-neggrad_plus" / "results.json"))["why"] == \
      "the re-tuning chose the same setting"
  assert bench.best_tuning(root, "class:3", "ssd")[0] == "tune"
  assert "retune/class:3/neggrad_plus" in [j.name for j in bench.method_jobs(a, job, root) if j.done()]
