"""docs/methods.md names every registered method, on a row that lists its presets."""

import pathlib

from jaxunlearn import unlearn as jun

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def test_methods_page_lists_every_method_and_its_presets():
  rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
  for name, spec in jun.METHODS.items():
    row = next((r for r in rows if f"`{name}`" in r.split("|")[1]), None)
    assert row is not None, f"docs/methods.md has no row for {name!r}"
    presets = row.split("|")[5]
    for preset in spec.presets:
      assert f"`{preset}`" in presets, f"docs/methods.md: {name}'s row does not list preset {preset!r}"
