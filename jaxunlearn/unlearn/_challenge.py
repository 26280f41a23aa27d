"""Two NeurIPS-2023 unlearning-challenge solutions as benchmarked in DeepUnlearn (Cadet et al. 2024, "Deep
Unlearn: Benchmarking Machine Unlearning"): MSG resets the convolution weights with the smallest
retain-minus-forget gradient and finetunes with the other weights' gradients scaled down; CT transposes
every convolution kernel's spatial axes and finetunes.

Both were written from DeepUnlearn's description of the solutions (its "Masked Small Gradients" and
"Convolution Transpose"), not from their code; where we differ, the docstrings say so and why.

Layout note: a Flax ``Conv`` kernel is ``[kh, kw, in, out]`` (PyTorch: ``[out, in, kh, kw]``), so the
"convolution kernels" here are the 4-D parameters named ``kernel``; CT swaps their axes 0 and 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_bool
from jaxunlearn.train import check_real
from jaxunlearn.train import hparam
from jaxunlearn.unlearn import masks
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._del import reset_masked
from jaxunlearn.unlearn._finetune import train_on
from jaxunlearn.unlearn._registry import register

# DeepUnlearn's settings of both solutions (their SGD: momentum 0.9, weight decay 5e-4, lr 1e-3, batch 64)
_DEEPUNLEARN_SGD = dict(lr=1e-3, momentum=0.9, weight_decay=5e-4, batch_size=64)


def _name(path) -> str | None:
  last = path[-1] if path else None
  return getattr(last, "key", getattr(last, "name", None))


def conv_kernels(params):
  """A params-shaped pytree of Python bools: True for the convolution kernels (4-D leaves named
  ``kernel``, Flax ``Conv``'s ``[kh, kw, in, out]``). Leaves may be arrays or ``jax.ShapeDtypeStruct``."""
  return jax.tree_util.tree_map_with_path(lambda path, p: _name(path) == "kernel" and len(p.shape) == 4, params)


def _param_shapes(model):
  """The model's parameters as ``jax.ShapeDtypeStruct`` leaves (nothing is computed)."""
  return jax.eval_shape(lambda: model.init(jax.random.key(0))[0])


def msg_targets(params):
  """The parameters MSG may reset: the convolution kernels (:func:`conv_kernels`); for a model without
  any (the MLP), every kernel with >= 2 dims (the ``Dense`` weight matrices, ``head`` included).

  On the MLP the defaults forget little of a whole class (digits, class 3: 90 % forget accuracy left,
  retrain 0 %; leaving ``head`` out of the targets: 69 %), less than on the CNN, where the dense layers
  and the head train with full gradients (0 %).

  Raises:
    ValueError: the model has no kernel with >= 2 dims.
  """
  flags = conv_kernels(params)
  if not any(jax.tree.leaves(flags)):
    flags = jax.tree_util.tree_map_with_path(lambda path, p: _name(path) == "kernel" and len(p.shape) >= 2, params)
  if not any(jax.tree.leaves(flags)):
    raise ValueError("msg: the model has no convolution or weight-matrix kernels to reset")
  return flags


def msg_gradient(state: ModelState, data: UnlearnData, key: jax.Array, *, batch_size: int = 64):
  """MSG's gradient ``g = grad(retain loss) - grad(forget loss)`` at the original weights, params-shaped.

  The retain loss is taken on ``min(F, R)`` retain examples drawn at random with ``key`` (as many as the
  forget set has, as the solution does), the forget loss on the whole forget set; each is the sum over
  batches of ``batch_size`` of the batch's mean cross-entropy, with the model in eval mode
  (:func:`~jaxunlearn.unlearn.masks.set_gradient`).
  """
  g_forget = masks.forget_gradient(state, data, batch_size=batch_size)  # the gradient of -CE
  if data.retain.shape[0] == 0:
    raise ValueError("msg: the retain set is empty")
  sub = jax.random.permutation(key, data.retain)[:min(data.forget.shape[0], data.retain.shape[0])]
  g_retain = masks.set_gradient(state, data, sub, sign=1.0, batch_size=batch_size)
  return jax.tree.map(jnp.add, g_retain, g_forget)


def msg_selection(grad, targets, fraction: float, *, per_layer: bool = True):
  """A params-shaped float32 0/1 tree: the ``fraction`` of the target entries with the SMALLEST ``|grad|``.

  ``per_layer``: each target tensor keeps exactly ``round(fraction * its size)`` (the solution's rule);
  else one ranking over all target entries, exactly ``round(fraction * their total)``. Ties at the
  threshold go to the earlier position (:func:`~jaxunlearn.unlearn.masks.topk_mask` of ``-|grad|``).
  Non-target leaves are all zeros.
  """
  leaves, treedef = jax.tree.flatten(grad)
  flags = jax.tree.leaves(targets)
  picked = iter(masks.topk_mask([-jnp.abs(g) for g, t in zip(leaves, flags) if t], fraction, per_leaf=per_layer))
  out = [next(picked) if t else jnp.zeros(jnp.shape(g), jnp.float32) for g, t in zip(leaves, flags)]
  return jax.tree.unflatten(treedef, out)


@dataclasses.dataclass(frozen=True)
class MsgConfig:
  """MSG ("Masked Small Gradients", a NeurIPS-2023 challenge solution benchmarked in DeepUnlearn).

  Attributes:
    fraction: fraction of the convolution weights to reset (0.3; static: it sets how many).
    per_layer: rank within each convolution layer (the solution), else over all of them at once.
    small_grad_scale: the factor on the gradients of the convolution weights NOT reset during
      finetuning (0.1; hyperparameter). The reset weights and every other parameter get full gradients.
    epochs: finetuning epochs on the retain set (5, the solution's).
    batch_size: retain batch size (64, the solution's).
    optim: SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine decay. The solution's lr is 1e-3 with
      a per-epoch linear warm-up to the middle epoch and back down (preset ``deepunlearn``); at 1e-3
      (0.01, 0.05) the digits CNN kept 88 % (66 %, 15 %) of a forgotten class, at 0.1 none (retrain: 0 %).
    augment: random crop + flip of the retain batches (off).
    score_batch_size: batch size of the gradient pass (64).

  Preset ``deepunlearn``: DeepUnlearn's settings of the solution (5 epochs, batch 64, lr 1e-3 rising
  linearly for half the epochs and falling linearly to 0 after, momentum 0.9, weight decay 5e-4).
  """

  fraction: float = 0.3
  per_layer: bool = True
  small_grad_scale: float = hparam(0.1)
  epochs: int = 5
  batch_size: int = 64
  optim: OptimConfig = OptimConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  augment: bool = False
  score_batch_size: int = 64

  def __post_init__(self):
    check_loop_fields(self, "score_batch_size")
    check_real(self, "fraction", lo=0.0, hi=1.0)
    check_real(self, "small_grad_scale", lo=0.0)
    check_bool(self, "per_layer")


@register("msg", MsgConfig, presets={
    "deepunlearn": dict(fraction=0.3, per_layer=True, small_grad_scale=0.1, epochs=5, schedule="linear",
                        warmup_epochs=2.5, final_lr_frac=0.0, **_DEEPUNLEARN_SGD),
}, check_model=lambda model: msg_targets(_param_shapes(model)))
def msg(state: ModelState, data: UnlearnData, key: jax.Array, config: MsgConfig, hparams, *,
        mask=None) -> tuple[ModelState, dict]:
  """MSG: reset the convolution weights least affected by ``retain loss - forget loss``, then finetune
  on the retain set with the other convolution weights' gradients scaled by ``small_grad_scale``.

  1. ``g = grad(retain CE) - grad(forget CE)`` at the original weights, eval mode
     (:func:`msg_gradient`; the retain examples drawn with ``fold_in(key, 2)``).
  2. Reset the ``fraction`` of the convolution-kernel entries with the smallest ``|g|``
     (:func:`msg_selection`, per layer by default) to a fresh initialisation
     ``state.model.init(fold_in(key, 0))``. Models without convolution kernels (the MLP): every weight
     matrix with >= 2 dims instead (:func:`msg_targets`). Biases, BatchNorm scales/offsets and running
     statistics are kept.
  3. Finetune on the retain set (key ``fold_in(key, 1)``) with the gradients of the target entries NOT
     reset multiplied by ``small_grad_scale`` before the optimizer
     (:func:`~jaxunlearn.unlearn.masks.scale_gradients`); reset entries and all other parameters
     get their full gradient.

  A caller's ``mask`` restricts everything: entries outside it are neither reset nor trained (they stay
  bit-identical).

  Differences from the solution's code as DeepUnlearn runs it: the gradient pass runs the model in eval
  mode (theirs in the model's current mode, which in train mode also moves BatchNorm's running
  statistics before unlearning starts); the fresh values come from the model's own initialiser (theirs:
  Kaiming-normal, fan-out); the default schedule is a per-step cosine (theirs a per-epoch triangle:
  preset ``deepunlearn`` gives it per step).

  Returns:
    ``(unlearned state, {"loss": [epochs], "acc": [epochs], "reset_fraction": scalar})``;
    ``reset_fraction`` is the fraction of the target entries that were reset.
  """
  targets = msg_targets(state.params)
  g = msg_gradient(state, data, jax.random.fold_in(key, 2), batch_size=config.score_batch_size)
  reset = msg_selection(g, targets, config.fraction, per_layer=config.per_layer)
  if mask is not None:
    reset = jax.tree.map(lambda r, m: jnp.where(jnp.asarray(m) > 0, r, 0.0), reset, mask)
  init_params, _ = state.model.init(jax.random.fold_in(key, 0))
  params = reset_masked(state.params, init_params, reset)
  small = hparams["small_grad_scale"]
  scale = jax.tree.map(lambda r, t: jnp.where(r > 0, 1.0, small).astype(jnp.float32) if t else jnp.float32(1.0),
                       reset, targets)
  new, metrics = train_on(state, data, data.retain, jax.random.fold_in(key, 1), config, hparams, mask=mask,
                          params=params, batch_stats=state.batch_stats, grad_scale=scale)
  flags = jax.tree.leaves(targets)
  n_reset = sum(jnp.sum(r) for r, t in zip(jax.tree.leaves(reset), flags) if t)
  n_target = sum(jnp.size(p) for p, t in zip(jax.tree.leaves(state.params), flags) if t)
  return new, {**metrics, "reset_fraction": n_reset / n_target}


def check_transposable(params, model_name: str = "?"):
  """The :func:`conv_kernels` flags of ``params`` (arrays or ``jax.ShapeDtypeStruct``), after checking
  that CT can transpose them.

  Raises:
    ValueError: the model has no convolution kernel (CT would leave it untouched but for the
      finetuning), or a kernel is not square (its transpose has another shape: the layer could not use it).
  """
  flags = conv_kernels(params)
  if not any(jax.tree.leaves(flags)):
    raise ValueError(f"ct transposes convolution kernels, and model {model_name!r} has none; "
                     f"use a convolutional model (e.g. --model cnn)")
  for (path, p), f in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(flags)):
    if f and p.shape[0] != p.shape[1]:
      raise ValueError(f"ct: the convolution kernel {jax.tree_util.keystr(path)} of model {model_name!r} is "
                       f"{p.shape[0]}x{p.shape[1]}; only square kernels can be transposed")
  return flags


