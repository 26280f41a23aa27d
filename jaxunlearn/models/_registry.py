"""Model registry: a :class:`Model` bundles a Flax module with its input normalisation and gives pure
functions over plain pytrees (``params``, ``batch_stats``)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxunlearn.models import _airbench
from jaxunlearn.models import _nets
from jaxunlearn.models import _vit

Params = Any
BatchStats = Any

MODEL_NAMES = ("mlp", "cnn", "allcnn", "resnet18", "wrn16_4", "wrn28_2", "airbench", "vit")


@dataclasses.dataclass(frozen=True)
class Model:
  """A network plus its input normalisation; all methods are pure and jittable.

  Attributes:
    name: registry name.
    module: the Flax Linen module (its final linear layer is named ``head``).
    num_classes: number of outputs.
    input_shape: ``(H, W, C)`` of one image.
    mean, std: per-channel normalisation applied to ``x / 255`` (uint8 input) or ``x`` (float input).
    flip_ok: whether training augmentation may flip images horizontally (from the dataset's
      :attr:`jaxunlearn.data.Dataset.flip_ok`; False for digits, whose mirror images change class).
  """

  name: str
  module: nn.Module
  num_classes: int
  input_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  flip_ok: bool = True

  def init(self, key: jax.Array) -> tuple[Params, BatchStats]:
    """Fresh ``(params, batch_stats)``; ``batch_stats`` is ``{}`` for models without BatchNorm. One compiled
    program per network (:func:`_init_variables`), the same values as flax's op-by-op ``init``."""
    return _init_variables(self.module, tuple(self.input_shape), key)

  def normalize(self, x: jax.Array) -> jax.Array:
    """uint8 ``[B, H, W, C]`` (or float in [0, 1]) to normalised float32."""
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

  def apply(self, params: Params, batch_stats: BatchStats, x: jax.Array, *, train: bool = False
            ) -> tuple[jax.Array, BatchStats]:
    """Logits ``float32 [B, num_classes]`` and the (updated in train mode) batch statistics."""
    variables = {"params": params, "batch_stats": batch_stats}
    if train and _has_stats(batch_stats):
      logits, upd = self.module.apply(variables, self.normalize(x), train=True, mutable=["batch_stats"])
      return logits.astype(jnp.float32), upd["batch_stats"]
    logits = self.module.apply(variables, self.normalize(x), train=False)
    return logits.astype(jnp.float32), batch_stats

  def features(self, params: Params, batch_stats: BatchStats, x: jax.Array) -> jax.Array:
    """Penultimate features ``float32 [B, D]`` in eval mode."""
    variables = {"params": params, "batch_stats": batch_stats}
    f = self.module.apply(variables, self.normalize(x), train=False, method="features")
    return f.astype(jnp.float32)

  def head(self, head_params: Params, feats: jax.Array) -> jax.Array:
    """The final linear layer alone: ``feats [B, D]`` -> logits ``[B, num_classes]``."""
    return (feats @ head_params["kernel"] + head_params["bias"]).astype(jnp.float32)

  def block_names(self) -> tuple[str, ...]:
    """Top-level parameter groups in forward order; the last one is ``head``."""
    return self.module.clone().block_names()

  @property
  def feature_dim(self) -> int:
    p, _ = jax.eval_shape(self.init, jax.random.key(0))
    return p["head"]["kernel"].shape[0]


def _has_stats(batch_stats) -> bool:
  return bool(jax.tree_util.tree_leaves(batch_stats))


