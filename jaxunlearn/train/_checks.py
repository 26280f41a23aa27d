"""Shared one-line validation helpers for the frozen config dataclasses (called from ``__post_init__``)."""

from __future__ import annotations

import math


def _name(obj, field: str) -> str:
  return f"{type(obj).__name__}.{field}={getattr(obj, field)!r}"


def check_int(obj, field: str, *, lo: int = 0) -> None:
  """``obj.field`` must be an int (not a bool) ``>= lo``."""
  v = getattr(obj, field)
  if isinstance(v, bool) or not isinstance(v, int) or v < lo:
    raise ValueError(f"{_name(obj, field)} must be an integer >= {lo}")


def check_real(obj, field: str, *, lo: float | None = 0.0, hi: float | None = None,
               lo_open: bool = False, hi_open: bool = False) -> None:
  """``obj.field`` must be a finite real number in the stated interval (bounds ``None`` = unbounded)."""
  v = getattr(obj, field)
  ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
  if ok and lo is not None:
    ok = v > lo if lo_open else v >= lo
  if ok and hi is not None:
    ok = v < hi if hi_open else v <= hi
  if not ok:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    raise ValueError(f"{_name(obj, field)} must be a finite number in {left}{'-inf' if lo is None else lo}, "
                     f"{'inf' if hi is None else hi}{right}")
  object.__setattr__(obj, field, float(v))


def check_choice(obj, field: str, choices) -> None:
  """``obj.field`` must be one of ``choices``."""
  v = getattr(obj, field)
  if v not in choices:
    raise ValueError(f"{type(obj).__name__}: unknown {field} {v!r}; choose from {', '.join(map(str, choices))}")


def check_bool(obj, field: str) -> None:
  """``obj.field`` must be a bool."""
  if not isinstance(getattr(obj, field), bool):
    raise ValueError(f"{_name(obj, field)} must be true/false")


def check_int_tuple(obj, field: str) -> None:
  """``obj.field`` must be a sequence of non-negative ints; stored as a tuple."""
  v = getattr(obj, field)
  try:
    t = tuple(v)
  except TypeError:
    t = None
  if t is None or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in t):
    raise ValueError(f"{_name(obj, field)} must be non-negative integers")
  object.__setattr__(obj, field, t)
