"""Every model: output shapes, addressable features/head, and training reduces the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models as jm
from jaxunlearn import train as jt

SMALL = {"mlp": 0.125, "cnn": 0.25, "allcnn": 0.1, "resnet18": 0.125, "wrn16_4": 0.25, "wrn28_2": 0.5,
         "airbench": 0.125, "vit": 0.125}


@pytest.mark.parametrize("name", jm.MODEL_NAMES)
def test_shapes_features_and_head(name):
  m = jm.create_model(name, num_classes=5, input_shape=(8, 8, 3), width=SMALL[name])
  params, stats = m.init(jax.random.key(0))
  x = jax.random.randint(jax.random.key(1), (3, 8, 8, 3), 0, 256).astype(jnp.uint8)
  logits, new_stats = m.apply(params, stats, x, train=True)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  feats = m.features(params, stats, x)
  assert feats.ndim == 2 and feats.shape[0] == 3 and feats.shape[1] == m.feature_dim
  # the head applied to the features reproduces eval-mode logits
  eval_logits, _ = m.apply(params, stats, x, train=False)
  np.testing.assert_allclose(m.head(params["head"], feats), eval_logits, rtol=1e-5, atol=1e-5)
  assert m.block_names()[-1] == "head"
  assert set(m.block_names()) == set(params)


@pytest.mark.parametrize("name", ["mlp", "resnet18"])
def test_init_is_one_program_with_flax_op_by_op_values(name):
  """Model.init compiles the whole initialisation as one program and gives exactly flax's op-by-op values."""
  m = jm.create_model(name, num_classes=5, input_shape=(8, 8, 3), width=SMALL[name])
  params, stats = m.init(jax.random.key(7))
  eager = m.module.init(jax.random.key(7), jnp.zeros((2, 8, 8, 3), jnp.float32), train=False)
  assert jax.tree.structure((params, stats)) == jax.tree.structure((eager["params"], eager.get("batch_stats", {})))
  for a, b in zip(jax.tree.leaves((params, stats)), jax.tree.leaves((eager["params"], eager.get("batch_stats", {})))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  from jaxunlearn.models._registry import _init_variables
  before = _init_variables._cache_size()
  m.init(jax.random.key(8))  # a new key: no new program
  assert _init_variables._cache_size() == before


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
def test_training_reduces_loss(name, blobs):
  x, y, _, _ = blobs
  m = jm.create_model(name, num_classes=4, input_shape=(8, 8, 1), width=SMALL[name])
  cfg = jt.TrainConfig(epochs=8, batch_size=32, lr=0.1)
  state, hist = jt.train_model(m, cfg, x, y, np.arange(len(y)), jax.random.key(0), progress=False)
  assert hist["loss"][-1] < 0.5 * hist["loss"][0]
  assert jt.evaluate(m, state.params, state.batch_stats, x, y)["acc"] > 0.8


def test_bad_model_args():
  with pytest.raises(ValueError, match="unknown model 'vgg'"):
    jm.create_model("vgg", num_classes=10, input_shape=(8, 8, 1))
  with pytest.raises(ValueError, match="num_classes"):
    jm.create_model("cnn", num_classes=1, input_shape=(8, 8, 1))


def test_bf16_compute_keeps_f32_params():
  m = jm.create_model("cnn", num_classes=3, input_shape=(8, 8, 1), width=0.25, dtype=jnp.bfloat16)
  params, stats = m.init(jax.random.key(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits, _ = m.apply(params, stats, jnp.zeros((2, 8, 8, 1), jnp.uint8))
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18", "airbench", "vit"])
def test_the_head_computes_in_float32_in_a_bf16_model(name):
  """Logits of a bfloat16 model are the float32 head of its features: a bf16 head would quantise
  logits near 16 in steps of 0.06-0.125 (head weights scaled up so the logits are that large)."""
  m = jm.create_model(name, num_classes=10, input_shape=(16, 16, 3), width=0.25, dtype=jnp.bfloat16)
  params, stats = m.init(jax.random.key(0))
  x = jax.random.randint(jax.random.key(1), (8, 16, 16, 3), 0, 256).astype(jnp.uint8)
  feats = np.asarray(m.features(params, stats, x), np.float64)
  scale = 20.0 / np.abs(feats @ np.asarray(params["head"]["kernel"], np.float64)).max()
  params = {**params, "head": {**params["head"], "kernel": params["head"]["kernel"] * scale}}
  logits, _ = m.apply(params, stats, x)
  ref = feats @ np.asarray(params["head"]["kernel"], np.float64) + np.asarray(params["head"]["bias"], np.float64)
  assert np.abs(ref).max() > 8.0, "the test needs large logits"
  np.testing.assert_allclose(np.asarray(logits, np.float64), ref, rtol=1e-5, atol=1e-4)


def _precisions(closed):
  """The ``precision`` of every dot_general / conv_general_dilated in a jaxpr and its sub-jaxprs."""
  out = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
        out.append(str(eqn.params.get("precision")))
      for v in eqn.params.values():
        for sub in (v if isinstance(v, (tuple, list)) else (v,)):
          if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
            walk(sub.jaxpr)
          elif hasattr(sub, "eqns"):
            walk(sub)

  walk(closed.jaxpr)
  return out


def test_scored_predictions_ask_for_full_float32_matmuls():
  """The programs whose outputs are scored (evaluation logits, many-model logits and confidences) request
  HIGHEST precision for every matmul / convolution, so a TPU (bf16 passes) or GPU (TF32) scores like a CPU."""
  from jaxunlearn import many as jmany
  from jaxunlearn import train as jtrain
  from jaxunlearn.many.engine import model_mesh
  from jaxunlearn.many.programs import predict_program

  m = jm.create_model("cnn", num_classes=3, input_shape=(8, 8, 1), width=0.25)
  params, stats = m.init(jax.random.key(0))
  x = jnp.zeros((4, 8, 8, 1), jnp.uint8)
  ops = _precisions(jax.make_jaxpr(lambda p, s, x: jtrain._eval._predict(m, p, s, x, 4))(params, stats, x))
  assert len(ops) == 4 and all("HIGHEST" in o for o in ops), ops
  stacked = jmany.stack_states([jtrain.ModelState(params, stats, m)] * 2)
  prog = predict_program(m, 4, 4, True, "vmap", model_mesh(), confidence=True)
  pm = {"params": stacked.params, "batch_stats": stacked.batch_stats}
  ops = _precisions(jax.make_jaxpr(prog)(pm, {"x": x, "y": jnp.zeros((4,), jnp.int32)}))
  assert len(ops) == 8 and all("HIGHEST" in o for o in ops), ops  # the image and its mirror


@pytest.mark.parametrize("shape", [(3, 8, 8, 4), (2, 7, 9, 3), (1, 2, 2, 1)])
def test_max_pool2_equals_flax_max_pool_in_value_and_gradient(shape):
  # the pooling the networks use (XLA's select_and_scatter gradient is slow on the CPU) must be
  # nn.max_pool(x, (2, 2), (2, 2)): same values (odd sizes floored) and the same gradient, ties included
  # (a tie sends the gradient to the first maximum; a plain max would split it); under vmap as well
  import flax.linen as nn
  from jaxunlearn.models._nets import max_pool2

  x = jax.random.normal(jax.random.key(0), shape)
  x = jnp.where(jax.random.bernoulli(jax.random.key(3), 0.5, shape), 0.5, x)  # many tied windows
  ref = nn.max_pool(x, (2, 2), (2, 2))
  np.testing.assert_array_equal(np.asarray(max_pool2(x)), np.asarray(ref))
  w = jax.random.normal(jax.random.key(1), ref.shape)
  g = jax.grad(lambda x: jnp.sum(w * max_pool2(x)))(x)
  g_ref = jax.grad(lambda x: jnp.sum(w * nn.max_pool(x, (2, 2), (2, 2))))(x)
  np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))
  xs = jax.random.normal(jax.random.key(2), (2, *shape))
  np.testing.assert_array_equal(np.asarray(jax.vmap(max_pool2)(xs)),
                                np.asarray(jax.vmap(lambda x: nn.max_pool(x, (2, 2), (2, 2)))(xs)))
