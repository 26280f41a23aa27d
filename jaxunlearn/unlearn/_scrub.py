"""SCRUB and SCRUB+Rewind (Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine
Unlearning", NeurIPS 2023).

The student starts as a copy of the original model (the teacher, frozen and evaluated in eval mode) and
alternates, each epoch, a *max-step* pass over the forget set that pushes the student's predictions away
from the teacher's and a *min-step* pass over the retain set that keeps them close while fitting the
labels. The distance is the temperature-scaled KL divergence used for knowledge distillation,

    d(x) = T^2 * KL(softmax(teacher(x) / T) || softmax(student(x) / T)),

summed over classes and averaged over the batch. Both passes share one optimizer (and its state); the
learning rate is set per epoch by a step schedule. The whole run is one ``lax.scan`` over epochs (the
max-pass of epoch ``e`` runs only while ``e <= msteps``, via ``lax.cond``), so
``jax.jit(scrub, static_argnames="config")`` compiles one program and ``jax.vmap`` runs many.

SCRUB+Rewind (for user-privacy forget sets) keeps the student after every epoch, measures its error on the
forget set, and returns the checkpoint whose forget error is closest to the final student's error on a
held-out forget-validation set (``UnlearnData.x_val``/``y_val``).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.data import random_crop_flip
from jaxunlearn.models import Model
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainState
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import epoch_batches
from jaxunlearn.unlearn._common import UnlearnData
from jaxunlearn.unlearn._common import apply_mask
from jaxunlearn.unlearn._common import register


@dataclasses.dataclass(frozen=True)
class ScrubConfig:
  """SCRUB settings; the defaults are the paper's small-scale setting (preset ``small``).

  Presets (:data:`SCRUB_PRESETS`, CLI ``--preset scrub=NAME``), from the SCRUB code's configurations:

  * ``small`` (default; small-scale CIFAR-5 / Lacuna-5 runs): Adam, lr 5e-4 decayed x0.1 after epochs
    5, 8 and 9, weight decay 0.1 (L2 added to the gradient, like ``torch.optim.Adam``), 3 max-step
    epochs of 10, gamma 1, alpha 0.5, T 2, retain batch 32, forget batch 64.
  * ``large`` (CIFAR-10 / CIFAR-100 full-size runs): SGD momentum 0.9, lr 5e-4 decayed after epochs
    3, 5 and 9, weight decay 5e-4, 2 max-step epochs of 3, gamma 0.99, alpha 0.001, T 4, retain batch
    256, forget batch 512.
  * ``privacy`` (user-privacy forget sets, used with SCRUB+Rewind): as ``small`` but 3 max-step epochs
    of 5, T 4, retain batch 32, forget batch 16.

  Attributes:
    epochs: number of epochs (each: an optional max-pass over the forget set, then a min-pass over the
      retain set).
    msteps: the max-pass runs in epochs ``1..msteps``.
    optimizer: ``adam`` (L2 weight decay added to the gradient) or ``sgd`` (heavy-ball momentum, PyTorch
      semantics).
    lr: initial learning rate.
    momentum: SGD momentum (ignored by Adam).
    weight_decay: L2 coefficient added to the gradient.
    decay_epochs: in epoch ``e`` (1-based) the learning rate is
      ``lr * decay_factor ** #{d in decay_epochs : d < e}`` (see :func:`scrub_lr`).
    decay_factor: the step schedule's factor.
    gamma: weight of the retain cross-entropy in the min-step.
    alpha: weight of the retain distance ``d`` in the min-step.
    kd_T: distillation temperature ``T``.
    batch_size: retain (min-step) batch size.
    forget_batch_size: forget (max-step) batch size.
    augment: random crop + flip of the batches (the same augmented images go to student and teacher).
  """

  epochs: int = 10
  msteps: int = 3
  optimizer: str = "adam"
  lr: float = 5e-4
  momentum: float = 0.9
  weight_decay: float = 0.1
  decay_epochs: tuple[int, ...] = (5, 8, 9)
  decay_factor: float = 0.1
  gamma: float = 1.0
  alpha: float = 0.5
  kd_T: float = 2.0
  batch_size: int = 32
  forget_batch_size: int = 64
  augment: bool = False

  def __post_init__(self):
    for name in ("epochs", "msteps"):
      v = getattr(self, name)
      if not (isinstance(v, int) and v >= 0):
        raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    for name in ("batch_size", "forget_batch_size"):
      v = getattr(self, name)
      if not (isinstance(v, int) and v >= 1):
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    if self.optimizer not in ("adam", "sgd"):
      raise ValueError(f"SCRUB optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
    for name in ("lr", "momentum", "weight_decay", "decay_factor", "gamma", "alpha"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
    if not (isinstance(self.kd_T, (int, float)) and math.isfinite(self.kd_T) and self.kd_T > 0):
      raise ValueError(f"kd_T must be a positive number, got {self.kd_T!r}")
    object.__setattr__(self, "decay_epochs", tuple(int(e) for e in self.decay_epochs))


SCRUB_PRESETS: dict[str, dict] = {
    "small": {},
    "large": dict(optimizer="sgd", momentum=0.9, lr=5e-4, decay_epochs=(3, 5, 9), weight_decay=5e-4,
                  msteps=2, epochs=3, gamma=0.99, alpha=0.001, kd_T=4.0, batch_size=256,
                  forget_batch_size=512),
    # user privacy (the SCRUB repo's MIA_experiments notebook): SGD(0.9), wd 5e-4, decay [3, 5, 9]
    "privacy": dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4, decay_epochs=(3, 5, 9),
                    msteps=3, epochs=5, gamma=1.0, alpha=0.5, kd_T=4.0, batch_size=32,
                    forget_batch_size=16),
}


def scrub_preset(name: str) -> ScrubConfig:
  """The :class:`ScrubConfig` of preset ``name`` (``small``, ``large`` or ``privacy``)."""
  if name not in SCRUB_PRESETS:
    raise ValueError(f"unknown SCRUB preset {name!r}; choose from {', '.join(SCRUB_PRESETS)}")
  return ScrubConfig(**SCRUB_PRESETS[name])


# ---------------------------------------------------------------------------------------------
# Pieces: distance, learning rate, optimizer, steps
# ---------------------------------------------------------------------------------------------

def distill_kl(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Per-example ``KL(softmax(teacher / T) || softmax(student / T))``, ``[B]`` from logits ``[B, C]``.

  Computed from log-softmaxes (stable); no ``T^2`` factor.
  """
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(t) * (t - s), axis=-1)


