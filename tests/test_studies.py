"""jaxunlearn.studies: lira / ulira / challenge smoke runs at tiny size; argparse wiring and errors."""

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxunlearn import cli
from jaxunlearn import mia
from jaxunlearn.many import autotune
from jaxunlearn import studies
from jaxunlearn.studies import common

TINY = dict(dataset="digits", train_subset=96, test_subset=40, model="cnn", width=0.25, epochs=1,
            batch_size=16, progress=False)
ATTACK_KEYS = {"auc", "tpr@0.1%", "tpr@1%", "best_accuracy"}
FT = (("epochs", "1"), ("batch_size", "16"))


def _png(path):
  assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def _json(out):
  return json.loads((out / "results.json").read_text())


def test_lira_smoke(tmp_path, monkeypatch):
  pooled = {}
  real = common.summarise

  def spy(attacks, out, title, **kw):  # the pooled (scores, is_member) the study summarised
    pooled.update(attacks)
    return real(attacks, out, title, **kw)

  monkeypatch.setattr(common, "summarise", spy)
  out = tmp_path / "lira"
  res = studies.run_lira(studies.LiraConfig(num_models=6, out=str(out), **TINY))
  disk = _json(out)
  assert disk["study"] == "lira" and disk["num_models"] == 6 and disk["num_examples"] == 96
  assert set(disk["attacks"]) == set(studies.ATTACKS) == set(pooled)
  for name, a in disk["attacks"].items():
    scores, member = pooled[name]
    assert set(a) == ATTACK_KEYS and len(scores) == len(member) == disk["pooled_examples"]
    # the reported AUC is the AUC of the pooled scores (sklearn's independent computation)
    assert a["auc"] == pytest.approx(roc_auc_score(member, scores), abs=1e-9)
  # digits: no mirror queries by default (a mirrored digit is another digit), so A = 1
  assert disk["targets"] == 6 and disk["augmentations"] == 1 and disk["pooled_examples"] > 6 * 30
  assert set(disk["accuracy"]) == {"train_mean", "heldout_mean", "test_mean"}
  assert disk["attacks"] == res["attacks"]
  # the table states its read-out and convention, in the JSON and under the printed table
  assert disk["tpr_readout"] == "fpr <= target" and disk["lira_convention"] == "ours"
  text = studies.format_result(disk)
  assert "TPR read-out: FPR <= target" in text and "convention 'ours'" in text
  _png(out / disk["plots"]["roc"])
  assert not list(out.glob("*.tmp"))


def test_attack_options_reach_the_scores_and_the_readout(tmp_path, monkeypatch):
  """--lira-convention reference --statistic mean --tpr-strict: the pooled scores are mia.lira's with those
  options, the table's TPRs are read at FPR < target, and the JSON and the printed line say so."""
  from jaxunlearn.studies import lira as lira_study

  seen, pooled = {}, {}
  real_attacks, real_summarise = lira_study.lira_attacks, common.summarise

  def attacks_spy(*a, **kw):
    seen.update(kw)
    return real_attacks(*a, **kw)

  def summarise_spy(attacks, out, title, **kw):
    pooled.update(attacks)
    return real_summarise(attacks, out, title, **kw)

  monkeypatch.setattr(lira_study, "lira_attacks", attacks_spy)
  monkeypatch.setattr(common, "summarise", summarise_spy)
  out = tmp_path / "lira"
  studies.run_lira(studies.LiraConfig(num_models=6, out=str(out), lira_convention="reference", statistic="mean",
                                      tpr_strict=True, **TINY))
  disk = _json(out)
  assert seen == {"convention": "reference", "statistic": "mean"}
  for name, a in disk["attacks"].items():
    assert a == mia.evaluate_attack(*pooled[name], strict=True)
  assert (disk["tpr_readout"], disk["lira_convention"], disk["lira_statistic"]) == ("fpr < target", "reference", "mean")
  text = studies.format_result(disk)
  assert "TPR read-out: FPR < target" in text and "convention 'reference'" in text and "mean centres" in text


