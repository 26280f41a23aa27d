"""The small ViT: shapes, the float32 head, a numpy forward pass, the role of the position embedding, refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models as jm
from jaxunlearn.errors import ConfigError


def _images(key, shape):
  return jax.random.randint(jax.random.key(key), shape, 0, 256).astype(jnp.uint8)


@pytest.mark.parametrize("shape,tokens", [((32, 32, 3), 65), ((8, 8, 1), 5)])
def test_shapes_blocks_and_no_batch_stats(shape, tokens):
  m = jm.create_model("vit", num_classes=7, input_shape=shape, width=0.125)
  key = jax.random.key(0)
  params, stats = jax.eval_shape(m.init, key) if shape[0] > 8 else jax.jit(m.init)(key)
  assert stats == {}
  assert m.block_names() == ("embed",) + tuple(f"block{i}" for i in range(1, 7)) + ("norm", "head")
  assert set(params) == set(m.block_names())
  assert params["embed"]["pos"].shape == (tokens, 24) and params["embed"]["cls"].shape == (1, 1, 24)
  assert params["head"]["kernel"].shape == (24, 7) and m.feature_dim == 24
  x = _images(1, (3, *shape))
  if shape[0] > 8:  # shapes only (no compilation) at 32x32; values at 8x8 (and in tests/test_models.py)
    logits, new_stats = jax.eval_shape(lambda p, x: m.apply(p, {}, x, train=True), params, x)
    feats = jax.eval_shape(lambda p, x: m.features(p, {}, x), params, x)
    assert logits.shape == (3, 7) and logits.dtype == jnp.float32 and new_stats == {}
    assert feats.shape == (3, 24) and feats.dtype == jnp.float32
    return
  logits, new_stats = jax.jit(lambda p, x: m.apply(p, {}, x, train=True))(params, x)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32 and new_stats == {}
  feats = jax.jit(lambda p, x: m.features(p, {}, x))(params, x)
  assert feats.shape == (3, 24) and feats.dtype == jnp.float32
  np.testing.assert_allclose(m.head(params["head"], feats), logits, rtol=1e-5, atol=1e-5)


def test_default_width_is_192_with_3_heads_and_mlp_ratio_2():  # shapes only, no compilation
  m = jm.create_model("vit", num_classes=10, input_shape=(32, 32, 3))
  p, _ = jax.eval_shape(m.init, jax.random.key(0))
  assert p["embed"]["proj"]["kernel"].shape == (4 * 4 * 3, 192)
  assert p["block1"]["attn"]["qkv"]["kernel"].shape == (192, 576)
  assert p["block6"]["mlp1"]["kernel"].shape == (192, 384) and p["block6"]["mlp2"]["kernel"].shape == (384, 192)
  assert m.module.heads == 3 and m.module.depth == 6


def _np_forward(params, x, heads):
  """ViT logits in float64 numpy, written from the architecture's description (no Flax)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(x, np.float64) / 255.0
  b, h, w, c = x.shape
  patches = np.stack([x[:, i:i + 4, j:j + 4, :].reshape(b, -1) for i in range(0, h, 4) for j in range(0, w, 4)], 1)

  def dense(q, z):
    return z @ q["kernel"] + q["bias"]

  def ln(q, z):
    mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
    return (z - mu) / np.sqrt(var + 1e-6) * q["scale"] + q["bias"]

  def gelu(z):  # the tanh approximation (Flax's nn.gelu default)
    return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))

  e = p["embed"]
  t = np.concatenate([np.broadcast_to(e["cls"], (b, 1, e["cls"].shape[-1])), dense(e["proj"], patches)], 1) + e["pos"]
  d = t.shape[-1]
  hd = d // heads
  i = 1
  while f"block{i}" in p:
    q = p[f"block{i}"]
    y = ln(q["ln1"], t)
    qkv = dense(q["attn"]["qkv"], y).reshape(b, -1, 3, heads, hd)
    outs = []
    for hh in range(heads):
      qq, kk, vv = qkv[:, :, 0, hh], qkv[:, :, 1, hh], qkv[:, :, 2, hh]
      s = qq @ kk.transpose(0, 2, 1) / np.sqrt(hd)
      a = np.exp(s - s.max(-1, keepdims=True))
      outs.append((a / a.sum(-1, keepdims=True)) @ vv)
    t = t + dense(q["attn"]["out"], np.concatenate(outs, -1))
    t = t + dense(q["mlp2"], gelu(dense(q["mlp1"], ln(q["ln2"], t))))
    i += 1
  return dense(p["head"], ln(p["norm"], t[:, 0]))


