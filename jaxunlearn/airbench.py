"""An airbench-style fast CIFAR-10 recipe in JAX, for training hundreds of shadow models at once.

A JAX re-implementation, written from the paper's description, of the ``airbench94`` recipe of
Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (arXiv:2404.00498; reference code
``KellerJordan/cifar10-airbench``, PyTorch). The whole training run is one pure nested ``lax.scan``
(:func:`make_airbench_fit`, same ``(init, fit)`` contract as :func:`jaxunlearn.train.make_fit`), so
``jax.vmap`` trains many models in one program (:func:`train_airbench_many`, the model-axis
convention of :func:`jaxunlearn.shadow.train_many`).

The ingredients (paper section in brackets):

* **Network** (:func:`create_airbench`): a frozen 2x2 *patch-whitening* convolution (no padding,
  ``2 * 4 * C`` filters: the eigenvectors of the covariance of 2x2 patches scaled by
  ``1 / sqrt(eigenvalue + eps)``, and their negatives) followed by GELU, then three blocks of widths
  ``64 / 256 / 256``, each ``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU``, a global
  max-pool and a linear head whose output is multiplied by ``1/9``. Convolutions after the first are
  initialised as *partial identities* (their first ``C_in`` filters are Dirac deltas).
* **BatchNorm** with running statistics ``0.6 * old + 0.4 * batch`` (the reference's
  ``BatchNorm(momentum=0.6)`` hands PyTorch ``1 - 0.6``; Flax ``momentum=0.6``) and ``eps=1e-12``; the scale is
  not trained (stays 1), the bias is, with a 64x larger learning rate (``bias_scaler``).
* **Whitening** (:func:`whitening_params`): computed inside ``fit`` from ``whiten_images`` random
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
* **Test-time augmentation** (:func:`tta_logits`): level 1, the mean of the logits of the image
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

import dataclasses
import functools
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxunlearn import shadow
from jaxunlearn.models import Model
from jaxunlearn.train import ModelState
from jaxunlearn.train import TrainState
from jaxunlearn.train import check_training_set
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import steps_per_epoch

__all__ = (
    "AirbenchConfig", "AirbenchNet", "CIFAR10_MEAN", "CIFAR10_STD", "FLIP_MODES", "alternating_flips",
    "create_airbench", "epoch_plan", "lr_factor", "make_airbench_fit", "make_airbench_optimizer", "param_groups",
    "schedule_steps", "train_airbench_many", "translate", "tta_logits", "whitening_params",
)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FLIP_MODES = ("alternate", "random", "none")


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
  spe = steps_per_epoch(num_examples, bs)
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
# Network
# ---------------------------------------------------------------------------------------------

def _torch_default_init():
  # PyTorch's default conv / linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _partial_identity_init(key, shape, dtype=jnp.float32):
  """Default init whose first ``min(C_in, C_out)`` filters are Dirac deltas (identity maps)."""
  w = _torch_default_init()(key, shape, dtype)
  kh, kw, cin, cout = shape
  m = min(cin, cout)
  w = w.at[:, :, :, :m].set(0.0)
  return w.at[kh // 2, kw // 2, jnp.arange(m), jnp.arange(m)].set(1.0)


class _AirBlock(nn.Module):
  """``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU``."""

  features: int
  bn_momentum: float = 0.6
  bn_eps: float = 1e-12
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    def bn(name):
      return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_eps,
                          dtype=self.dtype, name=name)

    def conv(name):
      return nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                     kernel_init=_partial_identity_init, name=name)

    x = conv("conv1")(x)
    if x.shape[-3] >= 2 and x.shape[-2] >= 2:
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.gelu(bn("bn1")(x), approximate=False)
    x = conv("conv2")(x)
    return nn.gelu(bn("bn2")(x), approximate=False)


class AirbenchNet(nn.Module):
  """The airbench94 network (see the module docstring).

  Attributes:
    num_classes: outputs.
    in_channels: image channels C (the whitening layer has ``2 k^2 C`` filters).
    widths: channels of the three blocks.
    whiten_kernel: size of the whitening convolution.
    logit_scale: multiplies the pooled features (hence the logits).
    bn_momentum: Flax BatchNorm momentum (PyTorch momentum ``1 - bn_momentum``).
    bn_eps: BatchNorm epsilon.
    dtype: compute dtype.
  """

  num_classes: int
  in_channels: int = 3
  widths: tuple[int, ...] = (64, 256, 256)
  whiten_kernel: int = 2
  logit_scale: float = 1.0 / 9.0
  bn_momentum: float = 0.6
  bn_eps: float = 1e-12
  dtype: Any = jnp.float32

  def setup(self):
    k = self.whiten_kernel
    self.whiten = nn.Conv(2 * k * k * self.in_channels, (k, k), padding="VALID", use_bias=True,
                          dtype=self.dtype, kernel_init=_torch_default_init(), name="whiten")
    self.blocks = [_AirBlock(w, self.bn_momentum, self.bn_eps, self.dtype, name=f"block{i + 1}")
                   for i, w in enumerate(self.widths)]
    self.head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_torch_default_init(),
                         bias_init=nn.initializers.zeros, name="head")

  def block_names(self):
    return ("whiten",) + tuple(f"block{i + 1}" for i in range(len(self.widths))) + ("head",)

  def features(self, x, train: bool = False):
    x = nn.gelu(self.whiten(x), approximate=False)
    for block in self.blocks:
      x = block(x, train)
    x = jnp.max(x, axis=(-3, -2))
    return x * jnp.asarray(self.logit_scale, x.dtype)

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


def create_airbench(num_classes: int, input_shape: tuple[int, int, int], *,
                    width: tuple[int, ...] = (64, 256, 256), dtype: Any = jnp.float32,
                    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                    logit_scale: float = 1.0 / 9.0) -> Model:
  """The airbench94 network as a :class:`jaxunlearn.models.Model` (name ``"airbench"``).

  Args:
    num_classes: outputs.
    input_shape: ``(H, W, C)``.
    width: channels of the three blocks (airbench94: ``(64, 256, 256)``).
    dtype: compute dtype (``jnp.bfloat16`` for mixed precision; parameters stay float32).
    mean, std: input normalisation of ``x / 255`` (default: the CIFAR-10 statistics for 3
      channels, else 0.5 / 0.25).
    logit_scale: the factor on the logits (1/9).

  Returns:
    A ``Model`` whose params are ``{"whiten", "block1", "block2", "block3", "head"}``. A fresh
    ``init`` has a random whitening layer: :func:`make_airbench_fit` replaces it by the data's
    whitening filters (or use :func:`whitening_params`).
  """
  if isinstance(num_classes, bool) or not (isinstance(num_classes, int) and num_classes >= 2):
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}")
  width = tuple(int(w) for w in width)
  if not width or any(w < 1 for w in width):
    raise ValueError(f"width must be a non-empty tuple of positive ints, got {width!r}")
  c = int(input_shape[-1])
  if mean is None:
    mean = CIFAR10_MEAN if c == 3 else (0.5,) * c
  if std is None:
    std = CIFAR10_STD if c == 3 else (0.25,) * c
  mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
  if len(mean) != c or len(std) != c:
    raise ValueError(f"mean/std need {c} channels, got {len(mean)}/{len(std)}")
  module = AirbenchNet(num_classes, in_channels=c, widths=width, logit_scale=float(logit_scale), dtype=dtype)
  return Model("airbench", module, num_classes, tuple(int(v) for v in input_shape), mean, std)


# ---------------------------------------------------------------------------------------------
# Whitening
# ---------------------------------------------------------------------------------------------

def _patches(x: jax.Array, k: int) -> jax.Array:
  """All ``k x k`` patches (stride 1, no padding) ``[B, H-k+1, W-k+1, k*k*C]`` in (i, j, c) order."""
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  cols = [x[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)]
  return jnp.concatenate(cols, axis=-1)


def whitening_params(x_uint8, model: Model | None = None, *, eps: float = 5e-4, kernel_size: int = 2,
                     chunk: int = 256, mean=None, std=None) -> dict:
  """The frozen first layer: a patch-whitening convolution computed from images.

  With ``C`` the covariance of the (normalised) ``k x k x C`` patches of ``x`` and ``C = U diag(l) U^T``,
  the filters are the columns of ``W = U diag(1 / sqrt(l + eps))`` (largest eigenvalue first)
  followed by ``-W``, so ``W^T C W = diag(l / (l + eps)) ~ I``: the first ``k*k*C`` outputs are
  whitened patches. The bias ``-mu^T [W, -W]`` centres them (``mu``: mean patch). Pure and
  jittable (the covariance is accumulated over chunks of ``chunk`` images).

  Args:
    x_uint8: images ``[N, H, W, C]`` (uint8, or float in [0, 1]).
    model: normalise with this model's ``mean`` / ``std`` (as ``Model.apply`` does).
    eps: eigenvalue regulariser.
    kernel_size: ``k``.
    chunk: images per accumulation step.
    mean, std: normalisation when no model is given (default: none, ``x / 255``).

  Returns:
    ``{"kernel": float32 [k, k, C, 2 k^2 C], "bias": float32 [2 k^2 C]}`` (Flax layout).
  """
  x = jnp.asarray(x_uint8)
  if x.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
  n, c = x.shape[0], x.shape[-1]
  k = int(kernel_size)
  if n < 1 or x.shape[1] < k or x.shape[2] < k:
    raise ValueError(f"need at least one image of at least {k}x{k} pixels, got shape {x.shape}")
  if model is not None:
    norm = model.normalize
  else:
    m0 = jnp.zeros((c,), jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
    s0 = jnp.ones((c,), jnp.float32) if std is None else jnp.asarray(std, jnp.float32)

    def norm(b):
      b = b.astype(jnp.float32) / 255.0 if b.dtype == jnp.uint8 else b.astype(jnp.float32)
      return (b - m0) / s0

  d = k * k * c
  cs = max(1, min(int(chunk), n))
  nb = -(-n // cs)
  pad = nb * cs - n
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  valid = (jnp.arange(nb * cs) < n).reshape(nb, cs).astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST

  def body(acc, inp):
    xb, vb = inp
    p = _patches(norm(xb), k)                              # [cs, h, w, d]
    p = p * vb[:, None, None, None]
    p = p.reshape(-1, d)
    return (acc[0] + p.sum(0), acc[1] + jnp.dot(p.T, p, precision=hi)), None

  init = (jnp.zeros((d,), jnp.float32), jnp.zeros((d, d), jnp.float32))
  (s1, s2), _ = jax.lax.scan(body, init, (xp.reshape(nb, cs, *x.shape[1:]), valid))
  count = n * (x.shape[1] - k + 1) * (x.shape[2] - k + 1)
  mu = s1 / count
  cov = (s2 - count * jnp.outer(mu, mu)) / max(1, count - 1)
  cov = 0.5 * (cov + cov.T)
  evals, evecs = jnp.linalg.eigh(cov)
  evals, evecs = evals[::-1], evecs[:, ::-1]
  w = evecs / jnp.sqrt(jnp.maximum(evals, 0.0) + eps)[None, :]
  w = jnp.concatenate([w, -w], axis=1)                      # [d, 2d]
  return {"kernel": w.reshape(k, k, c, 2 * d), "bias": -jnp.dot(mu, w, precision=hi)}


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

def alternating_flips(start: jax.Array, epoch) -> jax.Array:
  """Alternating flip: example i is flipped in epoch e iff ``start[i] XOR (e odd)``.

  ``start`` (bool, one per training example, drawn once per run) is the flip of epoch 0; every
  later epoch flips exactly the examples the previous epoch did not.
  """
  return jnp.logical_xor(start, (jnp.asarray(epoch) % 2) == 1)


def epoch_plan(epoch_key: jax.Array, start: jax.Array, epoch, batch_size: int, num_steps: int
               ) -> tuple[jax.Array, jax.Array]:
  """The batches of one epoch and their alternating-flip bits.

  Args:
    epoch_key: the epoch's key (a permutation of the K training positions is drawn from it).
    start: ``bool [K]`` flip bits of epoch 0 (one per position in the model's index set).
    epoch: the epoch number.
    batch_size, num_steps: static; ``num_steps * batch_size <= K``.

  Returns:
    ``(positions int32 [num_steps, batch_size], flips bool [num_steps, batch_size])``: positions in
    the index set, and whether each is flipped (:func:`alternating_flips`).
  """
  k = start.shape[0]
  pos = jax.random.permutation(epoch_key, k)[: num_steps * batch_size].reshape(num_steps, batch_size)
  return pos, alternating_flips(start, epoch)[pos]


def translate(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
  """Random translation by up to ``pad`` pixels per axis (reflection padding), per example."""
  if pad <= 0:
    return x
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  offs = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
  return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(xp, offs)


def _flip(x: jax.Array, flip: jax.Array) -> jax.Array:
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


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
    model: the network (normally from :func:`create_airbench`; any ``Model`` whose params have a
      ``whiten`` conv works, but the param groups assume airbench's names).
    cfg: the recipe.
    num_examples: size K of the index set each run trains on (static).

  Returns:
    ``(init, fit)``: ``init(params, batch_stats) -> TrainState`` (the Lookahead slow copy lives in
    ``opt_state["slow"]``) and ``fit(state, x, y, index, key) -> (state, metrics)`` with ``x``
    ``uint8 [N, H, W, C]``, ``y`` ``int [N]``, ``index`` ``int32 [K]``; metrics are per-epoch means of
    the train-mode ``loss`` and ``acc`` on augmented batches, ``[ceil(epochs)]``. ``fit`` first
    replaces the whitening layer by :func:`whitening_params` of ``whiten_images`` random examples of
    ``x[index]`` (if ``cfg.whiten``), then runs ``ceil(epochs * spe)`` steps. Keys: the epoch-e
    permutation uses ``fold_in(fold_in(key, 0), e)`` (step i: ``fold_in(that, i + 1)``), the flip
    start bits ``fold_in(key, 1)``, the whitening subset ``fold_in(key, 2)``. ``jax.vmap(fit)``
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
      xb = _flip(xb, flip)
    elif cfg.flip == "random":
      xb = _flip(xb, jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, (xb.shape[0],)))
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (new_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, xb, yb)
    updates, tx_state = tx.update(grads, state.opt_state["tx"], state.params)
    params = optax.apply_updates(state.params, updates)
    state = TrainState(state.step + 1, params, new_stats, {"tx": tx_state, "slow": state.opt_state["slow"]})
    if cfg.lookahead:
      state = lookahead(state)
    return state, metrics

  def epoch(state, x, y, index, start, key, e, n_steps: int):
    ekey = jax.random.fold_in(key, e)
    pos, flips = epoch_plan(ekey, start, e, bs, n_steps)

    def body(st, inp):
      i, p, f = inp
      idx = index[p]
      return step(st, x[idx], y[idx], f, jax.random.fold_in(ekey, i + 1))

    st, m = jax.lax.scan(body, state, (jnp.arange(n_steps), pos, flips))
    return st, jax.tree.map(jnp.mean, m)

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
      state, m = jax.lax.scan(lambda st, e: epoch(st, x, y, index, start, k_ep, e, spe), state,
                              jnp.arange(full_epochs))
      hist.append(m)
    if rem_steps:
      state, m = epoch(state, x, y, index, start, k_ep, full_epochs, rem_steps)
      hist.append(jax.tree.map(lambda a: a[None], m))
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


# ---------------------------------------------------------------------------------------------
# Many models
# ---------------------------------------------------------------------------------------------

def train_airbench_many(key, x, y, keep_mask, cfg: AirbenchConfig = AirbenchConfig(), *,
                        model: Model | None = None, num_classes: int | None = None,
                        chunk_size: int | None = None, strategy: str = "vmap", devices=None,
                        progress: bool = True, unbalanced: str = "error") -> tuple[ModelState, dict]:
  """Trains M airbench models from scratch, model m on ``x[keep_mask[m]]``, in one compiled program.

  Model m uses ``k_m = fold_in(key, m)``: initialisation ``fold_in(k_m, 0)``, the run
  ``fit(..., fold_in(k_m, 1))`` of :func:`make_airbench_fit` (the :func:`jaxunlearn.shadow.train_many`
  convention), so results do not depend on ``chunk_size``. The model axis is ``jax.vmap``-ed and
  sharded over ``devices``; an outer loop runs ``chunk_size`` models at a time (the last chunk
  padded by repeating its last model).

  Args:
    key: PRNG key (or int seed).
    x: ``uint8 [N, H, W, C]`` training images.
    y: ``int [N]`` labels.
    keep_mask: ``bool [M, N]``, every row keeping the same number of examples (see
      :func:`jaxunlearn.shadow.balanced_keep_mask`) unless ``unbalanced="resample"``.
    cfg: the recipe.
    model: the network (default ``create_airbench(num_classes, x.shape[1:])``).
    num_classes: for the default model (default ``max(y) + 1``, at least 2).
    chunk_size: models per compiled call (default all), rounded up to a multiple of the devices.
    strategy: ``"vmap"`` (all models of a chunk in lockstep, batched kernels), ``"sequential"``
      (``lax.map``: one model at a time per device, plain kernels, less memory), an int group
      size, or ``"auto"`` (measured, see :func:`jaxunlearn.shadow.choose_strategy`).
    devices: devices of the model mesh (default all).
    progress: a tqdm bar over models.
    unbalanced: see :func:`jaxunlearn.shadow.keep_indices`.

  Returns:
    ``(states, info)``: a stacked ``ModelState`` (leading axis M) and ``{"loss": [M, E], "acc": [M, E]``
    (numpy, per-epoch train-mode means), ``"compile_seconds"``, ``"train_seconds"`` (after
    compilation, all chunks), ``"models_per_hour"``, ``"total_steps"``, ``"steps_per_epoch"``,
    ``"batch_size"``, ``"chunk_size"``, ``"strategy"`` (the one used), ``"strategy_probe"`` (what
    ``"auto"`` measured, else None)}``.
  """
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  y = np.asarray(y)
  if x.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
  if y.shape != (x.shape[0],):
    raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
  if model is None:
    nc = int(num_classes) if num_classes is not None else max(2, int(y.max()) + 1)
    model = create_airbench(nc, tuple(x.shape[1:]))
  if not isinstance(model, Model):
    raise TypeError(f"model must be a jaxunlearn Model, got {type(model).__name__}")
  if tuple(x.shape[1:]) != model.input_shape:
    raise ValueError(f"images are {tuple(x.shape[1:])} but the model expects {model.input_shape}")
  strategy = shadow.check_strategy(strategy)
  keep = np.asarray(keep_mask)
  if keep.ndim != 2 or keep.shape[1] != x.shape[0]:
    raise ValueError(f"keep_mask must be [M, {x.shape[0]}], got shape {keep.shape}")
  kd, impl = shadow._key_parts(key)
  idx = shadow.keep_indices(keep, key, unbalanced=unbalanced)
  check_training_set(model, x, y, idx)
  m_total, k = idx.shape
  mesh = shadow.model_mesh(devices)
  c = shadow._round_chunk(chunk_size, m_total, mesh.size)
  choice = None
  if strategy == "auto":
    if progress:
      tqdm.write("airbench: strategy auto: timing a few training steps of each candidate (one compilation each) ...")
    choice = shadow.choose_strategy(model, cfg, (x, y), chunk_size=c, devices=mesh.devices.flat,
                                    fit_factory=make_airbench_fit)
    strategy = choice.strategy
    if progress:
      tqdm.write(f"airbench: {choice.describe()}")
  program = shadow._train_program(model, cfg, k, impl, strategy, mesh, make_airbench_fit)
  # the chunked, sharded engine of shadow.train_many, compiling ahead of time to time compilation apart
  run = shadow._Run(program, {"m": np.arange(m_total, dtype=np.int32), "index": idx},
                    {"key": kd, "x": jnp.asarray(x), "y": jnp.asarray(y, jnp.int32)}, m_total, c, mesh,
                    progress=progress, desc="airbench", compile_first=True)
  t0 = time.perf_counter()
  out = run()
  compile_s = run.compile_seconds
  train_s = time.perf_counter() - t0 - compile_s
  _, fit = make_airbench_fit(model, cfg, k)
  info = {"loss": np.asarray(out["metrics"]["loss"]), "acc": np.asarray(out["metrics"]["acc"]),
          "compile_seconds": compile_s, "train_seconds": train_s,
          "models_per_hour": m_total / max(train_s, 1e-9) * 3600.0, "total_steps": fit.total_steps,
          "steps_per_epoch": fit.steps_per_epoch, "batch_size": fit.batch_size, "chunk_size": c,
          "strategy": strategy,
          "strategy_probe": None if choice is None else dataclasses.asdict(choice)}
  return ModelState(out["params"], out["batch_stats"], model), info


# ---------------------------------------------------------------------------------------------
# Test-time augmentation
# ---------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _tta_single(model: Model, params, batch_stats, x, batch_size: int):
  n = x.shape[0]
  nb = -(-n // batch_size)
  pad = nb * batch_size - n
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x

  def f(b):
    a = model.apply(params, batch_stats, b, train=False)[0]
    m = model.apply(params, batch_stats, b[:, :, ::-1, :], train=False)[0]
    return 0.5 * (a + m)

  out = jax.lax.map(f, xp.reshape(nb, batch_size, *x.shape[1:]))
  return out.reshape(nb * batch_size, -1)[:n]


def _translate_diagonal(x, shift: int):
  """``x`` moved by ``shift`` pixels along both axes (``-1``: up-left view), reflection padding."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  o = 1 + shift
  return xp[:, o:o + x.shape[1], o:o + x.shape[2], :]


def tta_logits(model: Model, states_or_state, x, *, level: int = 1, batch_size: int = 500,
               chunk_size: int | None = None) -> np.ndarray:
  """Test-time augmentation logits, as airbench's ``infer(..., tta_level)``.

  Level 1: the mean of the eval-mode logits of ``x`` and of its mirror image (2 passes). Level 2
  (the reference's 94 % setting; 6 passes): ``0.5 * level1(x) + 0.25 * (level1(up_left(x)) +
  level1(down_right(x)))``, the views moved by one pixel along both axes with reflection padding.

  Args:
    model: the network.
    states_or_state: a ``ModelState`` / ``TrainState`` (anything with ``params`` and
      ``batch_stats``), single or stacked (leading model axis).
    x: images ``[N, H, W, C]``.
    level: 1 or 2.
    batch_size: images per forward pass (per model).
    chunk_size: models per compiled call for stacked states (see
      :func:`jaxunlearn.shadow.predict_many`).

  Returns:
    ``float32`` numpy ``[N, C]`` for one model, ``[M, N, C]`` for stacked states.
  """
  if level not in (1, 2):
    raise ValueError(f"TTA level must be 1 or 2, got {level!r}")
  params, stats = states_or_state.params, states_or_state.batch_stats
  state = ModelState(params, stats, model)
  x = jnp.asarray(x)
  if x.ndim != 4 or tuple(x.shape[1:]) != model.input_shape:
    raise ValueError(f"images must be [N, {', '.join(map(str, model.input_shape))}], got shape {x.shape}")
  single = shadow.num_models_of(state) is None
  if x.shape[0] == 0:
    return np.zeros((0, model.num_classes) if single else (shadow.num_models_of(state), 0, model.num_classes),
                    np.float32)

  def level1(v):
    if single:
      return np.asarray(_tta_single(model, params, stats, v, max(1, min(batch_size, v.shape[0]))), np.float32)
    return shadow.predict_many(state, v, flip=True, batch_size=batch_size, chunk_size=chunk_size).mean(axis=2)

  out = level1(x)
  if level == 2:
    out = 0.5 * out + 0.25 * (level1(_translate_diagonal(x, -1)) + level1(_translate_diagonal(x, 1)))
  return out
