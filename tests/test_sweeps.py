"""Grids and seeds as one program: grid parsing, sweep == single runs, selection never reads the test split, seed statistics."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxunlearn import cli
from jaxunlearn import many
from jaxunlearn import sweeps
from jaxunlearn import train as jtrain
from jaxunlearn import unlearn as jun
from jaxunlearn.errors import ConfigError
from jaxunlearn.run import RunConfig

TINY_JOB = dict(dataset="digits", train_subset=300, test_subset=150, model="mlp", width=0.25, epochs=3,
                batch_size=32, progress=False, executor="scan")


def test_grid_values_lists_and_ranges():
  assert sweeps.parse_values("1e-4, 5e-4,1e-3", "x") == ("1e-4", "5e-4", "1e-3")
  np.testing.assert_allclose([float(v) for v in sweeps.parse_values("log:1e-4:1e-2:3", "x")], [1e-4, 1e-3, 1e-2])
  np.testing.assert_allclose([float(v) for v in sweeps.parse_values("lin:0:1:5", "x")], [0, 0.25, 0.5, 0.75, 1])
  for bad, needle in [("log:0:1:3", "LO > 0"), ("log:1:2", "log:LO:HI:N"), ("lin:a:1:2", "numbers"),
                      ("", "no values"), ("1,1", "twice"), ("lin:0:1:0", "N >= 1")]:
    with pytest.raises(ConfigError, match=needle):
      sweeps.parse_values(bad, "m.lr")


def test_grid_groups_static_options_and_batches_traced_ones():
  grid = sweeps.parse_grid("scrub", ["scrub.lr=1e-4,1e-3", "epochs=2,3", "alpha=0.1,0.5"])
  assert grid.size == 8
  points, groups = sweeps.expand_grid(grid, jun.make_config("scrub"))
  assert len(points) == 8 and points[0] == {"lr": 1e-4, "epochs": 2, "alpha": 0.1}
  assert sorted(g.static["epochs"] for g in groups) == [2, 3]  # epochs is discrete: one program per value
  for g in groups:
    assert g.config.epochs == g.static["epochs"]
    assert set(g.hparams) == {"lr", "alpha"}  # continuous options are data of one program
    for j, i in enumerate(g.indices):
      assert points[i]["epochs"] == g.static["epochs"]
      assert g.hparams["lr"][j] == np.float32(points[i]["lr"]) and g.hparams["alpha"][j] == np.float32(points[i]["alpha"])
  assert sorted(i for g in groups for i in g.indices) == list(range(8))
  for entries, needle in [(["neggrad.lr=1"], "not the tuned method"), (["lr=1", "lr=2"], "given twice"),
                          (["nonsense=1"], "has no option"), (["lr"], "expected")]:
    with pytest.raises(ConfigError, match=needle):
      sweeps.parse_grid("scrub", entries)
  with pytest.raises(ConfigError, match="epochs"):
    sweeps.expand_grid(sweeps.parse_grid("scrub", ["epochs=x"]), jun.make_config("scrub"))


def test_sweep_of_configs_and_seeds_equals_single_runs(blobs, mlp_model):
  """Model k * S + s of the one-program sweep == configuration k run alone on seed s's original."""
  x, y, _, _ = blobs
  tcfg = jtrain.TrainConfig(epochs=2, batch_size=16, lr=0.05)
  root = jax.random.key(7)
  seeds = 2
  originals, _ = sweeps.train_originals(mlp_model, tcfg, x, y, seeds, root, executor="scan", progress=False)
  retain, forget = np.flatnonzero(y != 0), np.flatnonzero(y == 0)
  data = jun.UnlearnData.create(x, y, retain, forget, num_classes=4)
  cfg = jun.make_config("finetune", {"epochs": "1", "batch_size": "16"})
  lrs = np.array([0.01, 0.2], np.float32)
  states = sweeps.run_grid("finetune", cfg, originals, data, root, seeds=seeds, hparams={"lr": lrs},
                           executor="scan", progress=False)
  assert many.num_models_of(states) == len(lrs) * seeds
  for s in range(seeds):
    single, _ = jtrain.train_model(mlp_model, tcfg, x, y, np.arange(len(y)), jax.random.fold_in(sweeps.original_key(root), s),
                                   progress=False, executor="scan")
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(many.take(originals, s).params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    for k, lr in enumerate(lrs):
      method = jun.make("finetune", jun.replace(cfg, lr=float(lr)))
      one, _ = jax.jit(method)(many.take(originals, s), data, sweeps.seed_key(root, "finetune", s))
      for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.take(states, k * seeds + s).params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
  # the two lrs give different models, the two seeds different originals (the test could fail)
  assert not np.allclose(np.asarray(jax.tree.leaves(many.take(states, 0).params)[0]),
                         np.asarray(jax.tree.leaves(many.take(states, seeds).params)[0]))
  assert not np.allclose(np.asarray(jax.tree.leaves(many.take(originals, 0).params)[0]),
                         np.asarray(jax.tree.leaves(many.take(originals, 1).params)[0]))


@pytest.mark.parametrize("name,option,values", [("lfssd", "alpha", (1.0, 3.0, 8.0)), ("fisher", "alpha", (1e-8, 1e-6, 1e-4))])
def test_a_grid_of_a_method_without_training_equals_single_runs(blobs, mlp_model, name, option, values):
  """Methods without a training loop sweep per seed (one original, one key, the K settings vmapped: the
  importances are computed once): model k * S + s is still configuration k run alone on seed s."""
  x, y, _, _ = blobs
  tcfg = jtrain.TrainConfig(epochs=2, batch_size=16, lr=0.05)
  root, seeds = jax.random.key(3), 2
  originals, _ = sweeps.train_originals(mlp_model, tcfg, x, y, seeds, root, executor="scan", progress=False)
  retain, forget = np.flatnonzero(y != 0), np.flatnonzero(y == 0)
  data = jun.UnlearnData.create(x, y, retain, forget, num_classes=4)
  cfg = jun.make_config(name, {})
  vals = np.asarray(values, np.float32)
  states = sweeps.run_grid(name, cfg, originals, data, root, seeds=seeds, hparams={option: vals}, executor="scan",
                           progress=False)
  assert many.num_models_of(states) == len(vals) * seeds
  leaves = {}
  for s in range(seeds):
    for k, v in enumerate(vals):
      one, _ = jax.jit(jun.make(name, jun.replace(cfg, **{option: float(v)})))(
          many.take(originals, s), data, sweeps.seed_key(root, name, s))
      leaves[k, s] = jax.tree.leaves(one.params)
      for a, b in zip(leaves[k, s], jax.tree.leaves(many.take(states, k * seeds + s).params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # settings and seeds give different models (the comparison could fail)
  assert any(not np.allclose(a, b) for a, b in zip(leaves[0, 0], leaves[len(vals) - 1, 0]))
  assert any(not np.allclose(a, b) for a, b in zip(leaves[0, 0], leaves[0, 1]))


def test_objectives_against_a_hand_computation():
  acc = {"retain": np.array([[0.9, 0.8]]), "forget": np.array([[0.5, 0.2]]), "val": np.array([[0.7, 0.6]]),
         "heldout": np.array([[0.45, 0.1]])}
  oracle = {"retain": np.array([1.0, 0.9]), "forget": np.array([0.4, 0.4]), "val": np.array([0.7, 0.7])}
  obj = sweeps.objective_oracle(acc, np.array([[0.6, 0.5]]), oracle, np.array([0.5, 0.5]))
  np.testing.assert_allclose(obj, [[0.1 + 0.1 + 0.0 + 0.1, 0.1 + 0.2 + 0.1 + 0.0]])
  obj, ok = sweeps.objective_no_oracle(acc, np.array([0.92, 0.9]), whole_class=False, retain_tolerance=0.05)
  np.testing.assert_array_equal(ok, [[True, False]])  # 0.8 < 0.9 - 0.05
  np.testing.assert_allclose(obj, [[0.05, np.inf]])
  obj, _ = sweeps.objective_no_oracle(acc, np.array([0.92, 0.8]), whole_class=True, retain_tolerance=0.05)
  np.testing.assert_allclose(obj, [[0.5, 0.2]])  # whole classes: the target is 0
  assert sweeps.choose(np.array([[0.3, 0.3], [0.1, np.nan], [0.2, 0.25]])) == 2  # NaN is never best


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
  out = tmp_path_factory.mktemp("tune")
  cfg = sweeps.TuneConfig(**TINY_JOB, method="finetune", forget="class:3", grid=("finetune.lr=0.0003,0.3",),
                          seeds=2, out=str(out))
  pt = sweeps.prepare_tune(cfg)
  return pt, sweeps.execute_tune(pt)


def test_tune_selection_never_reads_the_test_split(tuned):
  pt, clean = tuned
  ds = pt.run.ds
  poisoned_ds = dataclasses.replace(ds, y_test=(ds.y_test + 1) % ds.num_classes)  # every test label wrong
  poisoned = sweeps.execute_tune(dataclasses.replace(pt, run=dataclasses.replace(pt.run, ds=poisoned_ds)))
  assert poisoned["choice"] == clean["choice"]
  for a, b in zip(clean["configs"], poisoned["configs"]):
    assert a["objective"] == b["objective"] and a["acc"]["val"] == b["acc"]["val"]
    assert max(b["acc"]["test"]) < min(a["acc"]["test"])  # the test split was evaluated, and poisoned


def test_tune_results_choose_the_forgetting_config_and_hold_every_seed(tuned):
  pt, r = tuned
  assert r["seeds"] == 2 and len(r["configs"]) == 2 and r["programs"] == 1
  for c in r["configs"]:
    assert len(c["acc"]["forget"]) == 2 and len(c["objective"]) == 2
    assert c["std"]["forget"] == pytest.approx(np.std(c["acc"]["forget"]))
    assert c["mean"]["objective"] == pytest.approx(np.mean(c["objective"]))
  # class forgetting: the oracle never predicts class 3; lr 0.3 moves the model much further than 0.0003
  assert r["oracle"]["mean"]["forget"] < 0.05
  assert r["choice"]["index"] == int(np.argmin([c["mean"]["objective"] for c in r["configs"]]))
  assert r["choice"]["values"] == {"lr": pytest.approx(0.3)} and r["configs"][1]["mean"]["forget"] < 0.1
  # the validation split is carved from the training data: disjoint from what the models trained on
  assert r["sizes"]["val"] == len(pt.val_y) and r["sizes"]["retain"] + r["sizes"]["forget"] + r["sizes"]["val"] == 300


def test_tune_cli_writes_json_table_and_plot(tmp_path, capsys):
  out = tmp_path / "t"
  code = cli.main(["tune", "--dataset", "digits", "--train-subset", "300", "--test-subset", "150", "--model", "mlp",
                   "--width", "0.25", "--epochs", "2", "--executor", "scan", "--method", "neggrad_plus",
                   "--grid", "neggrad_plus.alpha=0.9,0.99,0.999", "--seeds", "1", "--select", "no-oracle",
                   "--out", str(out), "--quiet"])
  stdout = capsys.readouterr().out
  assert code == 0
  r = json.loads((out / "results.json").read_text())
  assert r["select"] == "no-oracle" and [c["values"]["alpha"] for c in r["configs"]] == pytest.approx([0.9, 0.99, 0.999])
  # a choice at an end of the grid is flagged, one in its middle is not
  at_edge = r["choice"]["values"]["alpha"] in (0.9, 0.999)
  assert any("neggrad_plus.alpha: the choice" in w for w in r["warnings"]) == at_edge
  assert "chosen: --set neggrad_plus.alpha=" in stdout and "objective" in stdout
  assert (out / "sweep.png").stat().st_size > 1000


def test_run_seeds_reports_mean_and_std_of_the_per_seed_values(tmp_path, capsys):
  cfg = RunConfig(**TINY_JOB, methods=("finetune",), forget="class:3", seeds=3, out=str(tmp_path / "s"),
                  evals=("tow", "mia"))
  _, r = sweeps.run_job(cfg)
  assert r["seeds"] == 3 and r["complete"] and set(r["models"]) == {"original", "retrain", "finetune"}
  for name, e in r["models"].items():
    for split in ("retain", "forget", "test"):
      vals = e["acc_per_seed"][split]
      assert len(vals) == 3
      assert e["acc"][split] == pytest.approx(np.mean(vals)) and e["acc_std"][split] == pytest.approx(np.std(vals))
  assert json.loads((tmp_path / "s" / "results.json").read_text())["models"]["finetune"]["acc_per_seed"] == \
      r["models"]["finetune"]["acc_per_seed"]
  table = sweeps.format_seeds(r)
  assert "±" in table and "mean ± std over 3 seeds" in table
  # --eval per seed: seed s's unlearned model against seed s's oracle (ToW from the per-seed accuracies)
  ft, rt = r["models"]["finetune"], r["models"]["retrain"]
  tow = [np.prod([1 - abs(ft["acc_per_seed"][k][s] - rt["acc_per_seed"][k][s]) for k in ("retain", "forget", "test")])
         for s in range(3)]
  np.testing.assert_allclose(ft["evals_per_seed"]["tow"], tow, rtol=1e-9)
  assert ft["evals"]["tow"] == pytest.approx(np.mean(tow)) and ft["evals_std"]["tow"] == pytest.approx(np.std(tow))
  assert len(r["models"]["original"]["evals_per_seed"]["mia"]) == 3 and "tow" not in r["models"]["original"]["evals"]
  assert r["mia_convention"] == {"mia": "scrub_logreg_loss"} and "scrub_logreg_loss" in table and "tow" in table


def test_a_killed_seeds_run_resumes_after_its_finished_models(tmp_path, monkeypatch):
  """``run --seeds``, killed while its third model (finetune) runs: results.json keeps the original and the
  oracle; the same job again reuses their entries, loads the originals' weights (saved as they finished)
  instead of training them, runs finetune only, and equals an uninterrupted run; .resume goes at the end."""
  from jaxunlearn import checkpoint
  from jaxunlearn.sweeps import engine

  cfg = RunConfig(**TINY_JOB, methods=("finetune",), forget="class:3", seeds=2, out=str(tmp_path / "k"), evals=("tow",))
  real_grid, real_load = engine.run_grid, checkpoint.load
  ran, loads = [], []

  def grid(name, *a, kill=None, **k):
    if name == kill:
      raise KeyboardInterrupt
    ran.append(name)
    return real_grid(name, *a, **k)

  monkeypatch.setattr(engine, "run_grid", lambda *a, **k: grid(*a, kill="finetune", **k))
  with pytest.raises(KeyboardInterrupt):
    sweeps.run_job(cfg)
  partial = json.loads((tmp_path / "k" / "results.json").read_text())
  assert partial["complete"] is False and list(partial["models"]) == ["original", "retrain"]
  assert (tmp_path / "k" / ".resume" / "originals").is_dir()

  ran.clear()
  monkeypatch.setattr(engine, "run_grid", grid)
  monkeypatch.setattr(checkpoint, "load", lambda path, *a, **k: loads.append(path) or real_load(path, *a, **k))
  _, r = sweeps.run_job(cfg)
  assert r["complete"] and r["resumed"] == ["original", "retrain"] and ran == ["finetune"]
  assert [p.relative_to(tmp_path / "k") for p in loads] == [Path(".resume/originals/chunk_00000")]
  assert not (tmp_path / "k" / ".resume").exists()
  for name in ("original", "retrain"):
    assert r["models"][name] == partial["models"][name]

  _, whole = sweeps.run_job(dataclasses.replace(cfg, out=str(tmp_path / "w")))
  assert "resumed" not in whole
  for name in ("original", "retrain", "finetune"):
    assert r["models"][name]["acc_per_seed"] == whole["models"][name]["acc_per_seed"], name
  assert r["models"]["finetune"]["evals_per_seed"] == whole["models"]["finetune"]["evals_per_seed"]


def test_run_tuned_runs_the_default_grid_first_and_uses_its_choice(tmp_path, capsys):
  out = tmp_path / "r"
  code = cli.main(["run", "--dataset", "digits", "--train-subset", "300", "--test-subset", "150", "--model", "mlp",
                   "--width", "0.25", "--epochs", "2", "--executor", "scan", "--method", "finetune", "--tuned",
                   "--forget", "class:3", "--out", str(out), "--quiet"])
  capsys.readouterr()
  assert code == 0
  r = json.loads((out / "results.json").read_text())
  tune = json.loads((out / "tune-finetune" / "results.json").read_text())
  assert len(tune["configs"]) == 5 and list(tune["grid"]) == ["lr"]  # the default grid: 5 learning rates
  chosen = tune["choice"]["values"]["lr"]
  assert r["tuned"]["finetune"]["choice"]["values"]["lr"] == chosen
  assert r["config"]["methods"]["finetune"]["optim"]["lr"] == pytest.approx(chosen)


def test_steps_executor_sequential_sweep_equals_the_vmapped_one(trained, class_data):
  """The CPU sweep path (steps executor, models one after another) == the lockstep (vmap) one."""
  lrs = np.array([0.01, 0.2], np.float32)
  cfg = jun.make_config("finetune", {"epochs": "1", "batch_size": "32"})
  out = {s: many.unlearn_many(trained, class_data, jax.random.key(3), "finetune", cfg, hparams={"lr": lrs},
                              num_models=2, executor="steps", strategy=s, progress=False)[0]
         for s in ("sequential", "vmap")}
  for p, q in zip(jax.tree.leaves(out["sequential"].params), jax.tree.leaves(out["vmap"].params)):
    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=2e-4, atol=2e-5)
  assert sweeps.engine.sweep_strategy("steps", trained.model) == "sequential"
  assert sweeps.engine.sweep_strategy("scan", trained.model) == "vmap"


@pytest.mark.parametrize("name", sorted(set(jun.METHODS) - {"retrain"}))
def test_every_method_has_a_default_grid_of_its_own_hyperparameters(name):
  """``tune`` (and ``run --tuned``) works for every method: its default grid parses against its config, varies
  at least one traced hyperparameter, and every point is a valid config (no compile)."""
  cfg = jun.make_config(name)
  grid = sweeps.parse_grid(name, sweeps.default_grid(name, cfg))
  points, groups = sweeps.expand_grid(grid, cfg)
  assert len(points) >= 3 and {k for k, _ in grid.axes} & set(jun.make(name).hparams)
  assert sorted(i for g in groups for i in g.indices) == list(range(len(points)))


def test_a_choice_at_the_end_of_a_numeric_grid_axis_is_flagged():
  from jaxunlearn.sweeps.select import edge_warnings

  axes = (("lr", ("1e-05", "0.0001", "0.001")), ("alpha", ("0.9", "0.99", "0.999")), ("l1", ("1e-5", "2e-4")),
          ("mode", ("a", "b", "c")))
  w = edge_warnings("neggrad", axes, {"lr": 0.001, "alpha": 0.99, "l1": 2e-4, "mode": "c"})
  assert w == ["neggrad.lr: the choice 0.001 is the largest value of its grid (1e-05 .. 0.001); the best setting may "
               "lie beyond it: widen the grid (e.g. --grid neggrad.lr=log:0.0001:0.01:5)"]  # l1 has 2 values, mode none
  w = edge_warnings("x", axes[:2], {"lr": 1e-05, "alpha": 0.9})
  assert [line.split(":")[0] for line in w] == ["x.lr", "x.alpha"] and all("smallest" in line for line in w)
  assert "log:1e-06:0.0001:5" in w[0] and "e.g." not in w[1]  # no log proposal for an axis spanning < 1 decade
  assert edge_warnings("x", axes[:2], {"lr": 1e-4, "alpha": 0.99}) == []


def test_paired_gain_is_the_mean_and_sample_std_of_per_seed_differences():
  import statistics

  from jaxunlearn.sweeps.select import paired_gain

  base, other = [0.31, 0.52, 0.40, 0.2], [0.30, 0.45, 0.41, 0.1]
  d = [a - b for a, b in zip(base, other)]
  gain, noise = paired_gain(base, other)
  assert gain == pytest.approx(statistics.fmean(d)) and noise == pytest.approx(statistics.stdev(d))
  assert paired_gain(other, base)[0] == pytest.approx(-gain)
  assert paired_gain([0.3, float("nan")], [0.4, 0.5])[0] == float("inf")  # NaN counts as +inf: only base failed
  assert paired_gain([0.3, None], [0.4, 0.5])[0] == float("inf")  # as results.json stores it (null)
  assert paired_gain([0.3, 0.1], [0.2, float("inf")])[0] == float("-inf")
  g, n = paired_gain([0.5], [0.2])
  assert g == pytest.approx(0.3) and np.isnan(n)
  with pytest.raises(ValueError, match="same seeds"):
    paired_gain([0.1, 0.2], [0.1])


def test_paired_margin_is_the_one_sided_t_tests_critical_gain():
  from jaxunlearn.sweeps.select import paired_margin

  # one-sided 95 % quantiles of Student's t from a printed table (df 2, 4, 9), not from scipy
  for n, t in ((3, 2.919986), (5, 2.131847), (10, 1.833113)):
    assert paired_margin(0.01, n) == pytest.approx(t * 0.01 / np.sqrt(n), rel=1e-6)
  assert paired_margin(0.01, 3, level=0.025) == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-6)
  assert np.isnan(paired_margin(0.01, 1)) and np.isnan(paired_margin(float("nan"), 3))
  with pytest.raises(ValueError, match="level"):
    paired_margin(0.01, 3, level=1.5)


def test_a_killed_tuning_job_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
  """A host-stepped sweep (what a CPU runs for a CNN; chunks of 2 models), killed while saving its 4th chunk:
  the same job run again (as a new process: no originals kept in memory) loads the 3 finished chunks
  (originals, oracles, the grid's first), computes only the last -- equal to what the killed run had
  computed -- and writes results.json; the chunks are removed then."""
  from jaxunlearn import checkpoint
  from jaxunlearn.sweeps import tune as tune_mod

  job = dict(TINY_JOB, epochs=1, executor="steps", train_subset=200)
  cfg = sweeps.TuneConfig(**job, method="finetune", forget="class:3", grid=("finetune.lr=0.003,0.3",), seeds=2,
                          chunk_size=2, out=str(tmp_path / "t"))
  real_save, saved, lost = checkpoint.save, [], []

  def save(path, tree, kill_at=None):
    if kill_at is not None and len(saved) + 1 == kill_at:
      lost.append(jax.tree.map(np.asarray, tree))
      raise KeyboardInterrupt
    saved.append((path, jax.tree.map(np.asarray, tree)))
    return real_save(path, tree)

  monkeypatch.setattr(checkpoint, "save", lambda p, t: save(p, t, kill_at=4))
  tune_mod._PAIRS.clear()
  with pytest.raises(KeyboardInterrupt):
    sweeps.run_tune(cfg)
  ck = tmp_path / "t" / ".resume"
  assert [p.relative_to(ck).parts[1:] for p, _ in saved] == [
      ("original", "chunk_00000"), ("retrain", "chunk_00000"), ("grid_0", "chunk_00000")]
  assert not (tmp_path / "t" / "results.json").exists() and len(lost) == 1

  saved.clear()
  monkeypatch.setattr(checkpoint, "save", save)
  tune_mod._PAIRS.clear()
  r = sweeps.run_tune(cfg)
  assert [p.parts[-2:] for p, _ in saved] == [("grid_0", "chunk_00001")]
  for a, b in zip(jax.tree.leaves(saved[0][1]), jax.tree.leaves(lost[0])):
    np.testing.assert_array_equal(a, b)
  assert r["resumed"] is True and r["executor"] == "steps" and len(r["configs"]) == 2
  assert json.loads((tmp_path / "t" / "results.json").read_text())["choice"] == r["choice"]
  assert not ck.exists()
