"""Membership of training examples in many models: keep masks ``bool [M, N]`` and their index lists."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

BALANCE = ("models", "examples")


def as_key(key) -> jax.Array:
  """A single typed ``jax.random.key`` from a typed key, a legacy ``uint32 [2]`` key or an int seed.

  Raises:
    TypeError: naming the bad key.
  """
  if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
    return jax.random.key(int(key))
  if not isinstance(key, jax.Array):
    raise TypeError(f"key must be a jax.random.key (or an int seed), got {type(key).__name__}")
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise TypeError(f"key must be a single key, got a key array of shape {key.shape}")
    return key
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return jax.random.wrap_key_data(key)
  raise TypeError(f"key must be a jax.random.key, got dtype {key.dtype} shape {key.shape}")


def _check_count(name: str, v, low: int) -> None:
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {v!r}")
  if v < low:
    raise ValueError(f"{name} must be >= {low}, got {v}")


def keep_mask(key, num_models: int, num_examples: int, *, balance: str = "models", p: float = 0.5,
              pool=None, paired: bool = False, convention: str = "ours") -> np.ndarray:
  """Which of ``num_models`` models trains on which of ``num_examples`` examples: ``bool [M, N]``.

  ``balance="models"`` (default; what :func:`jaxunlearn.many.train_many` needs, every row the
  same size): every model keeps ``N // 2`` examples. By default each model keeps an independent
  uniformly random half (the permutation of model m uses ``fold_in(fold_in(key, 0), m)``), so how
  many *other* models hold an example is independent of whether model m holds it -- what
  leave-one-out LiRA needs; per example the count is Binomial(M, 1/2). With ``paired=True`` models
  are paired: for pair ``j`` one permutation is drawn; model ``2j`` keeps its first half and model
  ``2j + 1`` the second (with M and N even every example is then in exactly M/2 models, as in the
  LiRA reference's masks, but the number of other models holding an example then depends on the
  target's membership, which matters for small M). With ``pool`` (int indices) the pool and the
  other examples are halved separately, so every model keeps exactly ``len(pool) // 2`` pool
  examples (U-LiRA's forget candidates) and ``(N - len(pool)) // 2`` others. Needs ``p = 0.5``.

  ``balance="examples"`` (the reference LiRA code's masks): ``u = uniform(key, (M, N));
  keep = u.argsort(0) < k``, so every example is in exactly ``k`` models and each model holds
  about ``k / M * N`` examples (rows differ in size). ``convention="ours"`` (default):
  ``k = ceil(p * M)`` (up to 1e-9), the fraction p rounded up (``p = 0.5`` with odd M puts every
  example in (M + 1) / 2 models).
  ``convention="reference"``: ``k = int(p * M)``, the plain Python floor of the float product, as
  the reference ``train.py`` of tensorflow/privacy ``research/mi_lira_2021`` (including its float
  artifacts, e.g. ``int(0.29 * 100) = 28``). Both agree whenever ``p * M`` is an integer (in floats).
  ``"reference"`` needs ``balance="examples"`` (the reference's masks).

  Args:
    key: a typed ``jax.random.key``, a legacy ``uint32 [2]`` key, or an int seed.
    num_models: M >= 1.
    num_examples: N (>= 2 for ``"models"``, >= 0 for ``"examples"``).
    balance: ``"models"`` or ``"examples"`` (see above).
    p: fraction of models that train on each example (``"examples"``), in [0, 1].
    pool, paired: ``"models"`` only (see above).
    convention: ``"ours"`` (ceil) or ``"reference"`` (floor): the count k for ``"examples"``.

  Returns:
    ``bool [M, N]`` numpy array; ``keep[m, n]`` is True iff model m trains on example n.
  """
  if balance not in BALANCE:
    raise ValueError(f"balance must be one of {', '.join(BALANCE)}, got {balance!r}")
  _check_count("num_models", num_models, 1)
  _check_count("num_examples", num_examples, 2 if balance == "models" else 0)
  p = float(p)
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"p must be in [0, 1], got {p!r}")
  if convention not in ("ours", "reference"):
    raise ValueError(f"convention must be 'ours' or 'reference', got {convention!r}")
  key = as_key(key)
  if balance == "examples":
    if pool is not None or paired:
      raise ValueError("pool and paired need balance='models'")
    return _balanced_examples(key, num_models, num_examples, p, convention)
  if convention != "ours":
    raise ValueError(f"convention={convention!r} needs balance='examples' (the reference's masks)")
  if p != 0.5:
    raise ValueError(f"balance='models' keeps half of the examples (p=0.5), got p={p!r}")
  return _balanced_models(key, num_models, num_examples, pool, paired)


def _balanced_examples(key, num_models: int, num_examples: int, p: float, convention: str) -> np.ndarray:
  if convention == "reference":
    k = int(p * num_models)  # train.py: order < int(pkeep * num_experiments)
  else:
    k = int(np.ceil(p * num_models - 1e-9))
  u = np.asarray(jax.random.uniform(key, (num_models, num_examples)))
  order = np.argsort(u, axis=0, kind="stable")
  return order < k


def _balanced_models(key, num_models: int, num_examples: int, pool, paired: bool) -> np.ndarray:
  groups = [np.arange(num_examples)]
  if pool is not None:
    pool = np.unique(np.asarray(pool, dtype=np.int64))
    if pool.size < 2 or pool.min() < 0 or pool.max() >= num_examples:
      raise ValueError(f"pool must hold >= 2 distinct indices in [0, {num_examples}), got {pool.size} "
                       f"in [{pool.min(initial=0)}, {pool.max(initial=0)}]")
    rest = np.setdiff1d(np.arange(num_examples), pool)
    groups = [pool] + ([rest] if rest.size >= 2 else [])
  keep = np.zeros((num_models, num_examples), dtype=bool)
  for g, members in enumerate(groups):
    h = members.size // 2
    gkey = jax.random.fold_in(key, g)
    draws = (num_models + 1) // 2 if paired else num_models
    perms = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, members.size))(
        jax.vmap(lambda j: jax.random.fold_in(gkey, j))(jnp.arange(draws))))
    for j in range(draws):
      perm = members[perms[j]]
      if not paired:
        keep[j, perm[:h]] = True
        continue
      keep[2 * j, perm[:h]] = True
      if 2 * j + 1 < num_models:
        keep[2 * j + 1, perm[h:2 * h]] = True
  return keep


def as_keep_mask(keep_mask) -> np.ndarray:
  """``keep_mask`` as a numpy ``bool [M, N]`` (0/1 ints or floats accepted).

  Raises:
    ValueError / TypeError: for another shape or dtype.
  """
  keep = np.asarray(keep_mask)
  if keep.ndim != 2:
    raise ValueError(f"keep_mask must be [M, N], got shape {keep.shape}")
  if keep.dtype != np.bool_:
    if not (np.issubdtype(keep.dtype, np.integer) or np.issubdtype(keep.dtype, np.floating)):
      raise TypeError(f"keep_mask must be bool, got dtype {keep.dtype}")
    if not np.isin(keep, (0, 1)).all():
      raise ValueError("keep_mask must be bool (or 0/1)")
    keep = keep.astype(bool)
  return keep


def keep_indices(keep_mask, key=None, *, unbalanced: str = "error") -> np.ndarray:
  """Per-model index lists ``int32 [M, K]`` from a keep mask ``bool [M, N]``.

  Static shapes need the same K for every model. With ``unbalanced="error"`` (default) rows with
  different counts raise ValueError. With ``unbalanced="resample"`` every row is padded to the
  largest count with examples drawn (without replacement where possible) from the row's own kept
  examples -- they are then seen twice per epoch. The draw for row m depends only on ``key`` and
  m (numpy generator seeded by the key data and m), so it does not depend on chunking.
  """
  keep = as_keep_mask(keep_mask)
  counts = keep.sum(1)
  if (counts == 0).any():
    raise ValueError(f"keep_mask row {int(np.argmin(counts))} keeps no example")
  k = int(counts.max())
  if unbalanced not in ("error", "resample"):
    raise ValueError(f"unbalanced must be 'error' or 'resample', got {unbalanced!r}")
  if (counts != k).any() and unbalanced == "error":
    raise ValueError(f"keep_mask rows keep different numbers of examples ({int(counts.min())} to {k}); "
                     "use jaxunlearn.data.keep_mask, or unbalanced='resample' to pad rows by resampling")
  kd = np.asarray(jax.random.key_data(as_key(0 if key is None else key))).astype(np.uint64).tolist()
  out = np.empty((keep.shape[0], k), np.int32)
  for m in range(keep.shape[0]):
    idx = np.flatnonzero(keep[m])
    if idx.size < k:
      rng = np.random.default_rng([m, *kd])
      extra = k - idx.size
      pad = rng.choice(idx, size=extra, replace=extra > idx.size)
      idx = np.concatenate([idx, np.sort(pad)])
    out[m] = idx
  return out