def test_ulira_smoke(tmp_path):
  out = tmp_path / "ulira"
  studies.run_ulira(studies.UliraConfig(num_models=6, pool_size=24, method="finetune", overrides=FT,
                                        targets=3, out=str(out), **TINY))
  disk = _json(out)
  assert disk["study"] == "ulira" and disk["method"] == "finetune"
  assert disk["forget_per_model"] == 12 and disk["retain_per_model"] == (96 - 24) // 2
  assert disk["method_config"]["epochs"] == 1 and disk["targets"] == 3
  for key in ("attacks", "original_attacks"):
    assert set(disk[key]) == set(studies.ATTACKS)
    assert all(set(a) == ATTACK_KEYS for a in disk[key].values())
  assert set(disk["accuracy"]) == {"original", "unlearned"}
  assert set(disk["accuracy"]["unlearned"]) == {"retain", "forget", "test"}
  assert disk["tpr_readout"] == "fpr <= target" and disk["lira_convention"] == "ours"
  assert "TPR read-out: FPR <= target" in studies.format_result(disk)
  _png(out / disk["plots"]["roc"])
  _png(out / disk["plots"]["roc_original"])


def test_challenge_smoke(tmp_path, monkeypatch):
  from jaxunlearn import metrics
  from jaxunlearn.studies import challenge

  ensembles = []  # spy: the ensemble the study computed
  real_ens = challenge.challenge_ensemble
  monkeypatch.setattr(challenge, "challenge_ensemble",
                      lambda *a, **kw: ensembles.append(real_ens(*a, **kw)) or ensembles[-1])
  out = tmp_path / "ch"
  ck = tmp_path / "ck"  # strategy "auto" is measured once and used by every group of models
  res = studies.run_challenge(studies.ChallengeConfig(models=3, method="finetune", overrides=FT, strategy="auto",
                                                      checkpoint_dir=str(ck), forget="random:0.1", out=str(out),
                                                      **TINY))
  used = {json.loads((ck / g / "manifest.json").read_text())["strategy"]
          for g in ("original", "retrained", "unlearned", "reference")}
  assert len(used) == 1 and used <= {"vmap", "sequential"}
  disk = _json(out)
  assert disk["strategy_used"] in used
  assert disk["study"] == "challenge" and disk["num_models"] == 3
  assert disk["sizes"]["forget"] == len(disk["epsilons"]) > 0
  assert 0.0 <= disk["forget_quality"] <= 1.0 and disk["challenge_score"] >= 0.0
  assert disk["challenge_score"] == pytest.approx(
      res["forget_quality"] * disk["accuracy"]["unlearned"]["retain"] / disk["accuracy"]["retrained"]["retain"]
      * disk["accuracy"]["unlearned"]["test"] / disk["accuracy"]["retrained"]["test"])
  assert set(disk["accuracy"]) == {"original", "retrained", "unlearned"}
  assert np.all(np.asarray(disk["epsilons"]) >= 0)
  _png(out / disk["plots"]["epsilons"])
  # KLOM: the metric applied to the study's own saved margins gives its per-example values and summaries
  arr = np.load(out / disk["arrays"]["margins"])
  assert disk["klom"]["convention"] == metrics.KLOM_CONVENTION and disk["klom"]["bins"] == metrics.KLOM_BINS
  for split in ("retain", "forget", "test"):
    u, r = arr[f"unlearned_{split}"], arr[f"retrained_{split}"]
    assert u.shape == r.shape == (3, disk["sizes"][split]) and not np.array_equal(u, r)
    per_example = metrics.klom(u, r)
    np.testing.assert_array_equal(arr[f"klom_{split}"], per_example)
    assert disk["klom"][split] == metrics.klom_summary(per_example)
  # the saved margins are those models' outputs: on the forget set they equal the challenge's logit
  # confidences (computed by another function, log p_y - log(1 - p_y)), short of its saturation
  ens = ensembles[0]
  assert ens.accuracy["original"]["retain"].shape == (1,)  # the challenge's protocol: one original
  for side, key in (("retrained", "retrained"), ("unlearned", "finetune")):
    conf, m = ens.confidences[key], arr[f"{side}_forget"]
    ok = np.abs(conf) < 30
    assert ok.mean() > 0.5
    np.testing.assert_allclose(m[ok], conf[ok], rtol=1e-6, atol=1e-6)
  assert "KLOM p95" in studies.format_result(disk)
  # the retrain-vs-retrain ceiling: N more exact retrains (other keys) scored against the retrained ones
  c = disk["ceiling"]
  ref, r = ens.confidences["reference"], ens.confidences["retrained"]
  assert ref.shape == r.shape and not np.array_equal(ref, r)
  assert c["num_models"] == 3 and c["forget_quality"] == metrics.forget_quality(ref, r).score
  a_r = disk["accuracy"]["retrained"]
  assert c["challenge_score"] == pytest.approx(c["forget_quality"] * c["accuracy"]["retain"] / a_r["retain"]
                                               * c["accuracy"]["test"] / a_r["test"])
  assert disk["seconds"]["reference"] > 0 and "exactly as the retrained" in c["source"]
  text = studies.format_result(disk)
  assert f"retrain-vs-retrain ceiling at N=3: forget quality {c['forget_quality']:.4f}" in text
  # N = 3 cannot separate methods: said in results.json and under the printed result
  assert len(disk["warnings"]) == 1 and "N=3 models per side is too few to separate methods" in disk["warnings"][0]
  assert f"warning: {disk['warnings'][0]}" in text
  # killed after the original: the rerun takes the strategy from its checkpoint instead of measuring
  # again (a different pick would make the original's folder refuse to load) and ends the same
  shutil.rmtree(ck / "retrained")
  shutil.rmtree(ck / "unlearned")
  monkeypatch.setattr(autotune, "choose_strategy", lambda *a, **k: pytest.fail("measured again on resume"))
  again = studies.run_challenge(studies.ChallengeConfig(models=3, method="finetune", overrides=FT, strategy="auto",
                                                        checkpoint_dir=str(ck), forget="random:0.1",
                                                        out=str(tmp_path / "ch2"), **TINY))
  assert again["forget_quality"] == res["forget_quality"] and again["strategy_used"] == disk["strategy_used"]


