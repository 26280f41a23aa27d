"""Resuming a chunked run: the ``manifest.json`` that fingerprints it, and the fingerprints themselves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import checkpoint as ckpt
from jaxunlearn.atomic import atomic_write
from jaxunlearn.errors import ConfigError


def digest_tree(tree) -> list:
  """A cheap fingerprint of arrays: shape, dtype and two sums per leaf."""
  out = []
  for x in jax.tree.leaves(tree):
    a = jnp.asarray(x)
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a = jax.random.key_data(a)
    f = a.astype(jnp.float32)
    out.append([list(a.shape), str(a.dtype), float(jnp.sum(f)), float(jnp.sum(jnp.abs(f)))])
  return out


def sha(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def check_manifest(directory: Path, fingerprint: dict) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  ckpt.remove_stale_tmp(directory)
  path = directory / "manifest.json"
  want = json.loads(json.dumps(fingerprint))
  have = read_manifest(path)
  if have is not None:
    if have != want:
      diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
      raise ConfigError(f"checkpoint folder {str(directory)!r} was written by a different run "
                       f"(differs in {', '.join(diff)}); delete it or choose another checkpoint_dir")
    return
  if jax.process_index() == 0:
    atomic_write(path, lambda f: json.dump(want, f, indent=1))


def checkpoint_folder(checkpoint_dir) -> Path | None:
  """``checkpoint_dir`` as a ``Path`` (None stays None); refuses an existing non-folder."""
  if checkpoint_dir is None:
    return None
  p = Path(checkpoint_dir)
  if p.exists() and not p.is_dir():
    raise ValueError(f"checkpoint_dir {str(p)!r} exists and is not a folder")
  return p


def manifest_strategies(folders) -> list:
  """The strategies recorded in the ``manifest.json`` of each existing folder (None: no manifest).

  Raises:
    ValueError: for a manifest that exists but cannot be read (before anything is measured).
  """
  manifests = (read_manifest(Path(folder) / "manifest.json") for folder in folders)
  return [m.get("strategy") for m in manifests if m is not None]


def read_manifest(path: Path) -> dict | None:
  """A run's ``manifest.json`` (None if there is none).

  Raises:
    ValueError: if it exists but is not a readable JSON object.
  """
  if not path.is_file():
    return None
  try:
    have = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"checkpoint manifest {str(path)!r} is unreadable ({e}); delete the folder") from None
  if not isinstance(have, dict):
    raise ValueError(f"checkpoint manifest {str(path)!r} is not a JSON object; delete the folder")
  return have
