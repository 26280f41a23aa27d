"""``jaxunlearn data convert``: downloaded archives (generated here in the real layouts, never
downloaded) into the npz file ``npz:PATH`` reads, pixel for pixel."""

import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from jaxunlearn import cli
from jaxunlearn import data as jd

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(rng, n):
  return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _cifar_rows(x):
  """NHWC -> CIFAR's rows: the 1024 red values (row-major 32x32), then green, then blue."""
  return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)


def _add(tf, name, payload: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tf.addfile(info, io.BytesIO(payload))


def _blocks(rng, n):
  """Images of 8x8 single-colour blocks: JPEG keeps them within a few grey levels."""
  return np.repeat(np.repeat(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), 8, 1), 8, 2)


def _cifar10_python(path, rng, per_batch=3, n_test=4, images=_images):
  """``cifar-10-python.tar.gz``'s layout: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
  pickled dicts with bytes keys, ``data`` uint8 [N, 3072] and ``labels`` a list."""
  xs, ys = [], []
  with tarfile.open(path, "w:gz") as tf:
    for b in range(1, 6):
      x, y = images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
      y[0] = 0 if b == 1 else y[0]  # (labels without a 0 would be refused as 1-based)
      xs.append(x)
      ys += y
      _add(tf, f"cifar-10-batches-py/data_batch_{b}", pickle.dumps(
          {b"batch_label": b"training batch", b"labels": y, b"data": _cifar_rows(x), b"filenames": [b"a.png"] * per_batch},
          protocol=2))
    xt, yt = images(rng, n_test), rng.integers(0, 10, n_test).tolist()
    _add(tf, "cifar-10-batches-py/test_batch", pickle.dumps({b"labels": yt, b"data": _cifar_rows(xt)}, protocol=2))
    _add(tf, "cifar-10-batches-py/batches.meta", pickle.dumps(
        {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, protocol=2))
    _add(tf, "cifar-10-batches-py/readme.html", b"<html></html>")
  return np.concatenate(xs), np.asarray(ys), xt, np.asarray(yt)


def test_cifar10_python_archive_converts_pixel_for_pixel(tmp_path, capsys):
  x, y, xt, yt = _cifar10_python(tmp_path / "cifar-10-python.tar.gz", np.random.default_rng(0))
  out = tmp_path / "cifar10.npz"
  assert cli.main(["data", "convert", str(tmp_path / "cifar-10-python.tar.gz"), str(out)]) == 0
  printed = capsys.readouterr().out
  assert "15 train / 4 test images of 32x32x3, 10 classes (airplane" in printed and f"npz:{out}" in printed
  ds = jd.load_dataset(f"npz:{out}")
  np.testing.assert_array_equal(ds.x_train, x)   # channel planes and row order right (no transpose)
  np.testing.assert_array_equal(ds.y_train, y)
  np.testing.assert_array_equal(ds.x_test, xt)
  np.testing.assert_array_equal(ds.y_test, yt)
  assert ds.num_classes == 10 and list(np.load(out)["classes"]) == CLASSES


def test_cifar10_python_archive_to_jpeg_layout(tmp_path, capsys):
  x, y, _, yt = _cifar10_python(tmp_path / "c.tar.gz", np.random.default_rng(1), images=_blocks)
  out = tmp_path / "cifar10_jpeg.npz"
  assert cli.main(["data", "convert", str(tmp_path / "c.tar.gz"), str(out), "--jpeg", "--jpeg-quality", "95"]) == 0
  with np.load(out) as d:
    assert {"train_jpeg", "train_offsets", "test_jpeg", "test_offsets", "y_train", "y_test", "classes"} <= set(d.files)
    assert "x_train" not in d.files and d["train_offsets"].shape == (16,)
  ds = jd.load_dataset(f"npz:{out}", cache_dir=str(tmp_path / "cache"))
  assert ds.x_train.shape == (15, 32, 32, 3) and ds.num_classes == 10
  def jpeg_roundtrip(a):  # what the file must hold: PIL's JPEG at quality 95, 4:2:0
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95, subsampling=2)
    return np.asarray(Image.open(buf).convert("RGB"))
  np.testing.assert_array_equal(ds.x_train, np.stack([jpeg_roundtrip(a) for a in x]))
  assert np.abs(ds.x_train.astype(int) - x).mean() < 12  # the same pictures (unrelated ones differ by ~85)
  np.testing.assert_array_equal(ds.y_train, y)
  np.testing.assert_array_equal(ds.y_test, yt)


