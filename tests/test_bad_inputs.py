"""Catalogue of bad inputs: each gives ONE clear message naming the bad value.

CLI: exit status 2, one line, no traceback, nothing written. API: ValueError/TypeError before any
compilation: for the unlearning API (bad config, wrong config type, mismatched mask; called under jit and
eagerly) and for UnlearnData.create, a jax.monitoring listener counts XLA compilations (and traces):
none may happen; a valid call on the same path shows the counter does count."""

import contextlib
import errno
import json

import jax
import numpy as np
import pytest

from jax._src import dispatch
from jaxunlearn import cli
from jaxunlearn import metrics
from jaxunlearn import mia
from jaxunlearn import unlearn
from jaxunlearn.atomic import write_json_atomic

X = np.zeros((10, 8, 8, 1), np.uint8)
Y = np.arange(10) % 2
R, F = np.arange(2, 10), np.arange(2)


@contextlib.contextmanager
def jax_work_counter():
  """Counts XLA backend compilations and jaxpr traces started inside the block (jax.monitoring events)."""
  counts = {"compile": 0, "trace": 0}
  names = {dispatch.BACKEND_COMPILE_EVENT: "compile", dispatch.JAXPR_TRACE_EVENT: "trace"}

  def listener(event, duration, **kw):
    if event in names:
      counts[names[event]] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("kwargs,exc,needle", [
    (dict(x=np.zeros((10, 8, 8), np.uint8)), ValueError, "images must be [N, H, W, C], got shape (10, 8, 8)"),
    (dict(x=np.zeros((10, 8, 8, 1), np.int64)), TypeError, "dtype int64"),
    (dict(y=np.array([0, 1, 2, 0, 1, 0, 1, 0, 1, 5])), ValueError, "max 5"),
    (dict(x=np.full((10, 8, 8, 1), np.nan, np.float32)), ValueError, "NaN or inf"),
    (dict(forget=np.array([], np.int64)), ValueError, "empty forget set"),
    (dict(retain=np.arange(0, 10), forget=np.array([1])), ValueError, "overlap"),
    (dict(retain=np.array([], np.int64), forget=np.arange(10)), ValueError, "whole train split"),
    (dict(retain=np.arange(2, 12)), ValueError, "out of range"),
    (dict(y=np.zeros(9, np.int64)), ValueError, "labels must have shape (10,)"),
])
def test_unlearn_data_rejects(kwargs, exc, needle):
  args = dict(x=X, y=Y, retain=R, forget=F)
  args.update(kwargs)
  with jax_work_counter() as n, pytest.raises(exc) as e:
    unlearn.UnlearnData.create(args["x"], args["y"], args["retain"], args["forget"], num_classes=2)
  assert needle in str(e.value) and "\n" not in str(e.value)
  assert n == {"compile": 0, "trace": 0}, n  # host-side checks only: no jax computation was even traced


def test_nan_params_are_named(trained):
  bad = jax.tree.map(lambda a: a, trained.params)
  bad["head"]["bias"] = bad["head"]["bias"].at[0].set(np.nan)
  with pytest.raises(ValueError, match=r"\['head'\]\['bias'\] contains NaN"):
    unlearn.check_finite_params(trained.replace(params=bad))


def test_unknown_method_option_and_preset():
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    unlearn.make_config("nope")
  with pytest.raises(ValueError, match="has no preset 'huge'"):
    unlearn.make_config("scrub", preset="huge")


def test_lira_shape_mismatch_and_degenerate_keep_mask():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(4, 6))
  with pytest.raises(ValueError, match="shape"):
    mia.lira(rng.normal(size=6), scores, np.ones((4, 5), bool))
  keep = np.zeros((4, 6), bool)
  keep[:2] = True
  keep[:, 0] = True  # example 0 is never out
  with pytest.raises(ValueError, match="example"):
    mia.lira(rng.normal(size=6), scores, keep)


def test_forget_quality_needs_two_models():
  with pytest.raises(ValueError, match="2"):
    metrics.forget_quality(np.zeros((1, 5)), np.zeros((1, 5)))


def test_unwritable_output_folder(capsys):
  # /proc refuses new files even for root, so this holds whoever runs the tests
  code = cli.main(["run", "--quiet", "--out", "/proc/jaxunlearn-test/out"])
  err = capsys.readouterr().err
  assert code == 2 and "not writable" in err and "/proc/jaxunlearn-test/out" in err
  assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("study", ["lira", "ulira", "challenge"])
