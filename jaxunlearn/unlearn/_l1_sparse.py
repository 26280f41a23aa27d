"""l1-sparse unlearning: retain-set finetuning with an l1 penalty whose coefficient decays to 0."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_real
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import hparam
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._base import drive
from jaxunlearn.unlearn._base import images
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._registry import register


@dataclasses.dataclass(frozen=True)
class L1SparseConfig:
  """l1-sparse unlearning (Jia et al., NeurIPS 2023, "Model sparsity can simplify machine unlearning"):
  finetune on the retain set with ``CE + gamma_e * ||theta||_1``.

  ``gamma_e = l1 * (1 - e / epochs)`` in 0-based epoch ``e`` (the code's linear decay to 0 at the end
  of training); ``l1 = 5e-5`` and 10 epochs follow the paper's CIFAR-10 setting, SGD lr 0.01
  (the paper tunes it in [0.01, 0.1]).

  Attributes:
    epochs: passes over the retain set.
    l1: initial l1 coefficient (hyperparameter).
    batch_size: retain batch size.
    optim: optimizer (see ``OptimConfig``).
    augment: random crop + flip.
  """

  epochs: int = 10
  l1: float = hparam(5e-5)
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="constant")
  augment: bool = False

  def __post_init__(self):
    check_loop_fields(self)
    check_real(self, "l1")


def l1_coefficient(l1, epochs: int, epoch) -> jax.Array:
  """``l1 * (1 - epoch / epochs)`` for 0-based ``epoch`` (int or traced); 0 at ``epoch == epochs``."""
  return jnp.asarray(l1, jnp.float32) * (1.0 - jnp.asarray(epoch, jnp.float32) / max(1, epochs))


def l1_norm(params) -> jax.Array:
  """``sum |theta|`` over every parameter."""
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


@register("l1_sparse", L1SparseConfig)
def l1_sparse(state: ModelState, data: UnlearnData, key: jax.Array, config: L1SparseConfig, hparams, *,
              mask=None) -> tuple[ModelState, dict]:
  """l1-sparse: retain-set finetuning with an l1 penalty whose coefficient decays linearly to 0.

  Returns:
    ``(state, metrics)``: per-epoch ``loss``, ``ce``, ``acc``, ``l1`` (the norm) and ``l1_coef``,
    each ``[epochs]``.
  """
  model, aug = state.model, config.augment
  spe = steps_per_epoch(data.retain.shape[0], config.batch_size)

  def plan(k, e):
    coef = l1_coefficient(hparams["l1"], config.epochs, e)
    return epoch_batches(k, data.retain, config.batch_size).map(
        lambda i: {"idx": i, "coef": jnp.broadcast_to(coef, i.shape[:-1])})

  def loss_fn(params, stats, row, key):
    idx = row["idx"]
    y = data.y[idx]
    logits, new_stats = model.apply(params, stats, images(data.x[idx], key, aug, model.flip_ok), train=True)
    ce = jnp.mean(cross_entropy(logits, y))
    norm = l1_norm(params)
    loss = ce + row["coef"] * norm
    return loss, (new_stats, {"loss": loss, "ce": ce, "acc": jnp.mean(jnp.argmax(logits, -1) == y),
                              "l1": norm, "l1_coef": row["coef"]})

  return drive(state, key, config, hparams, loss_fn, plan, spe, mask=mask)
