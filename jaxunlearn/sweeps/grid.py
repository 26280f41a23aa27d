"""Hyperparameter grids: ``--grid M.lr=1e-4,5e-4`` / ``log:LO:HI:N`` / ``lin:LO:HI:N`` parsed and expanded into (static config, traced values) groups."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from jaxunlearn import unlearn as jun
from jaxunlearn.errors import ConfigError

__all__ = ("Grid", "GridGroup", "expand_grid", "parse_grid", "parse_values")

GRID_HELP = ("METHOD.OPTION=VALUES with VALUES a comma list (1e-4,5e-4), log:LO:HI:N (N log-spaced values) or "
             "lin:LO:HI:N (N evenly spaced)")


def parse_values(text: str, what: str) -> tuple[str, ...]:
  """The values of one ``--grid`` entry as strings (kept as text: the option's type coerces them).

  Raises:
    ConfigError: a malformed range (one line naming ``what`` and the text).
  """
  t = text.strip()
  for kind in ("log", "lin"):
    if t.startswith(kind + ":"):
      parts = t.split(":")
      if len(parts) != 4:
        raise ConfigError(f"--grid {what}={text!r}: expected {kind}:LO:HI:N")
      try:
        lo, hi, n = float(parts[1]), float(parts[2]), int(parts[3])
      except ValueError:
        raise ConfigError(f"--grid {what}={text!r}: LO and HI must be numbers and N an int") from None
      if n < 1 or not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"--grid {what}={text!r}: needs finite LO, HI and N >= 1")
      if kind == "log":
        if lo <= 0 or hi <= 0:
          raise ConfigError(f"--grid {what}={text!r}: log ranges need LO > 0 and HI > 0")
        vals = np.geomspace(lo, hi, n)
      else:
        vals = np.linspace(lo, hi, n)
      return tuple(f"{v:.6g}" for v in vals)
  vals = tuple(v.strip() for v in t.split(",") if v.strip())
  if not vals:
    raise ConfigError(f"--grid {what}={text!r}: no values")
  if len(set(vals)) != len(vals):
    raise ConfigError(f"--grid {what}={text!r}: a value is given twice")
  return vals


@dataclasses.dataclass(frozen=True)
class Grid:
  """A method's grid: ``axes`` maps option -> its values (strings as on the command line), in the
  order given; the configurations are their cartesian product."""

  method: str
  axes: tuple[tuple[str, tuple[str, ...]], ...]

  @property
  def size(self) -> int:
    return math.prod(len(v) for _, v in self.axes) if self.axes else 1

  def points(self) -> list[dict[str, str]]:
    """Every configuration, ``{option: value string}``, the last axis varying fastest."""
    names = [k for k, _ in self.axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in self.axes))]


def parse_grid(method: str, entries: Sequence[str]) -> Grid:
  """``Grid`` of ``method`` from ``--grid`` entries ``[METHOD.]OPTION=VALUES``.

  Raises:
    ConfigError: an entry for another method, an unknown option, an option given twice, a value
      its type does not take (checked by building every configuration's config).
  """
  try:
    options = jun.option_names(jun.get_method(method).config_cls)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  axes: dict[str, tuple[str, ...]] = {}
  for e in entries:
    if "=" not in e:
      raise ConfigError(f"--grid {e!r}: expected {GRID_HELP}")
    lhs, rhs = e.split("=", 1)
    lhs = lhs.strip()
    if "." in lhs:
      m, lhs = lhs.split(".", 1)
      if m != method:
        raise ConfigError(f"--grid {e!r}: method {m!r} is not the tuned method {method!r}")
    if lhs not in options:
      raise ConfigError(f"--grid {e!r}: method {method!r} has no option {lhs!r}; options: {', '.join(sorted(options))}")
    if lhs in axes:
      raise ConfigError(f"--grid: option {method}.{lhs} is given twice")
    axes[lhs] = parse_values(rhs, f"{method}.{lhs}")
  return Grid(method, tuple(axes.items()))


@dataclasses.dataclass(frozen=True)
class GridGroup:
  """The configurations of a grid that share one static config: ONE compiled program.

  Attributes:
    config: the method's config (its discrete settings; traced options hold the base values).
    static: ``{option: value}`` of the swept static options of this group.
    indices: positions of the group's points in ``Grid.points()``.
    hparams: ``{option: float32 [len(indices)]}``, the swept traced options (Method.hparams names).
  """

  config: Any
  static: Mapping[str, Any]
  indices: tuple[int, ...]
  hparams: Mapping[str, np.ndarray]


def expand_grid(grid: Grid, base) -> tuple[list[dict[str, Any]], list[GridGroup]]:
  """``(points, groups)``: every configuration as ``{option: typed value}`` (applied on top of the
  method's ``base`` config) and the points grouped by their static config; traced options
  (``Method.hparams`` names) are batched as data within a group.

  Raises:
    ConfigError: a value the option does not take (one line naming it).
  """
  name = grid.method
  traced = set(jun.make(name, base).hparams)
  points, groups_by_cfg = [], {}
  for i, pt in enumerate(grid.points()):
    try:  # the option's type and check coerce and validate every value
      typed = {k: _typed(jun.make_config(name, {k: v}), k) for k, v in pt.items()}
      jun.replace(base, **typed)
    except ValueError as e:
      raise ConfigError(f"--grid point {pt}: {e}") from None
    points.append(typed)
    cfg_static = jun.replace(base, **{k: v for k, v in typed.items() if k not in traced})
    groups_by_cfg.setdefault(cfg_static, []).append((i, typed))
  groups = []
  for cfg, members in groups_by_cfg.items():
    hparams = {k: np.asarray([t[k] for _, t in members], np.float32) for k, _ in grid.axes if k in traced}
    static = {k: members[0][1][k] for k, _ in grid.axes if k not in traced}
    groups.append(GridGroup(cfg, static, tuple(i for i, _ in members), hparams))
  return points, groups


def _typed(cfg, option: str):
  """The value of flat ``option`` in ``cfg`` (nested optimizer fields included)."""
  parent = jun.option_names(type(cfg))[option][0]
  return getattr(getattr(cfg, parent) if parent else cfg, option)
