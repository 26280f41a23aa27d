"""The real data next to the repository (``../shared/data/``, see its README): each test skips cleanly
where that folder is absent (a user's checkout, CI); nothing here writes next to the files."""

import pathlib

import numpy as np
import pytest

from jaxunlearn import data as jd

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _need(name: str) -> pathlib.Path:
  path = SHARED / name
  if not path.is_file():
    pytest.skip(f"{path} is absent (real data kept outside the repository, in ../shared/data/)")
  return path


def test_fashion_mnist_npz_loads_as_documented():
  ds = jd.load_dataset(f"npz:{_need('fashion_mnist.npz')}")
  assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
  assert ds.num_classes == 10 and ds.notes == () and ds.flip_ok
  assert np.bincount(ds.y_train).tolist() == [6000] * 10   # the official split
  assert 0.25 < ds.mean[0] < 0.35


def test_cifar10_jpeg_npz_decodes_as_documented():
  """The JPEG-bytes layout: offsets, labels and classes; 20 images decoded (the whole file takes
  ~11 s and load_npz would cache it next to the data, so it is not loaded whole here)."""
  with np.load(_need("cifar10_jpeg.npz")) as d:
    buf, off, y, classes = d["train_jpeg"], d["train_offsets"], d["y_train"], d["classes"]
    assert off.shape == (50001,) and y.shape == (50000,) and d["test_offsets"].shape == (10001,)
    assert np.bincount(y).tolist() == [5000] * 10 and list(classes)[:2] == ["airplane", "automobile"]
    idx = np.r_[0:10, 49990:50000]
    imgs = [jd.decode_jpeg_bytes(buf, off[i:i + 2]) for i in idx]
  assert all(im.shape == (1, 32, 32, 3) and im.dtype == np.uint8 for im in imgs)
  assert len({im.tobytes() for im in imgs}) == 20
