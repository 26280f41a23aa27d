"""--save-models / --original: train the original once, reuse it; bad checkpoints are one-line errors."""

import json
import shutil

from jaxunlearn import cli

ARGS = ["run", "--model", "mlp", "--width", "0.25", "--epochs", "2", "--train-subset", "200", "--test-subset", "60",
        "--quiet"]


def test_save_then_reuse_original(tmp_path, capsys):
  models = tmp_path / "models"
  assert cli.main(ARGS + ["--set", "finetune.epochs=1", "--save-models", str(models),
                          "--out", str(tmp_path / "a")]) == 0
  assert {p.name for p in models.iterdir()} == {"original", "retrain", "finetune"}
  assert cli.main(ARGS + ["--original", str(models / "original"), "--method", "neggrad", "--set", "neggrad.epochs=1",
                          "--out", str(tmp_path / "b")]) == 0
  a = json.loads((tmp_path / "a" / "results.json").read_text())
  b = json.loads((tmp_path / "b" / "results.json").read_text())
  assert a["models"]["original"]["acc"] == b["models"]["original"]["acc"]  # the very same weights
  assert b["original_checkpoint"].endswith("original") and "neggrad" in b["models"]
  capsys.readouterr()

  # a corrupt checkpoint: one line, exit 2, nothing written
  bad = tmp_path / "bad"
  shutil.copytree(models / "original", bad)
  for f in (bad / "state").rglob("*"):
    if f.is_file() and f.name != "_CHECKPOINT_METADATA":
      f.write_bytes(b"garbage")
  code = cli.main(ARGS + ["--original", str(bad), "--out", str(tmp_path / "c")])
  err = capsys.readouterr().err
  assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "c").exists()


def test_missing_or_mismatched_original(tmp_path, capsys):
  code = cli.main(ARGS + ["--original", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
  assert code == 2 and "is not a saved model" in capsys.readouterr().err
  d = tmp_path / "fake"
  d.mkdir()
  (d / "jaxunlearn_model.json").write_text(json.dumps({"model": "cnn", "width": 1.0, "forget": "random:0.1"}))
  code = cli.main(ARGS + ["--original", str(d), "--out", str(tmp_path / "o")])
  assert code == 2 and "was trained with --model 'cnn', not 'mlp'" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()
  # trained on another training set: a different subset size, or the same size drawn with another seed
  meta = {"model": "mlp", "width": 0.25, "dataset": "digits", "forget": "random:0.1", "seed": 0, "train_subset": 200}
  for change, message in (({"train_subset": 400}, "--train-subset 400, not 200"),
                          ({"seed": 3}, "--seed 3, not 0"),
                          ({"dataset": "npz:x.npz"}, "--dataset 'npz:x.npz', not 'digits'")):
    (d / "jaxunlearn_model.json").write_text(json.dumps({**meta, **change}))
    code = cli.main(ARGS + ["--original", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "this run's training set" in err, err
  assert not (tmp_path / "o").exists()


def test_bad_run_numbers_are_one_line_errors(tmp_path, capsys):
  for flags, message in ((["--seed", "-1"], "--seed must be an int in [0, 2**32), got -1"),
                         (["--seed", str(2**40)], f"got {2**40}"),
                         (["--epochs", "0"], "--epochs must be an int >= 1, got 0"),
                         (["--train-subset", "0"], "--train-subset must be an int >= 1, got 0"),
                         (["--test-subset", "-5"], "--test-subset must be an int >= 1, got -5")):
    code = cli.main(ARGS + flags + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
  assert not (tmp_path / "o").exists()
