"""Every experiment script's --smoke setting runs and writes its tables, plots and JSON."""

import importlib.util
import json
import pathlib
import sys

import jax
import pytest

EXP = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, EXP / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  sys.modules[name] = mod  # dataclasses in the script look their module up
  spec.loader.exec_module(mod)
  return mod


# The job each paper's smoke test runs (None: every job): the one with the script's own code path (SCRUB's
# confusion job reports IC columns; DEL's masked non-IID job runs the DEL mask over the baselines). Every job
# of every script is validated and its data loaded (nothing compiled) by test_every_paper_job_is_a_valid_run.
@pytest.mark.parametrize("name,job,methods", [
    ("scrub_paper", "resolving confusion",
     {"retrain", "finetune", "neggrad_plus", "cf_k", "eu_k", "bad_teacher", "scrub", "scrub_rewind"}),
    ("del_paper", "non-IID + DEL mask", {"retrain", "finetune", "neggrad_plus", "random_label", "salun"}),
    ("lau_paper", None, {"retrain", "lau", "finetune", "neggrad_plus"}),
])
def test_experiment_smoke(tmp_path, name, job, methods, capsys):
  mod = _load(name)
  mod.main(["--smoke", "--out", str(tmp_path)] + (["--job", job] if job else []))
  r = json.loads((tmp_path / "results.json").read_text())
  ran = [job] if job else [label for label, _ in mod.jobs("cpu", True)]
  assert list(r["jobs"]) == ran
  seen = set().union(*(set(j["models"]) for j in r["jobs"].values()))
  assert methods | {"original"} == seen
  md = (tmp_path / "README.md").read_text()
  assert md.count("| retrain |") == len(ran)
  assert "Data: digits (the embedded 8x8 digits) (200 train / 60 test examples)" in md  # the data are named
  if name == "scrub_paper":  # the confusion job's own measure: interclass confusion for every model
    assert all("ic" in e for e in r["jobs"][job]["models"].values())
  pngs = list(tmp_path.glob("*.png"))
  assert len(pngs) == len(ran) and all(p.stat().st_size > 1000 for p in pngs)


@pytest.mark.parametrize("name", ["scrub_paper", "del_paper", "lau_paper"])
def test_every_paper_job_is_a_valid_run(name):
  """Each job of a paper script, at both scales, passes the run's validation (methods, presets, overrides,
  forget spec, mask) before anything compiles; at the smoke scale its data load too."""
  from jaxunlearn import run as jrun

  mod = _load(name)
  for smoke in (True, False):
    for label, cfg in mod.jobs("cpu", smoke):
      if smoke:
        p = jrun.prepare(cfg)
        assert len(p.split.forget) > 0, (name, label)
      else:  # the full scale's file may be absent here: validate without loading
        cfg.check()
  assert len(mod.jobs("gpu", False)) == len(mod.jobs("cpu", True))


@pytest.mark.parametrize("name", ["scrub_paper", "del_paper", "lau_paper", "challenge_metric"])
def test_never_into_the_committed_results_with_other_data(name, tmp_path, monkeypatch, capsys):
  mod = _load(name)
  report = sys.modules["report"]
  monkeypatch.chdir(tmp_path)  # the default output folder would be tmp_path/experiments/results/...
  missing = tmp_path / "shared" / "data" / "fashion_mnist.npz"
  monkeypatch.setattr(report, "FASHION", missing)
  monkeypatch.setattr(report, "CIFAR", tmp_path / "shared" / "data" / "cifar10_jpeg.npz")
  for argv, needle in (([], f"{missing} does not exist"), (["--smoke"], "--smoke needs --out DIR"),
                       (["--scale", "gpu", "--out", "x"], "--scale gpu needs")):
    with pytest.raises(SystemExit) as e:
      mod.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
  assert not (tmp_path / "experiments").exists() and not (tmp_path / "x").exists()
  report.check_data(name, "cpu", False, "mine")  # a folder of the user's: digits, with a note
  assert "does not exist: running on the embedded digits" in capsys.readouterr().err


