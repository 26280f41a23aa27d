"""SCRUB and SCRUB+Rewind (Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine
Unlearning", NeurIPS 2023).

The student starts as a copy of the original model (the teacher, frozen and evaluated in eval mode) and
alternates, each epoch, a *max-step* pass over the forget set that pushes the student's predictions away
from the teacher's and a *min-step* pass over the retain set that keeps them close while fitting the
labels. The distance is the temperature-scaled KL divergence used for knowledge distillation,

    d(x) = T^2 * KL(softmax(teacher(x) / T) || softmax(student(x) / T)),

summed over classes and averaged over the batch. Both passes share one optimizer (and its state); the
learning rate is set per epoch by a step schedule. The whole run is one ``lax.scan`` over epochs of the
one training loop (``jaxunlearn.train.scan_epochs``; the max-pass of epoch ``e`` runs only while
``e <= msteps``, via ``lax.cond``, with the epoch's pass-0 keys, the min-pass with its pass-1 keys), so
``jax.jit(make("scrub"))`` compiles one program and ``jax.vmap`` runs many (over keys and hyperparameters:
``lr``, ``momentum``, ``weight_decay``, ``decay_factor``, ``gamma``, ``alpha``, ``kd_T``).

SCRUB+Rewind (for user-privacy forget sets) keeps the student after every epoch, measures its error on the
forget set, and returns the checkpoint whose forget error is closest to the final student's error on a
held-out forget-validation set (``UnlearnData.x_val``/``y_val``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.data import random_crop_flip
from jaxunlearn.models import Model
from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import branch
from jaxunlearn.train import TrainState
from jaxunlearn.train import check_choice
from jaxunlearn.train import check_int
from jaxunlearn.train import check_real
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import hparam
from jaxunlearn.train import map_batches
from jaxunlearn.train import pass_keys
from jaxunlearn.train import scan_epochs
from jaxunlearn.train import scan_steps
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._distill import scrub_distance
from jaxunlearn.unlearn._registry import register
from jaxunlearn.unlearn._registry import replace
from jaxunlearn.unlearn.masks import apply_mask


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
    optim: ``optimizer`` ``adam`` (L2 weight decay added to the gradient) or ``sgd`` (heavy-ball momentum,
      PyTorch semantics); ``lr`` the initial rate; in epoch ``e`` (1-based) the rate is
      ``lr * decay_factor ** #{d in decay_epochs : d < e}`` (see :func:`scrub_lr`; the ``schedule``
      field is not used: SCRUB's rule is per epoch, shared by both passes).
    gamma: weight of the retain cross-entropy in the min-step (hyperparameter).
    alpha: weight of the retain distance ``d`` in the min-step (hyperparameter).
    kd_T: distillation temperature ``T`` (hyperparameter).
    batch_size: retain (min-step) batch size.
    forget_batch_size: forget (max-step) batch size.
    augment: random crop + flip of the batches (the same augmented images go to student and teacher).
  """

  epochs: int = 10
  msteps: int = 3
  optim: OptimConfig = OptimConfig(optimizer="adam", lr=5e-4, momentum=0.9, weight_decay=0.1, schedule="step",
                                   decay_epochs=(5, 8, 9), decay_factor=0.1)
  gamma: float = hparam(1.0)
  alpha: float = hparam(0.5)
  kd_T: float = hparam(2.0)
  batch_size: int = 32
  forget_batch_size: int = 64
  augment: bool = False

  def __post_init__(self):
    check_loop_fields(self, "forget_batch_size")
    check_int(self, "msteps", lo=0)
    check_choice(self.optim, "optimizer", ("adam", "sgd"))
    check_real(self, "gamma")
    check_real(self, "alpha")
    check_real(self, "kd_T", lo=0.0, lo_open=True)


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
  return replace(ScrubConfig(), **SCRUB_PRESETS[name])


# ---------------------------------------------------------------------------------------------
# Pieces: distance, learning rate, optimizer, steps
# ---------------------------------------------------------------------------------------------

def _hp(config: ScrubConfig, hparams: Mapping | None) -> Mapping:
  from jaxunlearn.train import hparam_fields  # noqa: PLC0415
  return {**hparam_fields(config), **(hparams or {})}


