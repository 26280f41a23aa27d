"""Same seed -> bit-identical results.json on CPU (wall-clock fields aside)."""

import json

from jaxunlearn import cli

TIMING_KEYS = {"seconds", "speedup_vs_retrain", "compile_seconds", "wall_seconds", "timing_notes"}
OTHER_KEYS = {"command"}  # the command line names each run's own --out folder


def _strip_times(obj):
  if isinstance(obj, dict):
    return {k: _strip_times(v) for k, v in obj.items() if k not in TIMING_KEYS | OTHER_KEYS}
  if isinstance(obj, list):
    return [_strip_times(v) for v in obj]
  return obj


def _run(out, seed):
  args = ["run", "--model", "mlp", "--width", "0.25", "--epochs", "2", "--train-subset", "200",
          "--test-subset", "60", "--method", "finetune", "--set", "finetune.epochs=1", "--eval", "tow",
          "--seed", str(seed), "--quiet", "--out", str(out)]
  assert cli.main(args) == 0
  return json.loads((out / "results.json").read_text())


def test_same_seed_gives_bit_identical_results(tmp_path, capsys):
  a = _run(tmp_path / "a", 3)
  b = _run(tmp_path / "b", 3)
  c = _run(tmp_path / "c", 4)
  sa, sb, sc = (json.dumps(_strip_times(r), sort_keys=True) for r in (a, b, c))
  assert sa == sb  # exact float repr equality
  assert sa != sc  # and the seed matters
  assert set(a["models"]["finetune"]) >= TIMING_KEYS - {"wall_seconds", "timing_notes"}  # the excluded fields exist
