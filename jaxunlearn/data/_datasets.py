"""Image-classification datasets as host numpy arrays.

Every loader returns a :class:`Dataset` with ``uint8`` NHWC images and ``int32`` labels, so that a
whole training set can live on the accelerator and batches are gathered inside jitted code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from jaxunlearn.atomic import atomic_savez

# tfds names the user can rely on (any other tfds image-classification name works too).
TFDS_NAMES = ("cifar10", "cifar100", "svhn_cropped", "mnist", "fashion_mnist")
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
    notes: what the loader changed in the input, one line each (e.g. channels-first images
      transposed to NHWC); ``jaxunlearn run`` copies them into results.json.
    flip_ok: whether a horizontal flip keeps an image's class (``--augment`` flips only then; the
      LiRA studies' mirror queries default to it). False for digits (``digits``, ``mnist``,
      ``svhn_cropped``), True for natural images and ``npz:`` files.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  notes: tuple[str, ...] = ()
  flip_ok: bool = True

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


def _labels(y, what: str) -> np.ndarray:
  """Integer labels as int64 ``[N]``; float labels only when every value is a whole number."""
  y = np.asarray(y).reshape(-1)
  if np.issubdtype(y.dtype, np.integer):
    return y.astype(np.int64)
  if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
    return y.astype(np.int64)
  raise ValueError(f"{what}: labels must be integers, got dtype {y.dtype}"
                   + (f" with non-integer values (e.g. {y[y != np.round(y)][:1].tolist()})"
                      if np.issubdtype(y.dtype, np.floating) else ""))


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean / std of ``x / 255`` in float64, in chunks (no full float copy of the set)."""
  flat = x.reshape(-1, x.shape[-1])
  s = np.zeros(flat.shape[1], np.float64)
  ss = np.zeros(flat.shape[1], np.float64)
  for i in range(0, len(flat), 1 << 20):
    c = flat[i:i + (1 << 20)].astype(np.float64) / 255.0
    s += c.sum(0)
    ss += np.square(c).sum(0)
  n = max(1, len(flat))
  mean = s / n
  var = np.maximum(ss / n - np.square(mean), 0.0)
  return tuple(float(v) for v in mean), tuple(float(max(np.sqrt(v), 1e-3)) for v in var)


def _channels_first(x) -> bool:
  """``[N, C, H, W]`` with C in {1, 3} and a last axis too long to be channels (as PyTorch saves CIFAR)."""
  return np.ndim(x) == 4 and np.shape(x)[1] in (1, 3) and np.shape(x)[-1] > 4


def _finish(name, x_train, y_train, x_test, y_test, num_classes=None, *, one_based_check: bool = False,
            flip_ok: bool = True) -> Dataset:
  """Validates and converts the four arrays into a :class:`Dataset`.

  Channels-first images (``[N, C, H, W]``, C in {1, 3}, W > 4) are transposed to NHWC with a note
  (on stderr and in ``Dataset.notes``). With ``one_based_check`` (user files), labels ``1..K`` with
  no 0 in either split are refused: they would train a (K+1)-class model with an empty class 0.
  """
  notes = []
  if _channels_first(x_train) and _channels_first(x_test):
    notes.append(f"{name}: images of shape {tuple(np.shape(x_train))} read as channels-first (N, C, H, W) "
                 "and transposed to (N, H, W, C)")
    x_train, x_test = np.transpose(x_train, (0, 2, 3, 1)), np.transpose(x_test, (0, 2, 3, 1))
  x_train, x_test = _as_nhwc_uint8(x_train, f"{name} x_train"), _as_nhwc_uint8(x_test, f"{name} x_test")
  y_train = _labels(y_train, f"{name} y_train")
  y_test = _labels(y_test, f"{name} y_test")
  if (one_based_check and y_train.size and y_train.min() == 1
      and not (y_test.size and y_test.min() == 0)):
    top = int(max(y_train.max(), y_test.max(initial=0)))
    raise ValueError(f"{name}: labels run from 1 to {top} with no label 0 in train or test; that would "
                     f"train a {top + 1}-class model with an empty class 0: save y - 1 (labels 0..{top - 1})")
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
  mean, std = _channel_stats(x_train)
  for n in notes:
    print(f"jaxunlearn: note: {n}", file=sys.stderr, flush=True)
  return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32), int(num_classes),
                 mean, std, tuple(notes), bool(flip_ok))


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
  return _finish("digits", xtr, ytr, xte, yte, 10, flip_ok=False)


