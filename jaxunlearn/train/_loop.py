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

A pass over a set keeps its last partial batch, as PyTorch's ``DataLoader`` does: :func:`epoch_batches`
returns :class:`Batches`, the full batches (one scanned step program) and the remainder (one more step,
traced or compiled separately for its smaller shape), so BatchNorm sees exactly the examples of each
batch and no loss needs a padding mask.

Two executors run the same loop with the same keys: ``scan`` (every epoch and step inside one
``lax.scan``: one program, what GPUs/TPUs want) and ``steps`` (epochs and steps as Python loops, each
step its own jitted call; XLA:CPU runs convolution gradients inside ``lax.scan`` 6-30x slower than
the same step compiled alone, jax-ml/jax#12868). ``steps`` applies where the loop is called outside
``jax.jit`` (eagerly or under ``jax.vmap``) within :func:`use_executor`; inside a jitted program the
loop is always a scan. :func:`resolve_executor` picks one for ``auto``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


EXECUTORS = ("scan", "steps", "auto")
_LOCAL = threading.local()


def resolve_executor(executor: str, model=None, backend: str | None = None) -> str:
  """``scan`` or ``steps`` for ``executor`` in :data:`EXECUTORS`.

  ``auto``: ``steps`` on the CPU backend for models with convolutions (everything but ``mlp``), where a
  step compiled alone is 6-30x faster than inside ``lax.scan`` (the convolution-free ``vit`` too: a little
  faster that way on the digits, and less to compile); ``scan`` otherwise (GPU/TPU, and MLPs,
  whose tiny steps run faster in one program than as separate calls).
  """
  if executor not in EXECUTORS:
    raise ValueError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
  if executor != "auto":
    return executor
  backend = backend or jax.default_backend()
  conv = model is None or getattr(model, "name", "") != "mlp"
  return "steps" if backend == "cpu" and conv else "scan"


@contextlib.contextmanager
def use_executor(executor: str, *, on_step: Callable[[], None] | None = None):
  """Within the block, loops called outside ``jax.jit`` run with ``executor`` (``scan`` or ``steps``);
  ``on_step()`` is called after every step of the ``steps`` executor (progress bars)."""
  if executor not in ("scan", "steps"):
    raise ValueError(f"executor must be 'scan' or 'steps' here (resolve 'auto' first), got {executor!r}")
  old = getattr(_LOCAL, "executor", ("scan", None))
  _LOCAL.executor = (executor, on_step)
  try:
    yield
  finally:
    _LOCAL.executor = old


def current_executor() -> str:
  """The executor in force (``scan`` outside :func:`use_executor`)."""
  return getattr(_LOCAL, "executor", ("scan", None))[0]


def _under_jit(tree) -> bool:
  """Whether any leaf is being traced into a jitted program (a ``vmap`` tracer alone does not count)."""
  for leaf in jax.tree.leaves(tree):
    t = leaf
    while isinstance(t, jax.core.Tracer):
      if type(t).__name__ != "BatchTracer":
        return True
      t = t.val
  return False


def _stepping(*trees) -> bool:
  return current_executor() == "steps" and not _under_jit(trees)


_STEP_PROGRAMS: "collections.OrderedDict[Callable, Callable]" = collections.OrderedDict()
_STEP_PROGRAMS_KEPT = 8  # a run's step functions are reused across its epochs; older ones are dropped
_COMPILED: "collections.OrderedDict[tuple, Callable]" = collections.OrderedDict()
_COMPILED_KEPT = 8       # jitted step programs by traced structure, shared by every call of a method


def _step_program(step, carry, rows, k_steps):
  """``prog(carry, rows, i, base, k_steps) -> step(carry, rows[i], fold_in(k_steps, base + i))`` as ONE
  jitted call.

  The step is traced to a jaxpr whose closed-over arrays (data, hyperparameters, ...) become arguments,
  and the jitted program is cached by the jaxpr's text and those arrays' types: a later call of the
  same method (another learning rate, another seed, the next chunk of models) reuses the compiled
  program instead of compiling its step again. Both caches are small LRUs (not weak dicts: a program
  closes over its step, which would keep every key, and the data it closes over, alive).
  """
  shapes = (step, jax.tree.structure(rows), tuple(jnp.shape(a) for a in jax.tree.leaves(rows)))
  prog = _STEP_PROGRAMS.pop(shapes, None)
  if prog is None:
    prog = _bind_step(step, carry, rows, k_steps)
  _STEP_PROGRAMS[shapes] = prog
  while len(_STEP_PROGRAMS) > _STEP_PROGRAMS_KEPT:
    _STEP_PROGRAMS.popitem(last=False)
  return prog


def _bind_step(step, carry, rows, k_steps):
  from jax.extend import core as jex  # noqa: PLC0415

  def at(carry, rows, i, base, k_steps):
    return step(carry, jax.tree.map(lambda a: a[i], rows), jax.random.fold_in(k_steps, base + i))

  args = (carry, rows, jnp.int32(0), jnp.int32(0), k_steps)
  flat, in_tree = jax.tree.flatten(args)

  def flat_at(*xs):
    return at(*jax.tree.unflatten(in_tree, xs))

  closed, out_shape = jax.make_jaxpr(flat_at, return_shape=True)(*flat)
  out_tree = jax.tree.structure(out_shape)
  consts = [jnp.asarray(c) if isinstance(c, np.ndarray) else c for c in closed.consts]
  jaxpr = closed.jaxpr
  # Outputs that are inputs passed through (the data a step carries, e.g. ``(state, x, y)``) are not
  # returned by the program but taken from its inputs: returned, XLA would copy them on every step
  # (47 MB of Fashion-MNIST per step, a third of the small CNN's step time).
  where = {**{v: ("c", j) for j, v in enumerate(jaxpr.constvars)}, **{v: ("x", j) for j, v in enumerate(jaxpr.invars)}}
  fwd = tuple(where.get(v) if isinstance(v, jex.Var) else None for v in jaxpr.outvars)
  sig = (str(jaxpr), in_tree, out_tree, fwd, tuple(str(jax.typeof(c)) for c in consts))
  compiled = _COMPILED.pop(sig, None)
  if compiled is None:

    def run(consts, *xs):
      outs = jex.jaxpr_as_fun(jex.ClosedJaxpr(jaxpr, consts))(*xs)
      return [o for o, f in zip(outs, fwd) if f is None]

    compiled = jax.jit(run)
  _COMPILED[sig] = compiled
  while len(_COMPILED) > _COMPILED_KEPT:
    _COMPILED.popitem(last=False)

  def prog(carry, rows, i, base, k_steps):
    xs = jax.tree.leaves((carry, rows, i, base, k_steps))
    computed = iter(compiled(consts, *xs))
    outs = [next(computed) if f is None else (consts if f[0] == "c" else xs)[f[1]] for f in fwd]
    return jax.tree.unflatten(out_tree, outs)

  return prog


def branch(pred, true_fn: Callable, false_fn: Callable, *operands):
  """``lax.cond`` that takes the branch in Python when ``pred`` is known (the ``steps`` executor's
  concrete epoch numbers), so a host-stepped loop inside a branch stays host-stepped.

  Under :func:`count_steps`, a traced branch counts the steps of its longer side and makes the
  count an upper bound (``exact = False``)."""
  if not isinstance(pred, jax.core.Tracer):
    return true_fn(*operands) if bool(pred) else false_fn(*operands)
  counter = getattr(_LOCAL, "counter", None)
  if counter is None:
    return jax.lax.cond(pred, true_fn, false_fn, *operands)
  deltas = {}

  def measured(fn, side):
    def f(*a):
      before = counter.steps
      out = fn(*a)
      deltas.setdefault(side, counter.steps - before)
      return out
    return f

  before = counter.steps
  out = jax.lax.cond(pred, measured(true_fn, 0), measured(false_fn, 1), *operands)
  if any(deltas.values()):
    counter.exact = counter.exact and deltas.get(0, 0) == deltas.get(1, 0)
    counter.steps = before + max(deltas.values())
  return out


class StepCount:
  """What :func:`count_steps` counted: ``steps`` (optimizer steps), ``exact`` (False: an upper bound)."""

  def __init__(self):
    self.steps, self.exact, self._mult = 0, True, 1


@contextlib.contextmanager
def count_steps():
  """Counts the steps of :func:`scan_steps` loops run (``steps`` executor) or traced (``scan``: the
  static lengths of the scans, times the epochs of :func:`scan_epochs` around them) in the block.

  Yields a :class:`StepCount`. Used by ``jaxunlearn run`` to report every model's optimizer steps.
  """
  old = getattr(_LOCAL, "counter", None)
  _LOCAL.counter = c = StepCount()
  try:
    yield c
  finally:
    _LOCAL.counter = old


def _add_steps(n: int, traced: bool) -> None:
  c = getattr(_LOCAL, "counter", None)
  if c is not None:
    c.steps += n * (c._mult if traced else 1)

# step(carry, row, key) -> (carry, metrics)
Step = Callable[[Any, Any, jax.Array], tuple[Any, dict]]


def epoch_keys(key: jax.Array, epoch) -> tuple[jax.Array, jax.Array]:
  """``(k_perm, k_steps) = split(fold_in(key, epoch))``: the batch-drawing and the step keys of an epoch."""
  k_perm, k_steps = jax.random.split(jax.random.fold_in(key, epoch))
  return k_perm, k_steps


def pass_keys(k_perm: jax.Array, k_steps: jax.Array, j: int) -> tuple[jax.Array, jax.Array]:
  """The keys of pass ``j`` of an epoch with several passes (e.g. SCRUB's max- and min-pass)."""
  return jax.random.fold_in(k_perm, j), jax.random.fold_in(k_steps, j)


@flax.struct.dataclass
class Batches:
  """An epoch's rows: ``full``, a pytree whose leaves have a leading ``[steps]`` axis (equal batches),
  and ``rest``, ONE more row of the same structure with a smaller batch (the last partial batch), or
  ``None``. :func:`scan_steps` runs the full rows, then the rest as step ``steps``.

  Build rows from index batches with :meth:`map` (``fn`` must accept index arrays of shape
  ``[steps, batch]`` and ``[rest]``) and pair another stream of ``[num_steps, ...]`` rows with
  :meth:`attach`.
  """

  full: Any
  rest: Any = None

  @property
  def num_full(self) -> int:
    return int(jax.tree.leaves(self.full)[0].shape[0])

  @property
  def num_steps(self) -> int:
    """Steps of the pass (static): the full batches, plus one for the rest."""
    return self.num_full + (self.rest is not None)

  def map(self, fn: Callable) -> "Batches":
    """``fn`` applied to the full rows and to the rest."""
    return Batches(fn(self.full), None if self.rest is None else fn(self.rest))

  def attach(self, **streams) -> "Batches":
    """Adds named streams (leaves ``[num_steps, ...]``) to dict rows: step ``i`` gets row ``i`` of each."""
    n = self.num_full
    full = {**self.full, **{k: jax.tree.map(lambda a: a[:n], v) for k, v in streams.items()}}
    if self.rest is None:
      return Batches(full)
    return Batches(full, {**self.rest, **{k: jax.tree.map(lambda a: a[n], v) for k, v in streams.items()}})


def epoch_batches(key: jax.Array, index: jax.Array, batch_size: int, *, drop_last: bool = False) -> Batches:
  """A random permutation of ``index`` ([N]) cut into :class:`Batches`: ``full`` ``[N // bs, bs]`` and
  the last partial batch ``rest`` ``[N % bs]`` (None when ``bs`` divides N, or with ``drop_last``).
  ``bs = min(batch_size, N)``."""
  n = index.shape[0]
  bs = max(1, min(batch_size, n))
  nf = max(1, n // bs)
  perm = jax.random.permutation(key, index)
  rest = None if drop_last or nf * bs == n else perm[nf * bs:]
  return Batches(perm[: nf * bs].reshape(nf, bs), rest)


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
  """Runs ``step(carry, row_i, fold_in(k_steps, i))`` over the leading axis of ``rows`` (a pytree), or
  over a :class:`Batches`' full rows and then its rest (step ``num_full``).

  Returns:
    ``(carry, metrics)`` with a leading ``[steps]`` axis on every metric (the rest's last).
  """
  if isinstance(rows, Batches):
    carry, m = scan_steps(step, carry, rows.full, k_steps)
    if rows.rest is None:
      return carry, m
    one = jax.tree.map(lambda a: a[None], rows.rest)
    carry, mr = _run_steps(step, carry, one, k_steps, rows.num_full)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), m, mr)
  return _run_steps(step, carry, rows, k_steps, 0)


