"""The one training loop: epochs of steps over batches of indices, with one key convention.

Every run (training, every unlearning method, the airbench recipe) is driven by these functions, so
all of them derive their randomness the same way. Epoch ``e`` of a run with key ``k``:

    k_perm, k_steps = split(fold_in(k, e))
    batches = plan(k_perm, e)              # permutations, label draws, ... (k_perm's subtree only)
    step i uses fold_in(k_steps, i)        # augmentation, PGD starts, ... (k_steps' subtree only)

The two subtrees are disjoint, so no step ever reuses a key that drew the epoch's batches (the
earlier ``fold_in(epoch_key, i + 1)`` step keys collided with ``permutation(epoch_key)``'s internal
``split``: ``split(k, n)[i] == fold_in(k, i)`` under the partitionable threefry). A method with
several passes per epoch gives pass ``j`` the keys ``fold_in(k_perm, j)`` / ``fold_in(k_steps, j)``
(:func:`pass_keys`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxunlearn.train._config import steps_per_epoch

# step(carry, row, key) -> (carry, metrics)
Step = Callable[[Any, Any, jax.Array], tuple[Any, dict]]


def epoch_keys(key: jax.Array, epoch) -> tuple[jax.Array, jax.Array]:
  """``(k_perm, k_steps) = split(fold_in(key, epoch))``: the batch-drawing and the step keys of an epoch."""
  k_perm, k_steps = jax.random.split(jax.random.fold_in(key, epoch))
  return k_perm, k_steps


def pass_keys(k_perm: jax.Array, k_steps: jax.Array, j: int) -> tuple[jax.Array, jax.Array]:
  """The keys of pass ``j`` of an epoch with several passes (e.g. SCRUB's max- and min-pass)."""
  return jax.random.fold_in(k_perm, j), jax.random.fold_in(k_steps, j)


def epoch_batches(key: jax.Array, index: jax.Array, batch_size: int) -> jax.Array:
  """A random permutation of ``index`` ([N]) cut into ``[steps, batch]`` (last partial batch dropped)."""
  n = index.shape[0]
  bs = max(1, min(batch_size, n))
  spe = steps_per_epoch(n, bs)
  perm = jax.random.permutation(key, index)
  return perm[: spe * bs].reshape(spe, bs)


def cycled_batches(key: jax.Array, index: jax.Array, batch_size: int, steps: int) -> jax.Array:
  """``[steps, bs]`` batches cycling through fresh random permutations of ``index`` ([N]).

  Permutations are concatenated until ``steps * bs`` indices are laid out (``bs = min(batch_size, N)``),
  so every example appears once before any appears twice; a batch straddling two permutations may hold
  an example twice. Used for the second stream of two-stream methods (e.g. forget batches paired with
  the retain batches of NegGrad+).
  """
  n = index.shape[0]
  bs = max(1, min(batch_size, n))
  reps = -(-steps * bs // n)
  perms = jax.vmap(lambda k: jax.random.permutation(k, index))(jax.random.split(key, reps))
  return perms.reshape(-1)[: steps * bs].reshape(steps, bs)


def scan_steps(step: Step, carry, rows, k_steps: jax.Array):
  """Runs ``step(carry, row_i, fold_in(k_steps, i))`` over the leading axis of ``rows`` (a pytree).

  Returns:
    ``(carry, metrics)`` with a leading ``[steps]`` axis on every metric.
  """
  n = jax.tree.leaves(rows)[0].shape[0]

  def body(c, inp):
    i, row = inp
    return step(c, row, jax.random.fold_in(k_steps, i))

  return jax.lax.scan(body, carry, (jnp.arange(n), rows))


def scan_epochs(epoch_fn: Callable, carry, key: jax.Array, epochs: int, *, start: int = 0):
  """``lax.scan`` of ``epoch_fn(carry, e, k_perm, k_steps) -> (carry, metrics)`` over epochs
  ``e = start .. start + epochs - 1`` with the keys of :func:`epoch_keys`.

  Returns:
    ``(carry, metrics)`` with a leading ``[epochs]`` axis.
  """

  def body(c, e):
    k_perm, k_steps = epoch_keys(key, e)
    return epoch_fn(c, e, k_perm, k_steps)

  return jax.lax.scan(body, carry, jnp.arange(start, start + epochs))


def run_epochs(step: Step, carry, key: jax.Array, epochs: int, plan: Callable, *, start: int = 0):
  """``epochs`` epochs of :func:`run_epoch` as one ``lax.scan``.

  Args:
    step: ``step(carry, row, key) -> (carry, metrics)``.
    carry: the starting state (e.g. a ``TrainState``).
    key: the run's key.
    epochs: number of epochs (static).
    plan: ``plan(k_perm, epoch) -> rows``, a pytree whose leaves have a leading ``[steps]`` axis.
    start: first epoch number (for the keys).

  Returns:
    ``(carry, metrics)``: each metric averaged over an epoch's steps, ``[epochs]``.
  """

  def epoch_fn(c, e, k_perm, k_steps):
    c, m = scan_steps(step, c, plan(k_perm, e), k_steps)
    return c, jax.tree.map(jnp.mean, m)

  return scan_epochs(epoch_fn, carry, key, epochs, start=start)
