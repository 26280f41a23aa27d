"""`jaxunlearn run` loses nothing: --out is locked against a second writer; Ctrl-C exits on one line with status
130 and the same command resumes the finished models; another job's results are never replaced without
--overwrite; results.json records the job's settings and the command line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxunlearn import cli

fcntl = pytest.importorskip("fcntl")

ARGS = ["run", "--model", "mlp", "--width", "0.25", "--epochs", "2", "--train-subset", "200", "--test-subset", "60",
        "--method", "finetune", "--set", "finetune.epochs=1", "--eval", "tow", "--executor", "scan", "--quiet"]


def _run(args, capsys):
  code = cli.main(args)
  out, err = capsys.readouterr()
  return code, out, [line for line in err.splitlines() if line.strip()]


def _accs(r):
  return {n: e["acc"] for n, e in r["models"].items()}


def test_ctrl_c_exits_130_and_the_same_command_resumes_the_finished_models(tmp_path, capsys):
  out = tmp_path / "o"
  res = out / "results.json"
  # the test's own compiler setting, so the interrupted process trains the same original as this one
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  p = subprocess.Popen([sys.executable, "-m", "jaxunlearn", *ARGS, "--out", str(out)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env)
  deadline = time.time() + 240
  while not res.exists() and p.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  p.send_signal(signal.SIGINT)  # after the original, while the oracle compiles
  _, err = p.communicate(timeout=120)
  assert p.returncode == 130, err[-2000:]
  assert [line for line in err.splitlines() if line.strip()] == [
      f"jaxunlearn: interrupted; {res} keeps every finished model (the same command resumes from them)"]
  partial = json.loads(res.read_text())
  assert partial["complete"] is False and list(partial["models"]) == ["original"]
  assert (out / ".resume" / "original").is_dir()

  # the same command: the original (weights and entry) reused, the rest run
  code, _, err = _run(ARGS + ["--out", str(out)], capsys)
  assert code == 0, err
  r = json.loads(res.read_text())
  assert r["complete"] is True and r["resumed"] == ["original"] and list(r["models"]) == ["original", "retrain", "finetune"]
  assert r["models"]["original"] == partial["models"]["original"]
  assert not (out / ".resume").exists()  # removed once complete

  # again: complete results of this job are kept, nothing runs
  before = res.stat().st_mtime_ns
  code, stdout, err = _run(ARGS + ["--out", str(out)], capsys)
  assert code == 0 and "already held these results: nothing was run (--overwrite runs it again)" in stdout
  assert res.stat().st_mtime_ns == before

  # another job into the same folder: refused on one line, nothing touched
  code, _, err = _run(ARGS + ["--epochs", "3", "--out", str(out)], capsys)
  assert code == 2 and len(err) == 1 and "holds the results of a different job (epochs 2 -> 3)" in err[0]
  assert "--overwrite" in err[0] and res.stat().st_mtime_ns == before

  # --overwrite: a fresh run, identical to the resumed one (the restored original is the trained one, bit for bit)
  code, _, err = _run(ARGS + ["--out", str(out), "--overwrite"], capsys)
  assert code == 0, err
  fresh = json.loads(res.read_text())
  assert "resumed" not in fresh and _accs(fresh) == _accs(r)
  assert fresh["models"]["finetune"]["tow"] == r["models"]["finetune"]["tow"]
  # the job's settings and the command line are recorded
  assert fresh["command"] == "jaxunlearn " + " ".join(ARGS + ["--out", str(out), "--overwrite"])
  job = fresh["job"]
  assert (job["train_subset"], job["test_subset"], job["evals"], job["epochs"]) == (200, 60, ["tow"], 2)
  assert len(job["data_sha256"]) == 16


def test_results_of_another_kind_are_not_overwritten(tmp_path, capsys):
  out = tmp_path / "o"
  out.mkdir()
  (out / "results.json").write_text('{"models": {}}')  # e.g. an older version's, or jaxunlearn tune's
  code, _, err = _run(ARGS + ["--out", str(out)], capsys)
  assert code == 2 and len(err) == 1 and "already holds the results.json of another run" in err[0]
  (out / "results.json").write_text('{"models": {')
  code, _, err = _run(ARGS + ["--out", str(out)], capsys)
  assert code == 2 and len(err) == 1 and "holds an unreadable results.json" in err[0]
  assert (out / "results.json").read_text() == '{"models": {'


def test_a_second_writer_of_the_same_out_is_refused(tmp_path, capsys):
  out = tmp_path / "o"
  out.mkdir()
  fd = os.open(out / ".jaxunlearn.lock", os.O_RDWR | os.O_CREAT)  # another run holding the folder
  try:
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    code, _, err = _run(ARGS + ["--out", str(out)], capsys)
  finally:
    os.close(fd)
  assert code == 2 and err == [f"jaxunlearn: error: output folder {str(out)!r} is in use by another jaxunlearn run "
                               "(pid 4242); wait for it to finish or choose another --out"]
  assert sorted(os.listdir(out)) == [".jaxunlearn.lock"]  # nothing written