def scrub_distance(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
  """SCRUB's distance ``T^2 * KL(teacher || student)`` at temperature ``T``, averaged over the batch.

  Args:
    student_logits: ``[B, C]``.
    teacher_logits: ``[B, C]`` (treated as constants by the caller).
    temperature: ``T``.

  Returns:
    A scalar.
  """
  return temperature ** 2 * jnp.mean(distill_kl(student_logits, teacher_logits, temperature))


def scrub_lr(config: ScrubConfig, epoch) -> jax.Array:
  """Learning rate of 1-based ``epoch`` (int or traced): ``lr * decay_factor ** #{d < epoch}``.

  This is the SCRUB code's per-epoch rule (``steps = sum(epoch > decay_epochs)``); it is constant
  within an epoch and shared by the max- and min-passes.
  """
  e = jnp.asarray(epoch, jnp.int32)
  n = jnp.zeros((), jnp.int32)
  for d in config.decay_epochs:
    n = n + (e > d).astype(jnp.int32)
  return jnp.float32(config.lr) * jnp.float32(config.decay_factor) ** n.astype(jnp.float32)


def scrub_optimizer(config: ScrubConfig, mask=None) -> optax.GradientTransformation:
  """SCRUB's optimizer *without* its learning rate: the steps multiply its updates by :func:`scrub_lr`.

  ``adam``: L2 weight decay added to the gradient, then Adam's scaling (``torch.optim.Adam``).
  ``sgd``: L2 weight decay, then a momentum buffer ``b = momentum * b + g`` (``torch.optim.SGD``).
  The updates are negated (descent); ``mask`` restricts them via :func:`apply_mask`.
  """
  if config.optimizer == "adam":
    core = optax.scale_by_adam()
  else:
    core = optax.trace(decay=config.momentum) if config.momentum else optax.identity()
  tx = optax.chain(optax.add_decayed_weights(config.weight_decay), core, optax.scale(-1.0))
  return apply_mask(tx, mask)


def make_scrub_steps(model: Model, tx: optax.GradientTransformation, config: ScrubConfig):
  """SCRUB's two pure steps for ``model`` with optimizer ``tx`` (from :func:`scrub_optimizer`).

  Returns:
    ``(max_step, min_step)``:

    * ``max_step(student: TrainState, teacher: ModelState, x [B, H, W, C], lr, key)
      -> (student, {"kd": d})`` takes one step minimising ``-d`` on the batch (``d`` before the step).
    * ``min_step(student, teacher, x, y [B], lr, key) -> (student, {"loss", "ce", "kd", "acc"})`` takes
      one step minimising ``gamma * CE + alpha * d``.

    The student runs in train mode (its BatchNorm statistics update); the teacher in eval mode.
    ``key`` is used only when ``config.augment``.
  """
  temp = config.kd_T

  def teacher_logits(teacher, x):
    return jax.lax.stop_gradient(model.apply(teacher.params, teacher.batch_stats, x, train=False)[0])

  def max_loss(params, stats, teacher, x):
    s, new_stats = model.apply(params, stats, x, train=True)
    d = scrub_distance(s, teacher_logits(teacher, x), temp)
    return -d, (new_stats, {"kd": d})

  def min_loss(params, stats, teacher, x, y):
    s, new_stats = model.apply(params, stats, x, train=True)
    d = scrub_distance(s, teacher_logits(teacher, x), temp)
    ce = jnp.mean(cross_entropy(s, y))
    loss = config.gamma * ce + config.alpha * d
    acc = jnp.mean(jnp.argmax(s, -1) == y)
    return loss, (new_stats, {"loss": loss, "ce": ce, "kd": d, "acc": acc})

  def update(st: TrainState, grads, new_stats, lr):
    updates, opt_state = tx.update(grads, st.opt_state, st.params)
    updates = jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)
    return TrainState(st.step + 1, optax.apply_updates(st.params, updates), new_stats, opt_state)

  def maybe_augment(x, key):
    return random_crop_flip(key, x) if config.augment else x

  def max_step(st: TrainState, teacher: ModelState, x, lr, key=None):
    x = maybe_augment(x, key)
    (_, (stats, m)), g = jax.value_and_grad(max_loss, has_aux=True)(st.params, st.batch_stats, teacher, x)
    return update(st, g, stats, lr), m

  def min_step(st: TrainState, teacher: ModelState, x, y, lr, key=None):
    x = maybe_augment(x, key)
    (_, (stats, m)), g = jax.value_and_grad(min_loss, has_aux=True)(st.params, st.batch_stats, teacher, x, y)
    return update(st, g, stats, lr), m

  return max_step, min_step


