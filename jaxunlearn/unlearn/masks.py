"""Localisation masks: which parameters an unlearning method may change.

Two criteria, both computed from the ORIGINAL model on the forget set, in eval mode, without any update:

* **DEL** (Torkzadehmahani et al. 2024, "Improved Localized Machine Unlearning Through the Lens of
  Memorization"): per parameter tensor ``G = sum over forget batches of theta * grad_theta(-CE)``
  and its magnitude ``|G|``. Tensors with >= 2 dims are scored per OUTPUT channel: the score of a
  channel is the mean of the top-k entries of ``|G|`` in that channel, ``k = int(0.1 * C_out)``
  (at least 1, at most the channel's size), broadcast back to every entry of the channel; 1-D tensors
  (biases, BatchNorm scales/offsets) keep their per-element score. All scores are ranked globally
  (no per-layer normalisation) and the top ``fraction`` (default 0.3) is masked.
* **SalUn** (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
  Saliency"): per element ``|sum over forget batches of grad_theta(-CE)|`` (no weighting by theta),
  ranked globally; the top ``fraction`` (default 0.5) is masked.

Layout note: Flax kernels keep the output channel LAST (``Dense`` kernel ``[in, out]``, ``Conv``
kernel ``[kh, kw, in, out]``), unlike PyTorch's ``[out, ...]``. DEL's per-channel rule therefore views
a kernel as ``[-1, C_out]`` and scores each COLUMN, which selects the same groups of weights as
PyTorch's per-row rule on ``[C_out, -1]``.

A forget batch's loss is the mean cross-entropy over its examples (the last, partial batch included,
as a PyTorch loader without ``drop_last``); gradients are summed over batches.

Ties at the threshold are broken by position (a stable sort of the flattened concatenation of the
leaves in pytree order), so that exactly ``round(fraction * total)`` entries are selected: the mask
has exactly the asked fraction (up to rounding to a whole number of entries).

Masks are params-shaped pytrees of float32 0/1 arrays; every method takes one through ``mask=``
(see :func:`jaxunlearn.unlearn.apply_mask`), and the CLI builds one with ``--mask del:0.3``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.train import ModelState
from jaxunlearn.train import cross_entropy

MASK_KINDS = ("del", "salun")


def apply_mask(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """Restricts ``tx`` to the masked entries: updates are multiplied by ``mask`` (a params-shaped
  pytree of 0/1 arrays, or of bools per leaf), so unmasked parameters stay bit-identical.

  Leaves whose mask is a Python/numpy bool are frozen whole with ``optax.transforms.freeze``;
  array masks are applied elementwise after the optimizer (momentum and weight decay included).
  """
  if mask is None:
    return tx
  leaves = jax.tree.leaves(mask)
  if all(isinstance(m, (bool, np.bool_)) for m in leaves):
    frozen = jax.tree.map(lambda m: not m, mask)
    return optax.chain(tx, optax.transforms.freeze(frozen))

  def zero_unmasked(updates, params=None):
    del params
    # a select, not a product: inf/NaN updates (gradient ascent) must not leak into frozen entries
    return jax.tree.map(lambda u, m: jnp.where(jnp.asarray(m) > 0, u, jnp.zeros_like(u)), updates, mask)

  return optax.chain(tx, optax.stateless(zero_unmasked))


def scale_gradients(tx: optax.GradientTransformation, scale) -> optax.GradientTransformation:
  """``tx`` fed the gradients multiplied by ``scale`` (a params-shaped pytree of arrays or scalars),
  BEFORE the optimizer: momentum sees the scaled gradients, and SGD's weight decay (added to the
  gradient inside ``tx``) is not scaled, as a PyTorch gradient hook behaves. ``None``: ``tx`` itself.
  (:func:`apply_mask` acts on the updates AFTER the optimizer instead.)"""
  if scale is None:
    return tx

  def mul(grads, params=None):
    del params
    return jax.tree.map(lambda g, s: g * jnp.asarray(s, g.dtype), grads, scale)

  return optax.chain(optax.stateless(mul), tx)


def _check_fraction(fraction) -> float:
  f = float(fraction)
  if not 0.0 <= f <= 1.0:
    raise ValueError(f"mask fraction must lie in [0, 1], got {fraction!r}")
  return f


def forget_gradient(state: ModelState, data, *, batch_size: int = 128):
  """``sum over forget batches of grad_theta(-mean CE of the batch)``, eval mode, params-shaped.

  Args:
    state: the original model.
    data: an :class:`~jaxunlearn.unlearn.UnlearnData`; its ``forget`` indices (``int32 [F]``) are
      taken in order, in batches of ``batch_size`` (the last one may be partial).
    batch_size: examples per batch (clamped to ``F``).

  Returns:
    A params-shaped float32 pytree of summed gradients.
  """
  if data.forget.shape[0] == 0:
    raise ValueError("the forget set is empty")
  return set_gradient(state, data, data.forget, sign=-1.0, batch_size=batch_size)


def set_gradient(state: ModelState, data, index, *, sign: float = 1.0, batch_size: int = 128):
  """``sum over batches of index of grad_theta(sign * mean CE of the batch)``, eval mode, params-shaped.

  The batches are ``index`` (``int32 [N]``, N >= 1) taken in order, ``batch_size`` at a time (clamped
  to ``N``; the last batch may be partial, its mean over its own examples). :func:`forget_gradient` is
  this with the forget set and ``sign=-1``.

  Args:
    state: the model (eval mode: BatchNorm running statistics, not updated).
    data: an :class:`~jaxunlearn.unlearn.UnlearnData` (its ``x``/``y`` are indexed).
    index: the examples' indices (traced or concrete; the length is static).
    sign: a Python float multiplying every batch's loss.
    batch_size: examples per batch.

  Returns:
    A params-shaped float32 pytree of summed gradients.
  """
  if index.shape[0] == 0:
    raise ValueError("set_gradient needs at least one example")
  return _set_gradient(state, data, index, float(sign), int(batch_size))


@functools.partial(jax.jit, static_argnames=("sign", "batch_size"))
def _set_gradient(state: ModelState, data, idx, sign: float, batch_size: int):
  model, stats = state.model, state.batch_stats
  f = idx.shape[0]
  bs = max(1, min(batch_size, f))
  nb = -(-f // bs)
  pad = nb * bs - f
  idx_p = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)]).reshape(nb, bs)
  w_p = (jnp.arange(nb * bs) < f).astype(jnp.float32).reshape(nb, bs)

  def batch_loss(params, xb, yb, wb):
    logits, _ = model.apply(params, stats, xb, train=False)
    return sign * jnp.sum(wb * cross_entropy(logits, yb)) / jnp.sum(wb)

  def body(acc, inp):
    ib, wb = inp
    g = jax.grad(batch_loss)(state.params, data.x[ib], data.y[ib], wb)
    return jax.tree.map(jnp.add, acc, g), None

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
  acc, _ = jax.lax.scan(body, zeros, (idx_p, w_p))
  return acc


def channel_topk_mean(score: jax.Array, frac: float = 0.1) -> jax.Array:
  """DEL's per-output-channel rule on one tensor of non-negative scores.

  A tensor with >= 2 dims is viewed as ``[-1, C_out]`` (Flax: output channel last); each column's
  score is the mean of its ``k = max(1, int(frac * C_out))`` largest entries (``k`` at most the
  column length), broadcast back to the tensor's shape. 1-D tensors are returned unchanged.

  Args:
    score: ``[..., C_out]`` scores (e.g. ``|theta * grad|``).
    frac: fraction of the number of output channels giving ``k``.

  Returns:
    A float32 array of ``score``'s shape.
  """
  score = jnp.asarray(score, jnp.float32)
  if score.ndim < 2:
    return score
  c = score.shape[-1]
  cols = score.reshape(-1, c)
  k = min(max(1, int(frac * c)), cols.shape[0])
  top = jax.lax.top_k(cols.T, k)[0]  # [C_out, k]
  return jnp.broadcast_to(jnp.mean(top, axis=-1), score.shape)


def del_scores(state: ModelState, data, *, batch_size: int = 128):
  """DEL criticality scores, a params-shaped float32 pytree (higher = more critical).

  ``|sum over forget batches of theta * grad_theta(-CE)|`` per entry, then for tensors with >= 2 dims
  the per-output-channel top-k mean (:func:`channel_topk_mean`, ``k = int(10 % of C_out)``, at least 1).

  Args:
    state: the original model (eval mode, not updated).
    data: :class:`~jaxunlearn.unlearn.UnlearnData` (its forget set is used).
    batch_size: forget batch size.
  """
  g = forget_gradient(state, data, batch_size=batch_size)
  return jax.tree.map(lambda p, gi: channel_topk_mean(jnp.abs(p.astype(jnp.float32) * gi)), state.params, g)


def salun_scores(state: ModelState, data, *, batch_size: int = 128):
  """SalUn saliency, ``|sum over forget batches of grad_theta(-CE)|`` per entry (params-shaped)."""
  return jax.tree.map(jnp.abs, forget_gradient(state, data, batch_size=batch_size))


def topk_mask(scores, fraction: float, *, per_leaf: bool = False):
  """A params-shaped float32 0/1 mask of the globally top-``fraction`` scores.

  Exactly ``round(fraction * total)`` entries are ones; ties are broken by position in the flattened
  concatenation of the leaves (pytree order), as a stable sort would. NaN scores rank lowest. No sort
  runs: :func:`top_n_flags` finds the n-th largest score by a 32-step bitwise search (32 counting passes,
  linear in the parameters; a global ``argsort`` of every parameter per model is slow on TPUs).
  With ``per_leaf`` every leaf is ranked on its own: exactly ``round(fraction * leaf.size)`` ones per leaf.
  (The SMALLEST scores: pass ``-scores``.)

  Args:
    scores: a pytree of float arrays.
    fraction: in ``[0, 1]`` (a Python number).
    per_leaf: one ranking per leaf instead of one over all leaves.
  """
  fraction = _check_fraction(fraction)
  leaves, treedef = jax.tree.flatten(scores)
  if per_leaf:
    return jax.tree.unflatten(treedef, [topk_mask(leaf, fraction) for leaf in leaves])
  sizes = [int(np.prod(l.shape)) for l in leaves]
  total = sum(sizes)
  n = int(round(fraction * total))
  flat = jnp.concatenate([jnp.ravel(l).astype(jnp.float32) for l in leaves])
  mflat = top_n_flags(flat, n).astype(jnp.float32)
  out, start = [], 0
  for leaf, size in zip(leaves, sizes):
    out.append(mflat[start:start + size].reshape(leaf.shape))
    start += size
  return jax.tree.unflatten(treedef, out)


def top_n_flags(flat: jax.Array, n: int) -> jax.Array:
  """``bool [N]``: the ``n`` largest of ``flat`` (float32 ``[N]``), ties broken by position (the first
  ``n`` of a stable descending sort), NaN lowest, -0.0 equal to 0.0.

  Each value maps to an order-preserving unsigned key; the n-th largest key ``T`` is built bit by bit
  from the top (keep a bit when at least ``n`` keys are ``>=`` the candidate); then every key above ``T``
  is selected, and the first ``n - #(key > T)`` keys equal to ``T`` by position.
  """
  total = flat.shape[0]
  if n <= 0:
    return jnp.zeros((total,), bool)
  if n >= total:
    return jnp.ones((total,), bool)
  f = jnp.where(jnp.isnan(flat), -jnp.inf, flat.astype(jnp.float32)) + 0.0  # -0.0 + 0.0 = +0.0
  bits = jax.lax.bitcast_convert_type(f, jnp.uint32)
  sign = jnp.uint32(0x80000000)
  key = jnp.where(bits & sign, ~bits, bits | sign)  # unsigned order = float order

  def body(b, t):
    cand = t | (jnp.uint32(1) << (jnp.uint32(31) - b.astype(jnp.uint32)))
    return jnp.where(jnp.sum(key >= cand) >= n, cand, t)

  t = jax.lax.fori_loop(0, 32, body, jnp.uint32(0))
  above = key > t
  equal = key == t
  room = n - jnp.sum(above)
  return above | (equal & (jnp.cumsum(equal) <= room))


def del_mask(state: ModelState, data, fraction: float = 0.3, *, batch_size: int = 128):
  """DEL localisation mask: the top ``fraction`` of :func:`del_scores`, float32 0/1, params-shaped."""
  return topk_mask(del_scores(state, data, batch_size=batch_size), fraction)


def salun_mask(state: ModelState, data, fraction: float = 0.5, *, batch_size: int = 128):
  """SalUn saliency mask: the top ``fraction`` of :func:`salun_scores`, float32 0/1, params-shaped."""
  return topk_mask(salun_scores(state, data, batch_size=batch_size), fraction)


def mask_fraction(mask) -> float:
  """The fraction of ones in a 0/1 mask pytree (host float; bool leaves count their whole tensor)."""
  leaves = jax.tree.leaves(mask)
  if not leaves:
    return 0.0
  ones = sum(float(jnp.sum(jnp.asarray(m, jnp.float32))) for m in leaves)
  total = sum(int(np.prod(np.shape(m))) for m in leaves)
  return ones / max(1, total)


def build_mask(kind: str, state: ModelState, data, fraction: float, *, batch_size: int = 128):
  """The mask of ``kind`` (``"del"`` or ``"salun"``) for ``--mask KIND:FRACTION``.

  Args:
    kind: ``del`` or ``salun``.
    state: the original model.
    data: the unlearning data (forget set).
    fraction: fraction of parameters to mask, in ``[0, 1]``.
    batch_size: forget batch size for the gradients.

  Returns:
    A params-shaped float32 0/1 pytree.
  """
  if kind == "del":
    return del_mask(state, data, fraction, batch_size=batch_size)
  if kind == "salun":
    return salun_mask(state, data, fraction, batch_size=batch_size)
  raise ValueError(f"unknown mask kind {kind!r}; choose from {', '.join(MASK_KINDS)}")
