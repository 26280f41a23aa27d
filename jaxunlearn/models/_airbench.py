"""The airbench94 network (Jordan 2024, arXiv:2404.00498): frozen patch-whitening conv, three GELU blocks, max-pool head."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxunlearn.models._nets import max_pool2

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
AIRBENCH_WIDTHS = (64, 256, 256)


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
      x = max_pool2(x)
    x = nn.gelu(bn("bn1")(x), approximate=False)
    x = conv("conv2")(x)
    return nn.gelu(bn("bn2")(x), approximate=False)


class AirbenchNet(nn.Module):
  """The airbench94 network.

  A frozen 2x2 patch-whitening convolution (``2 k^2 C`` filters, set from data by
  :func:`jaxunlearn.recipes.whitening_params`) followed by GELU, then three blocks
  ``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU`` (convolutions initialised as
  partial identities), a global max-pool, the ``logit_scale`` factor and a linear head. BatchNorm
  keeps ``0.6 old + 0.4 batch`` running statistics (PyTorch ``momentum=0.4``), ``eps=1e-12``.

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
    self.head = nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=_torch_default_init(),
                         bias_init=nn.initializers.zeros, name="head")

  def block_names(self):
    return ("whiten",) + tuple(f"block{i + 1}" for i in range(len(self.widths))) + ("head",)

  def features(self, x, train: bool = False):
    x = nn.gelu(self.whiten(x), approximate=False)
    for block in self.blocks:
      x = block(x, train)
    x = jnp.max(x, axis=(-3, -2))
    return x.astype(jnp.float32) * jnp.float32(self.logit_scale)  # the head and logits: float32 always

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))
