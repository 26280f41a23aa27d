"""Every experiment script's --smoke setting runs and writes its tables, plots and JSON."""

import importlib.util
import json
import pathlib
import sys

import pytest

EXP = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, EXP / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  sys.modules[name] = mod  # dataclasses in the script look their module up
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("name,jobs,methods", [
    ("scrub_paper", 3, {"retrain", "finetune", "neggrad_plus", "cf_k", "eu_k", "bad_teacher", "scrub", "scrub_rewind"}),
    ("del_paper", 4, {"retrain", "del", "finetune", "neggrad_plus", "random_label", "salun"}),
    ("lau_paper", 2, {"retrain", "lau", "finetune", "neggrad_plus"}),
])
def test_experiment_smoke(tmp_path, name, jobs, methods, capsys):
  _load(name).main(["--smoke", "--out", str(tmp_path)])
  r = json.loads((tmp_path / "results.json").read_text())
  assert len(r["jobs"]) == jobs
  seen = set().union(*(set(j["models"]) for j in r["jobs"].values()))
  assert methods <= seen
  md = (tmp_path / "README.md").read_text()
  assert md.count("| retrain |") == jobs
  pngs = list(tmp_path.glob("*.png"))
  assert len(pngs) == jobs and all(p.stat().st_size > 1000 for p in pngs)


def test_challenge_metric_smoke(tmp_path, capsys):
  r = _load("challenge_metric").main(["--smoke", "--out", str(tmp_path)])
  assert set(r["methods"]) == {"finetune", "neggrad_plus", "scrub"}
  for m in r["methods"].values():
    assert 0.0 <= m["forget_quality"] <= 1.0 and m["challenge_score"] >= 0.0
    assert set(m["spread"]) == {"3"}
  assert json.loads((tmp_path / "results.json").read_text())["num_models"] == 6
  assert (tmp_path / "epsilons.png").stat().st_size > 1000


def test_bench_shadow_tiny_writes_ratios_and_the_auto_choice(tmp_path, capsys):
  out = tmp_path / "bench.json"
  _load("bench_shadow").main(["--tiny", "--arch", "mlp", "--image", "8", "--models", "2", "--batch", "8",
                              "--steps", "2", "--repeats", "1", "--no-torch", "--strategy", "vmap",
                              "--strategy", "auto", "--out", str(out)])
  rows = json.loads(out.read_text())["results"]
  assert [r["strategy"] for r in rows] == ["vmap", "auto"]
  assert rows[1]["auto_choice"] in ("vmap", "sequential")
  assert set(rows[1]["auto_probe"]["seconds_per_model_step"]) == {"sequential", "vmap"}
  for r in rows:
    assert r["many_img_s"] > 0 and r["ratio_many_vs_loop"] == r["many_img_s"] / r["loop_img_s"]
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
