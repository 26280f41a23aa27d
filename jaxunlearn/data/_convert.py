"""``jaxunlearn data convert``: a downloaded dataset archive or image folder into the npz file ``npz:PATH`` reads.

Understood sources (a folder, or a ``.tar`` / ``.tar.gz`` / ``.tgz`` / ``.zip`` archive holding it):

* CIFAR-10 / CIFAR-100 "python version" (``cifar-10-python.tar.gz``: pickled ``data_batch_1..5`` and
  ``test_batch``; ``cifar-100-python.tar.gz``: ``train``, ``test``, fine labels), read with an
  unpickler that builds nothing but numpy arrays, lists, dicts, strings and numbers;
* CIFAR-10 / CIFAR-100 "binary version" (``data_batch_1..5.bin`` and ``test_batch.bin``; ``train.bin``
  and ``test.bin`` with fine labels);
* an image folder ``[ROOT/]train/CLASS/IMAGE`` and ``[ROOT/]test/CLASS/IMAGE`` (``val`` / ``valid`` /
  ``validation`` also name the test split): torchvision's ``ImageFolder`` layout; classes are the
  sorted folder names of both splits, and every image must have one size.

The output is the plain layout (``x_train, y_train, x_test, y_test, classes``; uint8 NHWC, one
channel when every image of a folder is greyscale) or, with ``jpeg=True``, the JPEG-bytes layout
(``train_jpeg, train_offsets, y_train``, the same for ``test``, and ``classes``; JPEG files of a
folder are copied byte for byte, every other image is encoded at ``jpeg_quality`` with 4:2:0
chroma subsampling, as ``../shared/data/cifar10_jpeg.npz``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from jaxunlearn.atomic import atomic_savez

__all__ = ("convert_archive", "LAYOUTS")

LAYOUTS = ("cifar-python", "cifar-binary", "image-folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
TEST_SPLITS = ("test", "val", "valid", "validation")


@dataclasses.dataclass(frozen=True)
class _Source:
  """The regular files of a folder or an archive: POSIX relative path -> a function reading its bytes."""

  name: str
  files: dict[str, Callable[[], bytes]]


def _open_source(src: Path) -> _Source:
  if src.is_dir():
    files = {}
    for root, _, names in os.walk(src):
      for n in names:
        p = Path(root) / n
        if p.is_file():
          files[p.relative_to(src).as_posix()] = p.read_bytes
    return _Source(str(src), files)
  if not src.is_file():
    raise ValueError(f"data convert: {str(src)!r} does not exist")
  if tarfile.is_tarfile(src):
    tf = tarfile.open(src)  # (kept open for the readers below; closed with the process)
    return _Source(str(src), {m.name.removeprefix("./"): (lambda m=m: tf.extractfile(m).read())
                              for m in tf.getmembers() if m.isfile()})
  if zipfile.is_zipfile(src):
    zf = zipfile.ZipFile(src)
    return _Source(str(src), {n: (lambda n=n: zf.read(n)) for n in zf.namelist() if not n.endswith("/")})
  raise ValueError(f"data convert: {str(src)!r} is neither a folder nor a tar / zip archive")


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles CIFAR's batches: numpy arrays and plain containers only (no other class is built)."""

  ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
             ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
             ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f"refusing to build {module}.{name} (a CIFAR batch holds only arrays)")
    if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 1 pickles under numpy 2
      module = "numpy._core." + module[len("numpy.core."):]
    return super().find_class(module, name)


def _unpickle(source: _Source, path: str) -> dict:
  try:
    d = _ArrayUnpickler(io.BytesIO(source.files[path]()), encoding="bytes").load()
  except Exception as e:  # noqa: BLE001 -- a damaged or foreign file: one line naming it
    raise ValueError(f"data convert: {source.name}: {path} is not a CIFAR python batch: "
                     f"{' '.join(str(e).split())}") from None
  if not isinstance(d, dict):
    raise ValueError(f"data convert: {source.name}: {path} holds a {type(d).__name__}, not a CIFAR batch dict")
  return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_pixels(data, what: str) -> np.ndarray:
  """CIFAR rows (1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane) -> NHWC uint8."""
  a = np.asarray(data)
  if a.ndim != 2 or a.shape[1] != 3072:
    raise ValueError(f"data convert: {what}: expected rows of 3072 bytes (32x32x3), got shape {a.shape}")
  return np.ascontiguousarray(a.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _names(v) -> list[str]:
  return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in v]