def scrub_lr(config: ScrubConfig, epoch, hparams: Mapping | None = None) -> jax.Array:
  """Learning rate of 1-based ``epoch`` (int or traced): ``lr * decay_factor ** #{d < epoch}``.

  This is the SCRUB code's per-epoch rule (``steps = sum(epoch > decay_epochs)``); it is constant
  within an epoch and shared by the max- and min-passes. ``hparams`` may hold traced ``lr`` /
  ``decay_factor``.
  """
  hp = _hp(config, hparams)
  e = jnp.asarray(epoch, jnp.int32)
  n = jnp.zeros((), jnp.int32)
  for d in config.optim.decay_epochs:
    n = n + (e > d).astype(jnp.int32)
  return jnp.asarray(hp["lr"], jnp.float32) * jnp.asarray(hp["decay_factor"], jnp.float32) ** n.astype(jnp.float32)


def scrub_optimizer(config: ScrubConfig, mask=None, hparams: Mapping | None = None) -> optax.GradientTransformation:
  """SCRUB's optimizer *without* its learning rate: the steps multiply its updates by :func:`scrub_lr`.

  ``adam``: L2 weight decay added to the gradient, then Adam's scaling (``torch.optim.Adam``).
  ``sgd``: L2 weight decay, then a momentum buffer ``b = momentum * b + g`` (``torch.optim.SGD``; with
  momentum 0 the buffer is the gradient itself).
  The updates are negated (descent); ``mask`` restricts them via :func:`apply_mask`.
  """
  hp = _hp(config, hparams)
  core = optax.scale_by_adam() if config.optim.optimizer == "adam" else optax.trace(decay=hp["momentum"])
  tx = optax.chain(optax.add_decayed_weights(hp["weight_decay"]), core, optax.scale(-1.0))
  return apply_mask(tx, mask)


def make_scrub_steps(model: Model, tx: optax.GradientTransformation, config: ScrubConfig,
                     hparams: Mapping | None = None):
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
  hp = _hp(config, hparams)
  temp = hp["kd_T"]

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
    loss = hp["gamma"] * ce + hp["alpha"] * d
    acc = jnp.mean(jnp.argmax(s, -1) == y)
    return loss, (new_stats, {"loss": loss, "ce": ce, "kd": d, "acc": acc})

  def update(st: TrainState, grads, new_stats, lr):
    updates, opt_state = tx.update(grads, st.opt_state, st.params)
    updates = jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)
    return TrainState(st.step + 1, optax.apply_updates(st.params, updates), new_stats, opt_state)

  def maybe_augment(x, key):
    return random_crop_flip(key, x, flip=model.flip_ok) if config.augment else x

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

  def wrong(b):
    xb, yb = b
    return jnp.argmax(model.apply(params, batch_stats, xb, train=False)[0], -1) != yb

  return jnp.sum(map_batches(wrong, (x, y), chunk)).astype(jnp.float32) / n


# ---------------------------------------------------------------------------------------------
# Drivers
# ---------------------------------------------------------------------------------------------