def _run_steps(step: Step, carry, rows, k_steps: jax.Array, base: int):
  n = jax.tree.leaves(rows)[0].shape[0]
  if _stepping(carry, rows, k_steps):
    prog, on_step = _step_program(step, carry, rows, k_steps), _LOCAL.executor[1]
    outs = []
    for i in range(n):
      carry, m = prog(carry, rows, np.int32(i), np.int32(base), k_steps)  # numpy scalars: no dispatch
      outs.append(m)
      _add_steps(1, False)
      if on_step is not None:
        on_step()
    return carry, jax.tree.map(lambda *a: jnp.stack(a), *outs)
  _add_steps(n, True)

  def body(c, inp):
    i, row = inp
    return step(c, row, jax.random.fold_in(k_steps, i))

  return jax.lax.scan(body, carry, (jnp.arange(base, base + n), rows))


def scan_epochs(epoch_fn: Callable, carry, key: jax.Array, epochs: int, *, start: int = 0):
  """``lax.scan`` of ``epoch_fn(carry, e, k_perm, k_steps) -> (carry, metrics)`` over epochs
  ``e = start .. start + epochs - 1`` with the keys of :func:`epoch_keys`.

  Returns:
    ``(carry, metrics)`` with a leading ``[epochs]`` axis.
  """

  def body(c, e):
    k_perm, k_steps = epoch_keys(key, e)
    return epoch_fn(c, e, k_perm, k_steps)

  if _stepping(carry, key):
    outs = []
    for e in range(start, start + epochs):
      carry, m = body(carry, e)
      outs.append(m)
    if not outs:  # no epoch: the scan's empty metrics, from shapes alone
      return jax.lax.scan(body, carry, jnp.arange(start, start))
    return carry, jax.tree.map(lambda *a: jnp.stack(a), *outs)

  counter, traced = getattr(_LOCAL, "counter", None), []

  def counted_body(c, e):  # the steps inside count ``epochs`` times, on the first trace only
    if counter is None:
      return body(c, e)
    mult, counter._mult = counter._mult, (counter._mult * epochs if not traced else 0)
    traced.append(True)
    try:
      return body(c, e)
    finally:
      counter._mult = mult

  return jax.lax.scan(counted_body, carry, jnp.arange(start, start + epochs))


