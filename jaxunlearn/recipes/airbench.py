"""The airbench94 training recipe (config, schedule, optimiser, Lookahead) as one pure ``(init, fit)`` run.

A JAX re-implementation, written from the paper's description, of the ``airbench94`` recipe of
Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (arXiv:2404.00498; reference code
``KellerJordan/cifar10-airbench``, PyTorch). The whole training run is one pure nested ``lax.scan``
(:func:`make_airbench_fit`, same ``(init, fit)`` contract as :func:`jaxunlearn.train.make_fit`), so
``jax.vmap`` trains many models in one program: ``jaxunlearn.many.train_many(...,
fit_factory=make_airbench_fit)`` (or its wrapper :func:`jaxunlearn.many.train_airbench_many`).

The ingredients (paper section in brackets):

* **Network** (:func:`jaxunlearn.models.create_airbench`, ``create_model("airbench")``): a frozen 2x2 *patch-whitening* convolution (no padding,
  ``2 * 4 * C`` filters: the eigenvectors of the covariance of 2x2 patches scaled by
  ``1 / sqrt(eigenvalue + eps)``, and their negatives) followed by GELU, then three blocks of widths
  ``64 / 256 / 256``, each ``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU``, a global
  max-pool and a linear head whose output is multiplied by ``1/9``. Convolutions after the first are
  initialised as *partial identities* (their first ``C_in`` filters are Dirac deltas).
* **BatchNorm** with running statistics ``0.6 * old + 0.4 * batch`` (the reference's
  ``BatchNorm(momentum=0.6)`` hands PyTorch ``1 - 0.6``; Flax ``momentum=0.6``) and ``eps=1e-12``; the scale is
  not trained (stays 1), the bias is, with a 64x larger learning rate (``bias_scaler``).
* **Whitening** (:func:`jaxunlearn.recipes.whitening_params`): computed inside ``fit`` from ``whiten_images`` random
  examples of the model's *own* training set (so a shadow model's filters never see its held-out
  half); the kernel is frozen, its bias trained for the first ``whiten_bias_epochs`` epochs only.
* **Optimiser**: Nesterov SGD on the *summed* label-smoothed (0.2) cross-entropy, with the paper's
  decoupled hyper-parameters (``lr=11.5``, ``momentum=0.85``, ``weight_decay=0.0153`` at batch 1024;
  see :class:`AirbenchConfig`), and a triangular schedule: linear from ``0.2 x`` to ``1 x`` over the
  first 23 % of the steps, then linear to ``0.07 x``.
* **Lookahead**: every 5 steps the weights (and BN statistics) are pulled towards a slow copy,
  ``slow <- slow + (1 - d_t) (fast - slow); fast <- slow`` with ``d_t = 0.95^5 (t / T)^3``; at the end
  the slow copy is returned.
* **Augmentation**: 2-pixel random translation (reflection padding) and *alternating flip*: every
  example gets a random flip bit in the first epoch and the flip alternates every epoch after, so
  each example is seen flipped and unflipped in every pair of epochs.
* **Test-time augmentation** (``jaxunlearn.many.predict_many(..., tta=1 | 2)``): level 1, the mean of the logits of the image
  and its mirror image; level 2 (the reference's 94 % setting, 6 passes), half that plus half its
  mean over the two diagonal 1-pixel translations (reflection padding).
* Epochs may be fractional (``9.9`` in the paper): the run is ``ceil(epochs * steps_per_epoch)``
  steps, the last epoch partial.

Differences from the reference code that we know of: the whitening covariance is centred and the
whitening bias is initialised to centre the first layer's outputs (rather than a default init); the
head has a bias (Flax ``Dense``, for the ``Model.head`` contract) that is frozen at zero; when the
number of steps is not a multiple of ``lookahead_every``, one more Lookahead update is made after
the last step (the reference returns the slow copy of the last multiple, dropping up to 4 steps --
all of them in runs shorter than 5 steps); BN running
variances use the biased estimate (Flax); the 1/9 logit scale is applied to the pooled features, so
``Model.features`` returns the scaled features and ``head(features) == logits``.
"""