def transpose_conv_kernels(params, model_name: str = "?"):
  """``params`` with every convolution kernel's spatial axes swapped (``[kh, kw, in, out]`` ->
  ``[kw, kh, in, out]``, Flax layout); every other leaf is returned as is.

  Raises:
    ValueError: as :func:`check_transposable`.
  """
  flags = check_transposable(params, model_name)
  return jax.tree.map(lambda p, f: jnp.swapaxes(p, 0, 1) if f else p, params, flags)


@dataclasses.dataclass(frozen=True)
class CtConfig:
  """CT ("Convolution Transpose", a NeurIPS-2023 challenge solution benchmarked in DeepUnlearn).

  Attributes:
    epochs: finetuning epochs on the retain set after the transpose (5; the solution's 3).
    batch_size: retain batch size (64, the solution's).
    optim: SGD, lr 0.01, momentum 0.9, weight decay 5e-4, cosine decay (the solution's lr is 1e-3, and
      it steps the cosine once per epoch, we per step). On the digits CNN 3 epochs at 1e-3 left the
      retain accuracy at 89 % (original 100 %); 5 at 0.01 recover 99 %.
    augment: random crop + flip of the retain batches (off).

  Preset ``deepunlearn``: DeepUnlearn's settings of the solution (3 epochs, lr 1e-3, batch 64).
  """

  epochs: int = 5
  batch_size: int = 64
  optim: OptimConfig = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  augment: bool = False

  def __post_init__(self):
    check_loop_fields(self)