def _scrub_run(state: ModelState, data: UnlearnData, key, config: ScrubConfig, hparams, mask, checkpoints: bool,
               snapshots: bool = True, keep_epoch=None):
  """SCRUB's epochs. ``checkpoints``: also every epoch's forget error, and with ``snapshots`` its weights
  (``snapshot``, one model per epoch). ``keep_epoch`` (traced int; 0 = the model before unlearning): the
  weights after that epoch, carried beside the student (``kept``): one extra model in memory."""
  model = state.model
  tx = scrub_optimizer(config, mask, hparams)
  max_step, min_step = make_scrub_steps(model, tx, config, hparams)
  teacher = state
  st0 = TrainState.create(state.params, state.batch_stats, tx)
  xf, yf = data.x[data.forget], data.y[data.forget]

  # the per-batch steps are made once per run (the steps executor compiles each once); lr rides in the carry
  def max_batch(carry, idx, k):
    s, lr = carry
    s, m = max_step(s, teacher, data.x[idx], lr, k)
    return (s, lr), m

  def min_batch(carry, idx, k):
    s, lr = carry
    s, m = min_step(s, teacher, data.x[idx], data.y[idx], lr, k)
    return (s, lr), m

  def max_pass(st, k_perm, k_steps, lr):
    batches = epoch_batches(k_perm, data.forget, config.forget_batch_size)
    (st, _), m = scan_steps(max_batch, (st, lr), batches, k_steps)
    return st, jnp.mean(m["kd"])

  def skip_max(st, k_perm, k_steps, lr):
    del k_perm, k_steps, lr
    return st, jnp.float32(0.0)

  def epoch(st, e, k_perm, k_steps):
    lr = scrub_lr(config, e, hparams)
    do_max = e <= config.msteps
    st, max_kd = branch(do_max, max_pass, skip_max, st, *pass_keys(k_perm, k_steps, 0), lr)
    kp, ks = pass_keys(k_perm, k_steps, 1)
    batches = epoch_batches(kp, data.retain, config.batch_size)
    (st, _), m = scan_steps(min_batch, (st, lr), batches, ks)
    out = {"lr": lr, "max_pass": do_max, "max_kd": max_kd, "min_loss": jnp.mean(m["loss"]),
           "min_ce": jnp.mean(m["ce"]), "min_kd": jnp.mean(m["kd"]), "retain_acc": jnp.mean(m["acc"])}
    if checkpoints:
      out["forget_error"] = error_rate(model, st.params, st.batch_stats, xf, yf)
      if snapshots:
        out["snapshot"] = (st.params, st.batch_stats)
    return st, out

  if keep_epoch is None:
    return scan_epochs(epoch, st0, key, config.epochs, start=1)

  def keeping(carry, e, k_perm, k_steps):
    st, kept = carry
    st, out = epoch(st, e, k_perm, k_steps)
    kept = jax.tree.map(lambda a, b: jnp.where(e == keep_epoch, a, b), (st.params, st.batch_stats), kept)
    return (st, kept), out

  (st, kept), hist = scan_epochs(keeping, (st0, (state.params, state.batch_stats)), key, config.epochs, start=1)
  hist["kept"] = kept
  return st, hist


@register("scrub", ScrubConfig, presets=SCRUB_PRESETS)
def scrub(state: ModelState, data: UnlearnData, key: jax.Array, config: ScrubConfig, hparams, *,
          mask=None) -> tuple[ModelState, dict]:
  """SCRUB: max-steps on the forget set (epochs ``1..msteps``) and min-steps on the retain set.

  Batches are random permutations of the forget / retain indices (the last partial batch kept, as
  PyTorch's ``DataLoader`` does; sizes clamped to the set sizes); epoch ``e`` (1-based) uses the one loop's keys of ``(key, e)``.

  Returns:
    ``(student, metrics)`` with per-epoch ``[epochs]`` arrays: ``lr``, ``max_pass`` (bool),
    ``max_kd`` (mean forget distance over the max-pass, 0 in epochs without one), ``min_loss``,
    ``min_ce``, ``min_kd`` and ``retain_acc`` (means over the min-pass, train mode).
  """
  st, hist = _scrub_run(state, data, key, config, hparams, mask, checkpoints=False)
  return ModelState(st.params, st.batch_stats, state.model), hist


def scrub_checkpoints(state: ModelState, data: UnlearnData, key: jax.Array,
                      config: ScrubConfig = ScrubConfig(), hparams: Mapping | None = None, *,
                      mask=None) -> tuple[ModelState, dict]:
  """SCRUB keeping the student after every epoch (the first half of SCRUB+Rewind).

  Returns:
    ``(snapshots, metrics)``: ``snapshots`` is a :class:`ModelState` whose params/batch_stats have a
    leading ``[epochs]`` axis (entry ``i`` is the student after epoch ``i + 1``); metrics are
    :func:`scrub`'s plus ``forget_error [epochs]`` (eval-mode error on the forget set after each epoch)
    and ``val_error`` (the final student's error on ``data.x_val``).

  Raises:
    ValueError: if ``data`` has no forget-validation set.
  """
  hist = _recorded_run(state, data, key, config, _hp(config, hparams), mask, snapshots=True)
  params, stats = hist.pop("snapshot")
  return ModelState(params, stats, state.model), hist


def _recorded_run(state, data, key, config, hp, mask, snapshots: bool) -> dict:
  """SCRUB recording every epoch's forget error (and, with ``snapshots``, weights) and the final
  student's ``val_error``: the metrics both :func:`scrub_checkpoints` and :func:`scrub_rewind` choose by."""
  if data.x_val is None:
    raise ValueError("scrub_rewind needs a forget-validation set (UnlearnData x_val/y_val)")
  if config.epochs < 1:
    raise ValueError("scrub_rewind needs at least one epoch to have a checkpoint to rewind to")
  st, hist = _scrub_run(state, data, key, config, hp, mask, checkpoints=True, snapshots=snapshots)
  hist["val_error"] = error_rate(state.model, st.params, st.batch_stats, data.x_val, data.y_val)
  return hist