from __future__ import annotations


from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.models import Model
from jaxunlearn.recipes.airbench_data import FLIP_MODES
from jaxunlearn.recipes.airbench_data import epoch_plan
from jaxunlearn.recipes.airbench_data import flip_where
from jaxunlearn.recipes.airbench_data import translate
from jaxunlearn.recipes.airbench_data import whitening_params
from jaxunlearn.train import TrainState
from jaxunlearn.train import run_epochs
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import steps_per_epoch

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AirbenchConfig:
  """Training recipe of airbench94 (Jordan 2024, arXiv:2404.00498); defaults are the paper's.

  Hyper-parameters are *decoupled* as in the reference code: with ``B`` the batch size and
  ``kilo = 1024 (1 + 1 / (1 - momentum))``, the Nesterov-SGD step on the summed loss uses
  learning rate ``eta = lr / kilo`` (``bias_scaler * eta`` for BN biases) and an L2 coefficient
  ``lam = weight_decay * B / lr`` (``lam / bias_scaler`` for BN biases), so the per-step weight
  decay ``eta * lam = weight_decay * B / kilo`` is the same for every parameter, and both are
  multiplied by the schedule :func:`lr_factor`.

  Attributes:
    epochs: passes over the training set; fractional values run ``ceil(epochs * spe)`` steps.
    batch_size: examples per step (clamped to the training-set size).
    lr: decoupled learning rate (see above).
    momentum: Nesterov momentum.
    weight_decay: decoupled weight decay (see above).
    bias_scaler: learning-rate multiplier of BatchNorm biases.
    label_smoothing: cross-entropy label smoothing.
    lr_start, lr_peak, lr_end: the triangular schedule's factor at step 0, its peak position as a
      fraction of the run (factor 1 there) and its factor at the last step.
    whiten: compute the whitening filters from the training data at the start of ``fit``
      (``False``: keep the first layer as given, still frozen).
    whiten_eps: added to the patch-covariance eigenvalues.
    whiten_images: examples (randomly drawn from the model's training set) for the covariance.
    whiten_bias_epochs: epochs during which the whitening bias is trained.
    translate: maximum random translation in pixels (reflection padding; 0 disables).
    flip: ``"alternate"`` (the paper's derandomised flip), ``"random"`` (independent coin per
      example and step) or ``"none"``.
    lookahead: use Lookahead (see module docstring).
    lookahead_every: steps between Lookahead updates.
    lookahead_decay: ``d`` at the end of training (``0.95 ** 5``).
    lookahead_power: exponent of the ``(t / T)`` ramp of ``d``.
  """

  epochs: float = 9.9
  batch_size: int = 1024
  lr: float = 11.5
  momentum: float = 0.85
  weight_decay: float = 0.0153
  bias_scaler: float = 64.0
  label_smoothing: float = 0.2
  lr_start: float = 0.2
  lr_peak: float = 0.23
  lr_end: float = 0.07
  whiten: bool = True
  whiten_eps: float = 5e-4
  whiten_images: int = 5000
  whiten_bias_epochs: float = 3.0
  translate: int = 2
  flip: str = "alternate"
  lookahead: bool = True
  lookahead_every: int = 5
  lookahead_decay: float = 0.95 ** 5
  lookahead_power: float = 3.0

  def __post_init__(self):
    if not (isinstance(self.epochs, (int, float)) and math.isfinite(self.epochs) and self.epochs > 0):
      raise ValueError(f"epochs must be a positive number, got {self.epochs!r}")
    for name in ("batch_size", "whiten_images", "lookahead_every"):
      v = getattr(self, name)
      if isinstance(v, bool) or not (isinstance(v, int) and v >= 1):
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    if isinstance(self.translate, bool) or not (isinstance(self.translate, int) and self.translate >= 0):
      raise ValueError(f"translate must be a non-negative int, got {self.translate!r}")
    for name in ("lr", "momentum", "weight_decay", "bias_scaler", "lr_start", "lr_end", "whiten_eps",
                 "whiten_bias_epochs", "lookahead_decay", "lookahead_power"):
      v = getattr(self, name)
      if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
    if self.lr <= 0 or self.bias_scaler <= 0:
      raise ValueError("lr and bias_scaler must be positive")
    if not self.momentum < 1:
      raise ValueError(f"momentum must be < 1, got {self.momentum!r}")
    if not 0 <= self.lr_peak <= 1:
      raise ValueError(f"lr_peak must lie in [0, 1], got {self.lr_peak!r}")
    if not 0 <= self.label_smoothing < 1:
      raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")
    if not self.lookahead_decay <= 1:
      raise ValueError(f"lookahead_decay must lie in [0, 1], got {self.lookahead_decay!r}")
    if self.flip not in FLIP_MODES:
      raise ValueError(f"flip must be one of {', '.join(FLIP_MODES)}, got {self.flip!r}")


