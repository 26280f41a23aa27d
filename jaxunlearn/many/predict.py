"""predict_many and its summaries: eval-mode logits of M stacked models, flip / airbench test-time augmentation."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxunlearn.many.engine import ChunkedRun
from jaxunlearn.many.engine import prepare
from jaxunlearn.many.engine import round_chunk
from jaxunlearn.many.memory import free_bytes
from jaxunlearn.many.memory import host_chunk
from jaxunlearn.many.programs import predict_program
from jaxunlearn.many.stack import num_models_of
from jaxunlearn.train import ModelState

TTA_LEVELS = (0, 1, 2)


def _translate_diagonal(x, shift: int):
  """``x`` moved by ``shift`` pixels along both axes (``-1``: up-left view), reflection padding."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  o = 1 + shift
  return xp[:, o:o + x.shape[1], o:o + x.shape[2], :]


def predict_many(states: ModelState, x, *, flip: bool = False, tta: int = 0, batch_size: int = 512,
                 chunk_size: int | None = None, strategy: str = "vmap", devices=None,
                 progress: bool = False, desc: str = "predict") -> np.ndarray:
  """Eval-mode logits of M stacked models on images ``x [N, H, W, C]``.

  Args:
    states: stacked ``ModelState`` (leading axis M).
    x: images.
    flip: also query the mirror image (horizontal flip), the second LiRA augmentation.
    tta: test-time augmentation as airbench's ``infer(..., tta_level)`` (not with ``flip``): 0
      none; 1 the mean of the logits of the image and of its mirror image (2 passes); 2 (6
      passes) ``0.5 * tta1(x) + 0.25 * (tta1(up_left(x)) + tta1(down_right(x)))``, the views
      moved by one pixel along both axes with reflection padding.
    batch_size: images per forward pass (per model).
    chunk_size, strategy, devices, progress, desc: as in :func:`train_many`; where the device reports no
      free memory (the CPU) the default chunk holds at most :data:`jaxunlearn.many.memory.HOST_IMAGES_PER_STEP` images per step.

  Returns:
    ``float32`` numpy ``[M, N, C]``, or ``[M, N, 2, C]`` with ``flip`` (index 1 = mirrored).
  """
  if isinstance(tta, bool) or tta not in TTA_LEVELS:
    raise ValueError(f"TTA level must be 0, 1 or 2, got {tta!r}")
  if tta and flip:
    raise ValueError("give flip or tta, not both (tta already averages over the mirror image)")
  if tta:
    kw = dict(batch_size=batch_size, chunk_size=chunk_size, strategy=strategy, devices=devices,
              progress=progress, desc=desc)
    x = jnp.asarray(x)
    out = predict_many(states, x, flip=True, **kw).mean(axis=2)
    if tta == 2 and x.shape[0]:
      out = 0.5 * out + 0.25 * (predict_many(states, _translate_diagonal(x, -1), flip=True, **kw).mean(axis=2)
                                + predict_many(states, _translate_diagonal(x, 1), flip=True, **kw).mean(axis=2))
    return out
  m = _num_models(states, x, "predict_many")
  n = int(np.shape(x)[0])
  if n == 0:
    c = states.model.num_classes
    return np.zeros((m, 0, 2, c) if flip else (m, 0, c), np.float32)
  out = _predict_run(states, x, None, flip=flip, batch_size=batch_size, chunk_size=chunk_size, strategy=strategy,
                     devices=devices, progress=progress, desc=desc)
  return out if flip else out[:, :, 0]


def _num_models(states: ModelState, x, who: str) -> int:
  """M of stacked ``states``, after checking them and the images' shape (ValueError naming ``who``)."""
  m = num_models_of(states)
  if m is None:
    raise ValueError(f"{who} needs stacked states (a leading model axis); use stack_states")
  if np.ndim(x) != 4 or tuple(np.shape(x)[1:]) != states.model.input_shape:
    raise ValueError(f"images must be [N, {', '.join(map(str, states.model.input_shape))}], got shape {np.shape(x)}")
  return m


def _predict_run(states: ModelState, x, y, *, flip, batch_size, chunk_size, strategy, devices, progress, desc):
  """The chunked predict program over M models: logits ``[M, N, A, C]``, or confidences ``[M, N, A]`` given ``y``."""
  m, n = num_models_of(states), int(np.shape(x)[0])
  mesh, chunk, strategy = prepare(m, chunk_size, devices, strategy)
  batch = max(1, min(batch_size, n))
  if chunk_size is None and free_bytes(list(mesh.devices.flat)) is None:  # no memory to fit against: bound it
    chunk = round_chunk(host_chunk(batch * (2 if flip else 1), mesh.size), m, mesh.size)
  conf = y is not None
  program = predict_program(states.model, n, batch, bool(flip), strategy, mesh, confidence=conf)
  shared = {"x": jnp.asarray(x)} | ({"y": jnp.asarray(y, jnp.int32)} if conf else {})
  run = ChunkedRun(program, {"params": states.params, "batch_stats": states.batch_stats}, shared,
                   m, chunk, mesh, progress=progress, desc=desc, to_host=True)
  return np.asarray(run(), np.float32)


def confidences_many(states: ModelState, x, y, *, flip: bool = True, batch_size: int = 512,
                     chunk_size: int | None = None, strategy: str = "vmap", devices=None, progress: bool = False,
                     desc: str = "predict") -> np.ndarray:
  """Logit-scaled confidences ``[M, N, A]`` of M models (``A = 2`` with ``flip``, else 1), as float64.

  The score LiRA, U-LiRA and the challenge's forget quality use (``jaxunlearn.metrics.logit_confidence``),
  computed ON THE DEVICE inside the predict program in float32 with the stable formula of
  :func:`jaxunlearn.many.programs.device_confidence` (equal to the float64 host formula within float32
  rounding, 1e-5 relative, saturation included), so only ``[M, N, A]`` comes back, not the ``C``-times
  larger logits and their float64 temporaries. The statistics downstream run in float64 on the host.
  Options as :func:`predict_many`'s.
  """
  y = np.asarray(y)
  if y.shape != (np.shape(x)[0],):
    raise ValueError(f"labels must have shape ({np.shape(x)[0]},), got {y.shape}")
  m = _num_models(states, x, "confidences_many")
  c = states.model.num_classes
  if y.size and (y.min() < 0 or y.max() >= c):
    raise ValueError(f"labels must lie in [0, {c}), got range [{y.min()}, {y.max()}]")
  if y.size == 0:
    return np.zeros((m, 0, 2 if flip else 1), np.float64)
  out = _predict_run(states, x, y, flip=flip, batch_size=batch_size, chunk_size=chunk_size, strategy=strategy,
                     devices=devices, progress=progress, desc=desc)
  return out.astype(np.float64)


def accuracies_many(states: ModelState, x, y, **kw) -> np.ndarray:
  """Accuracy ``float64 [M]`` of each of M stacked models on ``(x, y)``."""
  logits = predict_many(states, x, **kw)
  return (np.argmax(logits, -1) == np.asarray(y)[None]).mean(1)