def test_forward_pass_equals_a_numpy_transformer():
  """Pre-LayerNorm blocks, class token, 4x4 patches in row-major order: checked against numpy (a 2-block
  ViT; the registry's differs only in depth and width)."""
  module = jm.ViT(5, dim=12, depth=2)
  x = _images(5, (4, 8, 12, 2)).astype(jnp.float32)
  params = jax.jit(module.init)(jax.random.key(3), x)["params"]
  # non-trivial LayerNorm affines and biases, so a swapped or missing term shows
  rng = np.random.default_rng(4)
  params = jax.tree.map(lambda v: jnp.asarray(v + 0.3 * rng.standard_normal(v.shape), jnp.float32), params)
  got = jax.jit(module.apply)({"params": params}, x / 255.0)
  np.testing.assert_allclose(np.asarray(got, np.float64), _np_forward(params, x, heads=3), rtol=2e-4, atol=2e-4)


def _permute_patches(x, perm):
  """Moves the 4x4 patches of ``x [B, H, W, C]``: output patch ``i`` is input patch ``perm[i]`` (row-major)."""
  x = np.asarray(x)
  b, h, w, c = x.shape
  p = x.reshape(b, h // 4, 4, w // 4, 4, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, 4, 4, c)[:, perm]
  return p.reshape(b, h // 4, w // 4, 4, 4, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def test_position_embedding_is_the_only_source_of_patch_order():
  """Self-attention is permutation-equivariant, so with the position embedding zeroed the class token's output
  (and the logits) cannot depend on where each patch sits; with a position embedding it must."""
  module = jm.ViT(6, dim=24, depth=2)
  x = _images(1, (4, 16, 16, 3)).astype(jnp.float32) / 255.0
  params = jax.jit(module.init)(jax.random.key(0), x)["params"]
  apply = jax.jit(lambda p, x: module.apply({"params": p}, x))
  perm = np.random.default_rng(0).permutation(16)
  assert (perm != np.arange(16)).any()
  xp = jnp.asarray(_permute_patches(x, perm))
  assert not np.array_equal(np.asarray(x), np.asarray(xp))

  def with_pos(pos):
    return {**params, "embed": {**params["embed"], "pos": pos}}

  zero = with_pos(jnp.zeros_like(params["embed"]["pos"]))
  a, b = apply(zero, x), apply(zero, xp)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # a permutation WITHIN patches is not a token permutation: the logits change even without positions
  assert np.abs(np.asarray(apply(zero, x[:, ::-1]) - a)).max() > 1e-2

  big = with_pos(jax.random.normal(jax.random.key(2), params["embed"]["pos"].shape))
  a, b = apply(big, x), apply(big, xp)
  assert np.abs(np.asarray(a - b)).max() > 1e-2


def test_bf16_computes_the_body_in_bf16_and_the_head_in_float32():
  module = jm.ViT(4, dim=12, depth=1, dtype=jnp.bfloat16)
  x = _images(1, (3, 8, 8, 1)).astype(jnp.float32) / 255.0
  params = jax.jit(module.init)(jax.random.key(0), x)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  feats = jax.jit(lambda p, x: module.apply({"params": p}, x, method="features"))(params, x)
  logits = jax.jit(lambda p, x: module.apply({"params": p}, x))(params, x)
  assert feats.dtype == jnp.bfloat16 and logits.dtype == jnp.float32
  ref = np.asarray(feats, np.float64) @ np.asarray(params["head"]["kernel"], np.float64) + np.asarray(
      params["head"]["bias"], np.float64)
  np.testing.assert_allclose(np.asarray(logits, np.float64), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(30, 30, 3), (32, 30, 3), (2, 2, 1)])
def test_refuses_sizes_not_divisible_by_the_patch(shape):
  with pytest.raises(ValueError, match=r"multiples of 4, got image shape \(" + ", ".join(map(str, shape)) + r"\)"):
    jm.create_model("vit", num_classes=3, input_shape=shape)
  module = jm.ViT(3, dim=6, depth=1)
  with pytest.raises(ValueError, match="multiples of 4"):
    jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, *shape)))


def test_job_config_turns_the_refusal_into_a_config_error():
  from jaxunlearn.config import JobConfig

  class _Ds:  # the attributes of a jaxunlearn.data.Dataset that JobConfig.create_model reads
    num_classes, image_shape, mean, std, flip_ok = 3, (30, 30, 3), (0.0,) * 3, (1.0,) * 3, True

  with pytest.raises(ConfigError, match="multiples of 4"):
    JobConfig(model="vit").create_model(_Ds())
