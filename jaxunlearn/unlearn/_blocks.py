"""Block-wise baselines from Goel et al. (2022), "Towards Adversarial Evaluation of Machine Unlearning",
as run in the SCRUB repository (Kurmanji et al. 2023):

* CF-k (catastrophic forgetting of the last k blocks): finetune only the last ``k`` blocks on the
  retain set, everything else frozen.
* EU-k (exact unlearning of the last k blocks): re-initialise the last ``k`` blocks and train them
  from scratch on the retain set, everything else frozen.

"Blocks" are the top-level parameter groups of :meth:`jaxunlearn.models.Model.block_names`, in forward
order, the last being the classifier ``head``. ``k`` counts those groups FROM THE END, head included:
``k=1`` is the head alone, ``k=2`` (the default) the last group before the head plus the head. That is
the last residual block + head for ResNet-18 (``block8``, ``head``), the hidden dense layer + head for
the small CNN (``fc``, ``head``) and the second hidden layer + head for the MLP. For WideResNets the
group before the head is ``final_bn`` (the final BatchNorm), so use ``k=3`` there to include the last
residual block. The ViT's groups are ``embed``, ``block1`` ... ``block6``, ``norm`` (its final LayerNorm)
and ``head``: likewise ``k=3`` includes the last encoder block.

BatchNorm: the forward pass runs in train mode (batch statistics normalise every layer, as PyTorch's
``model.train()`` does) but the running statistics of the frozen groups are restored after every step,
so frozen groups keep their parameters AND statistics bit-identical; the trained groups' statistics
update as usual (EU-k: starting from the fresh initialisation's).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_bool
from jaxunlearn.train import check_int
from jaxunlearn.unlearn._base import ce_loss
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._finetune import train_on
from jaxunlearn.unlearn._registry import register


@dataclasses.dataclass(frozen=True)
class CFkConfig:
  """CF-k settings (SCRUB repo: finetune the last block(s) like the finetune baseline: 10 epochs,
  SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 128).

  Attributes:
    k: number of trailing parameter groups of ``model.block_names()`` to train, head included
      (``k=2``: the last block before the head and the head).
    epochs, batch_size, optim, augment: training settings.
    train_head: train the head among the last k groups (ours); False keeps it frozen, as the SCRUB
      notebooks train ResNet's ``layer4`` alone (preset ``scrub_paper``: k 2 with the head frozen, plain
      SGD at lr 0.01, 10 epochs).
  """

  k: int = 2
  epochs: int = 10
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  augment: bool = False
  train_head: bool = True

  def __post_init__(self):
    check_loop_fields(self)
    check_int(self, "k", lo=1)
    check_bool(self, "train_head")


@dataclasses.dataclass(frozen=True)
class EUkConfig:
  """EU-k settings (SCRUB repo: the re-initialised blocks are trained as long as the original model:
  30 epochs, SGD lr 0.1 with cosine decay, momentum 0.9, weight decay 5e-4, batch 128).

  Attributes:
    k: number of trailing parameter groups of ``model.block_names()`` to re-initialise and train,
      head included (``k=2``: the last block before the head and the head).
    epochs, batch_size, optim, augment: training settings.
    train_head: re-initialise and train the head among the last k groups (ours); False keeps the
      original head frozen, as the SCRUB notebooks do (preset ``scrub_paper``: k 2 with the head frozen,
      plain SGD at lr 0.01, 10 epochs).
    reset: ``fresh`` (ours): the groups restart from a new draw, ``model.init(fold_in(key, 0))``, which any
      caller can give; ``saved``: from the original's own initial weights, ``model.init(data.init_key)``, as
      the SCRUB notebooks reset to the saved initialisation (preset ``scrub_paper``). ``saved`` needs
      ``UnlearnData.init_key``: ``jaxunlearn run`` passes it when it trains the original itself.
  """

  k: int = 2
  epochs: int = 30
  batch_size: int = 128
  optim: OptimConfig = OptimConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  augment: bool = False
  train_head: bool = True
  reset: str = "fresh"

  def __post_init__(self):
    check_loop_fields(self)
    check_int(self, "k", lo=1)
    check_bool(self, "train_head")
    if self.reset not in ("fresh", "saved"):
      raise ValueError(f"reset must be 'fresh' or 'saved', got {self.reset!r}")


def last_blocks(model, k: int, train_head: bool = True) -> tuple[str, ...]:
  """The last ``k`` names of ``model.block_names()`` (head included; without it when ``train_head`` is
  False); ValueError if k is out of range or nothing is left to train."""
  names = tuple(model.block_names())
  if not (isinstance(k, int) and 1 <= k <= len(names)):
    raise ValueError(f"k must be an int in [1, {len(names)}] for model {model.name!r} "
                     f"(blocks {', '.join(names)}), got {k!r}")
  groups = names[-k:] if train_head else tuple(g for g in names[-k:] if g != "head")
  if not groups:
    raise ValueError(f"k={k} with train_head=False leaves no group to train (use k >= 2)")
  return groups


def block_mask(params, groups) -> dict:
  """Per-leaf bool mask (Python bools): True for leaves in the top-level ``groups``."""
  return {name: jax.tree.map(lambda _, t=(name in groups): t, sub) for name, sub in params.items()}


def _combine(bmask, mask):
  """Intersects the per-leaf bool mask with an optional 0/1 array mask."""
  if mask is None:
    return bmask
  return jax.tree.map(lambda b, m: jnp.asarray(m, jnp.float32) * float(b), bmask, mask)


def _replace_groups(tree, new, groups):
  if not tree:
    return tree
  return {name: (new[name] if name in groups and name in new else sub) for name, sub in tree.items()}


def train_blocks(state: ModelState, data: UnlearnData, key: jax.Array, cfg, hparams, groups, *, params,
                 batch_stats, mask=None) -> tuple[ModelState, dict]:
  """Supervised training on the retain set of only the top-level parameter groups ``groups``.

  Frozen groups keep their parameters (``optax.transforms.freeze``) and BatchNorm running statistics
  (restored after each step) bit-identical.

  Args:
    state: supplies the model.
    data: train arrays; trains on ``data.retain``.
    key: PRNG key of the run.
    cfg: a method config with ``epochs``, ``batch_size``, ``optim``, ``augment``.
    hparams: the method's hyperparameters.
    groups: names of the trained groups.
    params, batch_stats: starting weights.
    mask: optional 0/1 params-shaped pytree further restricting the trained entries.

  Returns:
    ``(state, {"loss": [epochs], "acc": [epochs]})``.
  """
  base = ce_loss(state.model, data, cfg.augment)

  def loss_fn(p, stats, row, k):
    loss, (new_stats, metrics) = base(p, stats, row, k)
    return loss, (_replace_groups(stats, new_stats, groups), metrics)

  return train_on(state, data, data.retain, key, cfg, hparams, mask=_combine(block_mask(params, groups), mask),
                  params=params, batch_stats=batch_stats, loss_fn=loss_fn)


_SCRUB_PAPER = dict(k=2, train_head=False, epochs=10, lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant")


@register("cf_k", CFkConfig, presets={"scrub_paper": _SCRUB_PAPER})
def cf_k(state: ModelState, data: UnlearnData, key: jax.Array, config: CFkConfig, hparams, *,
         mask=None) -> tuple[ModelState, dict]:
  """CF-k: finetune only the last ``config.k`` parameter groups on the retain set.

  With ``mask``, only masked entries of the last k groups change.

  Returns:
    ``(unlearned state, {"loss": [epochs], "acc": [epochs]})``; all other parameters and their
    BatchNorm statistics are bit-identical to ``state``'s.
  """
  groups = last_blocks(state.model, config.k, config.train_head)
  return train_blocks(state, data, key, config, hparams, groups, params=state.params,
                      batch_stats=state.batch_stats, mask=mask)


@register("eu_k", EUkConfig, presets={"scrub_paper": {**_SCRUB_PAPER, "reset": "saved"}})
def eu_k(state: ModelState, data: UnlearnData, key: jax.Array, config: EUkConfig, hparams, *,
         mask=None) -> tuple[ModelState, dict]:
  """EU-k: re-initialise the last ``config.k`` parameter groups and train them on the retain set.

  The fresh initialisation is ``state.model.init(fold_in(key, 0))`` (``config.reset="saved"``:
  ``state.model.init(data.init_key)``, the original's own initial weights) (parameters and BatchNorm
  statistics of those groups); training uses ``fold_in(key, 1)``. With ``mask``, only the masked
  entries of the last k groups are re-initialised and trained, and the BatchNorm statistics of those
  groups keep the original's (so unmasked parameters stay bit-identical).

  Returns:
    ``(unlearned state, {"loss": [epochs], "acc": [epochs]})``; all other parameters and their
    BatchNorm statistics are bit-identical to ``state``'s.
  """
  groups = last_blocks(state.model, config.k, config.train_head)
  if config.reset == "saved":
    if data.init_key is None:
      raise ValueError("eu_k with reset='saved' needs the original's initialisation key (UnlearnData.init_key); "
                       "jaxunlearn run gives it when it trains the original, or use reset='fresh'")
    fresh_params, fresh_stats = state.model.init(data.init_key)
  else:
    fresh_params, fresh_stats = state.model.init(jax.random.fold_in(key, 0))
  if mask is None:
    params = _replace_groups(state.params, fresh_params, groups)
    stats = _replace_groups(state.batch_stats, fresh_stats, groups)
  else:
    sel = _combine(block_mask(state.params, groups), mask)
    params = jax.tree.map(lambda p, f, m: jnp.where(m > 0, f.astype(p.dtype), p), state.params, fresh_params, sel)
    stats = state.batch_stats
  return train_blocks(state, data, jax.random.fold_in(key, 1), config, hparams, groups, params=params,
                      batch_stats=stats, mask=mask)
