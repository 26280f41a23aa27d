"""The shared fixtures themselves: the test split of ``blobs`` is held out (no training image in it) yet
drawn from the same class prototypes, and the forget-validation set of ``class_data`` is held out too."""

import numpy as np

from conftest import make_blobs


def _shared_rows(a, b):
  """Number of rows of ``a`` that are byte-identical to some row of ``b``."""
  seen = {r.tobytes() for r in np.asarray(b)}
  return sum(r.tobytes() in seen for r in np.asarray(a))


def test_no_test_image_is_a_training_image(blobs):
  x, y, xt, yt = blobs
  assert x.shape == (160, 8, 8, 1) and xt.shape == (80, 8, 8, 1)
  assert _shared_rows(xt, x) == 0
  # the check can fail: one generator for prototypes and noise (the old test split) shares a noise prefix,
  # so all 20 class-0 "test" images were training images
  leaky, leaky_y = make_blobs(20, seed=0)
  assert _shared_rows(leaky[leaky_y == 0], x) == 20


def test_test_split_has_the_training_prototypes(blobs):
  """Fresh noise around the same prototypes: per-class means agree with the training split's (to within the
  noise), and are far from the other classes' means."""
  x, y, xt, yt = blobs
  np.testing.assert_array_equal(np.bincount(yt), [20, 20, 20, 20])
  mean = lambda a, lab, c: a[lab == c].astype(np.float64).mean(0) / 255  # noqa: E731
  same = [np.abs(mean(x, y, c) - mean(xt, yt, c)).mean() for c in range(4)]
  other = [np.abs(mean(x, y, c) - mean(xt, yt, (c + 1) % 4)).mean() for c in range(4)]
  assert max(same) < 0.06 and min(other) > 0.2, (same, other)
  # a different prototype seed would not pass the first bound
  xo, yo = make_blobs(20, seed=1, noise_seed=1)
  assert min(np.abs(mean(x, y, c) - mean(xo, yo, c)).mean() for c in range(4)) > 0.2


def test_forget_validation_set_is_held_out(class_data, class_split):
  x, y = np.asarray(class_data.x), np.asarray(class_data.y)
  xv, yv = np.asarray(class_data.x_val), np.asarray(class_data.y_val)
  assert len(yv) == 20 and set(yv.tolist()) == {0}  # the forget class ...
  assert _shared_rows(xv, x) == 0  # ... but no training (in particular no forget) image
  _, forget = class_split
  assert set(y[forget].tolist()) == {0}