def schedule_steps(cfg: AirbenchConfig, num_examples: int) -> tuple[int, int, int]:
  """``(batch_size, steps_per_epoch, total_steps)`` of a run on ``num_examples`` examples."""
  bs = max(1, min(cfg.batch_size, num_examples))
  spe = steps_per_epoch(num_examples, bs, drop_last=True)  # its loader drops the last batch
  return bs, spe, max(1, math.ceil(cfg.epochs * spe - 1e-9))


def lr_factor(cfg: AirbenchConfig, total_steps: int, count) -> jax.Array:
  """The triangular schedule's factor at 0-based step ``count`` of a ``total_steps`` run.

  The peak is at step ``floor(lr_peak * total_steps)``, as in the reference code.
  """
  t = jnp.asarray(count, jnp.float32)
  peak = float(math.floor(cfg.lr_peak * total_steps))
  return jnp.interp(t, jnp.asarray([0.0, peak, float(total_steps)], jnp.float32),
                    jnp.asarray([cfg.lr_start, 1.0, cfg.lr_end], jnp.float32))



# ---------------------------------------------------------------------------------------------
# Optimiser
# ---------------------------------------------------------------------------------------------

GROUPS = ("frozen", "bn_bias", "whiten_bias", "other")


def param_groups(params) -> Any:
  """Labels (a params-shaped pytree of strings) for the optimiser groups.

  ``frozen``: the whitening kernel, every BatchNorm scale and the head bias; ``bn_bias``: the
  BatchNorm biases (``bias_scaler`` x learning rate); ``whiten_bias``: trained for the first
  ``whiten_bias_epochs``; ``other``: everything else (conv kernels, head kernel).
  """

  def label(path, _):
    names = [getattr(p, "key", str(p)) for p in path]
    top, leaf = names[0], names[-1]
    if top == "whiten":
      return "frozen" if leaf == "kernel" else "whiten_bias"
    if top == "head":
      return "frozen" if leaf == "bias" else "other"
    if any(str(n).startswith("bn") for n in names[:-1]):
      return "frozen" if leaf == "scale" else "bn_bias"
    return "other"

  return jax.tree_util.tree_map_with_path(label, params)


