"""Flax Linen networks. Each exposes ``features(x, train)`` (penultimate features, ``[B, D]``) and a
final linear layer named ``head``; ``__call__`` is ``head(features(x))``. ``block_names()`` lists the
top-level parameter groups in forward order (the last is ``head``), which CF-k / EU-k address.

The head always computes in float32, whatever the model's ``dtype``: in bfloat16, logits near 16 are
quantised in steps of 0.06-0.125, and LiRA, forget quality and every loss read exactly these logits."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def max_pool2(x):
  """2x2 max pooling with stride 2 over ``[B, H, W, C]`` (odd sizes floored, as ``nn.max_pool``'s VALID).

  The same values and the same gradient as ``nn.max_pool(x, (2, 2), (2, 2))``: a tied window sends its
  gradient to its first maximum (row-major), as XLA's ``select_and_scatter`` does. Written as a
  reshape, a first-argmax and a select, so the gradient is elementwise; ``select_and_scatter`` costs
  8-15x more on the CPU (the backward of the small CNN's two pools took ~55 of its ~85 ms per batch of
  128; ``experiments/bench_cpu.py``). Ties are common, not rare: constant image backgrounds give equal
  activations, and a plain ``max`` would split their gradient instead.
  """
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  win = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, c, 4)
  first = jnp.argmax(win, axis=-1)[..., None] == jnp.arange(4)
  return jnp.sum(jnp.where(first, win, jnp.zeros((), x.dtype)), axis=-1)


class MLP(nn.Module):
  num_classes: int
  hidden: Sequence[int] = (256, 256)
  dtype: Dtype = jnp.float32

  def setup(self):
    self.layers = [nn.Dense(h, dtype=self.dtype, name=f"dense{i}") for i, h in enumerate(self.hidden)]
    self.head = nn.Dense(self.num_classes, dtype=jnp.float32, name="head")

  def block_names(self):
    return tuple(f"dense{i}" for i in range(len(self.hidden))) + ("head",)

  def features(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      x = nn.relu(layer(x))
    return x

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class _ConvBN(nn.Module):
  features: int
  kernel: int = 3
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.strides, self.strides),
                padding="SAME", use_bias=False, dtype=self.dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
    return nn.relu(x)


class CNN(nn.Module):
  """A small CNN: two conv-BN-ReLU-pool stages, a hidden dense layer."""

  num_classes: int
  width: int = 32
  hidden: int = 128
  dtype: Dtype = jnp.float32

  def setup(self):
    self.conv1 = _ConvBN(self.width, dtype=self.dtype)
    self.conv2 = _ConvBN(2 * self.width, dtype=self.dtype)
    self.fc = nn.Dense(self.hidden, dtype=self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=jnp.float32)

  def block_names(self):
    return ("conv1", "conv2", "fc", "head")

  def features(self, x, train: bool = False):
    x = self.conv1(x, train)
    if x.shape[1] >= 2:
      x = max_pool2(x)
    x = self.conv2(x, train)
    if x.shape[1] >= 2:
      x = max_pool2(x)
    x = x.reshape(x.shape[0], -1)
    return nn.relu(self.fc(x))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class AllCNN(nn.Module):
  """All-CNN-C (Springenberg et al. 2015) with BatchNorm; ``width`` scales the 96/192 channels."""

  num_classes: int
  width: float = 1.0
  dtype: Dtype = jnp.float32

  def setup(self):
    c1, c2 = max(1, int(96 * self.width)), max(1, int(192 * self.width))
    specs = [(c1, 3, 1), (c1, 3, 1), (c1, 3, 2), (c2, 3, 1), (c2, 3, 1), (c2, 3, 2), (c2, 3, 1),
             (c2, 1, 1), (c2, 1, 1)]
    self.convs = [_ConvBN(c, k, s, dtype=self.dtype, name=f"conv{i}") for i, (c, k, s) in enumerate(specs)]
    self.head = nn.Dense(self.num_classes, dtype=jnp.float32)

  def block_names(self):
    return tuple(f"conv{i}" for i in range(9)) + ("head",)

  def features(self, x, train: bool = False):
    for conv in self.convs:
      x = conv(x, train)
    return jnp.mean(x, axis=(1, 2))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class _BasicBlock(nn.Module):
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding="SAME", use_bias=False,
                dtype=self.dtype)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(y)
    y = norm()(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False, dtype=self.dtype)(x)
      x = norm()(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool); ``width`` multiplies 64/128/256/512."""

  num_classes: int
  width: float = 1.0
  dtype: Dtype = jnp.float32

  def setup(self):
    w = lambda c: max(1, int(round(c * self.width)))
    self.stem_conv = nn.Conv(w(64), (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)
    self.stem_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    blocks = []
    for stage, c in enumerate((64, 128, 256, 512)):
      for j in range(2):
        blocks.append(_BasicBlock(w(c), 2 if (stage > 0 and j == 0) else 1, dtype=self.dtype,
                                  name=f"block{2 * stage + j + 1}"))
    self.blocks = blocks
    self.head = nn.Dense(self.num_classes, dtype=jnp.float32)

  def block_names(self):
    return ("stem_conv", "stem_bn") + tuple(f"block{i}" for i in range(1, 9)) + ("head",)

  def features(self, x, train: bool = False):
    x = nn.relu(self.stem_bn(self.stem_conv(x), use_running_average=not train))
    for b in self.blocks:
      x = b(x, train)
    return jnp.mean(x, axis=(1, 2))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class _WideBlock(nn.Module):
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    o = nn.relu(norm()(x))
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding="SAME", use_bias=False,
                dtype=self.dtype)(o)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False, dtype=self.dtype)(o)
    return x + y


class WideResNet(nn.Module):
  """Pre-activation WideResNet-depth-k (WRN-16-4, WRN-28-2, ...)."""

  num_classes: int
  depth: int = 16
  widen: int = 4
  dtype: Dtype = jnp.float32

  def setup(self):
    if (self.depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n+4, got {self.depth}")
    n = (self.depth - 4) // 6
    self.stem = nn.Conv(16, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)
    blocks = []
    for stage, c in enumerate((16 * self.widen, 32 * self.widen, 64 * self.widen)):
      for j in range(n):
        blocks.append(_WideBlock(c, 2 if (stage > 0 and j == 0) else 1, dtype=self.dtype,
                                 name=f"block{stage * n + j + 1}"))
    self.blocks = blocks
    self.final_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=jnp.float32)

  def block_names(self):
    n = 3 * ((self.depth - 4) // 6)
    return ("stem",) + tuple(f"block{i}" for i in range(1, n + 1)) + ("final_bn", "head")

  def features(self, x, train: bool = False):
    x = self.stem(x)
    for b in self.blocks:
      x = b(x, train)
    x = nn.relu(self.final_bn(x, use_running_average=not train))
    return jnp.mean(x, axis=(1, 2))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))
