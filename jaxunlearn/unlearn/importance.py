"""Per-example gradients of a model's cross-entropy (or of the norm of its output), chunked over examples
so memory stays bounded: diagonal Fishers, label-free output sensitivities, mean gradients and stacked
per-example gradients for the methods that need them (Fisher forgetting, SSD, label-free SSD, influence
unlearning).

Every function here runs the model in EVAL mode (BatchNorm running statistics, not updated) on
``data.x[index]``, ``chunk_size`` examples at a time: a ``lax.scan`` over chunks, ``jax.vmap(jax.grad)``
within a chunk. Peak memory is about ``chunk_size`` copies of the parameters (per-example gradients of
one chunk), whatever the number of examples; the last chunk is padded with weight-0 examples. All
results are float32 and params-shaped, jittable and ``vmap``-able over models.

Labels (the ``labels`` argument of :func:`diag_fisher`):

* ``"true"``: the dataset's labels, ``E_x[(grad log p(y_x | x))^2]``, the *empirical* Fisher (SSD's
  importance);
* ``"expected"``: the model's own predictive distribution, ``E_x[sum_c p(c | x) (grad log p(c | x))^2]``,
  the *true* Fisher of the model (Fisher forgetting, Golatkar et al. 2020); one backward pass per class;
* ``"sampled"``: one label per example drawn from ``p(. | x)`` with ``key`` (a one-sample Monte-Carlo
  estimate of ``"expected"``, one backward pass).

Per-example quantities (the ``quantity`` argument of :func:`reduce_example_grads`): ``"nll"``, the
cross-entropy ``-log p(label | x)`` above; ``"output_norm"``, ``||f(x)||_2``, the l2 norm of the logits,
and ``"output_sq_norm"``, its square: label-free (the labels ``data.y`` are never read), for
:func:`output_sensitivity` (label-free SSD, Foster et al. 2024).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import cross_entropy

FISHER_LABELS = ("true", "expected", "sampled")
EXAMPLE_QUANTITIES = ("nll", "output_norm", "output_sq_norm")
OUTPUT_FORMS = ("squared", "mas")

__all__ = ("EXAMPLE_QUANTITIES", "FISHER_LABELS", "OUTPUT_FORMS", "diag_fisher", "mean_grad", "output_sensitivity",
           "random_subset", "reduce_example_grads", "stacked_grads")


def random_subset(key: jax.Array, index: jax.Array, size: int | None) -> jax.Array:
  """``size`` entries of ``index`` drawn without replacement with ``key`` (all of ``index``, in order,
  when ``size`` is None or at least its length; static shapes): the examples whose gradients a method
  takes when it caps their number."""
  n = index.shape[0]
  if size is None or size >= n:
    return index
  return jax.random.choice(key, index, (size,), replace=False)


def _chunks(index: jax.Array, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """``index`` padded to ``[num_chunks, chunk]`` (with index 0) and the 0/1 weights of real examples."""
  n = index.shape[0]
  if n == 0:
    raise ValueError("per-example gradients of an empty set of examples")
  c = max(1, min(int(chunk_size), n))
  nc = -(-n // c)
  pad = nc * c - n
  idx = jnp.concatenate([index.astype(jnp.int32), jnp.zeros((pad,), jnp.int32)]).reshape(nc, c)
  w = (jnp.arange(nc * c) < n).astype(jnp.float32).reshape(nc, c)
  return idx, w


def _log_probs(state: ModelState, params, x):
  """Eval-mode log-probabilities ``[B, K]`` of ``x`` under ``params``."""
  logits, _ = state.model.apply(params, state.batch_stats, x, train=False)
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def _example_grad(state: ModelState, quantity: str = "nll"):
  """``(params, x [1 image], y) -> grad of the example's quantity``, params-shaped: ``-log p(y | x)``
  (``"nll"``), ``||f(x)||_2`` (``"output_norm"``, ``y`` unused) or ``||f(x)||_2^2`` (``"output_sq_norm"``)."""

  def value(params, x, y):
    logits, _ = state.model.apply(params, state.batch_stats, x[None], train=False)
    if quantity == "nll":
      return cross_entropy(logits, y[None])[0]
    sq = jnp.sum(jnp.square(logits.astype(jnp.float32)))
    if quantity == "output_sq_norm":
      return sq
    # the norm's gradient is undefined at 0 (all-zero logits): the floor keeps it finite there, and is
    # below every square that float32 holds as a normal number, so the norm is exact elsewhere
    return jnp.sqrt(jnp.maximum(sq, jnp.finfo(jnp.float32).tiny))

  return jax.grad(value)


def reduce_example_grads(state: ModelState, data, index: jax.Array, fn: Callable, init, *, chunk_size: int = 64,
                         labels: str = "true", key: jax.Array | None = None, quantity: str = "nll"):
  """Folds per-example gradients of ``-log p(label | x)`` (or of a label-free ``quantity``) into an
  accumulator, chunk by chunk.

  Args:
    state: the model whose gradients are taken (eval mode).
    data: an :class:`~jaxunlearn.unlearn.UnlearnData` (its ``x``, ``y``).
    index: ``int32 [n]`` rows of ``data.x`` (n > 0; static length).
    fn: ``fn(acc, grads, weights, chunk_index) -> acc`` with ``grads`` params-shaped with a leading
      ``[chunk]`` axis and ``weights`` ``float32 [chunk]`` (0 for padding; for ``labels="expected"`` the
      gradients of class ``c`` arrive one class at a time, weights ``p(c | x)`` times the padding weight).
    init: the accumulator's initial value (any pytree).
    chunk_size: examples per chunk (static; bounds memory).
    labels: ``"true"``, ``"expected"`` or ``"sampled"`` (see the module docstring).
    key: PRNG key, needed for ``labels="sampled"``.
    quantity: ``"nll"`` (the cross-entropy of ``labels``), ``"output_norm"`` (``||f(x)||_2`` of the
      logits) or ``"output_sq_norm"`` (its square); the two label-free ones never read ``data.y`` and
      take ``labels="true"`` (the default; the labels play no part).

  Returns:
    The final accumulator.
  """
  if labels not in FISHER_LABELS:
    raise ValueError(f"labels must be one of {', '.join(FISHER_LABELS)}, got {labels!r}")
  if quantity not in EXAMPLE_QUANTITIES:
    raise ValueError(f"quantity must be one of {', '.join(EXAMPLE_QUANTITIES)}, got {quantity!r}")
  if quantity != "nll" and labels != "true":
    raise ValueError(f"labels={labels!r} applies to quantity='nll' only; {quantity!r} is label-free")
  if labels == "sampled" and key is None:
    raise ValueError("labels='sampled' needs a key")
  idx, w = _chunks(index, chunk_size)
  grad_one = jax.vmap(_example_grad(state, quantity), in_axes=(None, 0, 0))
  num_classes = data.num_classes or int(jax.eval_shape(lambda: _log_probs(state, state.params, data.x[:1])).shape[-1])

  def body(acc, inp):
    i, ib, wb = inp
    xb = data.x[ib]
    if quantity != "nll":  # label-free: data.y is not read
      return fn(acc, grad_one(state.params, xb, jnp.zeros(ib.shape, jnp.int32)), wb, i), None
    if labels == "true":
      return fn(acc, grad_one(state.params, xb, data.y[ib]), wb, i), None
    logp = _log_probs(state, state.params, xb)
    if labels == "sampled":
      yb = jax.random.categorical(jax.random.fold_in(key, i), logp).astype(jnp.int32)
      return fn(acc, grad_one(state.params, xb, yb), wb, i), None

    def per_class(a, c):  # "expected": class c's gradients weighted by p(c | x)
      yb = jnp.full(ib.shape, c, jnp.int32)
      return fn(a, grad_one(state.params, xb, yb), wb * jnp.exp(logp[:, c]), i), None

    acc, _ = jax.lax.scan(per_class, acc, jnp.arange(num_classes))
    return acc, None

  acc, _ = jax.lax.scan(body, init, (jnp.arange(idx.shape[0]), idx, w))
  return acc


def _zeros_like_params(params):
  return jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)


def _weighted_sum(g, w):
  return jnp.tensordot(w, g.astype(jnp.float32), axes=1)


@functools.partial(jax.jit, static_argnames=("chunk_size", "labels"))
def diag_fisher(state: ModelState, data, index: jax.Array, *, labels: str = "true", chunk_size: int = 64,
                key: jax.Array | None = None):
  """The diagonal Fisher ``mean over examples of (grad log p(label | x))^2``, params-shaped float32.

  Args:
    state: the model (eval mode).
    data: an :class:`~jaxunlearn.unlearn.UnlearnData`.
    index: ``int32 [n]`` rows of ``data.x``.
    labels: ``"true"`` (empirical Fisher), ``"expected"`` (the model's own distribution, one backward
      pass per class) or ``"sampled"`` (one label drawn per example; needs ``key``).
    chunk_size: examples per chunk (memory ~ ``chunk_size`` x parameters).
    key: PRNG key for ``labels="sampled"``.
  """
  sq = lambda acc, g, w, i: jax.tree.map(lambda a, gi: a + _weighted_sum(jnp.square(gi), w), acc, g)  # noqa: E731
  total = reduce_example_grads(state, data, index, sq, _zeros_like_params(state.params), chunk_size=chunk_size,
                               labels=labels, key=key)
  return jax.tree.map(lambda t: t / index.shape[0], total)


@functools.partial(jax.jit, static_argnames=("form", "chunk_size"))
def output_sensitivity(state: ModelState, data, index: jax.Array, *, form: str = "squared", chunk_size: int = 64):
  """A label-free diagonal importance from the norm of the model's output (logits), params-shaped float32.

  * ``form="squared"``: ``mean over examples of (d ||f(x)||_2 / d theta)^2``, the diagonal Fisher's
    square of a per-example gradient with ``||f(x)||_2`` in place of the log-likelihood (label-free SSD,
    Foster, Schoepf, Brintrup 2024, "Loss-Free Machine Unlearning");
  * ``form="mas"``: ``mean over examples of |d ||f(x)||_2^2 / d theta|``, the Memory Aware Synapses
    importance (Aljundi et al. 2018) that the label-free SSD authors' code uses (there per batch: the
    absolute gradient of the batch mean).

  ``data.y`` is never read. Eval mode, chunked as :func:`diag_fisher`.
  """
  if form not in OUTPUT_FORMS:
    raise ValueError(f"form must be one of {', '.join(OUTPUT_FORMS)}, got {form!r}")
  quantity, op = ("output_norm", jnp.square) if form == "squared" else ("output_sq_norm", jnp.abs)
  red = lambda acc, g, w, i: jax.tree.map(lambda a, gi: a + _weighted_sum(op(gi), w), acc, g)  # noqa: E731
  total = reduce_example_grads(state, data, index, red, _zeros_like_params(state.params), chunk_size=chunk_size,
                               quantity=quantity)
  return jax.tree.map(lambda t: t / index.shape[0], total)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def mean_grad(state: ModelState, data, index: jax.Array, *, chunk_size: int = 256):
  """The gradient of the mean cross-entropy over ``data.x[index]`` (true labels, eval mode), params-shaped.

  Computed chunk by chunk as gradients of each chunk's weighted sum (no per-example gradients), so it
  equals ``jax.grad`` of the mean loss over the whole set up to float32 summation order.
  """
  idx, w = _chunks(index, chunk_size)

  def chunk_loss(params, ib, wb):
    logits, _ = state.model.apply(params, state.batch_stats, data.x[ib], train=False)
    return jnp.sum(wb * cross_entropy(logits, data.y[ib]))

  def body(acc, inp):
    ib, wb = inp
    g = jax.grad(chunk_loss)(state.params, ib, wb)
    return jax.tree.map(lambda a, gi: a + gi.astype(jnp.float32), acc, g), None

  total, _ = jax.lax.scan(body, _zeros_like_params(state.params), (idx, w))
  return jax.tree.map(lambda t: t / index.shape[0], total)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def stacked_grads(state: ModelState, data, index: jax.Array, *, chunk_size: int = 64):
  """Per-example gradients of ``-log p(y | x)`` (true labels, eval mode) stacked: a params-shaped pytree
  whose leaves have a leading ``[n]`` axis (memory: n x parameters; for a few hundred examples)."""
  n = index.shape[0]
  idx, _ = _chunks(index, chunk_size)
  out0 = jax.tree.map(lambda p: jnp.zeros((idx.size,) + p.shape, jnp.float32), state.params)
  c = idx.shape[1]

  def put(acc, g, w, i):
    del w
    return jax.tree.map(lambda a, gi: jax.lax.dynamic_update_slice_in_dim(a, gi.astype(jnp.float32), i * c, 0),
                        acc, g)

  full = reduce_example_grads(state, data, index, put, out0, chunk_size=chunk_size)
  return jax.tree.map(lambda a: a[:n], full)
