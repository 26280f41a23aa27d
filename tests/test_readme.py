"""The README's commands stay accurate: the tour runs (shrunk by appended flags; argparse keeps the
last value) and the two opening commands are what .ci/run and the install use."""

import pathlib
import shlex

import pytest

from jaxunlearn import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHRINK = {
    "run": ["--model", "mlp", "--width", "0.25", "--epochs", "1", "--train-subset", "300", "--test-subset", "100"],
    "tune": ["--model", "mlp", "--width", "0.25", "--epochs", "1", "--train-subset", "300", "--test-subset", "100",
             "--seeds", "2"],
    "lira": ["--models", "4", "--model", "mlp", "--width", "0.25", "--epochs", "1", "--train-subset", "200"],
    "challenge": ["--models", "3", "--model", "mlp", "--width", "0.25", "--epochs", "1", "--train-subset", "200"],
}


def _tour_commands():
  block = README.split("## 30-second tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
  lines = block.replace("\\\n", " ").splitlines()
  return [shlex.split(l.split("#")[0])[1:] for l in lines if l.strip().startswith("jaxunlearn")]


def test_readme_opens_with_install_run_and_test_commands():
  first = README.split("```bash", 1)[1].split("```", 1)[0]
  cmds = [l for l in first.splitlines() if l.strip() and not l.startswith("#")]
  assert cmds[0] == "pip install -e . && jaxunlearn run"
  assert cmds[1] == 'pip install -e ".[test]" && python -m pytest'
  assert cmds[1] in (ROOT / ".ci" / "run").read_text()


def test_tour_has_the_advertised_commands():
  cmds = _tour_commands()
  assert [c[0] for c in cmds] == ["run", "run", "run", "tune", "run", "lira", "challenge"]


@pytest.mark.parametrize("i", range(7))
def test_tour_command_runs(i, tmp_path, capsys):
  args = _tour_commands()[i]
  args = [a for j, a in enumerate(args) if not (a == "--out" or (j > 0 and args[j - 1] == "--out"))]
  code = cli.main(args + SHRINK[args[0]] + ["--quiet", "--out", str(tmp_path / "o")])
  assert code == 0, capsys.readouterr().err
  assert (tmp_path / "o" / "results.json").is_file()
  assert list((tmp_path / "o").glob("*.png"))