def test_challenge_metric_smoke(tmp_path, capsys, monkeypatch):
  import numpy as np

  from jaxunlearn import metrics
  from jaxunlearn import studies

  # spies: the ensemble the script computed and what it passed to challenge_score, to check its numbers
  ensembles, scored = [], []
  real_ens, real_score = studies.challenge_ensemble, metrics.challenge_score
  monkeypatch.setattr(studies, "challenge_ensemble", lambda *a, **kw: ensembles.append(real_ens(*a, **kw)) or ensembles[-1])
  monkeypatch.setattr(metrics, "challenge_score", lambda *a: scored.append((a, real_score(*a))) or scored[-1][1])
  r = _load("challenge_metric").main(["--smoke", "--out", str(tmp_path)])
  assert "Data: digits (the embedded 8x8 digits) (200 train / 60 test examples)" in (tmp_path / "README.md").read_text()
  assert list(r["methods"]) == ["finetune", "neggrad_plus", "scrub"] and len(ensembles) == 1 and len(scored) == 3
  ens = ensembles[0]
  conf_r, acc_r = ens.confidences["retrained"], ens.accuracy["retrained"]
  assert conf_r.shape == (6, r["sizes"]["forget"])
  np.testing.assert_allclose([r["retrained"]["acc"][k] for k in ("retain", "test")],
                             [np.mean(acc_r["retain"]), np.mean(acc_r["test"])], rtol=1e-6)
  for (name, m), (args, value) in zip(r["methods"].items(), scored):
    conf_u, acc_u = ens.confidences[name], ens.accuracy[name]
    assert conf_u.shape == conf_r.shape and not np.allclose(conf_u, conf_r)  # that method's own models
    # the reported forget quality is the challenge metric of THIS method's models against the retrained ones
    fq = metrics.forget_quality(conf_u, conf_r)
    assert m["forget_quality"] == fq.score and m["epsilon_median"] == pytest.approx(float(np.median(fq.epsilons)))
    # the challenge score scales that F by the method's retain and test accuracy relative to retraining (at the
    # smoke scale every F is 0, so the score's value alone would not show this: check the arguments)
    f_arg, ra_u, ra_r, ta_u, ta_r = args
    assert float(getattr(f_arg, "score", f_arg)) == fq.score
    for got, want in ((ra_u, acc_u["retain"]), (ra_r, acc_r["retain"]), (ta_u, acc_u["test"]), (ta_r, acc_r["test"])):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert m["challenge_score"] == value
    assert m["acc"]["forget"] == pytest.approx(float(np.mean(acc_u["forget"])))
    assert set(m["spread"]) == {"3"}
  # the reference row: retrained halves against each other; here F > 0, so a constant-0 metric would fail
  assert r["retrain_vs_retrain"] == metrics.forget_quality(conf_r[:3], conf_r[3:]).score > 0
  assert json.loads((tmp_path / "results.json").read_text())["num_models"] == 6
  assert (tmp_path / "epsilons.png").stat().st_size > 1000


def test_bench_shadow_tiny_writes_ratios_and_the_auto_choice(tmp_path, capsys):
  out = tmp_path / "bench.json"
  _load("bench_shadow").main(["--tiny", "--arch", "mlp", "--image", "8", "--models", "2", "--batch", "8",
                              "--steps", "2", "--repeats", "1", "--no-torch", "--strategy", "vmap",
                              "--strategy", "auto", "--out", str(out)])
  rows = json.loads(out.read_text())["results"]
  assert [r["strategy"] for r in rows] == ["vmap", "auto"]
  # auto reports the candidate its probe measured fastest
  probe = rows[1]["auto_probe"]["seconds_per_model_step"]
  assert set(probe) == {"sequential", "vmap"} and all(v is not None and v > 0 for v in probe.values())
  assert str(rows[1]["auto_choice"]) == min(probe, key=probe.get)
  for r in rows:
    # throughputs count every model's images (2 models x 2 steps x 8) over the measured best times
    assert (r["models"], r["steps"], r["batch"]) == (2, 2, 8)
    assert r["many_img_s"] == pytest.approx(2 * 2 * 8 / r["many_s"], rel=1e-12)
    assert r["many_first_call_s"] > 0 and r["many_s"] > 0  # (no timing comparison: tests never time)
  assert "auto:" in capsys.readouterr().out


def test_experiment_jobs_can_run_in_separate_calls(tmp_path, capsys):
  mod = _load("lau_paper")
  labels = [label for label, _ in mod.jobs("cpu", True)]
  assert len(labels) == 2
  mod.main(["--smoke", "--out", str(tmp_path), "--job", labels[1]])
  first = json.loads((tmp_path / "results.json").read_text())
  assert list(first["jobs"]) == [labels[1]]
  mod.main(["--smoke", "--out", str(tmp_path), "--job", labels[0]])
  both = json.loads((tmp_path / "results.json").read_text())
  assert set(both["jobs"]) == set(labels) and both["jobs"][labels[1]] == first["jobs"][labels[1]]
  assert (tmp_path / "README.md").read_text().count("| retrain |") == 2
  with pytest.raises(SystemExit):
    mod.main(["--smoke", "--out", str(tmp_path), "--job", "nope"])
  assert "unknown --job 'nope'" in capsys.readouterr().err


def test_bench_cpu_tiny_writes_both_executors(tmp_path, capsys):
  out = tmp_path / "cpu.json"
  assert _load("bench_cpu").main(["--tiny", "--arch", "cnn", "--out", str(out)]) == 0
  r = json.loads(out.read_text())
  (row,) = r["rows"]
  assert (row["scan"]["executor"], row["steps"]["executor"]) == ("scan", "steps")
  assert row["steps_over_scan"] == pytest.approx(row["steps"]["img_s"] / row["scan"]["img_s"], rel=1e-12)
  # throughput counts both timed epochs of 4 steps x 8 images over the measured seconds
  for ex in ("scan", "steps"):
    assert row[ex]["img_s"] == pytest.approx(2 * 4 * 8 / row[ex]["seconds"], rel=1e-12)
  assert "steps/scan" in capsys.readouterr().out
  assert _load("bench_cpu").main(["--batch", "0", "--out", str(tmp_path / "x.json")]) == 2