def test_cifar10_binary_and_cifar100_python_archives(tmp_path):
  rng = np.random.default_rng(2)
  x, y = _images(rng, 5), np.arange(5) * 2
  rec = np.concatenate([y[:, None].astype(np.uint8), _cifar_rows(x)], 1).tobytes()
  with tarfile.open(tmp_path / "bin.tar.gz", "w:gz") as tf:
    for b in range(1, 6):
      _add(tf, f"cifar-10-batches-bin/data_batch_{b}.bin", rec)
    _add(tf, "cifar-10-batches-bin/test_batch.bin", rec)
    _add(tf, "cifar-10-batches-bin/batches.meta.txt", ("\n".join(CLASSES) + "\n\n").encode())
  r = jd.convert_archive(tmp_path / "bin.tar.gz", tmp_path / "b.npz")
  assert r["layout"] == "cifar-binary" and r["train"] == 25 and r["classes"] == CLASSES
  ds = jd.load_dataset(f"npz:{tmp_path / 'b.npz'}")
  np.testing.assert_array_equal(ds.x_train[5:10], x)
  np.testing.assert_array_equal(ds.y_test, y)

  fine = np.asarray([0, 97, 3, 42, 7])
  with tarfile.open(tmp_path / "c100.tar.gz", "w:gz") as tf:
    for split in ("train", "test"):
      _add(tf, f"cifar-100-python/{split}", pickle.dumps(
          {b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(), b"data": _cifar_rows(x)}, protocol=5))
    _add(tf, "cifar-100-python/meta", pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
  r = jd.convert_archive(tmp_path / "c100.tar.gz", tmp_path / "c100.npz")
  ds = jd.load_dataset(f"npz:{tmp_path / 'c100.npz'}")
  assert r["layout"] == "cifar-python" and ds.num_classes == 100   # the names, not the largest label, set K
  np.testing.assert_array_equal(ds.y_train, fine)
  np.testing.assert_array_equal(ds.x_test, x)


def _png(a):
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="PNG")
  return buf.getvalue()


def test_image_folder_zip_and_folder(tmp_path):
  """ImageFolder layout: classes are the sorted folder names; greyscale stays one channel."""
  rng = np.random.default_rng(3)
  imgs = {(s, c, i): rng.integers(0, 256, (6, 5), dtype=np.uint8)
          for s in ("train", "val") for c in ("zebra", "ant") for i in range(2)}
  with zipfile.ZipFile(tmp_path / "f.zip", "w") as z:
    for (s, c, i), a in imgs.items():
      z.writestr(f"root/{s}/{c}/{i}.png", _png(a))
    z.writestr("root/README.txt", "not an image")
  r = jd.convert_archive(tmp_path / "f.zip", tmp_path / "f.npz")
  ds = jd.load_dataset(f"npz:{tmp_path / 'f.npz'}")
  assert r["layout"] == "image-folder" and r["classes"] == ["ant", "zebra"] and ds.image_shape == (6, 5, 1)
  np.testing.assert_array_equal(ds.y_train, [0, 0, 1, 1])
  np.testing.assert_array_equal(ds.x_train[0, ..., 0], imgs[("train", "ant", 0)])
  np.testing.assert_array_equal(ds.x_test[3, ..., 0], imgs[("val", "zebra", 1)])

  # a folder of JPEG files, --jpeg: the files' bytes are copied, not re-encoded
  for (s, c, i), a in imgs.items():
    (tmp_path / "dir" / s / c).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([a] * 3, -1)).save(tmp_path / "dir" / s / c / f"{i}.jpg", quality=80)
  jd.convert_archive(tmp_path / "dir", tmp_path / "j.npz", jpeg=True)
  with np.load(tmp_path / "j.npz") as d:
    assert d["train_jpeg"][d["train_offsets"][0]:d["train_offsets"][1]].tobytes() == \
        (tmp_path / "dir" / "train" / "ant" / "0.jpg").read_bytes()


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(b"nothing"), "neither a folder nor a tar / zip archive"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("x/readme.txt", "hi"), "no known layout found"),
    (lambda p: _sizes(p), "resize the images to one size first"),
    (lambda p: _evil(p), "refusing to build posix.system"),
])
def test_bad_sources_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, make, needle):
  src, out = tmp_path / "src.zip", tmp_path / "o.npz"
  make(src)
  assert cli.main(["data", "convert", str(src), str(out)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("jaxunlearn: error: data convert:") and needle in err
  assert not out.exists()


def _sizes(p):
  with zipfile.ZipFile(p, "w") as z:
    z.writestr("train/a/0.png", _png(np.zeros((4, 4), np.uint8)))
    z.writestr("test/a/0.png", _png(np.zeros((4, 5), np.uint8)))


class _Evil:
  def __reduce__(self):
    import os
    return (os.system, ("echo pwned",))


def _evil(p):
  with tarfile.open(p, "w") as tf:  # (a tar named .zip: the content decides)
    _add(tf, "b/data_batch_1", pickle.dumps({b"data": _Evil()}))
    _add(tf, "b/test_batch", b"")


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
  _cifar10_python(tmp_path / "c.tar.gz", np.random.default_rng(4), per_batch=1, n_test=1)
  out = tmp_path / "o.npz"
  out.write_bytes(b"keep me")
  assert cli.main(["data", "convert", str(tmp_path / "c.tar.gz"), str(out)]) == 2
  assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
  assert cli.main(["data", "convert", str(tmp_path / "c.tar.gz"), str(out), "--overwrite"]) == 0
  assert jd.load_dataset(f"npz:{out}").x_train.shape == (5, 32, 32, 3)
  assert cli.main(["data", "convert", str(tmp_path / "c.tar.gz"), str(tmp_path / "o.bin")]) == 2
  assert "must end in .npz" in capsys.readouterr().err
