"""Image-classification datasets as host numpy arrays.

Every loader returns a :class:`Dataset` with ``uint8`` NHWC images and ``int32`` labels, so that a
whole training set can live on the accelerator and batches are gathered inside jitted code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import numpy as np

# tfds names the user can rely on (any other tfds image-classification name works too).
TFDS_NAMES = ("cifar10", "cifar100", "svhn_cropped", "mnist", "fashion_mnist", "imagenette")
BUILTIN_NAMES = ("digits",)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test image-classification split held in host memory.

  Attributes:
    name: the name it was loaded under (``digits``, ``cifar10``, ``npz:/path``).
    x_train: ``uint8 [N_train, H, W, C]`` images.
    y_train: ``int32 [N_train]`` labels in ``[0, num_classes)``.
    x_test: ``uint8 [N_test, H, W, C]``.
    y_test: ``int32 [N_test]``.
    num_classes: number of classes.
    mean: per-channel mean of ``x_train / 255``, ``float32 [C]`` (used to normalise inputs).
    std: per-channel standard deviation of ``x_train / 255``, ``float32 [C]``.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

  def subset(self, n_train: int | None = None, n_test: int | None = None, *, seed: int = 0) -> "Dataset":
    """A random, class-mixed subset (for CPU-scale runs); keeps mean/std of the full set."""
    rng = np.random.default_rng(seed)
    def pick(n, total):
      return np.sort(rng.permutation(total)[:n]) if n is not None and n < total else np.arange(total)
    tr, te = pick(n_train, len(self.y_train)), pick(n_test, len(self.y_test))
    return dataclasses.replace(self, x_train=self.x_train[tr], y_train=self.y_train[tr],
                               x_test=self.x_test[te], y_test=self.y_test[te])


def _finish(name, x_train, y_train, x_test, y_test, num_classes=None) -> Dataset:
  x_train, x_test = _as_nhwc_uint8(x_train, f"{name} x_train"), _as_nhwc_uint8(x_test, f"{name} x_test")
  y_train = np.asarray(y_train).astype(np.int32).reshape(-1)
  y_test = np.asarray(y_test).astype(np.int32).reshape(-1)
  if len(y_train) != len(x_train) or len(y_test) != len(x_test):
    raise ValueError(f"{name}: {len(x_train)} train images but {len(y_train)} labels "
                     f"(test: {len(x_test)} vs {len(y_test)})")
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(f"{name}: train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ")
  if num_classes is None:
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
  for split, y in (("train", y_train), ("test", y_test)):
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(f"{name}: {split} labels must lie in [0, {num_classes}), got range "
                       f"[{y.min()}, {y.max()}]")
  xf = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64) / 255.0
  mean = tuple(float(v) for v in xf.mean(0))
  std = tuple(float(max(v, 1e-3)) for v in xf.std(0))
  return Dataset(name, x_train, y_train, x_test, y_test, int(num_classes), mean, std)


def _as_nhwc_uint8(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"{what}: images must be NHWC (rank 4) or NHW (rank 3), got shape {x.shape}")
  if x.dtype == np.uint8:
    return x
  if np.issubdtype(x.dtype, np.floating):
    if not np.isfinite(x).all():
      raise ValueError(f"{what}: images contain NaN or inf")
    if x.min() < 0.0 or x.max() > 1.0:
      raise ValueError(f"{what}: float images must lie in [0, 1], got range [{x.min()}, {x.max()}]")
    return np.round(x * 255.0).astype(np.uint8)
  if np.issubdtype(x.dtype, np.integer) and x.min(initial=0) >= 0 and x.max(initial=0) <= 255:
    return x.astype(np.uint8)
  raise ValueError(f"{what}: images must be uint8 or float in [0, 1], got dtype {x.dtype}")


def load_digits() -> Dataset:
  """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): the embedded default.

  Split deterministically into 1437 train and 360 test images (stratified, seed 0).
  """
  from sklearn.datasets import load_digits as _load
  from sklearn.model_selection import train_test_split

  d = _load()
  x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [1797, 8, 8, 1]
  y = d.target.astype(np.int32)
  xtr, xte, ytr, yte = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
  return _finish("digits", xtr, ytr, xte, yte, 10)


def load_tfds(name: str, *, data_dir: str | None = None, download: bool = False) -> Dataset:
  """Any tfds image-classification dataset through ``tfds.data_source`` (no TensorFlow needed).

  Args:
    name: tfds name, e.g. ``cifar10``, optionally with a config/version (``imagenette/160px``).
    data_dir: tfds data directory (default: tfds' own).
    download: whether tfds may download and prepare the data (needs network).
  """
  import tensorflow_datasets as tfds

  try:
    sources = {s: tfds.data_source(name, split=s, data_dir=data_dir, download=download)
               for s in ("train", "test")}
  except Exception as e:  # tfds raises many types; keep the message on one line
    if isinstance(e, KeyError) and "test" in str(e):
      # datasets without a test split (e.g. imagenette has validation)
      sources = {"train": tfds.data_source(name, split="train", data_dir=data_dir, download=download),
                 "test": tfds.data_source(name, split="validation", data_dir=data_dir, download=download)}
    else:
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ValueError(f"tfds dataset {name!r} could not be loaded (download={download}, "
                       f"data_dir={data_dir}): {msg}") from None
  arrays = {}
  num_classes = None
  for split, src in sources.items():
    records = _read_all(src)
    image_key = "image" if "image" in records[0] else next(k for k in records[0] if "image" in k)
    imgs = [np.asarray(r[image_key]) for r in records]
    if len({im.shape for im in imgs}) != 1:
      raise ValueError(f"tfds dataset {name!r}: images of different sizes; pick a fixed-size "
                       f"config (e.g. imagenette/160px) or resize it into an npz file")
    arrays[split] = (np.stack(imgs), np.asarray([r["label"] for r in records]))
    try:
      num_classes = src.dataset_info.features["label"].num_classes
    except Exception:  # mocked or missing metadata
      pass
  return _finish(name, *arrays["train"], *arrays["test"], num_classes)


def _read_all(src):
  n = len(src)
  try:
    return list(src.__getitems__(list(range(n))))
  except Exception:
    return [src[i] for i in range(n)]


def load_npz(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Dataset:
  """A local ``.npz`` file.

  Two layouts are understood: plain arrays ``x_train, y_train, x_test, y_test`` (images NHWC or NHW,
  uint8 or float in [0, 1]); or JPEG bytes ``train_jpeg, train_offsets, y_train`` and the same for
  ``test`` (image i is ``train_jpeg[train_offsets[i]:train_offsets[i + 1]]``). JPEG files are decoded
  once with Pillow and the decoded arrays cached next to the file (or in ``cache_dir`` /
  ``~/.cache/jaxunlearn`` when that folder is not writable).
  """
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"npz file not found: {str(path)!r}")
  try:
    d = np.load(path, allow_pickle=False)
    keys = set(d.files)
  except Exception as e:
    raise ValueError(f"{str(path)!r} is not a readable npz file: {e}") from None
  name = f"npz:{path}"
  classes = int(len(d["classes"])) if "classes" in keys else None
  if {"x_train", "y_train", "x_test", "y_test"} <= keys:
    return _finish(name, d["x_train"], d["y_train"], d["x_test"], d["y_test"], classes)
  if {"train_jpeg", "train_offsets", "y_train", "test_jpeg", "test_offsets", "y_test"} <= keys:
    cache = _cache_path(path, cache_dir)
    if cache.is_file():
      c = np.load(cache)
      return _finish(name, c["x_train"], d["y_train"], c["x_test"], d["y_test"], classes)
    x_train = decode_jpeg_bytes(d["train_jpeg"], d["train_offsets"])
    x_test = decode_jpeg_bytes(d["test_jpeg"], d["test_offsets"])
    _atomic_savez(cache, x_train=x_train, x_test=x_test)
    return _finish(name, x_train, d["y_train"], x_test, d["y_test"], classes)
  raise ValueError(f"{str(path)!r} has keys {sorted(keys)}; expected x_train/y_train/x_test/y_test "
                   f"or train_jpeg/train_offsets/y_train/test_jpeg/test_offsets/y_test")


def decode_jpeg_bytes(buf: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Decodes concatenated JPEG files into ``uint8 [N, H, W, 3]``."""
  from PIL import Image

  buf = np.asarray(buf, dtype=np.uint8)
  return np.stack([np.asarray(Image.open(io.BytesIO(buf[a:b].tobytes())).convert("RGB"))
                   for a, b in zip(offsets[:-1], offsets[1:])])


def _cache_path(path: Path, cache_dir) -> Path:
  stat = path.stat()
  tag = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
  fname = f"{path.stem}.decoded-{tag}.npz"
  candidates = [Path(cache_dir)] if cache_dir else [path.parent, Path.home() / ".cache" / "jaxunlearn"]
  for c in candidates:
    if (c / fname).is_file():
      return c / fname
  for c in candidates:
    try:
      c.mkdir(parents=True, exist_ok=True)
      if os.access(c, os.W_OK):
        return c / fname
    except OSError:
      continue
  raise ValueError(f"no writable cache folder for decoded {str(path)!r} (tried {[str(c) for c in candidates]})")


def _atomic_savez(path: Path, **arrays):
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_dataset(name: str, *, data_dir: str | None = None, download: bool = False,
                 cache_dir: str | None = None) -> Dataset:
  """Loads a dataset by name.

  Args:
    name: ``digits`` (embedded, no download), ``npz:PATH`` for a local file, or a tfds name
      (``cifar10``, ``cifar100``, ``svhn_cropped``, ``mnist``, ``fashion_mnist``, ``imagenette``, ...).
    data_dir: tfds data directory.
    download: let tfds download (needs network; default False so offline runs fail fast).
    cache_dir: where decoded JPEG npz files are cached.

  Returns:
    A :class:`Dataset` with uint8 NHWC images.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
  if name == "digits":
    return load_digits()
  if name.startswith("npz:"):
    return load_npz(name[4:], cache_dir=cache_dir)
  if name.endswith(".npz"):
    return load_npz(name, cache_dir=cache_dir)
  import tensorflow_datasets as tfds

  base = name.split("/")[0].split(":")[0]
  if base not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(f"unknown dataset {name!r}: use digits, npz:PATH or a tfds name such as "
                     f"{', '.join(TFDS_NAMES)}")
  return load_tfds(name, data_dir=data_dir, download=download)