def _batch_number(path: str) -> int:
  return int(re.search(r"data_batch_(\d+)", path).group(1))


def _by_base(source: _Source) -> dict[str, list[str]]:
  out: dict[str, list[str]] = {}
  for p in source.files:
    out.setdefault(PurePosixPath(p).name, []).append(p)
  return out


def _cifar_python(source: _Source):
  base = _by_base(source)
  batches = sorted((p for p in source.files if re.fullmatch(r"data_batch_\d+", PurePosixPath(p).name)),
                   key=_batch_number)
  if batches and "test_batch" in base:  # CIFAR-10
    parts = [_unpickle(source, p) for p in batches]
    test = _unpickle(source, base["test_batch"][0])
    label = "labels"
    meta = _unpickle(source, base["batches.meta"][0]).get("label_names") if "batches.meta" in base else None
  else:  # CIFAR-100: train / test / meta in one folder
    folder = next(str(PurePosixPath(p).parent) for p in base["train"]
                  if str(PurePosixPath(p).parent / "test") in source.files)
    parts = [_unpickle(source, str(PurePosixPath(folder) / "train"))]
    test = _unpickle(source, str(PurePosixPath(folder) / "test"))
    label = "fine_labels"
    m = str(PurePosixPath(folder) / "meta")
    meta = _unpickle(source, m).get("fine_label_names") if m in source.files else None
  for what, d in [(p, b) for p, b in zip(batches or ["train"], parts)] + [("test", test)]:
    if "data" not in d or label not in d:
      raise ValueError(f"data convert: {source.name}: {what} has keys {sorted(d)}; a CIFAR batch has 'data' "
                       f"and {label!r}")
  x_train = np.concatenate([_cifar_pixels(d["data"], "train") for d in parts])
  y_train = np.concatenate([np.asarray(d[label], np.int64).reshape(-1) for d in parts])
  x_test, y_test = _cifar_pixels(test["data"], "test"), np.asarray(test[label], np.int64).reshape(-1)
  return x_train, y_train, x_test, y_test, (_names(meta) if meta is not None else None)


def _cifar_bin_records(raw: bytes, label_bytes: int, what: str):
  row = label_bytes + 3072
  if len(raw) % row:
    raise ValueError(f"data convert: {what}: {len(raw)} bytes is not a whole number of {row}-byte records")
  a = np.frombuffer(raw, np.uint8).reshape(-1, row)
  return _cifar_pixels(a[:, label_bytes:], what), a[:, label_bytes - 1].astype(np.int64)  # (fine label last)


def _text_names(source: _Source, base, name):
  if name not in base:
    return None
  return [s.strip() for s in source.files[base[name][0]]().decode("utf-8").splitlines() if s.strip()]


def _cifar_binary(source: _Source):
  base = _by_base(source)
  batches = sorted((p for p in source.files if re.fullmatch(r"data_batch_\d+\.bin", PurePosixPath(p).name)),
                   key=_batch_number)
  if batches and "test_batch.bin" in base:  # CIFAR-10: <1 label byte><3072 pixels>
    tr = [_cifar_bin_records(source.files[p](), 1, p) for p in batches]
    te = _cifar_bin_records(source.files[base["test_batch.bin"][0]](), 1, "test_batch.bin")
    names = _text_names(source, base, "batches.meta.txt")
  else:  # CIFAR-100: <coarse label><fine label><3072 pixels>
    tr = [_cifar_bin_records(source.files[base["train.bin"][0]](), 2, "train.bin")]
    te = _cifar_bin_records(source.files[base["test.bin"][0]](), 2, "test.bin")
    names = _text_names(source, base, "fine_label_names.txt")
  return (np.concatenate([x for x, _ in tr]), np.concatenate([y for _, y in tr]), te[0], te[1], names)