def test_challenge_per_model_originals(tmp_path, monkeypatch):
  """originals=per_model (KLOM's protocol): N originals, unlearned model m starts from original m."""
  import jax

  from jaxunlearn import many
  from jaxunlearn.many.stack import num_models_of

  trained, starts = [], []
  real_train, real_unlearn = many.train_many, many.unlearn_many
  monkeypatch.setattr(many, "train_many", lambda *a, **kw: trained.append(real_train(*a, **kw)) or trained[-1])
  monkeypatch.setattr(many, "unlearn_many", lambda states, *a, **kw: starts.append(states) or real_unlearn(states, *a, **kw))
  res = studies.run_challenge(studies.ChallengeConfig(models=3, method="finetune", overrides=FT, originals="per_model",
                                                      ceiling=False, out=str(tmp_path / "ch"),
                                                      **dict(TINY, model="mlp")))
  assert res["klom"]["originals"] == "per_model" and res["config"]["originals"] == "per_model"
  assert res["ceiling"] is None and len(trained) == 2  # ceiling=False: no reference retrains
  assert "ceiling" not in studies.format_result(res)
  originals = trained[0][0]
  assert num_models_of(originals) == 3 and num_models_of(starts[0]) == 3
  for a, b in zip(jax.tree.leaves(originals.params), jax.tree.leaves(starts[0].params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  first = jax.tree.leaves(originals.params)[0]
  assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))  # different originals
  with pytest.raises(Exception, match="originals must be one of"):
    studies.run_challenge(studies.ChallengeConfig(originals="many", out=str(tmp_path / "bad"), **TINY))
  with pytest.raises(Exception, match="ceiling must be True or False, got 'no'"):
    studies.run_challenge(studies.ChallengeConfig(ceiling="no", out=str(tmp_path / "bad"), **TINY))