def rewind_index(forget_error: jax.Array, val_error) -> jax.Array:
  """The rewind rule: ``argmin_i |forget_error_i - val_error|``, first on ties (int32)."""
  return jnp.argmin(jnp.abs(forget_error - val_error)).astype(jnp.int32)


def rewind_select(snapshots: ModelState, metrics: dict) -> tuple[ModelState, dict]:
  """Picks the checkpoint ``i = argmin_i |forget_error_i - val_error|`` (first on ties).

  Args:
    snapshots: per-epoch states from :func:`scrub_checkpoints`.
    metrics: its metrics (``forget_error [E]``, ``val_error``).

  Returns:
    ``(chosen state, metrics + {"chosen_index": i, "chosen_epoch": i + 1})``.
  """
  i = rewind_index(metrics["forget_error"], metrics["val_error"])
  pick = lambda a: a[i]  # noqa: E731
  chosen = ModelState(jax.tree.map(pick, snapshots.params), jax.tree.map(pick, snapshots.batch_stats),
                      snapshots.model)
  return chosen, {**metrics, "chosen_index": i, "chosen_epoch": i + 1}


@register("scrub_rewind", ScrubConfig, presets=SCRUB_PRESETS)
def scrub_rewind(state: ModelState, data: UnlearnData, key: jax.Array, config: ScrubConfig, hparams, *,
                 mask=None) -> tuple[ModelState, dict]:
  """SCRUB+Rewind (user privacy): SCRUB, then rewind to the candidate whose forget error best matches the
  held-out forget-validation error.

  A well-unlearned model should err on the forget set about as often as on unseen examples of the same
  distribution; SCRUB can overshoot (forget error above that reference, itself a membership signal), so
  the candidate ``argmin_i |forget_error_i - val_error|`` is returned (in two passes: SCRUB recording the
  errors, then the same run replayed with the same keys, keeping the weights after the chosen epoch; memory
  two models instead of one per epoch, about 2x SCRUB's compute; :func:`scrub_checkpoints` keeps every
  epoch's weights instead). The candidates are the model
  before unlearning (epoch 0, as the SCRUB notebook intends: when the original already errs on the
  forget set like on unseen data there is nothing to undo) and the student after every epoch;
  ``forget_error_i`` is a candidate's eval-mode error on ``data.forget`` and ``val_error`` the *final*
  student's error on ``data.x_val``. The paper uses the ``privacy`` preset
  (``--preset scrub_rewind=privacy``).

  Where the forget-validation set comes from is the caller's choice: ``jaxunlearn tune`` passes held-out
  TRAINING examples of the forget distribution (its validation split), as the SCRUB code does;
  ``jaxunlearn run`` passes test examples of that distribution (its original trains on the whole training
  split, so it has no held-out training data).

  Returns:
    ``(chosen model, metrics)``: :func:`scrub`'s per-epoch metrics plus ``forget_error [epochs]``,
    ``forget_error_original``, ``val_error``, ``chosen_index`` (0 = the model before unlearning, i = the
    student after epoch i) and ``chosen_epoch`` (the same number).

  Raises:
    ValueError: if ``data.x_val`` is None.
  """
  hp = _hp(config, hparams)
  # pass 1: every epoch's forget error and the final student's validation error, no weights kept
  hist = _recorded_run(state, data, key, config, hp, mask, snapshots=False)
  xf, yf = data.x[data.forget], data.y[data.forget]
  e0 = error_rate(state.model, state.params, state.batch_stats, xf, yf)
  i = rewind_index(jnp.concatenate([e0[None], hist["forget_error"]]), hist["val_error"])
  # pass 2: the same run (same keys, same steps) replayed, keeping the weights after epoch i
  _, replay = _scrub_run(state, data, key, config, hp, mask, checkpoints=False, keep_epoch=i)
  params, stats = replay["kept"]
  return ModelState(params, stats, state.model), {**hist, "forget_error_original": e0, "chosen_index": i,
                                                  "chosen_epoch": i}