def load_tfds(name: str, *, data_dir: str | None = None, download: bool = False) -> Dataset:
  """Any tfds image-classification dataset through ``tfds.data_source`` (no TensorFlow needed).

  Args:
    name: tfds name, e.g. ``cifar10``, optionally with a config/version (``cifar10:3.0.2``). Its
      images must all have one size; a dataset without a ``test`` split uses ``validation``.
    data_dir: tfds data directory (default: tfds' own).
    download: whether tfds may download and prepare the data (needs network).
  """
  import tensorflow_datasets as tfds

  try:
    sources = {s: tfds.data_source(name, split=s, data_dir=data_dir, download=download)
               for s in ("train", "test")}
  except Exception as e:  # tfds raises many types; keep the message on one line
    try:
      if not _missing_test_split(e):
        raise
      # datasets without a test split (e.g. imagenette) use their validation split
      sources = {"train": tfds.data_source(name, split="train", data_dir=data_dir, download=download),
                 "test": tfds.data_source(name, split="validation", data_dir=data_dir, download=download)}
    except Exception as e2:  # noqa: BLE001 -- reported on one line below
      msg = " ".join(str(e2).split()).strip("\"'") or type(e2).__name__
      raise ValueError(f"tfds dataset {name!r} could not be loaded (download={download}, "
                       f"data_dir={data_dir}): {msg}{_tfds_hint(e2, download)}") from None
  arrays = {}
  num_classes = None
  for split, src in sources.items():
    records = _read_all(src)
    image_key = "image" if "image" in records[0] else next(k for k in records[0] if "image" in k)
    imgs = [np.asarray(r[image_key]) for r in records]
    shapes = sorted({im.shape for im in imgs})
    if len(shapes) != 1:
      raise ValueError(f"tfds dataset {name!r}: {split} images have {len(shapes)} different sizes (e.g. "
                       f"{shapes[0]} and {shapes[-1]}); resize them to one size and save an npz file "
                       "(x_train, y_train, x_test, y_test) to load as npz:PATH")
    arrays[split] = (np.stack(imgs), np.asarray([r["label"] for r in records]))
    try:
      num_classes = src.dataset_info.features["label"].num_classes
    except Exception:  # mocked or missing metadata
      pass
  return _finish(name, *arrays["train"], *arrays["test"], num_classes, flip_ok=flip_ok(name))


# Datasets of digits: a mirrored 2, 3, 5 or 7 is not that digit, so --augment does not flip them.
# Fashion-MNIST (clothes), CIFAR and other natural images keep their class under a horizontal flip.
NO_FLIP = ("digits", "mnist", "emnist", "kmnist", "svhn_cropped")


def flip_ok(name: str) -> bool:
  """Whether horizontal flips keep the class for the dataset ``name`` (False for :data:`NO_FLIP`)."""
  return name.split("/")[0].split(":")[0] not in NO_FLIP


def _tfds_hint(e: Exception, download: bool) -> str:
  """What to do next, appended to a tfds loading error: the missing module to install, or (offline)
  that ``--download`` exists, what preparing needs, and the converter for an archive at hand."""
  missing = getattr(e, "name", None) if isinstance(e, ImportError) else None
  if missing is None and "No module named" in str(e):
    missing = str(e).split("No module named", 1)[1].strip(" '\"").split("'")[0] or None
  if missing:
    top = missing.split(".")[0]
    if top in ("tensorflow", "tf_nightly"):
      return (". Preparing a tfds dataset (--download) needs TensorFlow: pip install tensorflow "
              "(reading a prepared one does not); or convert an archive you downloaded yourself: "
              "jaxunlearn data convert ARCHIVE OUT.npz, then --dataset npz:OUT.npz")
    return f". Install the missing module: pip install {top}"
  if download:
    return (". Preparing needs network access and TensorFlow (pip install tensorflow); offline, convert a "
            "downloaded archive instead: jaxunlearn data convert ARCHIVE OUT.npz, then --dataset npz:OUT.npz")
  return (". To prepare it, add --download (download=True) to let tfds fetch and prepare it "
          "(needs network and TensorFlow: pip install tensorflow; reading it afterwards does not), point "
          "--data-dir at prepared array_record data, or convert a downloaded archive: "
          "jaxunlearn data convert ARCHIVE OUT.npz, then --dataset npz:OUT.npz")


