"""SRL (Amnesiac ML's "Unlearning"): relabel the forget set with random wrong labels, resampled every
epoch, and train on it mixed with the retain set -- registered as an alias of ``random_label``."""

from __future__ import annotations

import jax

from jaxunlearn.train import ModelState
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._random_label import RandomLabelConfig
from jaxunlearn.unlearn._random_label import relabel_run
from jaxunlearn.unlearn._registry import register


@register("srl", RandomLabelConfig)
def srl(state: ModelState, data: UnlearnData, key: jax.Array, config: RandomLabelConfig, hparams, *,
        mask=None) -> tuple[ModelState, dict]:
  """SRL, "successive random relabeling" (DeepUnlearn's name for the "Unlearning" method of Graves,
  Nagisetty & Ganesh, AAAI 2021, "Amnesiac Machine Learning"): the forget set relabelled with randomly
  chosen INCORRECT labels, trained on together with the retain data for a few epochs.

  It is ``random_label`` at its defaults, and runs the very same code (:func:`relabel_run` with a
  :class:`RandomLabelConfig`), so the two agree bit for bit at equal configs:

  * shared: each epoch draws a fresh wrong label for every forget example, uniform over the other
    ``C - 1`` classes (``exclude_true=True``: the true label is never drawn), with the epoch's own key,
    so the labels are resampled every epoch; retain labels are unchanged; retain and relabelled forget
    examples are shuffled together into one pass (``two_pass=False``); SGD on the cross-entropy.
  * different: nothing in the computation. ``random_label``'s presets (``salun_paper``: labels over all
    classes, the true one included, and a forget pass then a retain pass) are NOT SRL; ``srl`` has none.

  Settings: Graves et al. describe training on the relabelled data for one or a few iterations and
  give no single epoch count or optimizer for it that we could check (we had the abstract and
  secondary descriptions, not their full experimental section); ``srl`` keeps ``random_label``'s
  defaults (10 epochs of SGD, lr 0.01, momentum 0.9, weight decay 5e-4, batch 128), which the scale
  rule cuts to the retrained oracle's step budget, as ``random_label``'s.

  Returns:
    ``(state, metrics)``: per-epoch ``loss``/``ce`` and ``acc`` (against the random targets), ``[epochs]``.
  """
  return relabel_run(state, data, key, config, hparams, mask=mask)
