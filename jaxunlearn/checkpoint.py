"""Atomic pytree checkpoints: a thin wrapper around orbax-checkpoint.

This is the one module that talks to orbax: a synchronous ``orbax.checkpoint.Checkpointer`` with
the ``StandardCheckpointHandler`` (the stable API of orbax-checkpoint 0.11 / 0.12; the same handler
``ocp.StandardCheckpointer`` wraps, minus its background thread), so an orbax API change touches
this file only.

* :func:`save` writes a pytree to a directory. Orbax writes into a temporary sibling directory and
  renames it when everything is on disk, so a run killed mid-save never leaves a directory that
  :func:`load` or :func:`exists` would take for a finished checkpoint; an existing checkpoint is
  replaced only once the new one is complete, and a directory that is not a checkpoint is never
  overwritten.
* :func:`load` restores it onto the structure, shapes, dtypes and shardings of an *abstract* tree
  (e.g. from ``jax.eval_shape``), so a checkpoint of a model-sharded stack of states comes back
  sharded the same way (also across hosts: every process calls :func:`save` / :func:`load`).

Any pytree works, custom nodes included (``ModelState``, ``flax.struct`` dataclasses): leaves are
stored as a flat ``{"00000": leaf, ...}`` dict in ``jax.tree.leaves`` order, together with the
leaves' paths, and rebuilt with the abstract tree's structure. Typed PRNG key arrays are stored
as their raw key data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ("exists", "load", "remove_stale_tmp", "save")

_FORMAT = "jaxunlearn-flat-v1"
_NEW = ".jaxunlearn-new"  # sibling suffixes used while replacing an existing checkpoint
_OLD = ".jaxunlearn-old"


def _is_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _paths(tree) -> list[str]:
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _name(i: int) -> str:
  return f"{i:05d}"


def exists(path) -> bool:
  """Whether ``path`` holds a finished checkpoint (a directory orbax has committed).

  Orbax writes ``_CHECKPOINT_METADATA`` into the temporary directory last and then renames it to
  ``path``; ``orbax.checkpoint.path.step.is_checkpoint_finalized`` only looks at the name, so it
  would accept any directory.
  """
  p = Path(path)
  return p.is_dir() and (p / "_CHECKPOINT_METADATA").is_file()


def save(path, tree: Any) -> None:
  """Writes ``tree`` to the directory ``path`` atomically.

  A fresh ``path``: orbax writes a temporary sibling and renames it to ``path`` once complete. An
  existing checkpoint at ``path`` is replaced only after the new one is complete (written next to
  it, then swapped in by two renames), so a run killed mid-save keeps the previous checkpoint (or,
  killed between the two renames, leaves both siblings and no ``path``: the chunk is recomputed).

  Args:
    path: checkpoint directory (its parent is created): a fresh path or an earlier checkpoint.
    tree: a pytree of arrays (jax or numpy, sharded or not) and Python scalars.

  Raises:
    ValueError: if ``path`` exists and is not a finished checkpoint (a file, or a directory that is
      not one: it is never deleted).
  """
  import orbax.checkpoint as ocp

  p = Path(path).absolute()
  if p.exists() and not exists(p):
    raise ValueError(f"checkpoint path {str(p)!r} exists and is not a checkpoint; refusing to overwrite it")
  p.parent.mkdir(parents=True, exist_ok=True)
  leaves = jax.tree.leaves(tree)
  flat = {_name(i): (jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}
  meta = {"format": _FORMAT, "num_leaves": len(leaves), "paths": _paths(tree)}
  replace = p.exists()
  target = p.with_name(p.name + _NEW) if replace else p
  with _checkpointer() as ckptr:
    ckptr.save(target, args=ocp.args.StandardSave(flat), force=True, custom_metadata=meta)
  if replace:
    if jax.process_index() == 0:
      import shutil

      old = p.with_name(p.name + _OLD)
      shutil.rmtree(old, ignore_errors=True)
      p.rename(old)
      target.rename(p)
      shutil.rmtree(old, ignore_errors=True)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"jaxunlearn-checkpoint-swap-{p.name}")


def _checkpointer():
  """A synchronous orbax checkpointer (a context manager that closes it)."""
  import orbax.checkpoint as ocp

  return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def _abstract_leaf(x):
  """A ShapeDtypeStruct for orbax: keys become key data; leaves without a sharding get the default
  device (replicated over all devices in a multi-process run)."""
  if _is_key(x):
    shape = tuple(x.shape) + tuple(jax.eval_shape(jax.random.key_data, jax.random.key(0)).shape)
    dtype = jax.eval_shape(jax.random.key_data, jax.random.key(0)).dtype
  else:
    shape, dtype = tuple(np.shape(x)), getattr(x, "dtype", np.asarray(x).dtype)
  sharding = getattr(x, "sharding", None)
  if sharding is None:
    if jax.process_count() > 1:
      mesh = jax.sharding.Mesh(np.array(jax.devices()), ("all",))
      sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    else:
      sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def load(path, abstract_tree: Any) -> Any:
  """Reads the checkpoint at ``path`` into the structure of ``abstract_tree``.

  Args:
    path: a directory written by :func:`save`.
    abstract_tree: a pytree with the structure of the saved one whose leaves give shape and dtype
      (``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``, or concrete arrays). A leaf's
      ``sharding`` (if any) places the restored array; otherwise it goes to the default device.

  Returns:
    The restored pytree (``jax.Array`` leaves; typed PRNG keys re-wrapped).

  Raises:
    ValueError: naming ``path`` if it is missing, is not a finished checkpoint, is corrupt, or
      holds a tree of a different structure, shape or dtype.
  """
  import orbax.checkpoint as ocp

  p = Path(path).absolute()
  if not p.exists():
    raise ValueError(f"no checkpoint at {str(p)!r} (path does not exist)")
  if not exists(p):
    raise ValueError(f"{str(p)!r} is not a finished checkpoint (no _CHECKPOINT_METADATA; an "
                     "interrupted save or a foreign directory): delete it and run again")
  leaves, treedef = jax.tree.flatten(abstract_tree)
  try:
    with _checkpointer() as ckptr:
      meta = ckptr.metadata(p)
      custom = dict(getattr(meta, "custom_metadata", None) or {})
      if custom.get("format") != _FORMAT:
        raise ValueError("not written by jaxunlearn.checkpoint.save")
      if int(custom.get("num_leaves", -1)) != len(leaves):
        raise ValueError(f"it holds {custom.get('num_leaves')} arrays but the expected tree has "
                         f"{len(leaves)} (saved paths: {custom.get('paths', [])[:4]}...)")
      target = {_name(i): _abstract_leaf(x) for i, x in enumerate(leaves)}
      _check_shapes(meta, target)
      restored = ckptr.restore(p, args=ocp.args.StandardRestore(target))
  except ValueError as e:
    raise ValueError(f"checkpoint {str(p)!r} cannot be loaded: {_one_line(e)}") from None
  except Exception as e:  # orbax / tensorstore raise many types on a damaged directory
    raise ValueError(f"checkpoint {str(p)!r} is corrupt or unreadable: {type(e).__name__}: "
                     f"{_one_line(e)}") from None
  out = []
  for i, x in enumerate(leaves):
    r = restored[_name(i)]
    if _is_key(x):
      r = jax.random.wrap_key_data(r)  # the default (threefry) implementation
    want = tuple(np.shape(x)) if not _is_key(x) else tuple(x.shape)
    if tuple(r.shape) != want:
      raise ValueError(f"checkpoint {str(p)!r} holds shape {tuple(r.shape)} for leaf {i} but "
                       f"{want} was expected")
    out.append(r)
  return jax.tree.unflatten(treedef, out)


def _check_shapes(meta, target: dict) -> None:
  """Compares saved shapes with the expected ones before reading any data (clearer errors)."""
  tree = getattr(getattr(meta, "item_metadata", None), "tree", None)
  if not isinstance(tree, dict):
    return  # an orbax version without this metadata: restore itself will complain
  for name, want in target.items():
    have = tree.get(name)
    if have is None:
      raise ValueError(f"array {name} is missing")
    shape = getattr(have, "shape", None)
    if shape is not None and tuple(shape) != tuple(want.shape):
      raise ValueError(f"array {name} has shape {tuple(shape)} but {tuple(want.shape)} was expected")


def _one_line(e: BaseException) -> str:
  s = " ".join(str(e).split())
  return s if len(s) <= 400 else s[:397] + "..."


def remove_stale_tmp(directory) -> None:
  """Deletes what killed saves left in ``directory``: orbax's temporary directories
  (``*.orbax-checkpoint-tmp-*``) and the siblings of an interrupted replacement."""
  import shutil

  d = Path(directory)
  if not d.is_dir():
    return
  for child in d.iterdir():
    if child.is_dir() and (".orbax-checkpoint-tmp" in child.name or child.name.endswith((_NEW, _OLD))):
      shutil.rmtree(child, ignore_errors=True)
