"""SRL (Amnesiac ML's random relabelling) on its defining property, read off the rows the training steps
actually receive: forget examples never carry their true label and get new labels every epoch, retain
examples keep theirs, and each epoch is one shuffled pass over retain + forget."""

import jax
import numpy as np

from jaxunlearn import unlearn as jun
from jaxunlearn.unlearn import _random_label

CFG = jun.RandomLabelConfig(epochs=3, batch_size=32)


def _seen_rows(monkeypatch, name, state, data, key):
  """Runs method ``name`` and records every training row (indices, labels) in step order."""
  seen = []
  real = _random_label.ce_loss

  def spy(model, d, augment, *args, **kwargs):
    inner = real(model, d, augment, *args, **kwargs)

    def loss_fn(params, stats, row, k):
      jax.debug.callback(lambda i, y: seen.append((np.asarray(i), np.asarray(y))), row["idx"], row["y"],
                         ordered=True)
      return inner(params, stats, row, k)

    return loss_fn

  monkeypatch.setattr(_random_label, "ce_loss", spy)
  out = jun.make(name, CFG)(state, data, key)
  jax.effects_barrier()
  return out, seen


def test_srl_labels_are_wrong_resampled_every_epoch_and_retain_labels_kept(monkeypatch, mlp_trained, class_data):
  (state, _), seen = _seen_rows(monkeypatch, "srl", mlp_trained, class_data, jax.random.key(3))
  y = np.asarray(class_data.y)
  forget, retain = np.asarray(class_data.forget), np.asarray(class_data.retain)
  n = len(forget) + len(retain)
  idx = np.concatenate([i for i, _ in seen])
  lab = np.concatenate([l for _, l in seen])
  assert len(idx) == CFG.epochs * n
  per_epoch = []
  for e in range(CFG.epochs):
    i, l = idx[e * n:(e + 1) * n], lab[e * n:(e + 1) * n]
    assert sorted(i) == sorted(np.concatenate([retain, forget]))       # one pass over retain + forget
    is_f = np.isin(i, forget)
    pos = np.flatnonzero(is_f)
    assert pos.max() - pos.min() + 1 > len(forget)                       # mixed in, not a block of its own
    np.testing.assert_array_equal(l[~is_f], y[i[~is_f]])                 # retain labels unchanged
    assert np.all(l[is_f] != y[i[is_f]])                                 # forget labels never true
    per_epoch.append(dict(zip(i[is_f], l[is_f])))
  for a, b in zip(per_epoch, per_epoch[1:]):                             # resampled every epoch
    changed = np.mean([a[k] != b[k] for k in a])
    assert 0.4 < changed < 0.95, changed  # 2/3 expected with 3 wrong classes (40 forget examples)
  # every wrong class is drawn (not a fixed permutation of labels)
  assert set(np.concatenate([list(d.values()) for d in per_epoch])) == {1, 2, 3}


def test_srl_is_random_label_at_its_defaults(mlp_trained, class_data):
  """The alias runs random_label's computation: equal configs give bit-identical models."""
  assert jun.make_config("srl") == jun.make_config("random_label")
  a, _ = jax.jit(jun.make("srl", CFG))(mlp_trained, class_data, jax.random.key(1))
  b, _ = jax.jit(jun.make("random_label", CFG))(mlp_trained, class_data, jax.random.key(1))
  for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
