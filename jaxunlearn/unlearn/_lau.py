"""Layer Attack Unlearning (Kim, Lee, Woo, AAAI 2024, "Layer Attack Unlearning: Fast and Accurate
Machine Unlearning via Layer Level Attack and Knowledge Distillation").

No official code exists; this follows the paper's description, with the hyperparameters of a public
reimplementation. Only the last linear layer (``params["head"]``) is trained; the body is frozen, so
the penultimate features of the forget set are computed once (eval mode, ``model.features``).

Every epoch starts by syncing a teacher copy of the head to the current student head. For each forget
batch, Partial-PGD attacks the FEATURES (not the pixels) against the teacher head: L-inf, ascending the
cross-entropy of the true label, with the features clamped to the per-feature ``[min, max]`` of the
batch's clean features (their valid range: after a ReLU the minimum is >= 0). For the examples the
student still classifies correctly the target is the teacher's prediction on the adversarial features
(hard label, and softmax at temperature ``T``); for the already misclassified ones it is the student's
own prediction (hard label and soft output, i.e. no push). The student head minimises
``(1 - a) * CE(student(f), hard) + a * T^2 * KL(soft || softmax(student(f) / T))`` (batch mean).
Training stops as soon as a whole batch is misclassified by the student (checked before the batch's
update): a carried ``done`` flag turns all later steps into no-ops (``lax.cond``), so the driver stays
one pure program. Under ``jax.vmap`` (many models, hyperparameter grids) that ``cond`` becomes a
``select``: every PGD step of every batch is computed for every model and the result discarded where
``done``, so the early stop saves no time there (the results are the same).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.attacks import pgd
from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_bool
from jaxunlearn.train import check_int
from jaxunlearn.train import check_real
from jaxunlearn.train import cross_entropy
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import hparam
from jaxunlearn.train import make_optimizer
from jaxunlearn.train import map_batches
from jaxunlearn.train import scan_epochs
from jaxunlearn.train import scan_steps
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._registry import register
from jaxunlearn.unlearn.masks import apply_mask


@dataclasses.dataclass(frozen=True)
class LauConfig:
  """Layer Attack Unlearning settings.

  Attack, distillation and epochs follow a public reimplementation of Kim et al. (2024); the head's
  optimizer (SGD, lr 0.01, momentum 0.9, no weight decay, constant rate) is our choice.

  Attributes:
    epochs: passes over the forget set (at most; early stop), 3.
    batch_size: forget batch size, 64.
    optim: the head's optimizer.
    alpha: weight ``a`` of the distillation term, 0.5 (hyperparameter).
    temperature: distillation temperature ``T``, 4 (hyperparameter).
    eps: L-inf radius of Partial-PGD in feature space, 0.3 (hyperparameter).
    step_size: PGD step, 0.4 (hyperparameter).
    pgd_steps: PGD iterations, 40.
    random_start: start PGD from a random point of the ball (off: the attack starts at the clean
      features and is deterministic).
    early_stop: stop once the student misclassifies a whole batch. Cost: the stop is a ``lax.cond`` on a
      per-model flag, which ``jax.vmap`` (many models in lockstep) turns into a select, so there every
      step still runs its PGD attack and only the update is dropped; one model alone, or the
      ``sequential`` strategy, really skips the work.
  """

  epochs: int = 3
  batch_size: int = 64
  optim: OptimConfig = OptimConfig(lr=0.01, momentum=0.9, weight_decay=0.0, schedule="constant")
  alpha: float = hparam(0.5)
  temperature: float = hparam(4.0)
  eps: float = hparam(0.3)
  step_size: float = hparam(0.4)
  pgd_steps: int = 40
  random_start: bool = False
  early_stop: bool = True

  def __post_init__(self):
    check_loop_fields(self)
    check_int(self, "pgd_steps", lo=0)
    check_real(self, "alpha", lo=0.0, hi=1.0)
    check_real(self, "temperature", lo=0.0, lo_open=True)
    check_real(self, "eps")
    check_real(self, "step_size")
    check_bool(self, "random_start")
    check_bool(self, "early_stop")


def batched_features(model, params, batch_stats, x: jax.Array, index: jax.Array, chunk: int = 256) -> jax.Array:
  """Eval-mode penultimate features ``float32 [K, D]`` of ``x[index]`` (``index`` ``int [K]``), in chunks."""
  f = map_batches(lambda ib: model.features(params, batch_stats, x[ib]), index, chunk)
  return f.reshape(index.shape[0], -1)


def lau_loss(head_logits: jax.Array, teacher_adv_logits: jax.Array, y: jax.Array, *, alpha: float,
             temperature: float) -> jax.Array:
  """LAU's distillation loss for one batch (mean over the batch).

  Args:
    head_logits: student logits on the clean features ``[B, C]`` (differentiated).
    teacher_adv_logits: teacher logits on the adversarial features ``[B, C]``.
    y: true labels ``[B]``.
    alpha: weight of the KL term.
    temperature: distillation temperature.

  Returns:
    ``(1 - alpha) * CE(s, hard) + alpha * T^2 * KL(soft || softmax(s / T))`` where ``(hard, soft)`` is
    the teacher's adversarial prediction for examples the student classifies correctly and the
    student's own (constant) prediction otherwise.
  """
  t = temperature
  s_const = jax.lax.stop_gradient(head_logits)
  ta = jax.lax.stop_gradient(teacher_adv_logits)
  correct = jnp.argmax(s_const, -1) == y
  hard = jnp.where(correct, jnp.argmax(ta, -1), jnp.argmax(s_const, -1))
  log_soft = jnp.where(correct[:, None], jax.nn.log_softmax(ta / t), jax.nn.log_softmax(s_const / t))
  kl = jnp.sum(jnp.exp(log_soft) * (log_soft - jax.nn.log_softmax(head_logits / t)), -1)
  return jnp.mean((1.0 - alpha) * cross_entropy(head_logits, hard) + alpha * t * t * kl)


@register("lau", LauConfig)
def lau(state: ModelState, data: UnlearnData, key: jax.Array, config: LauConfig, hparams, *,
        mask=None) -> tuple[ModelState, dict]:
  """Layer Attack Unlearning: trains only the head on the forget set against Partial-PGD targets.

  Only the forget set of ``data`` is used; of a ``mask`` only the ``head`` part matters (the rest is
  frozen). Keys follow the one training loop (batch order from ``k_perm``, PGD starts from the step keys).

  Returns:
    ``(unlearned state, metrics)`` with per-epoch ``loss`` (mean over the updates taken) and ``acc``
    (student accuracy on the forget batches before their update), ``updates`` (number of head updates
    applied) and ``stopped`` (whether the early stop fired). All non-head parameters and the batch
    statistics are bit-identical to ``state``'s.
  """
  model = state.model
  n = data.forget.shape[0]
  if n == 0:
    raise ValueError("the forget set is empty")
  spe = steps_per_epoch(n, config.batch_size)
  tx = make_optimizer(config.optim, spe, config.epochs, hparams=hparams)
  if mask is not None:
    tx = apply_mask(tx, mask["head"])
  feats = batched_features(model, state.params, state.batch_stats, data.x, data.forget)
  labels = data.y[data.forget]
  head0 = state.params["head"]

  def step(carry, pos, k):
    head, opt, done, teacher = carry
    f, y = feats[pos], labels[pos]
    s_logits = model.head(head, f)
    acc = jnp.mean(jnp.argmax(s_logits, -1) == y)
    if config.early_stop:
      done = done | (acc == 0.0)

    def update(_):
      lo, hi = jnp.min(f, 0), jnp.max(f, 0)
      adv = pgd(lambda z: cross_entropy(model.head(teacher, z), y), f, k,
                eps=hparams["eps"], step_size=hparams["step_size"], steps=config.pgd_steps, norm="linf",
                clip_min=lo, clip_max=hi, random_start=config.random_start)
      t_adv = model.head(teacher, adv)
      loss, g = jax.value_and_grad(
          lambda h: lau_loss(model.head(h, f), t_adv, y, alpha=hparams["alpha"],
                             temperature=hparams["temperature"]))(head)
      upd, new_opt = tx.update(g, opt, head)
      return optax.apply_updates(head, upd), new_opt, loss

    def skip(_):
      return head, opt, jnp.zeros((), jnp.float32)

    head, opt, loss = jax.lax.cond(done, skip, update, None)
    return (head, opt, done, teacher), {"loss": loss, "acc": acc, "applied": jnp.logical_not(done)}

  def epoch(carry, e, k_perm, k_steps):
    batches = epoch_batches(k_perm, jnp.arange(n, dtype=jnp.int32), config.batch_size)
    head, opt, done = carry
    # teacher head := student head at the start of every epoch (carried, so one step function serves all)
    (head, opt, done, _), m = scan_steps(step, (head, opt, done, head), batches, k_steps)
    carry = (head, opt, done)
    applied = m["applied"].astype(jnp.float32)
    return carry, {"loss": jnp.sum(m["loss"] * applied) / jnp.maximum(1.0, jnp.sum(applied)),
                   "acc": jnp.mean(m["acc"]), "updates": jnp.sum(m["applied"].astype(jnp.int32))}

  carry = (head0, tx.init(head0), jnp.zeros((), bool))
  (head, _, done), hist = scan_epochs(epoch, carry, key, config.epochs)
  params = dict(state.params)
  params["head"] = head
  return (ModelState(params, state.batch_stats, model),
          {"loss": hist["loss"], "acc": hist["acc"], "updates": jnp.sum(hist["updates"]), "stopped": done})
