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
  out, saved = tmp_path / "o", tmp_path / "models"
  flags = ["--model", "mlp", "--width", "0.25", "--epochs", "2", "--train-subset", "300", "--test-subset", "100",
           "--forget", "random:0.1", "--method", "finetune", "--set", "finetune.epochs=1"]
  code, stdout, _ = _run(["run"] + flags + ["--eval", "mia", "--eval", "zrf", "--eval", "tow", "--quiet",
                                            "--save-models", str(saved), "--out", str(out)], capsys)
  assert code == 0
  r = json.loads((out / "results.json").read_text())
  assert {"dataset", "model", "forget", "seed", "sizes", "models"} <= set(r)
  assert r["dataset"] == "digits" and r["model"] == "mlp" and r["forget"] == "random:0.1" and r["seed"] == 0
  assert r["sizes"] == {"retain": 270, "forget": 30, "test": 100}
  assert set(r["models"]) == {"original", "retrain", "finetune"}
  for name, entry in r["models"].items():
    assert set(entry["acc"]) == {"retain", "forget", "test"}
    assert entry["seconds"] > 0
  assert r["models"]["finetune"]["speedup_vs_retrain"] > 0 and r["complete"] is True
  assert r["config"]["methods"]["finetune"]["epochs"] == 1
  ft = r["models"]["finetune"]
  expect_tow = np.prod([1 - abs(ft["acc"][s] - r["models"]["retrain"]["acc"][s]) for s in ("retain", "forget", "test")])
  assert ft["tow"] == pytest.approx(expect_tow)
  assert "tow" not in r["models"]["original"] and "mia" in r["models"]["original"]
  # the saved finetuned model, evaluated here, gives the JSON's accuracies, simple MIA and ZRF
  import jax
  from scipy.spatial.distance import jensenshannon

  from jaxunlearn import mia
  from jaxunlearn import run
  from jaxunlearn.train import evaluate

  p = run.prepare(run.RunConfig(model="mlp", width=0.25, epochs=2, train_subset=300, test_subset=100,
                                out=str(tmp_path / "unused")))
  state = run.load_model(saved / "finetune", p.model)
  ev = {k: evaluate(p.model, state.params, state.batch_stats, p.ds.x_train[i], p.split.y_train[i])
        for k, i in (("retain", p.split.retain), ("forget", p.split.forget))}
  ev["test"] = evaluate(p.model, state.params, state.batch_stats, p.ds.x_test, p.ds.y_test)
  assert {k: e["acc"] for k, e in ev.items()} == pytest.approx(ft["acc"], abs=1e-9)
  # random forget split: the MIA's held-out reference is the whole test split
  assert ft["mia"] == pytest.approx(mia.simple_mia(ev["forget"]["losses"], ev["test"]["losses"], seed=0))
  params, stats = p.model.init(jax.random.fold_in(jax.random.key(0), run.KEY_RANDOM_INIT))
  rand = evaluate(p.model, params, stats, p.ds.x_train[p.split.forget], p.split.y_train[p.split.forget])["logits"]
  softmax = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)  # noqa: E731
  js = jensenshannon(softmax(ev["forget"]["logits"].astype(np.float64)), softmax(rand.astype(np.float64)), axis=-1) ** 2
  assert ft["zrf"] == pytest.approx(1 - js.mean(), abs=1e-5)
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
  _expect_bad_input(["run"] + args, needle, tmp_path, capsys)


@pytest.mark.parametrize("argv,needle", [
    (["tune", "--grid", "finetune.lr=log:0:1:3"], "LO > 0"),
    (["tune", "--grid", "scrub.lr=1"], "not the tuned method"),
    (["tune", "--seeds", "0"], "--seeds must be an int"),
    (["tune", "--method", "retrain"], "nothing to tune"),
    (["tune", "--val-fraction", "0.9"], "--val-fraction"),
    (["run", "--seeds", "2", "--mask", "del:0.3"], "does not combine with --mask"),
    (["run", "--seeds", "0"], "--seeds must be an int"),
])
def test_bad_sweep_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, argv, needle):
  _expect_bad_input(argv, needle, tmp_path, capsys)