def test_retrain_in_the_studies_trains_like_their_models(tmp_path):
  """--method retrain means the job's recipe (epochs, batch size, optimizer), as the retrained side trains, not
  RetrainConfig's defaults (30 epochs at lr 0.1); --set retrain.X still wins."""
  from jaxunlearn.studies import challenge
  from jaxunlearn.studies import ulira

  job = dict(TINY, epochs=2, lr=0.03, optimizer="adam", weight_decay=1e-3)
  out = str(tmp_path / "o")
  tcfg, mcfg = challenge._prepare(studies.ChallengeConfig(method="retrain", out=out, **job))[:2]
  assert (mcfg.epochs, mcfg.batch_size, mcfg.augment, mcfg.optim) == (2, 16, False, tcfg.optim)
  assert tcfg.optim.lr == 0.03 and tcfg.optim.optimizer == "adam"
  tcfg, mcfg = ulira._prepare(studies.UliraConfig(method="retrain", pool_size=24, out=out, **job))[:2]
  assert (mcfg.epochs, mcfg.batch_size, mcfg.optim) == (2, 16, tcfg.optim)
  ov = (("retrain.epochs", "5"), ("lr", "0.2"))
  mcfg = challenge._prepare(studies.ChallengeConfig(method="retrain", overrides=ov, out=out, **job))[1]
  assert (mcfg.epochs, mcfg.optim.lr, mcfg.optim.optimizer, mcfg.batch_size) == (5, 0.2, "adam", 16)


def test_challenge_retrain_is_its_own_ceiling(tmp_path, monkeypatch):
  """--method retrain at the job's recipe is the exact retrain: its score is the ceiling, nothing more trains."""
  from jaxunlearn import many

  trained = []
  real_train = many.train_many
  monkeypatch.setattr(many, "train_many", lambda *a, **kw: trained.append(kw.get("desc")) or real_train(*a, **kw))
  res = studies.run_challenge(studies.ChallengeConfig(models=3, method="retrain", out=str(tmp_path / "ch"),
                                                      **dict(TINY, model="mlp")))
  assert trained == ["original", "retrain"]  # no reference retrains
  c = res["ceiling"]
  assert c["forget_quality"] == res["forget_quality"] and c["challenge_score"] == res["challenge_score"]
  assert c["source"].startswith("the method's own models")
  assert "here the method itself" in studies.format_result(res)
  args = cli.build_parser().parse_args(["challenge", "--no-ceiling"])
  assert cli.config_from_args(studies.ChallengeConfig, args).ceiling is False


def test_lira_attacks_detects_planted_membership():
  """Members get a confidence shift: the pooled LiRA must find it; without a shift it must not."""
  rng = np.random.default_rng(0)
  m, n = 16, 400
  keep = rng.random((m, n)) < 0.5
  base = rng.normal(0, 1, (1, n, 1))
  noise = rng.normal(0, 0.3, (m, n, 2))
  att = mia.lira_attacks(base + noise + 1.5 * keep[:, :, None], keep, range(4))
  assert all(len(s) == len(att["online"][1]) for s, _ in att.values())
  assert mia.evaluate_attack(*att["online"])["auc"] > 0.95
  null = mia.lira_attacks(base + noise, keep, range(4))
  assert abs(mia.evaluate_attack(*null["online"])["auc"] - 0.5) < 0.1


