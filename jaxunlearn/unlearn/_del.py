"""DEL (localised reset + finetune) and SalUn (random labels under a saliency mask).

* DEL: Torkzadehmahani, Nasirigerdeh, Rueckert, Kaissis (2024), "Improved Localized Machine Unlearning
  Through the Lens of Memorization". The critical parameters (:func:`jaxunlearn.unlearn.masks.del_mask`)
  are reset to a fresh initialisation, then the network is finetuned on the retain set with gradients
  restricted to the mask (the classifier layer ``head`` is finetuned entirely).
* SalUn: Fan, Liu, Zhang, Wei, Wong, Liu (ICLR 2024), "SalUn: Empowering Machine Unlearning via
  Gradient-based Weight Saliency": random-label unlearning restricted to the saliency mask
  (:func:`jaxunlearn.unlearn.masks.salun_mask`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_bool
from jaxunlearn.train import check_real
from jaxunlearn.unlearn import masks
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._finetune import train_on
from jaxunlearn.unlearn._random_label import relabel_run
from jaxunlearn.unlearn._registry import register


@dataclasses.dataclass(frozen=True)
class DelConfig:
  """DEL settings (the paper's code: reset 30 % of the parameters, then SGD finetuning on the retain set).

  Attributes:
    fraction: fraction of all parameter entries to reset and finetune (DEL default 0.3; static: it
      sets the mask's size).
    epochs: finetuning epochs on the retain set (paper: 30, as long as the original training on
      CIFAR). Scale it down for small data, e.g. ``--set del.epochs=5``.
    batch_size: retain batch size (128).
    optim: SGD with heavy-ball momentum 0.9, peak lr 0.015, weight decay 0 (the reset entries should
      not be pulled toward zero), cosine decay to ``0.01 * lr``.
    augment: random crop + flip on the retain batches (off by default, like ``finetune``).
    score_batch_size: forget batch size for the criticality scores.
  """

  fraction: float = 0.3
  epochs: int = 30
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.015, momentum=0.9, weight_decay=0.0, schedule="cosine", final_lr_frac=0.01)
  augment: bool = False
  score_batch_size: int = 128

  def __post_init__(self):
    check_loop_fields(self, "score_batch_size")
    check_real(self, "fraction", lo=0.0, hi=1.0)


def _mask_frac(mask, params) -> jax.Array:
  """Fraction of masked parameter entries (a Python-bool leaf counts for its whole tensor)."""
  ones = sum(jnp.sum(jnp.broadcast_to(jnp.asarray(m, jnp.float32), p.shape))
             for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)))
  return ones / sum(p.size for p in jax.tree.leaves(params))


def reset_masked(params, init_params, mask):
  """``theta * (1 - m) + theta_init * m`` as an exact select: unmasked entries stay bit-identical."""
  return jax.tree.map(lambda p, i, m: jnp.where(jnp.asarray(m) > 0, i.astype(p.dtype), p), params, init_params, mask)


@register("del", DelConfig)
def del_unlearn(state: ModelState, data: UnlearnData, key: jax.Array, config: DelConfig, hparams, *,
                mask=None) -> tuple[ModelState, dict]:
  """DEL: reset the critical parameters to a fresh initialisation, then finetune them on the retain set.

  1. Localise: ``m = del_mask(state, data, config.fraction)`` (or the caller's ``mask``).
  2. Reset: ``theta <- theta * (1 - m) + theta_init * m`` with ``theta_init`` a fresh initialisation
     ``state.model.init(fold_in(key, 0))`` (not zeros). BatchNorm running statistics are NOT reset:
     the original's are kept (they keep updating in train mode during finetuning, like every method
     that trains on the retain set).
  3. Finetune on the retain set (key ``fold_in(key, 1)``) with updates multiplied by ``m``, except
     the classifier layer ``params["head"]``, whose training mask is all ones: the head is reset
     where masked and then trained entirely.

  Every parameter outside the mask and outside ``head`` stays bit-identical.

  A ``mask`` given by the caller is used as the localisation mask instead of DEL's.

  Returns:
    ``(unlearned state, {"loss": [epochs], "acc": [epochs], "mask_fraction": scalar})``.
  """
  if mask is None:
    mask = masks.del_mask(state, data, config.fraction, batch_size=config.score_batch_size)
  mask = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), mask)
  init_params, _ = state.model.init(jax.random.fold_in(key, 0))
  params = reset_masked(state.params, init_params, mask)
  train_mask = dict(mask)
  train_mask["head"] = jax.tree.map(jnp.ones_like, mask["head"])
  new, metrics = train_on(state, data, data.retain, jax.random.fold_in(key, 1), config, hparams, mask=train_mask,
                          params=params, batch_stats=state.batch_stats)
  return new, {**metrics, "mask_fraction": _mask_frac(mask, state.params)}


@dataclasses.dataclass(frozen=True)
class SalunConfig:
  """SalUn settings: random-label unlearning (defaults as ``random_label``'s) under the saliency mask.

  Attributes:
    fraction: fraction of parameter entries in the saliency mask (SalUn default 0.5; static).
    epochs: 10.
    batch_size: 128.
    optim: SGD lr 0.01, momentum 0.9, weight decay 5e-4, constant rate (as ``random_label``'s).
    augment: random crop + flip (off).
    score_batch_size: forget batch size for the saliency gradients.
    exclude_true: as ``random_label``'s (False: SalUn's code, labels over all classes).
    two_pass: as ``random_label``'s (True: SalUn's code for 10 classes, a forget pass then a retain pass).

  Preset ``salun_paper``: SalUn's CIFAR-10 settings (lr 0.013, batch 256, labels over all classes, a forget
  pass then a retain pass each epoch).
  """

  fraction: float = 0.5
  epochs: int = 10
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="constant")
  augment: bool = False
  score_batch_size: int = 128
  exclude_true: bool = True
  two_pass: bool = False

  def __post_init__(self):
    check_loop_fields(self, "score_batch_size")
    check_real(self, "fraction", lo=0.0, hi=1.0)
    check_bool(self, "exclude_true")
    check_bool(self, "two_pass")


@register("salun", SalunConfig, presets={"salun_paper": dict(lr=0.013, batch_size=256, exclude_true=False,
                                                                two_pass=True)})
def salun(state: ModelState, data: UnlearnData, key: jax.Array, config: SalunConfig, hparams, *,
          mask=None) -> tuple[ModelState, dict]:
  """SalUn: :func:`~jaxunlearn.unlearn.random_label` restricted to the saliency mask.

  A ``mask`` given by the caller replaces the saliency mask.

  Returns:
    ``(unlearned state, random_label's metrics + {"mask_fraction": scalar})``; parameters outside
    the mask stay bit-identical.
  """
  if mask is None:
    mask = masks.salun_mask(state, data, config.fraction, batch_size=config.score_batch_size)
  new, metrics = relabel_run(state, data, key, config, hparams, mask=mask)
  return new, {**metrics, "mask_fraction": _mask_frac(mask, state.params)}