def error_rate(model: Model, params, batch_stats, x: jax.Array, y: jax.Array, *,
               chunk: int = 512) -> jax.Array:
  """Eval-mode error (fraction misclassified) on ``(x [N, ...], y [N])``, traceable, in chunks."""
  n = x.shape[0]
  if n == 0:
    return jnp.float32(0.0)
  c = min(chunk, n)
  nb = -(-n // c)
  pad = nb * c - n
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  yp = jnp.concatenate([y, jnp.full((pad,), -1, y.dtype)]) if pad else y
  def wrong(inp):
    xb, yb = inp
    logits = model.apply(params, batch_stats, xb, train=False)[0]
    return jnp.sum((jnp.argmax(logits, -1) != yb) & (yb >= 0))
  w = jax.lax.map(wrong, (xp.reshape(nb, c, *x.shape[1:]), yp.reshape(nb, c)))
  return jnp.sum(w).astype(jnp.float32) / n


# ---------------------------------------------------------------------------------------------
# Drivers
# ---------------------------------------------------------------------------------------------

def _scrub_run(state: ModelState, data: UnlearnData, key, config: ScrubConfig, mask, checkpoints: bool):
  model = state.model
  tx = scrub_optimizer(config, mask)
  max_step, min_step = make_scrub_steps(model, tx, config)
  teacher = state
  st0 = TrainState.create(state.params, state.batch_stats, tx)
  xf, yf = data.x[data.forget], data.y[data.forget]

  def max_pass(st, ekey, lr):
    fkey = jax.random.fold_in(ekey, 0)
    batches = epoch_batches(fkey, data.forget, config.forget_batch_size)

    def body(s, inp):
      i, idx = inp
      return max_step(s, teacher, data.x[idx], lr, jax.random.fold_in(fkey, i + 1))

    st, m = jax.lax.scan(body, st, (jnp.arange(batches.shape[0]), batches))
    return st, jnp.mean(m["kd"])

  def skip_max(st, ekey, lr):
    del ekey, lr
    return st, jnp.float32(0.0)

  def epoch(st, e):
    lr = scrub_lr(config, e)
    ekey = jax.random.fold_in(key, e)
    do_max = e <= config.msteps
    st, max_kd = jax.lax.cond(do_max, max_pass, skip_max, st, ekey, lr)
    rkey = jax.random.fold_in(ekey, 1)
    batches = epoch_batches(rkey, data.retain, config.batch_size)

    def body(s, inp):
      i, idx = inp
      return min_step(s, teacher, data.x[idx], data.y[idx], lr, jax.random.fold_in(rkey, i + 1))

    st, m = jax.lax.scan(body, st, (jnp.arange(batches.shape[0]), batches))
    out = {"lr": lr, "max_pass": do_max, "max_kd": max_kd, "min_loss": jnp.mean(m["loss"]),
           "min_ce": jnp.mean(m["ce"]), "min_kd": jnp.mean(m["kd"]), "retain_acc": jnp.mean(m["acc"])}
    if checkpoints:
      out["forget_error"] = error_rate(model, st.params, st.batch_stats, xf, yf)
      out["snapshot"] = (st.params, st.batch_stats)
    return st, out

  return jax.lax.scan(epoch, st0, jnp.arange(1, config.epochs + 1))


@register("scrub", ScrubConfig, presets=SCRUB_PRESETS)
def scrub(state: ModelState, data: UnlearnData, key: jax.Array, config: ScrubConfig = ScrubConfig(),
          *, mask=None) -> tuple[ModelState, dict]:
  """SCRUB: max-steps on the forget set (epochs ``1..msteps``) and min-steps on the retain set.

  Batches are random permutations of the forget / retain indices (last partial batch dropped; sizes
  clamped to the set sizes); epoch ``e`` uses ``fold_in(key, e)``.

  Args:
    state: the original model (also the frozen teacher).
    data: train arrays with retain/forget indices.
    key: PRNG key.
    config: SCRUB settings (default: the paper's small-scale setting).
    mask: optional params-shaped 0/1 pytree; only masked entries change.

  Returns:
    ``(student, metrics)`` with per-epoch ``[epochs]`` arrays: ``lr``, ``max_pass`` (bool),
    ``max_kd`` (mean forget distance over the max-pass, 0 in epochs without one), ``min_loss``,
    ``min_ce``, ``min_kd`` and ``retain_acc`` (means over the min-pass, train mode).
  """
  st, hist = _scrub_run(state, data, key, config, mask, checkpoints=False)
  return ModelState(st.params, st.batch_stats, state.model), hist


def scrub_checkpoints(state: ModelState, data: UnlearnData, key: jax.Array,
                      config: ScrubConfig = ScrubConfig(), *, mask=None) -> tuple[ModelState, dict]:
  """SCRUB keeping the student after every epoch (the first half of SCRUB+Rewind).

  Returns:
    ``(snapshots, metrics)``: ``snapshots`` is a :class:`ModelState` whose params/batch_stats have a
    leading ``[epochs]`` axis (entry ``i`` is the student after epoch ``i + 1``); metrics are
    :func:`scrub`'s plus ``forget_error [epochs]`` (eval-mode error on the forget set after each epoch)
    and ``val_error`` (the final student's error on ``data.x_val``).

  Raises:
    ValueError: if ``data`` has no forget-validation set.
  """
  if data.x_val is None:
    raise ValueError("scrub_rewind needs a forget-validation set (UnlearnData x_val/y_val)")
  if config.epochs < 1:
    raise ValueError("scrub_rewind needs at least one epoch to have a checkpoint to rewind to")
  st, hist = _scrub_run(state, data, key, config, mask, checkpoints=True)
  params, stats = hist.pop("snapshot")
  hist["val_error"] = error_rate(state.model, st.params, st.batch_stats, data.x_val, data.y_val)
  return ModelState(params, stats, state.model), hist


def rewind_select(snapshots: ModelState, metrics: dict) -> tuple[ModelState, dict]:
  """Picks the checkpoint ``i = argmin_i |forget_error_i - val_error|`` (first on ties).

  Args:
    snapshots: per-epoch states from :func:`scrub_checkpoints`.
    metrics: its metrics (``forget_error [E]``, ``val_error``).

  Returns:
    ``(chosen state, metrics + {"chosen_index": i, "chosen_epoch": i + 1})``.
  """
  i = jnp.argmin(jnp.abs(metrics["forget_error"] - metrics["val_error"])).astype(jnp.int32)
  pick = lambda a: a[i]  # noqa: E731
  chosen = ModelState(jax.tree.map(pick, snapshots.params), jax.tree.map(pick, snapshots.batch_stats),
                      snapshots.model)
  return chosen, {**metrics, "chosen_index": i, "chosen_epoch": i + 1}


@register("scrub_rewind", ScrubConfig, presets=SCRUB_PRESETS)
def scrub_rewind(state: ModelState, data: UnlearnData, key: jax.Array, config: ScrubConfig = ScrubConfig(),
                 *, mask=None) -> tuple[ModelState, dict]:
  """SCRUB+Rewind (user privacy): SCRUB, then rewind to the epoch whose forget error best matches the
  held-out forget-validation error.

  A well-unlearned model should err on the forget set about as often as on unseen examples of the same
  distribution; SCRUB can overshoot (forget error above that reference, itself a membership signal), so
  the student of epoch ``argmin_i |forget_error_i - val_error|`` is returned, where ``forget_error_i``
  is the eval-mode error on ``data.forget`` after epoch ``i`` and ``val_error`` the *final* student's
  error on ``data.x_val``. The paper uses the ``privacy`` preset (``--preset scrub_rewind=privacy``).

  Args:
    state: the original model.
    data: train arrays with retain/forget indices and ``x_val``/``y_val``.
    key: PRNG key.
    config: SCRUB settings.
    mask: optional params-shaped 0/1 pytree; only masked entries change.

  Returns:
    ``(chosen student, metrics)``: :func:`scrub`'s per-epoch metrics plus ``forget_error [epochs]``,
    ``val_error``, ``chosen_index`` (0-based) and ``chosen_epoch`` (1-based).

  Raises:
    ValueError: if ``data.x_val`` is None.
  """
  snaps, hist = scrub_checkpoints(state, data, key, config, mask=mask)
  return rewind_select(snaps, hist)
