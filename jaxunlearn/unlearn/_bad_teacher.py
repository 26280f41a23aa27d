"""Bad Teacher: distil from the original on retain examples and from a random network on forget ones."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxunlearn.train import ModelState
from jaxunlearn.train import OptimConfig
from jaxunlearn.train import check_real
from jaxunlearn.train import epoch_batches
from jaxunlearn.train import hparam
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearn._base import check_loop_fields
from jaxunlearn.unlearn._base import drive
from jaxunlearn.unlearn._base import images
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._distill import distill_kl
from jaxunlearn.unlearn._registry import register


@dataclasses.dataclass(frozen=True)
class BadTeacherConfig:
  """Bad Teacher (Chundawat, Tarun, Mandal & Kankanhalli, AAAI 2023, "Can bad teaching induce
  forgetting? Unlearning in deep networks using an incompetent teacher").

  Paper settings: 1 epoch over a 30 % subset of the retain set plus the forget set, Adam lr 1e-4,
  KL divergence at temperature 1 (batch 256 and no weight decay are ours).

  Attributes:
    epochs: passes over the mixed set.
    retain_fraction: fraction of the retain set drawn (afresh each epoch) into the mixed set (static:
      it sets the number of steps).
    kd_T: distillation temperature (hyperparameter).
    batch_size: batch size over the mixed set.
    optim: optimizer (see ``OptimConfig``).
    augment: random crop + flip (the same images go to student and teachers).
  """

  epochs: int = 1
  retain_fraction: float = 0.3
  kd_T: float = hparam(1.0)
  batch_size: int = 256
  optim: OptimConfig = OptimConfig(optimizer="adam", lr=1e-4, momentum=0.9, weight_decay=0.0, schedule="constant")
  augment: bool = False

  def __post_init__(self):
    check_loop_fields(self)
    check_real(self, "retain_fraction", lo=0.0, hi=1.0)
    check_real(self, "kd_T", lo=0.0, lo_open=True)


def incompetent_teacher(state: ModelState, key: jax.Array) -> ModelState:
  """The randomly initialised teacher of :func:`bad_teacher` run with ``key`` (``init(fold_in(key, 0))``)."""
  params, stats = state.model.init(jax.random.fold_in(key, 0))
  return ModelState(params, stats, state.model)


@register("bad_teacher", BadTeacherConfig)
def bad_teacher(state: ModelState, data: UnlearnData, key: jax.Array, config: BadTeacherConfig, hparams, *,
                mask=None) -> tuple[ModelState, dict]:
  """Bad Teacher: the student (a copy of the original) distils from the competent teacher (the original)
  on retain examples and from an incompetent, randomly initialised teacher on forget examples.

  Each epoch takes ``round(retain_fraction * R)`` random retain indices plus every forget index, permutes
  the union and cuts it into batches; a per-example flag picks the target distribution. The loss is
  ``mean_b KL(softmax(teacher_b / T) || softmax(student_b / T))`` (no ``T^2``), teachers in eval mode,
  student in train mode. The incompetent teacher is :func:`incompetent_teacher` ``(state, key)``; the run
  itself uses ``fold_in(key, 1)``.

  Returns:
    ``(state, metrics)``: per-epoch ``loss``, ``retain_kl`` and ``forget_kl`` (KL to the respective
    teacher, averaged over the batch's retain / forget examples), each ``[epochs]``.
  """
  model, temp, aug = state.model, hparams["kd_T"], config.augment
  good = state
  bad = incompetent_teacher(state, key)
  k_sub = int(round(config.retain_fraction * data.retain.shape[0]))
  f = data.forget.shape[0]
  pos = jnp.arange(k_sub + f)
  spe = steps_per_epoch(k_sub + f, config.batch_size)

  def plan(k, e):
    ks, kp = jax.random.split(k)
    sub = jax.random.permutation(ks, data.retain)[:k_sub]
    union = jnp.concatenate([sub, data.forget])
    flags = jnp.concatenate([jnp.zeros((k_sub,), bool), jnp.ones((f,), bool)])
    return epoch_batches(kp, pos, config.batch_size).map(lambda p: {"idx": union[p], "bad": flags[p]})

  def loss_fn(params, stats, row, key):
    x = images(data.x[row["idx"]], key, aug, model.flip_ok)
    s, new_stats = model.apply(params, stats, x, train=True)
    tg = model.apply(good.params, good.batch_stats, x, train=False)[0]
    tb = model.apply(bad.params, bad.batch_stats, x, train=False)[0]
    flag = row["bad"]
    target = jax.lax.stop_gradient(jnp.where(flag[:, None], tb, tg))
    kl = distill_kl(s, target, temp)
    loss = jnp.mean(kl)
    nf = jnp.sum(flag)
    nr = flag.shape[0] - nf
    return loss, (new_stats, {"loss": loss,
                              "retain_kl": jnp.sum(jnp.where(flag, 0.0, kl)) / jnp.maximum(nr, 1),
                              "forget_kl": jnp.sum(jnp.where(flag, kl, 0.0)) / jnp.maximum(nf, 1)})

  return drive(state, jax.random.fold_in(key, 1), config, hparams, loss_fn, plan, spe, mask=mask)