def make_airbench_optimizer(cfg: AirbenchConfig, batch_size: int, spe: int, total_steps: int
                            ) -> optax.GradientTransformation:
  """Nesterov SGD with the paper's decoupled hyper-parameters, for gradients of the SUMMED loss.

  See :class:`AirbenchConfig` for the formulas. Frozen parameters get zero updates (they stay
  bit-identical); the whitening bias is updated only during the first ``whiten_bias_epochs``.
  """
  kilo = 1024.0 * (1.0 + 1.0 / (1.0 - cfg.momentum))
  eta = cfg.lr / kilo
  lam = cfg.weight_decay * batch_size / cfg.lr
  sched = functools.partial(lr_factor, cfg, total_steps)
  wb_steps = int(round(cfg.whiten_bias_epochs * spe))

  def sgd(lr_mult: float, wd_div: float):
    return optax.chain(optax.add_decayed_weights(lam / wd_div),
                       optax.trace(decay=cfg.momentum, nesterov=True),
                       optax.scale_by_schedule(lambda c: -eta * lr_mult * sched(c)))

  gate = optax.scale_by_schedule(lambda c: (c < wb_steps).astype(jnp.float32))
  return optax.multi_transform(
      {"frozen": optax.set_to_zero(), "bn_bias": sgd(cfg.bias_scaler, cfg.bias_scaler),
       "whiten_bias": optax.chain(sgd(1.0, 1.0), gate), "other": sgd(1.0, 1.0)},
      param_groups)


# ---------------------------------------------------------------------------------------------
# The whole run as nested lax.scan
# ---------------------------------------------------------------------------------------------

