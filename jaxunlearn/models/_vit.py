"""A small Vision Transformer (patch 4, 6 pre-LayerNorm blocks, width 192, 3 heads) for 32x32 (and 8x8) images.

Architecture (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", scaled down for small images):

* ``embed``: the image is cut into non-overlapping 4x4 patches (64 tokens for 32x32, 4 for the 8x8 digits),
  each flattened and projected linearly to ``dim`` (a Dense layer on the flattened patch, equal to a stride-4
  convolution but without per-model grouped convolutions under ``jax.vmap``); a learned class token is
  prepended and a learned position embedding (one row per token, class token included) is added.
* ``block1`` ... ``block6``: pre-LayerNorm encoder blocks, ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))``, with
  3 heads and an MLP of ``2 * dim`` hidden units (GELU).
* ``norm``: a final LayerNorm; the features are its output at the CLASS TOKEN. We chose a class token, as the
  original ViT does, over global average pooling; both make the output invariant to permuting the patches once
  the position embedding is removed (tests/test_vit.py checks this).
* ``head``: the float32 linear classifier, as in every network here.

``dim = 3 * round(64 * width)`` (192 at width 1, ~1.8M parameters). No dropout (the training loop passes no
dropout key) and no BatchNorm (``batch_stats`` is ``{}``). Initialisation: position embedding N(0, 0.02),
class token 0, attention and MLP kernels Xavier-uniform with zero biases, LayerNorm 1/0, patch projection and
head Flax's default (LeCun normal). Attention logits and softmax are computed in float32 under a bfloat16
``dtype``.

Block groups for CF-k / EU-k: ``("embed", "block1", ..., "block6", "norm", "head")``. As with the
WideResNets' ``final_bn``, the group before the head is the final LayerNorm, so ``k=3`` is the last encoder
block + norm + head.

The papers' ViTs are larger: SSD (Foster et al. 2024) reports ViT results, to our knowledge with an
ImageNet-pretrained ViT-B/16 (patch 16, 12 layers, width 768, 12 heads) on CIFAR upscaled to 224x224, and
DeepUnlearn (Cadet et al. 2024) uses a ViT as its second architecture; our search could not confirm either
paper's exact settings. Ours is trained from scratch on 32x32 inputs on a CPU, hence patch 4 and 6 narrow
layers (the usual shape of a CIFAR-from-scratch ViT).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

PATCH = 4
HEADS = 3


def check_input_shape(shape) -> None:
  """ValueError (one line, naming the shape) unless ``H`` and ``W`` of ``(..., H, W, C)`` are multiples of 4."""
  h, w = int(shape[-3]), int(shape[-2])
  if h % PATCH or w % PATCH or h < PATCH or w < PATCH:
    raise ValueError(f"vit cuts images into {PATCH}x{PATCH} patches: height and width must be positive multiples "
                     f"of {PATCH}, got image shape {tuple(int(v) for v in shape[-3:])}")


def patchify(x: jax.Array, p: int = PATCH) -> jax.Array:
  """``[B, H, W, C]`` -> ``[B, (H/p)*(W/p), p*p*C]``: row-major non-overlapping patches, each flattened (y, x, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


class _Embed(nn.Module):
  dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    check_input_shape(x.shape)
    tokens = nn.Dense(self.dim, dtype=self.dtype, name="proj")(patchify(x))
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim), jnp.float32)
    tokens = jnp.concatenate([jnp.broadcast_to(cls.astype(tokens.dtype), (x.shape[0], 1, self.dim)), tokens], 1)
    pos = self.param("pos", nn.initializers.normal(0.02), tokens.shape[1:], jnp.float32)
    return tokens + pos.astype(tokens.dtype)


class _Attention(nn.Module):
  dim: int
  heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, _ = x.shape
    hd = self.dim // self.heads
    dense = lambda f, name: nn.Dense(f, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name)
    qkv = dense(3 * self.dim, "qkv")(x).reshape(b, n, 3, self.heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(float(hd))
    attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, n, self.dim)
    return dense(self.dim, "out")(out)


class _EncoderBlock(nn.Module):
  dim: int
  heads: int
  mlp_ratio: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda f, name: nn.Dense(f, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name)
    attn = _Attention(self.dim, self.heads, dtype=self.dtype, name="attn")
    x = x + attn(nn.LayerNorm(dtype=self.dtype, name="ln1")(x))
    y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
    y = dense(self.dim, "mlp2")(nn.gelu(dense(self.mlp_ratio * self.dim, "mlp1")(y)))
    return x + y


class ViT(nn.Module):
  """Vision Transformer with a class token; see the module docstring for the architecture."""

  num_classes: int
  dim: int = 192
  depth: int = 6
  heads: int = HEADS
  mlp_ratio: int = 2
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.dim % self.heads:
      raise ValueError(f"ViT dim {self.dim} must be a multiple of heads {self.heads}")
    self.embed = _Embed(self.dim, dtype=self.dtype)
    self.blocks = [_EncoderBlock(self.dim, self.heads, self.mlp_ratio, dtype=self.dtype, name=f"block{i}")
                   for i in range(1, self.depth + 1)]
    self.norm = nn.LayerNorm(dtype=self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=jnp.float32)

  def block_names(self):
    return ("embed",) + tuple(f"block{i}" for i in range(1, self.depth + 1)) + ("norm", "head")

  def features(self, x, train: bool = False):
    x = self.embed(x)
    for b in self.blocks:
      x = b(x)
    return self.norm(x[:, 0])

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))
