"""Random Label: train on the retain set together with the forget set relabelled at random
(the base of SalUn)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_bool
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._base import ce_loss
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._base import drive
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._registry import register


@dataclasses.dataclass(frozen=True)
class RandomLabelConfig:
  """Random Label (Golatkar et al. 2020; as run by Unlearn-Sparse and SalUn): train on the retain set
  together with the forget set relabelled at random.

  Epochs 10 as in SalUn's CIFAR-10 runs; SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 128
  (SalUn tunes the lr in [0.01, 0.1]).

  Attributes:
    epochs: passes over retain + forget.
    batch_size: batch size over the union.
    optim: optimizer (see ``OptimConfig``).
    augment: random crop + flip.
    exclude_true: draw a forget example's random label from the OTHER classes (ours: every draw is a
      wrong label); False draws over all C classes, the true one included, as SalUn's code does
      (preset ``salun_paper``; with 10 classes 1 draw in 10 keeps the true label).
    two_pass: each epoch a pass over the relabelled forget set, THEN a pass over the retain set, as
      SalUn's code does for its 10-class datasets (preset ``salun_paper``; its CIFAR-100 and
      TinyImageNet runs shuffle the union, our default). Same number of steps up to one partial batch.

  At these defaults Random Label is also ``srl``, Amnesiac ML's "Unlearning" (Graves et al. 2021), which
  is registered as an alias running this same code (:mod:`jaxunlearn.unlearn._srl`).
  """

  epochs: int = 10
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="constant")
  augment: bool = False
  exclude_true: bool = True
  two_pass: bool = False

  def __post_init__(self):
    check_loop_fields(self)
    check_bool(self, "exclude_true")
    check_bool(self, "two_pass")


def random_label_targets(key: jax.Array, data: UnlearnData, exclude_true: bool = True) -> jax.Array:
  """Labels ``int32 [N]``: ``data.y`` with every forget example's label replaced by a wrong one drawn
  uniformly from the other ``num_classes - 1`` classes (``(y + U{1..C-1}) mod C``), or, with
  ``exclude_true=False``, by one drawn uniformly from all ``num_classes`` (``(y + U{0..C-1}) mod C``)."""
  n, c = data.y.shape[0], data.num_classes
  shift = jax.random.randint(key, (n,), 1 if exclude_true else 0, c)
  is_forget = jnp.zeros((n,), bool).at[data.forget].set(True)
  return jnp.where(is_forget, (data.y + shift) % c, data.y).astype(jnp.int32)


def relabel_run(state: ModelState, data: UnlearnData, key: jax.Array, config, hparams, *, mask=None):
  """The Random Label run of any config with ``epochs``, ``batch_size``, ``optim``, ``augment``,
  ``exclude_true`` and ``two_pass`` (shared by :func:`random_label` and SalUn).

  Each epoch draws fresh labels with :func:`random_label_targets` and a permutation of the concatenated
  retain and forget indices (both from the epoch's ``k_perm``), cut into batches; with ``two_pass``, a
  permutation of the forget set, then one of the retain set (two passes, :func:`~jaxunlearn.train.run_epochs`).
  """
  union = jnp.concatenate([data.retain, data.forget])
  bs = config.batch_size
  if config.two_pass:
    spe = steps_per_epoch(data.forget.shape[0], bs) + steps_per_epoch(data.retain.shape[0], bs)
  else:
    spe = steps_per_epoch(union.shape[0], bs)

  def plan(k, e):
    kp, kl = jax.random.split(k)
    labels = random_label_targets(kl, data, config.exclude_true)
    rows = lambda i: {"idx": i, "y": labels[i]}  # noqa: E731
    if not config.two_pass:
      return epoch_batches(kp, union, bs).map(rows)
    kf, kr = jax.random.split(kp)
    return [epoch_batches(kf, data.forget, bs).map(rows), epoch_batches(kr, data.retain, bs).map(rows)]

  return drive(state, key, config, hparams, ce_loss(state.model, data, config.augment), plan, spe, mask=mask)


@register("random_label", RandomLabelConfig, presets={
    # SalUn's code (Fan et al., ICLR 2024): labels drawn over all classes, the true one included
    "salun_paper": dict(exclude_true=False, two_pass=True),
})
def random_label(state: ModelState, data: UnlearnData, key: jax.Array, config: RandomLabelConfig, hparams, *,
                 mask=None) -> tuple[ModelState, dict]:
  """Random Label: supervised training on retain + forget, forget labels replaced by wrong ones.

  Returns:
    ``(state, metrics)``: per-epoch ``loss``/``ce`` and ``acc`` (against the random targets), ``[epochs]``.
  """
  return relabel_run(state, data, key, config, hparams, mask=mask)
