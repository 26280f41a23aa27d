"""Atomic file writes (temporary file in the same folder, then ``os.replace``) for JSON and npz files."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import jax
import numpy as np

__all__ = ("atomic_savez", "atomic_write", "jsonable", "write_json_atomic")


def atomic_write(path, writer: Callable[[IO], Any], *, binary: bool = False, suffix: str = ".tmp") -> None:
  """Calls ``writer(f)`` on a unique temporary file next to ``path``, then ``os.replace``\\ s it.

  A crash (or an exception in ``writer``) never leaves a half-written ``path`` nor a temporary
  file; concurrent writers never collide (the last one wins, whole). Creates missing parents.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
  try:
    with os.fdopen(fd, "wb" if binary else "w") as f:
      writer(f)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def jsonable(v):
  """``v`` with numpy / JAX arrays and scalars turned into Python numbers and lists.

  Non-finite floats (NaN, inf) become ``None`` (JSON ``null``): bare ``NaN`` / ``Infinity`` tokens
  are not JSON, and strict parsers (``jq``, JavaScript) reject the whole file.
  """
  if isinstance(v, float):
    return v if math.isfinite(v) else None
  if isinstance(v, dict):
    return {str(k): jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(x) for x in v]
  if isinstance(v, (np.ndarray, jax.Array)):
    a = np.asarray(v)
    return jsonable(a.item() if a.ndim == 0 else a.tolist())
  if isinstance(v, np.floating):
    return jsonable(float(v))
  if isinstance(v, np.integer):
    return v.item()
  return v


def write_json_atomic(path, obj) -> None:
  """``obj`` (made :func:`jsonable`) as indented JSON with a final newline, written atomically.

  Strict JSON: non-finite floats are written as ``null`` (``allow_nan=False`` guards the rest).
  """
  data = jsonable(obj)  # (before the file is opened: a failure leaves the previous file alone)

  def write(f):
    json.dump(data, f, indent=2, sort_keys=False, allow_nan=False)
    f.write("\n")

  atomic_write(path, write)


def atomic_savez(path, **arrays) -> None:
  """``np.savez(path, **arrays)``, written atomically."""
  atomic_write(path, lambda f: np.savez(f, **arrays), binary=True, suffix=".tmp.npz")