def test_bench_sweep_tiny_writes_ratios_and_the_two_sides_agree(tmp_path, capsys):
  out = tmp_path / "sweep.json"
  assert _load("bench_sweep").main(["--tiny", "--out", str(out)]) == 0
  r = json.loads(out.read_text())
  assert r["all_agree"] is True and r["k"] == 2
  for key in ("backend", "device_kind", "jax", "command", "env"):
    assert key in r
  assert "--tiny" in r["command"]
  # mlp: auto = scan; cnn on CPU: auto = steps
  assert [(row["model"], row["method"]) for row in r["rows"]] == [("mlp", "finetune"), ("cnn", "finetune")]
  for row in r["rows"]:
    assert row["agreement"]["ok"] and len(row["agreement"]["configs"]) == 2
    assert row["executor"] in ("scan", "steps") and len(row["lrs"]) == 2
    for side in ("loop", "sweep"):
      s = row[side]
      assert s["first_call_s"] > 0 and len(s["net_s"]) == row["repeats"] and s["min_s"] == min(s["net_s"])
    # the ratios are the reported times' ratios (no timing comparison: tests never time)
    assert row["ratio"] == pytest.approx(row["loop"]["min_s"] / row["sweep"]["min_s"], rel=1e-12)
    assert row["sweep_configs_s"] == pytest.approx(2 / row["sweep"]["min_s"], rel=1e-12)
  assert "ratio" in capsys.readouterr().out
  assert _load("bench_sweep").main(["--k", "0", "--out", str(tmp_path / "x.json")]) == 2


def test_device_check_tiny_writes_every_section(tmp_path, capsys):
  """experiments/device_check.py --tiny (what CI can run of the one device command): every section runs
  on a synthetic CIFAR-shaped file, the correctness checks pass on the CPU, and the JSON holds them all."""
  out = tmp_path / "check.json"
  code = _load("device_check").main(["--tiny", "--data", str(tmp_path / "absent.npz"), "--out", str(out),
                                     "--budget-s", "900"])  # (a loaded machine must not skip a section here)
  r = json.loads(out.read_text())
  assert code == 0, {k: v.get("error", "")[-2000:] for k, v in r["sections"].items()}
  assert list(r["sections"]) == ["correctness", "throughput", "airbench", "scrub", "sweep", "memory"]
  assert r["synthetic_data"] and r["backend"] == "cpu" and r["correctness_pass"] is True
  c = r["sections"]["correctness"]
  assert c["train_many_vs_single"]["max_abs_param_diff"] <= c["train_many_vs_single"]["tolerance"]
  assert c["confidence"]["max_abs_diff_device_f32_vs_host_f64"] < 1e-4
  assert r["sections"]["scrub"]["seconds"] > 0 and set(r["sections"]["scrub"]["acc"]) == {"original", "retrain", "scrub"}
  assert "skipped" not in json.dumps(r["sections"])


def test_device_check_isolates_a_failing_section_in_its_own_process(tmp_path, capsys):
  """Without --tiny each section runs in a child process: one that fails (here an unreadable data file)
  comes back with the child's traceback, the parent never touched the device, and the JSON names the device
  the child saw."""
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not an npz file")
  out = tmp_path / "check.json"
  code = _load("device_check").main(["--only", "airbench", "--data", str(bad), "--out", str(out)])
  r = json.loads(out.read_text())
  row = r["sections"]["airbench"]
  assert code == 1 and r["isolated_sections"] is True and list(r["sections"]) == ["airbench"]
  assert "Traceback" in row["error"] and "bad.npz" in row["error"] + row.get("stderr_tail", "")
  assert r["backend"] == "cpu" and r["versions"]["jax"] == jax.__version__
  assert r["correctness_pass"] is None


def test_device_check_refuses_a_missing_data_file_before_any_work(tmp_path, capsys):
  code = _load("device_check").main(["--data", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "c.json")])
  assert code == 2 and not (tmp_path / "c.json").exists()
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "absent.npz" in err


def test_device_check_skips_what_does_not_fit_its_budget(tmp_path, capsys):
  out = tmp_path / "check.json"
  assert _load("device_check").main(["--tiny", "--budget-s", "1", "--data", str(tmp_path / "absent.npz"),
                                     "--out", str(out)]) == 0
  r = json.loads(out.read_text())
  assert all("skipped" in v for v in r["sections"].values()) and len(r["sections"]) == 6
  assert r["correctness_pass"] is None  # nothing checked is not a pass