@register("ct", CtConfig, presets={"deepunlearn": dict(epochs=3, schedule="cosine", **_DEEPUNLEARN_SGD)},
          check_model=lambda model: check_transposable(_param_shapes(model), model.name))
def ct(state: ModelState, data: UnlearnData, key: jax.Array, config: CtConfig, hparams, *,
       mask=None) -> tuple[ModelState, dict]:
  """CT: transpose the spatial axes of every convolution kernel, then finetune on the retain set.

  The transpose (:func:`transpose_conv_kernels`) keeps each kernel's weights but flips which image
  direction each tap looks at, scrambling the learned features while keeping their statistics; the
  finetuning (key ``key``) re-learns on the retain set only. Every other parameter (BatchNorm, dense
  layers, the head) starts from the original.

  Refused (a ValueError when the method is traced, and from run / tune / the studies before anything
  trains, :func:`~jaxunlearn.unlearn.check_model`): models without
  convolution kernels (the MLP: CT would leave the model untouched but for the finetuning, i.e. be
  ``finetune``), and non-square kernels (their transpose would not fit the layer). 1x1 kernels are
  their own transpose.

  A caller's ``mask`` restricts which entries change: outside it the kernels keep their original
  (untransposed) entries and nothing is trained.

  Returns:
    ``(unlearned state, {"loss": [epochs], "acc": [epochs]})``.
  """
  params = transpose_conv_kernels(state.params, state.model.name)
  if mask is not None:
    params = jax.tree.map(lambda t, p, m: jnp.where(jnp.asarray(m) > 0, t, p), params, state.params, mask)
  return train_on(state, data, data.retain, key, config, hparams, mask=mask, params=params,
                  batch_stats=state.batch_stats)