def _folder_entries(source: _Source):
  """``{split: [(class, path)]}`` of the image files at ``.../SPLIT/CLASS/FILE``."""
  out = {"train": [], "test": []}
  for p in source.files:
    parts = PurePosixPath(p).parts
    if len(parts) < 3 or PurePosixPath(p).suffix.lower() not in IMAGE_SUFFIXES or parts[-1].startswith("."):
      continue
    split = parts[-3].lower()
    if split == "train":
      out["train"].append((parts[-2], p))
    elif split in TEST_SPLITS:
      out["test"].append((parts[-2], p))
  return out


def _image_folder(source: _Source, jpeg: bool, quality: int):
  from PIL import Image  # noqa: PLC0415

  entries = _folder_entries(source)
  classes = sorted({c for split in entries.values() for c, _ in split})
  index = {c: i for i, c in enumerate(classes)}
  decoded = {}
  first = None
  for split in ("train", "test"):
    imgs = []
    for c, p in sorted(entries[split]):
      raw = source.files[p]()
      try:
        im = Image.open(io.BytesIO(raw))
        im.load()
      except Exception as e:  # noqa: BLE001 -- PIL raises several types for a bad file
        raise ValueError(f"data convert: {source.name}: {p} is not a readable image: {e}") from None
      if first is None:
        first = (p, im.size)
      elif im.size != first[1]:
        raise ValueError(f"data convert: {source.name}: {p} is {im.size[0]}x{im.size[1]} but {first[0]} is "
                         f"{first[1][0]}x{first[1][1]}: resize the images to one size first")
      imgs.append((index[c], raw, im))
    decoded[split] = imgs
  every = [im for split in decoded.values() for _, _, im in split]
  grey = not jpeg and all(im.mode in ("1", "L") for im in every)
  arrays = []
  for split in ("train", "test"):
    y = np.asarray([c for c, _, _ in decoded[split]], np.int64)
    if jpeg:
      blobs = [raw if im.format == "JPEG" and im.mode in ("RGB", "L") else _encode_jpeg(im, quality)
               for _, raw, im in decoded[split]]
      arrays.append((blobs, y))
    else:
      x = np.stack([np.asarray(im.convert("L" if grey else "RGB")) for _, _, im in decoded[split]]) \
          if decoded[split] else np.zeros((0, 1, 1, 1 if grey else 3), np.uint8)
      arrays.append((x[..., None] if grey else x, y))
  return arrays[0][0], arrays[0][1], arrays[1][0], arrays[1][1], classes


def _encode_jpeg(im, quality: int) -> bytes:
  buf = io.BytesIO()
  im.convert("RGB").save(buf, format="JPEG", quality=int(quality), subsampling=2)
  return buf.getvalue()


def _detect(source: _Source) -> str:
  base = _by_base(source)
  names = set(base)
  if "test_batch" in names and any(re.fullmatch(r"data_batch_\d+", n) for n in names):
    return "cifar-python"
  if any(str(PurePosixPath(p).parent / "test") in source.files and
         str(PurePosixPath(p).parent / "meta") in source.files for p in base.get("train", [])):
    return "cifar-python"
  if ("test_batch.bin" in names and any(re.fullmatch(r"data_batch_\d+\.bin", n) for n in names)) or \
     {"train.bin", "test.bin"} <= names:
    return "cifar-binary"
  entries = _folder_entries(source)
  if entries["train"] and entries["test"]:
    return "image-folder"
  raise ValueError(
      f"data convert: {source.name}: no known layout found ({len(source.files)} files); expected CIFAR-10/100's "
      "python or binary archive (data_batch_1..5 + test_batch, or train + test + meta) or image folders "
      "train/CLASS/IMAGE and test/CLASS/IMAGE (test may be val / valid / validation)")