@pytest.mark.parametrize("argv, message", [
    (["lira", "--models", "2"], "num_models must be an int >= 4"),
    (["lira", "--lira-convention", "theirs"], "lira convention must be one of ours, reference, got 'theirs'"),
    (["ulira", "--statistic", "mode"], "statistic must be one of median, mean, got 'mode'"),
    (["ulira", "--method", "eu_k", "--preset", "scrub_paper"], "eu_k.reset=saved needs the original's initialisation key, which the lira / ulira"),
    (["lira", "--model", "vgg"], "unknown model 'vgg'"),
    (["lira", "--targets", "20"], "targets (20) cannot exceed num_models (16)"),
    (["lira", "--chunk-size", "0"], "chunk_size must be an int >= 1"),
    (["lira", "--strategy", "pmap"], "unknown strategy 'pmap'"),
    (["lira", "--seed", "-1"], "seed must be an int in [0, 2**32), got -1"),
    (["challenge", "--seed", str(2**33)], f"seed must be an int in [0, 2**32), got {2**33}"),
    (["ulira", "--strategy", "0"], "strategy group size must be >= 1, got 0"),
    (["ulira", "--method", "nope"], "unknown method 'nope'"),
    (["ulira", "--set", "bogus=1"], "has no option 'bogus'"),
    (["ulira", "--pool-size", "5000"], "pool_size 5000"),
    (["challenge", "--forget", "random:2"], "fraction 2.0 must lie in (0, 1)"),
    (["challenge", "--models", "1"], "models must be an int >= 3"),
    (["challenge", "--set", "scrub.alpha=1"], "not the chosen method"),
    (["challenge", "--dataset", "nosuch.npz"], "nosuch.npz"),
])
def test_bad_inputs_give_one_line_errors(tmp_path, capsys, argv, message):
  out = tmp_path / "o"
  assert cli.main(argv + ["--out", str(out), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxunlearn: error: ") and err.count("\n") == 1, err
  assert message in err
  assert not out.exists()  # nothing written


def test_help_shows_every_default(capsys):
  p = cli.build_parser()
  for cmd, needles in (("lira", ["--models", "(default: 16)", "--checkpoint-dir", "--no-flip"]),
                       ("ulira", ["--method", "(default: finetune)", "--pool-size", "(default: 200)"]),
                       ("challenge", ["--forget", "(default: random:0.1)", "--strategy"])):
    with pytest.raises(SystemExit):
      p.parse_args([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in needles:
      assert needle in text, (cmd, needle)


def test_dispatch_runs_a_study(tmp_path, capsys):
  out = tmp_path / "cli"
  # the same shapes as test_lira_smoke, so the compiled programs are reused
  assert cli.main(["lira", "--models", "6", "--epochs", "1", "--batch-size", "16", "--width", "0.25",
                   "--train-subset", "96", "--test-subset", "40", "--targets", "2", "--out", str(out), "--quiet"]) == 0
  printed = capsys.readouterr().out
  assert "online" in printed and "results.json" in printed
  res = _json(out)
  assert res["num_models"] == 6 and res["targets"] == 2 and res["config"]["width"] == 0.25


def test_studies_start_a_method_where_run_does(tmp_path):
  """challenge / ulira take the data-scale rules that `run` applies (jaxunlearn.unlearn.default_config),
  so a study measures the method `run` reports; the user's --set still wins, and the rule is recorded."""
  from jaxunlearn import run as jrun
  from jaxunlearn import unlearn as jun
  from jaxunlearn.studies import challenge
  from jaxunlearn.studies import ulira

  job = dict(TINY, epochs=3)
  for m, ov in (("neggrad_plus", ()), ("scrub", (("scrub.alpha", "0.3"),))):
    p = jrun.prepare(jrun.RunConfig(**job, forget="class:3", methods=(m,), out=str(tmp_path / f"r{m}"),
                                    overrides=tuple((m, k.split(".")[1], v) for k, v in ov)))
    mcfg, defaults = challenge._prepare(studies.ChallengeConfig(method=m, forget="class:3", overrides=ov,
                                                                out=str(tmp_path / f"c{m}"), **job))[1:3]
    assert mcfg == p.method_cfgs[m] and defaults["rule"].startswith(f"{m}: ")
  assert mcfg.alpha == 0.3
  # the rule changed something here (the test is not comparing registered defaults with themselves)
  p = jrun.prepare(jrun.RunConfig(**job, forget="class:3", methods=("neggrad_plus",), out=str(tmp_path / "r")))
  assert p.method_cfgs["neggrad_plus"] != jun.make_config("neggrad_plus", {})
  # U-LiRA: each model retains (n - pool) // 2 and unlearns pool // 2 random examples
  mcfg, defaults = ulira._prepare(studies.UliraConfig(method="neggrad_plus", pool_size=24, out=str(tmp_path / "u"),
                                                      **job))[1:3]
  scale = jun.DataScale((96 - 24) // 2, 12, 10, 3, 16)
  assert mcfg == jun.default_config("neggrad_plus", scale)[0] and defaults is not None
