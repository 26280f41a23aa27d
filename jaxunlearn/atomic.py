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
  file; concurrent writers never collide (the last one wins, whole). Creates missing parents. The file
  gets the mode a plain ``open`` would give it (``0666`` less the umask, e.g. ``0644``), not
  ``mkstemp``'s private ``0600``.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
  try:
    with os.fdopen(fd, "wb" if binary else "w") as f:
      writer(f)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def _umask() -> int:
  """The process's umask, read without changing it where the system tells it (Linux: /proc; setting and
  restoring it would briefly give files other threads create a 0 umask)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


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