def convert_archive(src, out, *, jpeg: bool = False, jpeg_quality: int = 75, overwrite: bool = False) -> dict:
  """Converts a downloaded dataset archive or folder ``src`` into the npz file ``out``.

  Args:
    src: a folder or ``.tar[.gz]`` / ``.zip`` archive in one of :data:`LAYOUTS` (see the module doc).
    out: the ``.npz`` file to write (atomically); load it with ``load_dataset("npz:OUT")``.
    jpeg: write the JPEG-bytes layout (a quarter of the size for CIFAR-sized images; lossy unless
      the source images are JPEG files already) instead of plain uint8 arrays.
    jpeg_quality: JPEG quality (1-95) of the images encoded for ``jpeg=True``.
    overwrite: replace an existing ``out`` (otherwise an existing file is refused).

  Returns:
    A summary: ``{"layout", "out", "train", "test", "image_shape", "classes"}``.

  Raises:
    ValueError: one line naming the bad input, before ``out`` is written.
  """
  from jaxunlearn.data._datasets import decode_jpeg_bytes  # noqa: PLC0415
  from jaxunlearn.data._datasets import _finish  # noqa: PLC0415

  src, out = Path(os.path.expanduser(str(src))), Path(os.path.expanduser(str(out)))
  if out.suffix != ".npz":
    raise ValueError(f"data convert: output {str(out)!r} must end in .npz (np.savez would append it)")
  if out.exists() and not overwrite:
    raise ValueError(f"data convert: {str(out)!r} exists; pass --overwrite to replace it")
  if out.exists() and not out.is_file():
    raise ValueError(f"data convert: {str(out)!r} exists and is not a file")
  parent = out.parent if str(out.parent) else Path(".")
  if parent.exists() and not (parent.is_dir() and os.access(parent, os.W_OK)):
    raise ValueError(f"data convert: cannot write into {str(parent)!r}")
  if not (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 95):
    raise ValueError(f"data convert: --jpeg-quality must be an integer in [1, 95], got {jpeg_quality!r}")
  source = _open_source(src)
  layout = _detect(source)
  if layout == "image-folder":
    x_train, y_train, x_test, y_test, classes = _image_folder(source, jpeg, jpeg_quality)
  else:
    x_train, y_train, x_test, y_test, classes = (_cifar_python if layout == "cifar-python" else _cifar_binary)(source)
  if len(y_train) == 0 or len(y_test) == 0:
    raise ValueError(f"data convert: {source.name}: {len(y_train)} train and {len(y_test)} test images; "
                     "both splits need at least one")
  top = int(max(y_train.max(), y_test.max())) + 1
  if classes is None or len(classes) < top:
    classes = [str(i) for i in range(top)]
  arrays = {"y_train": y_train, "y_test": y_test, "classes": np.asarray(classes, dtype=str)}
  if jpeg:
    for split, x in (("train", x_train), ("test", x_test)):
      if isinstance(x, np.ndarray):  # CIFAR pixels: encode every image
        from PIL import Image  # noqa: PLC0415
        x = [_encode_jpeg(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im), jpeg_quality) for im in x]
      arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(x), np.uint8)
      arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in x])]).astype(np.int64)
    x_train = decode_jpeg_bytes(arrays["train_jpeg"], arrays["train_offsets"], what=f"{source.name} train")
    x_test = decode_jpeg_bytes(arrays["test_jpeg"], arrays["test_offsets"], what=f"{source.name} test")
  else:
    arrays.update(x_train=x_train, x_test=x_test)
  ds = _finish(f"npz:{out}", x_train, y_train, x_test, y_test, len(classes), one_based_check=True)  # validate
  atomic_savez(out, **arrays)
  return {"layout": layout, "out": str(out), "train": int(len(y_train)), "test": int(len(y_test)),
          "image_shape": list(ds.image_shape), "classes": list(classes), "jpeg": bool(jpeg)}