def _expect_bad_input(argv, needle, tmp_path, capsys):
  """``jaxunlearn ARGV --out DIR --quiet``: exit 2, one stderr line naming ``needle``, no traceback, no DIR."""
  out = tmp_path / "o"
  code, stdout, err = _run(argv + ["--out", str(out), "--quiet"], capsys)
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
  assert set(sub.choices) == {"run", "tune", "lira", "ulira", "challenge", "data"}
  for name, sp in sub.choices.items():
    if name == "data":  # (data convert: checked in tests/test_convert.py)
      continue
    assert isinstance(sp.formatter_class, type) and issubclass(sp.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    for a in sp._actions:
      assert a.help, f"{name} {a.option_strings} has no help text"


def test_killed_run_keeps_every_finished_model(tmp_path, capsys, monkeypatch):
  from jaxunlearn import unlearn

  def killed(state, data, key, config, hparams, *, mask=None):
    raise KeyboardInterrupt  # the job dies in its second method, after original, retrain, finetune

  import dataclasses

  monkeypatch.setitem(unlearn.METHODS, "neggrad", dataclasses.replace(unlearn.get_method("neggrad"), impl=killed))
  out = tmp_path / "o"
  code = cli.main(["run", "--model", "mlp", "--width", "0.25", "--epochs", "1", "--train-subset", "200",
                   "--test-subset", "60", "--method", "finetune", "--method", "neggrad", "--set", "finetune.epochs=1",
                   "--quiet", "--out", str(out)])
  assert code == 130 and capsys.readouterr().err.count("jaxunlearn: interrupted;") == 1  # one line, no traceback
  r = json.loads((out / "results.json").read_text())
  assert r["complete"] is False and set(r["models"]) == {"original", "retrain", "finetune"}
  assert all(set(e["acc"]) == {"retain", "forget", "test"} for e in r["models"].values())


def _broken_method(monkeypatch, name="finetune"):
  """Replaces ``name`` with a method whose jitted function branches on a traced value (a bug)."""
  import dataclasses

  import jax.numpy as jnp

  from jaxunlearn import unlearn

  def broken(state, data, key, config, hparams, *, mask=None):
    if jnp.sum(data.y) > 0:  # TracerBoolConversionError (a TypeError) under jit
      return state, {}
    return state, {}

  monkeypatch.setitem(unlearn.METHODS, name, dataclasses.replace(unlearn.get_method(name), impl=broken))


RUN_TINY = ["run", "--model", "mlp", "--width", "0.25", "--epochs", "1", "--train-subset", "200", "--test-subset", "60",
            "--quiet"]


def test_a_bug_inside_a_jitted_method_keeps_its_traceback(tmp_path, monkeypatch, capsys):
  """A JAX tracer error is a TypeError: it must not be reported as bad input (exit 2, one line)."""
  import jax

  _broken_method(monkeypatch, "neggrad")
  with pytest.raises(jax.errors.TracerBoolConversionError):
    cli.main(RUN_TINY + ["--method", "neggrad", "--out", str(tmp_path / "o")])
  assert "jaxunlearn: error" not in capsys.readouterr().err
  # ... while a bad flag value of the same command is still one line and exit 2
  code, _, err = _run(RUN_TINY + ["--method", "neggrad", "--seed", "-1", "--out", str(tmp_path / "o2")], capsys)
  assert code == 2 and err.count("\n") == 1 and "seed must be" in err


def test_a_bug_exits_1_with_a_traceback_from_the_command_line(tmp_path):
  script = ("import sys, dataclasses, jax.numpy as jnp\n"
            "from jaxunlearn import cli, unlearn\n"
            "def broken(state, data, key, config, hparams, *, mask=None):\n"
            "  if jnp.sum(data.y) > 0:\n"
            "    return state, {}\n"
            "  return state, {}\n"
            "unlearn.METHODS['finetune'] = dataclasses.replace(unlearn.get_method('finetune'), impl=broken)\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
  r = subprocess.run([sys.executable, "-c", script] + RUN_TINY + ["--out", str(tmp_path / "o")],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 1, r.stderr[-2000:]
  assert "Traceback" in r.stderr and "TracerBoolConversionError" in r.stderr
  assert "jaxunlearn: error" not in r.stderr


def test_a_bug_inside_a_jitted_method_of_a_study_keeps_its_traceback(tmp_path, monkeypatch, capsys):
  import jax

  _broken_method(monkeypatch, "finetune")
  with pytest.raises(jax.errors.TracerBoolConversionError):
    cli.main(["ulira", "--executor", "scan", "--models", "4", "--pool-size", "24", "--set", "epochs=1", "--epochs", "1", "--batch-size",
              "16", "--width", "0.25", "--train-subset", "96", "--test-subset", "40", "--quiet",
              "--out", str(tmp_path / "o")])
  assert "jaxunlearn: error" not in capsys.readouterr().err


def test_a_type_error_inside_a_study_is_not_bad_input(tmp_path, monkeypatch, capsys):
  from jaxunlearn import many as shadow  # the studies call many.train_many

  def train_many(*a, **k):
    raise TypeError("a bug in training")

  monkeypatch.setattr(shadow, "train_many", train_many)
  with pytest.raises(TypeError, match="a bug in training"):
    cli.main(["lira", "--models", "4", "--train-subset", "96", "--batch-size", "16", "--quiet", "--out",
              str(tmp_path / "o")])
  assert "jaxunlearn: error" not in capsys.readouterr().err
  assert cli.main(["lira", "--models", "4", "--batch-size", "0", "--quiet", "--out", str(tmp_path / "o")]) == 2
  assert capsys.readouterr().err.startswith("jaxunlearn: error: --batch-size must be an int >= 1, got 0")


def test_method_keys_differ_from_every_other_key_of_the_run(monkeypatch):
  import jax

  from jaxunlearn import run
  from jaxunlearn import unlearn
  from jaxunlearn.errors import ConfigError

  fixed = (run.KEY_ORIGINAL, run.KEY_MASK, run.KEY_RANDOM_INIT)
  data = {name: run.method_key_data(name) for name in unlearn.METHODS}
  assert len(set(data.values())) == len(data) and not set(fixed) & set(data.values())
  key = jax.random.key(0)
  keys = [jax.random.fold_in(key, d) for d in fixed] + [run.method_key(key, n) for n in unlearn.METHODS]
  raw = {tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys}
  assert len(raw) == len(keys) == len(fixed) + len(unlearn.METHODS)
  # the committed results' derivation is kept where it is safe ...
  import zlib

  assert run.method_key_data("finetune") == zlib.crc32(b"finetune") % 2**31
  # ... and a name whose crc32 lands on a fixed key's data is moved off it
  for d in fixed:
    monkeypatch.setattr(run.zlib, "crc32", lambda b, d=d: d)
    assert run.method_key_data("x") == 2**31 + d and run.method_key_data("x") not in fixed
  # two methods that would share a key are refused before any work
  monkeypatch.setattr(run.zlib, "crc32", lambda b: 12345)
  with pytest.raises(ConfigError, match="same PRNG key"):
    run.prepare(run.RunConfig(methods=("finetune", "neggrad")))


def test_every_front_end_shares_the_job_config_and_its_flags():
  import argparse
  import dataclasses

  from jaxunlearn import config
  from jaxunlearn import run
  from jaxunlearn import studies
  from jaxunlearn import sweeps

  job = {f.name for f in dataclasses.fields(config.JobConfig)}
  for cls in (run.RunConfig, sweeps.TuneConfig, studies.LiraConfig, studies.UliraConfig, studies.ChallengeConfig):
    assert issubclass(cls, config.JobConfig) and job <= {f.name for f in dataclasses.fields(cls)}
  # one set of defaults: every front end trains its models as `jaxunlearn run` does
  d = config.JobConfig()
  for cls in (run.RunConfig, sweeps.TuneConfig, studies.LiraConfig, studies.UliraConfig, studies.ChallengeConfig):
    assert {f.name: getattr(cls(), f.name) for f in dataclasses.fields(config.JobConfig)} == dataclasses.asdict(d), cls
  assert (d.width, d.epochs) == (1.0, 15)
  group = argparse.ArgumentParser()
  cli.add_job_flags(group, config.JobConfig())
  flags = {o for a in group._actions for o in a.option_strings} - {"-h", "--help"}
  sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
  for name, sp in sub.choices.items():
    if name == "data":  # (data tools: no job)
      continue
    assert flags <= {o for a in sp._actions for o in a.option_strings}, name
    args = sp.parse_args([])
    d = cli.config_from_args({"run": run.RunConfig, "tune": sweeps.TuneConfig, "lira": studies.LiraConfig, "ulira": studies.UliraConfig,
                              "challenge": studies.ChallengeConfig}[name], args)
    assert d == dataclasses.replace(type(d)(), progress=True), name  # the flags' defaults are the config's


def test_executor_flag_is_recorded_and_checked(tmp_path, capsys):
  out = tmp_path / "o"
  assert cli.main(RUN_TINY + ["--model", "cnn", "--executor", "steps", "--out", str(out)]) == 0
  r = json.loads((out / "results.json").read_text())
  assert r["executor"] == "steps" and r["complete"] is True
  assert all(e["seconds"] >= 0 and e["compile_seconds"] >= 0 for e in r["models"].values())
  with pytest.raises(SystemExit) as e:
    cli.main(RUN_TINY + ["--executor", "fast", "--out", str(tmp_path / "p")])
  assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err


def test_version_flag_prints_the_package_version(capsys):
  import jaxunlearn

  with pytest.raises(SystemExit) as e:
    cli.main(["--version"])
  assert e.value.code == 0
  assert capsys.readouterr().out.strip() == f"jaxunlearn {jaxunlearn.__version__}"


_TINY = ["--model", "mlp", "--width", "0.25", "--train-subset", "200", "--test-subset", "60", "--quiet",
         "--method", "finetune", "--set", "finetune.epochs=1"]


def test_huge_lr_gives_strict_json_with_null_and_a_warning(tmp_path, capsys):
  out = tmp_path / "o"
  code, stdout, _ = _run(["run", "--lr", "10000", "--epochs", "1", "--out", str(out)] + _TINY, capsys)
  assert code == 0

  def no_nan(tok):
    raise AssertionError(f"results.json holds a bare {tok} token")

  r = json.loads((out / "results.json").read_text(), parse_constant=no_nan)
  assert r["models"]["finetune"]["acc"] == {"retain": None, "forget": None, "test": None}
  assert any("finetune: weights became NaN/inf" in w for w in r["warnings"])
  assert "warning: finetune: weights became NaN/inf" in stdout
  row = next(l for l in stdout.splitlines() if l.startswith("finetune"))
  assert row.split()[1:4] == ["nan", "nan", "nan"]  # never "0.0" as if it were a result


@pytest.mark.parametrize("executor", ["scan", "steps"])
def test_every_model_reports_its_steps_and_slow_methods_get_a_note(tmp_path, capsys, monkeypatch, executor):
  from jaxunlearn import run

  real = run._unlearn

  def timed(m, *a, **k):  # fixed seconds (tiny runs time noise): finetune takes twice retrain's time
    state, metrics, _, compile_secs, counted = real(m, *a, **k)
    return state, metrics, 2.0 if m.name == "finetune" else 1.0, compile_secs, counted

  monkeypatch.setattr(run, "_unlearn", timed)
  out = tmp_path / "o"
  # 200 train / 180 retain examples with the last partial batch kept: the original 4 steps at batch 64,
  # retrain 3 (1 epoch), finetune 2 an epoch at its batch 128 (30 epochs)
  code, stdout, _ = _run(["run", "--epochs", "1", "--executor", executor, "--out", str(out)] + _TINY[:-1]
                         + ["finetune.epochs=30"], capsys)
  assert code == 0
  r = json.loads((out / "results.json").read_text())
  m = r["models"]
  assert (m["original"]["steps"], m["retrain"]["steps"], m["finetune"]["steps"]) == (4, 3, 60)
  assert "steps" in stdout.splitlines()[0]
  assert m["finetune"]["speedup_vs_retrain"] == 0.5
  assert r["timing_notes"] == ["finetune: took longer than retraining (speed-up 0.50x; 60 optimizer steps vs retrain's 3)"]
  assert "notes" not in r  # the deterministic notes stay free of wall-clock verdicts
  assert "note: finetune: took longer than retraining" in stdout


def test_original_trained_with_other_settings_is_refused(tmp_path, capsys):
  saved = tmp_path / "models"
  code, _, _ = _run(["run", "--epochs", "1", "--out", str(tmp_path / "a"), "--save-models", str(saved)] + _TINY,
                    capsys)
  assert code == 0
  out = tmp_path / "b"
  code, _, err = _run(["run", "--epochs", "2", "--out", str(out), "--original", str(saved / "original")] + _TINY,
                      capsys)
  assert code == 2 and err.count("\n") == 1
  assert "was trained with --epochs 1, not 2" in err and not out.exists()


def test_channels_first_npz_note_reaches_results_json(tmp_path, capsys):
  from jaxunlearn.data import load_digits

  ds = load_digits()
  np.savez(tmp_path / "chw.npz", x_train=ds.x_train.transpose(0, 3, 1, 2), y_train=ds.y_train,
           x_test=ds.x_test.transpose(0, 3, 1, 2), y_test=ds.y_test)
  out = tmp_path / "o"
  code, _, err = _run(["run", "--dataset", f"npz:{tmp_path / 'chw.npz'}", "--epochs", "1", "--out", str(out)] + _TINY,
                      capsys)
  assert code == 0 and "channels-first" in err
  r = json.loads((out / "results.json").read_text())
  assert len(r["notes"]) == 1 and "(1437, 1, 8, 8)" in r["notes"][0] and "transposed" in r["notes"][0]


def test_help_lists_every_method_and_its_presets(capsys):
  from jaxunlearn import unlearn

  for sub in ("run", "ulira", "challenge"):
    with pytest.raises(SystemExit):
      cli.main([sub, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, spec in unlearn.METHODS.items():
      assert name in text, (sub, name)
      for preset in spec.presets:
        assert preset in text, (sub, name, preset)
    assert "scrub: small, large, privacy" in text


def test_retrain_named_as_a_method_is_accepted(tmp_path):
  """``--method retrain`` names the oracle that always runs: accepted, not reported as a key collision."""
  from jaxunlearn import run

  p = run.prepare(run.RunConfig(methods=("retrain", "finetune"), out=str(tmp_path / "o")))
  assert set(p.method_cfgs) == {"retrain", "finetune"}


def test_top_level_help_lists_methods_presets_and_where_the_options_are(capsys):
  from jaxunlearn import unlearn

  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  text = capsys.readouterr().out
  for name, spec in unlearn.METHODS.items():
    assert name in text
    if spec.presets:
      assert f"  {name}: {', '.join(spec.presets)}" in text
  assert "jaxunlearn COMMAND --help" in text and "data" in text and "resnet18" in text


def test_help_shows_every_default_once():
  """No option's help names its default twice ("default finetune ... (default: None)") nor shows an
  empty one ("(default: [])", "(default: None)", "(default: False)")."""
  import argparse

  sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
  for name, sp in sub.choices.items():
    fmt = sp._get_formatter()
    for a in sp._actions:
      if a.help is None or a.help is argparse.SUPPRESS:
        continue
      text = fmt._expand_help(a)
      assert text.count("default") <= 1, (name, a.option_strings, text)
      for empty in ("(default: None)", "(default: [])", "(default: False)"):
        assert empty not in text, (name, a.option_strings, text)
    if name != "data":
      assert "(default: out/" in " ".join(sp.format_help().split())  # real defaults are still shown


def test_version_is_the_installed_distributions(capsys, monkeypatch):
  from importlib import metadata

  monkeypatch.setattr(metadata, "version", lambda dist: {"jaxunlearn": "9.8.7"}[dist])
  with pytest.raises(SystemExit) as e:
    cli.main(["--version"])
  assert e.value.code == 0 and capsys.readouterr().out.strip() == "jaxunlearn 9.8.7"


def test_pyproject_version_and_dependencies():
  """The fallback __version__ (source tree not installed) is pyproject's; tfds imports
  importlib_resources on every Python but declares it only below 3.9, so we declare it."""
  import pathlib

  import jaxunlearn

  tomllib = pytest.importorskip("tomllib")
  project = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
  assert project["version"] == jaxunlearn.__version__
  names = {d.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in project["dependencies"]}
  assert {"importlib_resources", "tensorflow-datasets", "pillow"} <= names


@pytest.mark.parametrize("command", ["tune", "ulira", "challenge"])
def test_one_method_commands_take_runs_preset_and_set_syntax(command, monkeypatch, capsys):
  """``--preset scrub=privacy --set scrub.alpha=0.3`` (run's syntax) and the shorthand ``--preset
  privacy --set alpha=0.3`` give the same config; a preset of another method is one line, exit 2."""
  from jaxunlearn import studies
  from jaxunlearn import sweeps
  from jaxunlearn.studies.common import method_config

  seen = []

  class Stop(Exception):
    pass

  def capture(cfg):
    seen.append(cfg)
    raise Stop
  if command == "tune":
    monkeypatch.setattr(sweeps, "run_tune", capture)
  else:
    monkeypatch.setitem(studies.RUNNERS, command, capture)
  for flags in (["--preset", "scrub=privacy", "--set", "scrub.alpha=0.3"], ["--preset", "privacy", "--set", "alpha=0.3"]):
    with pytest.raises(Stop):
      cli.main([command, "--method", "scrub", *flags])
  a, b = seen
  assert a == b and a.preset == "privacy"
  if command == "tune":
    assert a.overrides == (("scrub", "alpha", "0.3"),)
  else:
    m = method_config("scrub", a.overrides, a.preset)
    assert m.alpha == 0.3 and m == method_config("scrub", (("alpha", "0.3"),), "privacy")
  assert cli.main([command, "--method", "finetune", "--preset", "scrub=privacy"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--preset scrub=privacy: method 'scrub' is not the chosen --method 'finetune'" in err
  assert len(seen) == 2  # refused before the job started