# name -> f(num_classes, width multiplier, dtype, image channels) -> Flax module
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda nc, width, dtype, c: _nets.MLP(nc, hidden=(int(256 * width),) * 2, dtype=dtype),
    "cnn": lambda nc, width, dtype, c: _nets.CNN(nc, width=max(1, int(32 * width)), hidden=max(1, int(128 * width)), dtype=dtype),
    "allcnn": lambda nc, width, dtype, c: _nets.AllCNN(nc, width=width, dtype=dtype),
    "resnet18": lambda nc, width, dtype, c: _nets.ResNet18(nc, width=width, dtype=dtype),
    "wrn16_4": lambda nc, width, dtype, c: _nets.WideResNet(nc, depth=16, widen=max(1, int(round(4 * width))), dtype=dtype),
    "wrn28_2": lambda nc, width, dtype, c: _nets.WideResNet(nc, depth=28, widen=max(1, int(round(2 * width))), dtype=dtype),
    "airbench": lambda nc, width, dtype, c: _airbench.AirbenchNet(
        nc, in_channels=c, widths=tuple(max(1, int(round(w * width))) for w in _airbench.AIRBENCH_WIDTHS), dtype=dtype),
    "vit": lambda nc, width, dtype, c: _vit.ViT(nc, dim=_vit.HEADS * max(1, int(round(64 * width))), dtype=dtype),
}


def create_model(name: str, *, num_classes: int, input_shape: tuple[int, int, int],
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 width: float = 1.0, dtype: Any = jnp.float32, flip_ok: bool = True) -> Model:
  """Builds a registered model.

  Args:
    name: one of ``mlp``, ``cnn``, ``allcnn``, ``resnet18``, ``wrn16_4``, ``wrn28_2``, ``airbench``
      (its first layer only whitens once trained with :func:`jaxunlearn.recipes.make_airbench_fit`), ``vit``
      (a small Vision Transformer with 4x4 patches: height and width must be multiples of 4).
    num_classes: outputs.
    input_shape: ``(H, W, C)``.
    mean, std: per-channel input normalisation (defaults 0 and 1).
    width: channel multiplier (vit: the embedding width 192; the SCRUB paper's small-scale ResNet-18 uses 0.4).
    dtype: compute dtype (``jnp.bfloat16`` for mixed precision; parameters stay float32).
    flip_ok: whether ``augment`` may flip images horizontally (pass the dataset's ``flip_ok``).
  """
  if name not in _BUILDERS:
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
  if not (isinstance(num_classes, int) and num_classes >= 2):
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}")
  if name == "vit":
    _vit.check_input_shape(input_shape)
  if not width > 0:
    raise ValueError(f"width must be positive, got {width!r}")
  c = input_shape[-1]
  mean = tuple(mean) if mean is not None else (0.0,) * c
  std = tuple(std) if std is not None else (1.0,) * c
  if len(mean) != c or len(std) != c:
    raise ValueError(f"mean/std need {c} channels, got {len(mean)}/{len(std)}")
  module = _BUILDERS[name](num_classes, width, dtype, int(c))
  return Model(name, module, num_classes, tuple(int(v) for v in input_shape), mean, std, bool(flip_ok))


def create_airbench(num_classes: int, input_shape: tuple[int, int, int], *,
                    width: tuple[int, ...] = _airbench.AIRBENCH_WIDTHS, dtype: Any = jnp.float32,
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
    ``init`` has a random whitening layer: :func:`jaxunlearn.recipes.make_airbench_fit` replaces it by the data's
    whitening filters (or use :func:`jaxunlearn.recipes.whitening_params`).
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
    mean = _airbench.CIFAR10_MEAN if c == 3 else (0.5,) * c
  if std is None:
    std = _airbench.CIFAR10_STD if c == 3 else (0.25,) * c
  mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
  if len(mean) != c or len(std) != c:
    raise ValueError(f"mean/std need {c} channels, got {len(mean)}/{len(std)}")
  module = _airbench.AirbenchNet(num_classes, in_channels=c, widths=width, logit_scale=float(logit_scale), dtype=dtype)
  return Model("airbench", module, num_classes, tuple(int(v) for v in input_shape), mean, std)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_variables(module: nn.Module, input_shape: tuple, key: jax.Array) -> tuple[Params, BatchStats]:
  """``module.init`` on a zero batch of two images, as one jitted program: called outside a trace, flax's init
  runs op by op and XLA compiles every initializer of every parameter shape on its own (the random bits
  alone ~0.4 s each on a CPU); one program takes about 30 % less time to compile for the small CNN, and
  bit-identical values (its initializers are the same computations; checked by the tests)."""
  x = jnp.zeros((2, *input_shape), jnp.float32)
  variables = module.init(key, x, train=False)
  return variables["params"], variables.get("batch_stats", {})