def _missing_test_split(e: Exception) -> bool:
  """tfds' error for a dataset without a ``test`` split (``ValueError: Unknown split 'test'...``;
  older versions raised ``KeyError``)."""
  msg = str(e)
  return "test" in msg and (isinstance(e, KeyError) or "Unknown split" in msg or "split" in msg.lower())


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
  once with Pillow and the decoded arrays cached in ``cache_dir`` (default :func:`default_cache_dir`:
  ``$XDG_CACHE_HOME/jaxunlearn`` or ``~/.cache/jaxunlearn``), never next to the data unless asked (a
  cache an earlier version wrote there is still read).
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
  d = _NamedArrays(d, path)
  classes = int(len(d["classes"])) if "classes" in keys else None
  if {"x_train", "y_train", "x_test", "y_test"} <= keys:
    return _finish(name, d["x_train"], d["y_train"], d["x_test"], d["y_test"], classes, one_based_check=True)
  if {"train_jpeg", "train_offsets", "y_train", "test_jpeg", "test_offsets", "y_test"} <= keys:
    cache = _cache_path(path, cache_dir)
    cached = _read_cache(cache)
    if cached is not None:  # (only the cache read is guarded: bad labels must not trigger a re-decode)
      return _finish(name, cached[0], d["y_train"], cached[1], d["y_test"], classes, one_based_check=True)
    x_train = decode_jpeg_bytes(d["train_jpeg"], d["train_offsets"], what=f"{path} train")
    x_test = decode_jpeg_bytes(d["test_jpeg"], d["test_offsets"], what=f"{path} test")
    ds = _finish(name, x_train, d["y_train"], x_test, d["y_test"], classes,  # validate before writing
                 one_based_check=True)
    atomic_savez(cache, x_train=x_train, x_test=x_test)
    return ds
  raise ValueError(f"{str(path)!r} has keys {sorted(keys)}; expected x_train/y_train/x_test/y_test "
                   f"or train_jpeg/train_offsets/y_train/test_jpeg/test_offsets/y_test")


def _read_cache(cache: Path):
  """``(x_train, x_test)`` from a decoded-JPEG cache file; None if absent, damaged or foreign."""
  if not cache.is_file():
    return None
  try:
    with np.load(cache) as c:
      return c["x_train"], c["x_test"]
  except (OSError, KeyError, ValueError, EOFError):
    return None


class _NamedArrays:
  """``npz[key]`` whose read errors (e.g. pickled object arrays) name the file and the key."""

  def __init__(self, npz, path: Path):
    self.npz, self.path = npz, path

  def __getitem__(self, k):
    try:
      return self.npz[k]
    except Exception as e:  # noqa: BLE001 -- numpy raises ValueError / OSError / zipfile errors
      raise ValueError(f"{str(self.path)!r}: array {k!r} cannot be read: {' '.join(str(e).split())}") from None