def test_unwritable_checkpoint_folder(study, tmp_path, capsys):
  code = cli.main([study, "--quiet", "--checkpoint-dir", "/proc/jaxunlearn-test/ck", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert code == 2 and "checkpoint folder '/proc/jaxunlearn-test/ck' is not writable" in err, err
  assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_output_path_that_is_a_file(tmp_path, capsys):
  f = tmp_path / "file"
  f.write_text("x")
  code = cli.main(["run", "--quiet", "--out", str(f)])
  err = capsys.readouterr().err
  assert code == 2 and "is not a folder" in err
  assert f.read_text() == "x"


def test_disk_full_mid_write_keeps_previous_results(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  write_json_atomic(path, {"v": 1})
  real_dump = json.dump

  def dump_then_fail(obj, f, **kw):
    f.write('{"v": 2, "partial')
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(json, "dump", dump_then_fail)
  with pytest.raises(OSError):
    write_json_atomic(path, {"v": 2})
  monkeypatch.setattr(json, "dump", real_dump)
  assert json.loads(path.read_text()) == {"v": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


@pytest.mark.parametrize("method,opts,needle", [
    ("neggrad", {"epochs": "-1"}, "NegGradConfig.epochs=-1"),
    ("finetune", {"optimizer": "foo"}, "unknown optimizer 'foo'"),
    ("del", {"fraction": "2"}, "DelConfig.fraction=2.0"),
    ("lau", {"pgd_steps": "-3"}, "LauConfig.pgd_steps=-3"),
    ("random_label", {"batch_size": "0"}, "RandomLabelConfig.batch_size=0"),
    ("scrub", {"lr": "nan"}, "OptimConfig.lr=nan must be a finite number"),
])
def test_bad_method_values_fail_when_configured(method, opts, needle):
  with pytest.raises(ValueError) as e:
    unlearn.make_config(method, opts)
  assert needle in str(e.value) and "\n" not in str(e.value)


def test_api_checks_config_and_mask_before_compiling(trained, class_data):
  cfg_ok = unlearn.replace(unlearn.FinetuneConfig(), epochs=1, batch_size=32, lr=0.0123)  # no other test uses it
  # a bad value cannot even make a config: the check runs in its constructor, before any jax work
  with jax_work_counter() as n, pytest.raises(ValueError, match="OptimConfig.lr=-1.0 must be"):
    unlearn.replace(unlearn.FinetuneConfig(), lr=-1.0)
  assert n == {"compile": 0, "trace": 0}, n
  bad_mask = {k: v for k, v in jax.tree.map(lambda p: np.ones(p.shape, np.float32), trained.params).items()
              if k != "head"}
  rejected = [((unlearn.ScrubConfig(),), {}, TypeError, "must be a FinetuneConfig, got ScrubConfig"),
              ((cfg_ok,), {"mask": bad_mask}, ValueError, "mask does not match")]
  key = jax.random.key(0)
  jitted = jax.jit(unlearn.finetune, static_argnames="config")
  for args, kw, exc, needle in rejected:
    with jax_work_counter() as n, pytest.raises(exc, match=needle):
      jitted(trained, class_data, key, *args, **kw)
    # (jit's _cache_size() is no measure here: jax 0.10 adds an entry even for a trace that raised)
    assert n["compile"] == 0, (needle, n)
    # eagerly, nothing may even be traced: the checks run before any jax work
    with jax_work_counter() as n, pytest.raises(exc, match=needle):
      unlearn.finetune(trained, class_data, key, *args, **kw)
    assert n == {"compile": 0, "trace": 0}, (needle, n)
  # the counters do count on this path: a valid call traces and compiles
  with jax_work_counter() as n:
    jax.block_until_ready(jitted(trained, class_data, key, cfg_ok))
  assert n["compile"] >= 1 and n["trace"] >= 1, n


def test_masked_updates_ignore_inf_in_frozen_entries():
  import optax

  tx = unlearn.apply_mask(optax.sgd(1.0), {"w": np.array([1.0, 0.0], np.float32)})
  params = {"w": np.array([0.5, 0.25], np.float32)}
  state = tx.init(params)
  upd, _ = tx.update({"w": np.array([np.inf, np.inf], np.float32)}, state, params)
  new = optax.apply_updates(params, upd)
  assert np.isneginf(new["w"][0]) and new["w"][1] == 0.25  # the frozen entry is untouched, not NaN


def test_cf_k_larger_than_the_model(capsys, tmp_path):
  code = cli.main(["run", "--quiet", "--method", "cf_k", "--set", "cf_k.k=99", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert code == 2 and "cf_k.k=99: model 'cnn' has only 4 blocks" in err