def run_epochs(step: Step, carry, key: jax.Array, epochs: int, plan: Callable, *, start: int = 0):
  """``epochs`` epochs of :func:`run_epoch` as one ``lax.scan``.

  Args:
    step: ``step(carry, row, key) -> (carry, metrics)``.
    carry: the starting state (e.g. a ``TrainState``).
    key: the run's key.
    epochs: number of epochs (static).
    plan: ``plan(k_perm, epoch) -> rows``, a pytree whose leaves have a leading ``[steps]`` axis, or
      :class:`Batches`, or a LIST of those: passes run in order, pass ``j`` with the step keys of
      ``fold_in(k_steps, j)`` (:func:`pass_keys`), their metrics concatenated.
    start: first epoch number (for the keys).

  Returns:
    ``(carry, metrics)``: each metric averaged over an epoch's steps, ``[epochs]``.
  """

  def epoch_fn(c, e, k_perm, k_steps):
    rows = plan(k_perm, e)
    if not isinstance(rows, list):
      c, m = scan_steps(step, c, rows, k_steps)
      return c, jax.tree.map(jnp.mean, m)
    ms = []
    for j, r in enumerate(rows):
      c, m = scan_steps(step, c, r, jax.random.fold_in(k_steps, j))
      ms.append(m)
    return c, jax.tree.map(lambda *a: jnp.mean(jnp.concatenate(a)), *ms)

  return scan_epochs(epoch_fn, carry, key, epochs, start=start)
