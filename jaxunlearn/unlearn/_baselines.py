"""Loss-based unlearning baselines: NegGrad, NegGrad+, Random Label, l1-sparse finetuning, Bad Teacher.

Each is a pure driver (one ``lax.scan`` over epochs, each a ``lax.scan`` over steps) around a pure step
built with :func:`jaxunlearn.train.make_step`. Epoch ``e`` (0-based) of a run with key ``k`` draws its
batches from ``fold_in(fold_in(k, e), 0)`` and step ``i``'s key is ``fold_in(fold_in(fold_in(k, e), 1), i)``
(used for augmentation). Batches are random permutations of an index set cut into full batches (the last
partial batch is dropped; a batch size larger than the set is clamped to it). The learning-rate schedule
counts optimizer steps, ``steps_per_epoch(primary set, batch_size)`` per epoch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.data import random_crop_flip
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainState
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import make_optimizer
from jaxunlearn.train import make_step
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._common import UnlearnData
from jaxunlearn.unlearn._common import apply_mask
from jaxunlearn.unlearn._common import optimizer_config
from jaxunlearn.unlearn._common import register
from jaxunlearn.unlearn._scrub import distill_kl


# ---------------------------------------------------------------------------------------------
# Shared driver
# ---------------------------------------------------------------------------------------------

def _drive(state: ModelState, key: jax.Array, cfg, loss_fn, plan, spe: int, *, mask=None,
           epochs: int | None = None) -> tuple[ModelState, dict]:
  """Runs ``epochs`` epochs of ``make_step(loss_fn, tx)`` over the rows that ``plan`` lays out.

  Args:
    state: starting weights.
    key: PRNG key of the run.
    cfg: method config (optimizer fields read by :func:`optimizer_config`).
    loss_fn: ``(params, batch_stats, row, key) -> (loss, (new_batch_stats, metrics))``.
    plan: ``(key, epoch) -> rows``, a pytree whose leaves have a leading ``[spe]`` axis (one row a step).
    spe: steps per epoch (static; sets the optimizer schedule).
    mask: optional params-shaped 0/1 pytree for :func:`apply_mask`.
    epochs: number of epochs (default ``cfg.epochs``).

  Returns:
    ``(state, metrics)`` with each metric averaged over the steps of an epoch, ``[epochs]``.
  """
  tcfg = optimizer_config(cfg)
  epochs = tcfg.epochs if epochs is None else epochs
  tx = apply_mask(make_optimizer(tcfg, spe), mask)
  step = make_step(loss_fn, tx)
  ts0 = TrainState.create(state.params, state.batch_stats, tx)

  def epoch(ts, e):
    ekey = jax.random.fold_in(key, e)
    rows = plan(jax.random.fold_in(ekey, 0), e)
    skey = jax.random.fold_in(ekey, 1)

    def body(t, inp):
      i, row = inp
      return step(t, row, jax.random.fold_in(skey, i))

    ts, m = jax.lax.scan(body, ts, (jnp.arange(spe), rows))
    return ts, jax.tree.map(jnp.mean, m)

  ts, hist = jax.lax.scan(epoch, ts0, jnp.arange(epochs))
  return ModelState(ts.params, ts.batch_stats, state.model), hist


def cycled_batches(key: jax.Array, index: jax.Array, batch_size: int, steps: int) -> jax.Array:
  """``[steps, bs]`` batches cycling through fresh random permutations of ``index`` ([N]).

  Permutations are concatenated until ``steps * bs`` indices are laid out (``bs = min(batch_size, N)``),
  so every example appears once before any appears twice; a batch straddling two permutations may hold an
  example twice. Used for the second stream of two-stream methods (e.g. forget batches paired with the
  retain batches of NegGrad+).
  """
  n = index.shape[0]
  bs = max(1, min(batch_size, n))
  reps = -(-steps * bs // n)
  perms = jax.vmap(lambda k: jax.random.permutation(k, index))(jax.random.split(key, reps))
  return perms.reshape(-1)[: steps * bs].reshape(steps, bs)


def _images(x, key, augment: bool):
  return random_crop_flip(key, x) if augment else x


def _ce_loss(model, data: UnlearnData, augment: bool, sign: float = 1.0):
  """Mean cross-entropy (times ``sign``) on ``row = {"idx": [B]}`` or ``{"idx", "y"}`` in train mode."""

  def loss_fn(params, stats, row, key):
    idx = row["idx"]
    y = row["y"] if "y" in row else data.y[idx]
    logits, new_stats = model.apply(params, stats, _images(data.x[idx], key, augment), train=True)
    ce = jnp.mean(cross_entropy(logits, y))
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    return sign * ce, (new_stats, {"loss": sign * ce, "ce": ce, "acc": acc})

  return loss_fn


# ---------------------------------------------------------------------------------------------
# NegGrad
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NegGradConfig:
  """Gradient ascent on the forget set.

  These are our defaults (the SGD settings of the finetune baseline, 5 epochs); the SCRUB and
  Unlearn-Sparse (Jia et al., NeurIPS 2023) code bases tune the learning rate and epochs per setting
  (gradient ascent diverges if run long with a large learning rate).

  Attributes:
    epochs: passes over the forget set.
    batch_size: forget batch size.
    optimizer, lr, momentum, weight_decay, schedule: optimizer (see ``TrainConfig``).
    augment: random crop + flip.
  """

  epochs: int = 5
  batch_size: int = 128
  optimizer: str = "sgd"
  lr: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "constant"
  augment: bool = False


@register("neggrad", NegGradConfig)
def neggrad(state: ModelState, data: UnlearnData, key: jax.Array, config: NegGradConfig = NegGradConfig(),
            *, mask=None) -> tuple[ModelState, dict]:
  """NegGrad: minimises ``-CE`` on forget batches (gradient ascent on the forget loss).

  Args:
    state: the original model.
    data: train arrays with retain/forget indices.
    key: PRNG key.
    config: settings.
    mask: optional params-shaped 0/1 pytree; only masked entries change.

  Returns:
    ``(state, metrics)``: per-epoch ``loss`` (``-CE``), ``ce`` (forget CE before each step, train mode)
    and ``acc`` (forget batch accuracy), each ``[epochs]``.
  """
  spe = steps_per_epoch(data.forget.shape[0], config.batch_size)
  plan = lambda k, e: {"idx": epoch_batches(k, data.forget, config.batch_size)}  # noqa: E731
  return _drive(state, key, config, _ce_loss(state.model, data, config.augment, -1.0), plan, spe, mask=mask)


# ---------------------------------------------------------------------------------------------
# NegGrad+
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NegGradPlusConfig:
  """NegGrad+ (the SCRUB paper's stronger NegGrad): ``alpha * CE_retain - (1 - alpha) * CE_forget``.

  The defaults are ours (as :class:`NegGradConfig`). The SCRUB repository's notebooks use plain SGD
  (lr 0.01, no momentum, no weight decay) with ``alpha`` 0.95 for 10 epochs at small scale
  (retain / forget batches 128 / 64), 0.9999 for 10 epochs at large scale (batches: our defaults)
  and 0.9999 for 5 epochs in the privacy runs (batches 32 / 16): presets ``small``, ``large`` and
  ``privacy``.

  Attributes:
    epochs: passes over the retain set.
    alpha: weight of the retain loss; ``1 - alpha`` weighs the negated forget loss.
    batch_size: retain batch size.
    forget_batch_size: forget batch size.
    optimizer, lr, momentum, weight_decay, schedule: optimizer (see ``TrainConfig``).
    augment: random crop + flip.
  """

  epochs: int = 5
  alpha: float = 0.99
  batch_size: int = 128
  forget_batch_size: int = 128
  optimizer: str = "sgd"
  lr: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "constant"
  augment: bool = False

  def __post_init__(self):
    if not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"alpha must lie in [0, 1], got {self.alpha!r}")


_SCRUB_SGD = dict(optimizer="sgd", lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant")
NEGGRAD_PLUS_PRESETS = {
    "small": dict(_SCRUB_SGD, alpha=0.95, epochs=10, batch_size=128, forget_batch_size=64),
    "large": dict(_SCRUB_SGD, alpha=0.9999, epochs=10, batch_size=128, forget_batch_size=128),
    "privacy": dict(_SCRUB_SGD, alpha=0.9999, epochs=5, batch_size=32, forget_batch_size=16),
}


@register("neggrad_plus", NegGradPlusConfig, presets=NEGGRAD_PLUS_PRESETS)
def neggrad_plus(state: ModelState, data: UnlearnData, key: jax.Array,
                 config: NegGradPlusConfig = NegGradPlusConfig(), *, mask=None) -> tuple[ModelState, dict]:
  """NegGrad+: each step descends ``alpha * CE(retain batch) - (1 - alpha) * CE(forget batch)``.

  An epoch iterates over the retain batches (a permutation of the retain set); step ``i`` pairs retain
  batch ``i`` with forget batch ``i`` of :func:`cycled_batches` over the forget set (fresh permutations,
  cycled as often as needed). The student runs in train mode on the retain batch, then on the forget
  batch (two forward passes; BatchNorm statistics updated by both, in that order).

  Returns:
    ``(state, metrics)``: per-epoch ``loss``, ``retain_ce``, ``forget_ce``, ``retain_acc``,
    ``forget_acc``, each ``[epochs]``.
  """
  model, alpha, aug = state.model, config.alpha, config.augment
  spe = steps_per_epoch(data.retain.shape[0], config.batch_size)

  def plan(k, e):
    kr, kf = jax.random.split(k)
    return {"r": epoch_batches(kr, data.retain, config.batch_size),
            "f": cycled_batches(kf, data.forget, config.forget_batch_size, spe)}

  def loss_fn(params, stats, row, key):
    kr, kf = jax.random.split(key)
    yr, yf = data.y[row["r"]], data.y[row["f"]]
    lr_, stats = model.apply(params, stats, _images(data.x[row["r"]], kr, aug), train=True)
    lf_, stats = model.apply(params, stats, _images(data.x[row["f"]], kf, aug), train=True)
    ce_r, ce_f = jnp.mean(cross_entropy(lr_, yr)), jnp.mean(cross_entropy(lf_, yf))
    loss = alpha * ce_r - (1.0 - alpha) * ce_f
    return loss, (stats, {"loss": loss, "retain_ce": ce_r, "forget_ce": ce_f,
                          "retain_acc": jnp.mean(jnp.argmax(lr_, -1) == yr),
                          "forget_acc": jnp.mean(jnp.argmax(lf_, -1) == yf)})

  return _drive(state, key, config, loss_fn, plan, spe, mask=mask)


# ---------------------------------------------------------------------------------------------
# Random Label
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RandomLabelConfig:
  """Random Label (Golatkar et al. 2020; as run by Unlearn-Sparse and SalUn): train on the retain set
  together with the forget set relabelled at random.

  Epochs 10 as in SalUn's CIFAR-10 runs; SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 128
  (SalUn tunes the lr in [0.01, 0.1]).

  Attributes:
    epochs: passes over retain + forget.
    batch_size: batch size over the union.
    optimizer, lr, momentum, weight_decay, schedule: optimizer (see ``TrainConfig``).
    augment: random crop + flip.
  """

  epochs: int = 10
  batch_size: int = 128
  optimizer: str = "sgd"
  lr: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "constant"
  augment: bool = False


def random_label_targets(key: jax.Array, data: UnlearnData) -> jax.Array:
  """Labels ``int32 [N]``: ``data.y`` with every forget example's label replaced by a wrong one drawn
  uniformly from the other ``num_classes - 1`` classes (``(y + U{1..C-1}) mod C``)."""
  n, c = data.y.shape[0], data.num_classes
  shift = jax.random.randint(key, (n,), 1, c)
  is_forget = jnp.zeros((n,), bool).at[data.forget].set(True)
  return jnp.where(is_forget, (data.y + shift) % c, data.y).astype(jnp.int32)


@register("random_label", RandomLabelConfig)
def random_label(state: ModelState, data: UnlearnData, key: jax.Array,
                 config: RandomLabelConfig = RandomLabelConfig(), *, mask=None) -> tuple[ModelState, dict]:
  """Random Label: supervised training on retain + forget, forget labels replaced by wrong ones.

  Each epoch draws fresh labels with :func:`random_label_targets` (key ``fold_in(epoch key, 1)`` of the
  plan key) and a permutation of the concatenated retain and forget indices, cut into batches.

  Returns:
    ``(state, metrics)``: per-epoch ``loss``/``ce`` and ``acc`` (against the random targets), ``[epochs]``.
  """
  union = jnp.concatenate([data.retain, data.forget])
  spe = steps_per_epoch(union.shape[0], config.batch_size)

  def plan(k, e):
    kp, kl = jax.random.split(k)
    labels = random_label_targets(kl, data)
    idx = epoch_batches(kp, union, config.batch_size)
    return {"idx": idx, "y": labels[idx]}

  return _drive(state, key, config, _ce_loss(state.model, data, config.augment), plan, spe, mask=mask)


# ---------------------------------------------------------------------------------------------
# l1-sparse finetuning
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class L1SparseConfig:
  """l1-sparse unlearning (Jia et al., NeurIPS 2023, "Model sparsity can simplify machine unlearning"):
  finetune on the retain set with ``CE + gamma_e * ||theta||_1``.

  ``gamma_e = l1 * (1 - e / epochs)`` in 0-based epoch ``e`` (the code's linear decay to 0 at the end
  of training); ``l1 = 5e-5`` and 10 epochs follow the paper's CIFAR-10 setting, SGD lr 0.01
  (the paper tunes it in [0.01, 0.1]).

  Attributes:
    epochs: passes over the retain set.
    l1: initial l1 coefficient.
    batch_size: retain batch size.
    optimizer, lr, momentum, weight_decay, schedule: optimizer (see ``TrainConfig``).
    augment: random crop + flip.
  """

  epochs: int = 10
  l1: float = 5e-5
  batch_size: int = 128
  optimizer: str = "sgd"
  lr: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "constant"
  augment: bool = False


def l1_coefficient(config: L1SparseConfig, epoch) -> jax.Array:
  """``l1 * (1 - epoch / epochs)`` for 0-based ``epoch`` (int or traced); 0 at ``epoch == epochs``."""
  return jnp.float32(config.l1) * (1.0 - jnp.asarray(epoch, jnp.float32) / max(1, config.epochs))


def l1_norm(params) -> jax.Array:
  """``sum |theta|`` over every parameter."""
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


@register("l1_sparse", L1SparseConfig)
def l1_sparse(state: ModelState, data: UnlearnData, key: jax.Array, config: L1SparseConfig = L1SparseConfig(),
              *, mask=None) -> tuple[ModelState, dict]:
  """l1-sparse: retain-set finetuning with an l1 penalty whose coefficient decays linearly to 0.

  Returns:
    ``(state, metrics)``: per-epoch ``loss``, ``ce``, ``acc``, ``l1`` (the norm) and ``l1_coef``,
    each ``[epochs]``.
  """
  model, aug = state.model, config.augment
  spe = steps_per_epoch(data.retain.shape[0], config.batch_size)

  def plan(k, e):
    return {"idx": epoch_batches(k, data.retain, config.batch_size),
            "coef": jnp.broadcast_to(l1_coefficient(config, e), (spe,))}

  def loss_fn(params, stats, row, key):
    idx = row["idx"]
    y = data.y[idx]
    logits, new_stats = model.apply(params, stats, _images(data.x[idx], key, aug), train=True)
    ce = jnp.mean(cross_entropy(logits, y))
    norm = l1_norm(params)
    loss = ce + row["coef"] * norm
    return loss, (new_stats, {"loss": loss, "ce": ce, "acc": jnp.mean(jnp.argmax(logits, -1) == y),
                              "l1": norm, "l1_coef": row["coef"]})

  return _drive(state, key, config, loss_fn, plan, spe, mask=mask)


# ---------------------------------------------------------------------------------------------
# Bad Teacher
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BadTeacherConfig:
  """Bad Teacher (Chundawat, Tarun, Mandal & Kankanhalli, AAAI 2023, "Can bad teaching induce
  forgetting? Unlearning in deep networks using an incompetent teacher").

  Paper settings: 1 epoch over a 30 % subset of the retain set plus the forget set, Adam lr 1e-4,
  KL divergence at temperature 1 (batch 256 and no weight decay are ours).

  Attributes:
    epochs: passes over the mixed set.
    retain_fraction: fraction of the retain set drawn (afresh each epoch) into the mixed set.
    kd_T: distillation temperature.
    batch_size: batch size over the mixed set.
    optimizer, lr, momentum, weight_decay, schedule: optimizer (see ``TrainConfig``).
    augment: random crop + flip (the same images go to student and teachers).
  """

  epochs: int = 1
  retain_fraction: float = 0.3
  kd_T: float = 1.0
  batch_size: int = 256
  optimizer: str = "adam"
  lr: float = 1e-4
  momentum: float = 0.9
  weight_decay: float = 0.0
  schedule: str = "constant"
  augment: bool = False

  def __post_init__(self):
    if not 0.0 <= self.retain_fraction <= 1.0:
      raise ValueError(f"retain_fraction must lie in [0, 1], got {self.retain_fraction!r}")
    if not self.kd_T > 0:
      raise ValueError(f"kd_T must be positive, got {self.kd_T!r}")


def incompetent_teacher(state: ModelState, key: jax.Array) -> ModelState:
  """The randomly initialised teacher of :func:`bad_teacher` run with ``key`` (``init(fold_in(key, 0))``)."""
  params, stats = state.model.init(jax.random.fold_in(key, 0))
  return ModelState(params, stats, state.model)


@register("bad_teacher", BadTeacherConfig)
def bad_teacher(state: ModelState, data: UnlearnData, key: jax.Array,
                config: BadTeacherConfig = BadTeacherConfig(), *, mask=None) -> tuple[ModelState, dict]:
  """Bad Teacher: the student (a copy of the original) distils from the competent teacher (the original)
  on retain examples and from an incompetent, randomly initialised teacher on forget examples.

  Each epoch takes ``round(retain_fraction * R)`` random retain indices plus every forget index, permutes
  the union and cuts it into batches; a per-example flag picks the target distribution. The loss is
  ``mean_b KL(softmax(teacher_b / T) || softmax(student_b / T))`` (no ``T^2``), teachers in eval mode,
  student in train mode. The incompetent teacher is :func:`incompetent_teacher` ``(state, key)``; the run
  itself uses ``fold_in(key, 1)``.

  Returns:
    ``(state, metrics)``: per-epoch ``loss``, ``retain_kl`` and ``forget_kl`` (KL to the respective
    teacher, averaged over the batch's retain / forget examples), each ``[epochs]``.
  """
  model, temp, aug = state.model, config.kd_T, config.augment
  good = state
  bad = incompetent_teacher(state, key)
  k_sub = int(round(config.retain_fraction * data.retain.shape[0]))
  f = data.forget.shape[0]
  pos = jnp.arange(k_sub + f)
  spe = steps_per_epoch(k_sub + f, config.batch_size)

  def plan(k, e):
    ks, kp = jax.random.split(k)
    sub = jax.random.permutation(ks, data.retain)[:k_sub]
    union = jnp.concatenate([sub, data.forget])
    flags = jnp.concatenate([jnp.zeros((k_sub,), bool), jnp.ones((f,), bool)])
    p = epoch_batches(kp, pos, config.batch_size)
    return {"idx": union[p], "bad": flags[p]}

  def loss_fn(params, stats, row, key):
    x = _images(data.x[row["idx"]], key, aug)
    s, new_stats = model.apply(params, stats, x, train=True)
    tg = model.apply(good.params, good.batch_stats, x, train=False)[0]
    tb = model.apply(bad.params, bad.batch_stats, x, train=False)[0]
    flag = row["bad"]
    target = jax.lax.stop_gradient(jnp.where(flag[:, None], tb, tg))
    kl = distill_kl(s, target, temp)
    loss = jnp.mean(kl)
    nf = jnp.sum(flag)
    nr = flag.shape[0] - nf
    return loss, (new_stats, {"loss": loss,
                              "retain_kl": jnp.sum(jnp.where(flag, 0.0, kl)) / jnp.maximum(nr, 1),
                              "forget_kl": jnp.sum(jnp.where(flag, kl, 0.0)) / jnp.maximum(nf, 1)})

  return _drive(state, jax.random.fold_in(key, 1), config, loss_fn, plan, spe, mask=mask)