def make_airbench_fit(model: Model, cfg: AirbenchConfig, num_examples: int):
  """The airbench94 training run as a pure function (the :func:`jaxunlearn.train.make_fit` contract).

  Args:
    model: the network (normally from :func:`jaxunlearn.models.create_airbench`; any ``Model`` whose params have a
      ``whiten`` conv works, but the param groups assume airbench's names).
    cfg: the recipe.
    num_examples: size K of the index set each run trains on (static).

  Returns:
    ``(init, fit)``: ``init(params, batch_stats) -> TrainState`` (the Lookahead slow copy lives in
    ``opt_state["slow"]``) and ``fit(state, x, y, index, key) -> (state, metrics)`` with ``x``
    ``uint8 [N, H, W, C]``, ``y`` ``int [N]``, ``index`` ``int32 [K]``; metrics are per-epoch means of
    the train-mode ``loss`` and ``acc`` on augmented batches, ``[ceil(epochs)]``. ``fit`` first
    replaces the whitening layer by :func:`whitening_params` of ``whiten_images`` random examples of
    ``x[index]`` (if ``cfg.whiten``), then runs ``ceil(epochs * spe)`` steps. Keys: the epochs run through
    :func:`jaxunlearn.train.run_epochs` with key ``fold_in(key, 0)`` (epoch e's permutation from its
    ``k_perm``, step i's translation / random flips from ``fold_in(k_steps, i)``), the flip start bits
    ``fold_in(key, 1)``, the whitening subset ``fold_in(key, 2)``. ``jax.vmap(fit)``
    trains many models. ``fit.total_steps``, ``fit.steps_per_epoch``, ``fit.batch_size``,
    ``fit.tx`` describe the run.
  """
  if not isinstance(model, Model):
    raise TypeError(f"model must be a jaxunlearn Model, got {type(model).__name__}")
  if not isinstance(cfg, AirbenchConfig):
    raise TypeError(f"cfg must be an AirbenchConfig, got {type(cfg).__name__}")
  if isinstance(num_examples, bool) or not (isinstance(num_examples, (int, np.integer)) and num_examples >= 1):
    raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
  num_examples = int(num_examples)
  bs, spe, total = schedule_steps(cfg, num_examples)
  full_epochs, rem_steps = divmod(total, spe)
  tx = make_airbench_optimizer(cfg, bs, spe, total)
  n_white = min(cfg.whiten_images, num_examples)

  def init(params, batch_stats):
    slow = {"params": params, "batch_stats": batch_stats}
    return TrainState(jnp.zeros((), jnp.int32), params, batch_stats, {"tx": tx.init(params), "slow": slow})

  def loss_fn(params, batch_stats, xb, yb):
    logits, new_stats = model.apply(params, batch_stats, xb, train=True)
    losses = cross_entropy(logits, yb, cfg.label_smoothing)
    acc = jnp.mean(jnp.argmax(logits, -1) == yb)
    return losses.sum(), (new_stats, {"loss": losses.mean(), "acc": acc})

  def lookahead(state: TrainState, final: bool = False) -> TrainState:
    t = state.step
    d = cfg.lookahead_decay * (t.astype(jnp.float32) / total) ** cfg.lookahead_power
    do = jnp.bool_(True) if final else (t % cfg.lookahead_every) == 0
    fast = {"params": state.params, "batch_stats": state.batch_stats}
    slow = state.opt_state["slow"]
    # slow + (1 - d) (fast - slow): bit-identical where fast == slow (frozen parameters).
    new_slow = jax.tree.map(lambda s, f: jnp.where(do, s + (1.0 - d).astype(s.dtype) * (f - s), s), slow, fast)
    new_fast = jax.tree.map(lambda s, f: jnp.where(do, s, f), new_slow, fast)
    return TrainState(t, new_fast["params"], new_fast["batch_stats"],
                      {"tx": state.opt_state["tx"], "slow": new_slow})

  def step(state: TrainState, xb, yb, flip, key):
    xb = translate(key, xb, cfg.translate)
    if cfg.flip == "alternate":
      xb = flip_where(xb, flip)
    elif cfg.flip == "random":
      xb = flip_where(xb, jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, (xb.shape[0],)))
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (new_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, xb, yb)
    updates, tx_state = tx.update(grads, state.opt_state["tx"], state.params)
    params = optax.apply_updates(state.params, updates)
    state = TrainState(state.step + 1, params, new_stats, {"tx": tx_state, "slow": state.opt_state["slow"]})
    if cfg.lookahead:
      state = lookahead(state)
    return state, metrics

  def epochs(state, x, y, index, start, key, n_epochs: int, n_steps: int, first: int):
    """``n_epochs`` epochs of ``n_steps`` steps through the one training loop (its key convention)."""

    def plan(k_perm, e):
      pos, flips = epoch_plan(k_perm, start, e, bs, n_steps)
      return {"pos": pos, "flip": flips}

    def on_batch(st, row, k):
      idx = index[row["pos"]]
      return step(st, x[idx], y[idx], row["flip"], k)

    return run_epochs(on_batch, state, key, n_epochs, plan, start=first)

  def fit(state: TrainState, x, y, index, key):
    index = jnp.asarray(index, jnp.int32)
    if index.shape != (num_examples,):
      raise ValueError(f"index must have shape ({num_examples},), got {index.shape}")
    y = jnp.asarray(y, jnp.int32)
    k_ep, k_flip, k_white = (jax.random.fold_in(key, i) for i in range(3))
    if cfg.whiten:
      sub = index[jax.random.permutation(k_white, num_examples)[:n_white]]
      wp = whitening_params(x[sub], model, eps=cfg.whiten_eps)
      params = {**state.params, "whiten": {**state.params["whiten"], **wp}}
      slow = state.opt_state["slow"]
      slow = {**slow, "params": {**slow["params"], "whiten": {**slow["params"]["whiten"], **wp}}}
      state = TrainState(state.step, params, state.batch_stats, {"tx": state.opt_state["tx"], "slow": slow})
    start = jax.random.bernoulli(k_flip, 0.5, (num_examples,))
    hist = []
    if full_epochs:
      state, m = epochs(state, x, y, index, start, k_ep, full_epochs, spe, 0)
      hist.append(m)
    if rem_steps:  # the last, partial epoch (fractional epochs): its first rem_steps steps
      state, m = epochs(state, x, y, index, start, k_ep, 1, rem_steps, full_epochs)
      hist.append(m)
    metrics = jax.tree.map(lambda *a: jnp.concatenate(a), *hist)
    if cfg.lookahead:
      if total % cfg.lookahead_every:  # a last update, so that the final steps are not dropped
        state = lookahead(state, final=True)
      slow = state.opt_state["slow"]
      state = TrainState(state.step, slow["params"], slow["batch_stats"], state.opt_state)
    return state, metrics

  fit.total_steps = total
  fit.steps_per_epoch = spe
  fit.batch_size = bs
  fit.tx = tx
  return init, fit