def decode_jpeg_bytes(buf: np.ndarray, offsets: np.ndarray, *, what: str = "jpeg") -> np.ndarray:
  """Decodes concatenated JPEG files into ``uint8 [N, H, W, 3]``.

  Image i is ``buf[offsets[i]:offsets[i + 1]]``.

  Raises:
    ValueError: offsets that are not increasing or leave the buffer, an image that does not decode,
      or images of different sizes (naming ``what`` and the image).
  """
  from PIL import Image
  from PIL import UnidentifiedImageError

  buf = np.asarray(buf, dtype=np.uint8).reshape(-1)
  offsets = np.asarray(offsets).reshape(-1)
  if offsets.size < 1 or not np.issubdtype(offsets.dtype, np.integer):
    raise ValueError(f"{what}: offsets must be a non-empty integer array, got {offsets.dtype} {offsets.shape}")
  if offsets[0] < 0 or offsets[-1] > buf.size or (np.diff(offsets) <= 0).any():
    raise ValueError(f"{what}: offsets must increase strictly within the {buf.size}-byte buffer "
                     f"(got first {int(offsets[0])}, last {int(offsets[-1])})")
  out = []
  for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
    try:
      img = np.asarray(Image.open(io.BytesIO(buf[a:b].tobytes())).convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
      raise ValueError(f"{what} image {i} (bytes {int(a)}:{int(b)}) is not a decodable JPEG: {e}") from None
    if out and img.shape != out[0].shape:
      raise ValueError(f"{what} image {i} is {img.shape[:2]}, image 0 is {out[0].shape[:2]}: sizes differ")
    out.append(img)
  if not out:
    return np.zeros((0, 1, 1, 3), np.uint8)
  return np.stack(out)


def default_cache_dir() -> Path:
  """Where decoded JPEG npz files are cached by default: ``$XDG_CACHE_HOME/jaxunlearn`` (an absolute
  ``XDG_CACHE_HOME``), else ``~/.cache/jaxunlearn``."""
  base = os.environ.get("XDG_CACHE_HOME", "")
  if not os.path.isabs(base):
    base = os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "jaxunlearn"


def _cache_path(path: Path, cache_dir) -> Path:
  """The decoded-JPEG cache file of ``path``: in ``cache_dir`` (default :func:`default_cache_dir`); an
  existing cache next to the data (where earlier versions wrote it) is read instead when there is none."""
  stat = path.stat()
  tag = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
  fname = f"{path.stem}.decoded-{tag}.npz"
  folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
  legacy = path.parent / fname
  if not (folder / fname).is_file() and legacy.is_file():
    return legacy
  try:  # a real probe (os.access says yes to root on read-only file systems); leaves nothing
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".jaxunlearn-probe-")
    os.close(fd)
    os.unlink(tmp)
  except OSError as e:
    raise ValueError(f"cache folder {str(folder)!r} for the decoded images of {str(path)!r} is not writable "
                     f"({e.strerror}); choose another with --cache-dir (or $XDG_CACHE_HOME)") from None
  return folder / fname


def load_dataset(name: str, *, data_dir: str | None = None, download: bool = False,
                 cache_dir: str | None = None) -> Dataset:
  """Loads a dataset by name.

  Args:
    name: ``digits`` (embedded, no download), ``npz:PATH`` for a local file, or a tfds name
      (``cifar10``, ``cifar100``, ``svhn_cropped``, ``mnist``, ``fashion_mnist``, ...).
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
  if name.startswith("npz:"):  # (``~`` is expanded: npz:~/x.npz)
    return load_npz(os.path.expanduser(name[4:]), cache_dir=cache_dir)
  if name.endswith(".npz"):
    return load_npz(os.path.expanduser(name), cache_dir=cache_dir)
  import tensorflow_datasets as tfds

  base = name.split("/")[0].split(":")[0]
  if base not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(f"unknown dataset {name!r}: use digits, npz:PATH or a tfds name such as "
                     f"{', '.join(TFDS_NAMES)}")
  return load_tfds(name, data_dir=data_dir, download=download)


def carve_holdout(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
  """``(ds without the held-out examples, their indices in ds's train split)``: a stratified
  ``fraction`` of every class of the train split (rounded per class), drawn with ``seed``; the test
  split is untouched. ``jaxunlearn tune``'s validation split and ``jaxunlearn run --holdout``."""
  rng = np.random.default_rng([seed, 0x7A1])
  held = [np.zeros(0, np.int64)]
  for c in np.unique(ds.y_train):
    idx = np.flatnonzero(ds.y_train == c)
    held.append(rng.permutation(idx)[:int(round(fraction * idx.size))])
  held = np.sort(np.concatenate(held))
  keep = np.setdiff1d(np.arange(len(ds.y_train)), held)
  return dataclasses.replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep]), held
