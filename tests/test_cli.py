"""`jaxunlearn run`: JSON schema of results.json and one-line exits on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxunlearn import cli


def _run(args, capsys):
  code = cli.main(args)
  out, err = capsys.readouterr()
  return code, out, err


def test_run_writes_results_json_with_schema(tmp_path, capsys):
  out = tmp_path / "o"
  code, stdout, _ = _run(["run", "--model", "mlp", "--width", "0.25", "--epochs", "2", "--train-subset", "300",
                          "--test-subset", "100", "--forget", "random:0.1", "--method", "finetune",
                          "--set", "finetune.epochs=1", "--eval", "mia", "--eval", "zrf", "--eval", "tow",
                          "--quiet", "--out", str(out)], capsys)
  assert code == 0
  r = json.loads((out / "results.json").read_text())
  assert {"dataset", "model", "forget", "seed", "sizes", "models"} <= set(r)
  assert r["dataset"] == "digits" and r["model"] == "mlp" and r["forget"] == "random:0.1" and r["seed"] == 0
  assert r["sizes"] == {"retain": 270, "forget": 30, "test": 100}
  assert set(r["models"]) == {"original", "retrain", "finetune"}
  for name, entry in r["models"].items():
    assert set(entry["acc"]) == {"retain", "forget", "test"}
    assert all(0.0 <= v <= 1.0 for v in entry["acc"].values())
    assert entry["seconds"] > 0
  assert r["models"]["finetune"]["speedup_vs_retrain"] > 0 and r["complete"] is True
  assert r["config"]["methods"]["finetune"]["epochs"] == 1
  ft = r["models"]["finetune"]
  assert 0.0 <= ft["mia"] <= 1.0 and 1 - np.log(2) - 1e-9 <= ft["zrf"] <= 1.0 and 0.0 <= ft["tow"] <= 1.0
  expect_tow = np.prod([1 - abs(ft["acc"][s] - r["models"]["retrain"]["acc"][s]) for s in ("retain", "forget", "test")])
  assert ft["tow"] == pytest.approx(expect_tow)
  assert "tow" not in r["models"]["original"] and "mia" in r["models"]["original"]
  assert "finetune" in stdout and "retrain" in stdout
  assert (out / "accuracy.png").stat().st_size > 1000


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--method", "forget_everything"], "unknown method 'forget_everything'"),
    (["--model", "vgg99"], "unknown model 'vgg99'"),
    (["--forget", "random"], "malformed forget spec 'random'"),
    (["--forget", "class:12"], "class 12 does not exist"),
    (["--forget", "random:1.5"], "fraction 1.5 must lie in (0, 1)"),
    (["--dataset", "npz:/no/such/file.npz"], "npz file not found"),
    (["--set", "finetune.nonexistent=3"], "has no option 'nonexistent'"),
    (["--set", "finetune.epochs=abc"], "finetune.epochs='abc'"),
    (["--mask", "magic:0.3"], "unknown mask 'magic:0.3'"),
    (["--batch-size", "100000"], "batch size 100000 is larger"),
    (["--epochs", "-1"], "epochs must be"),
])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, needle):
  out = tmp_path / "o"
  code, stdout, err = _run(["run", "--out", str(out), "--quiet"] + args, capsys)
  assert code == 2
  lines = [l for l in err.strip().splitlines() if l.strip()]
  assert len(lines) == 1, err
  assert needle in lines[0]
  assert "Traceback" not in err
  assert not out.exists()


def test_unknown_flag_is_argparse_exit_2(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["run", "--bogus"])
  assert e.value.code == 2
  assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_python_dash_m_help_lists_defaults():
  env = dict(os.environ, COLUMNS="200")
  r = subprocess.run([sys.executable, "-m", "jaxunlearn", "run", "--help"], capture_output=True, text=True,
                     timeout=120, env=env)
  assert r.returncode == 0
  assert "--forget" in r.stdout and "random:0.1" in r.stdout and "(default: digits)" in r.stdout


def test_every_option_of_every_subcommand_has_help_with_its_default():
  import argparse

  p = cli.build_parser()
  sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
  assert set(sub.choices) == {"run", "lira", "ulira", "challenge"}
  for name, sp in sub.choices.items():
    assert isinstance(sp.formatter_class, type) and issubclass(sp.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    for a in sp._actions:
      assert a.help, f"{name} {a.option_strings} has no help text"


def test_killed_run_keeps_every_finished_model(tmp_path, capsys, monkeypatch):
  from jaxunlearn import unlearn

  def killed(state, data, key, config, *, mask=None):
    raise KeyboardInterrupt  # the job dies in its second method, after original, retrain, finetune

  import dataclasses

  monkeypatch.setitem(unlearn.METHODS, "neggrad", dataclasses.replace(unlearn.get_method("neggrad"), fn=killed))
  out = tmp_path / "o"
  with pytest.raises(KeyboardInterrupt):
    cli.main(["run", "--model", "mlp", "--width", "0.25", "--epochs", "1", "--train-subset", "200",
              "--test-subset", "60", "--method", "finetune", "--method", "neggrad", "--set", "finetune.epochs=1",
              "--quiet", "--out", str(out)])
  r = json.loads((out / "results.json").read_text())
  assert r["complete"] is False and set(r["models"]) == {"original", "retrain", "finetune"}
  assert all(set(e["acc"]) == {"retain", "forget", "test"} for e in r["models"].values())
