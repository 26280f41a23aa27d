"""Loaders (digits, tfds via mock_data, npz incl. JPEG bytes) and forget-set builders."""

import io
import os

import numpy as np
import pytest

from jaxunlearn import data as jd


def test_digits_loader():
  d = jd.load_dataset("digits")
  assert d.x_train.shape == (1437, 8, 8, 1) and d.x_test.shape == (360, 8, 8, 1)
  assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int32
  assert d.num_classes == 10 and set(np.unique(d.y_train)) == set(range(10))
  assert d.x_train.max() == 255 and d.x_train.min() == 0
  assert len(d.mean) == 1 and 0 < d.mean[0] < 1 and d.std[0] > 0


def test_tfds_loader_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    d = jd.load_dataset("mnist")
  assert d.x_train.shape == (12, 28, 28, 1) and d.x_test.shape == (12, 28, 28, 1)
  assert d.x_train.dtype == np.uint8
  assert d.num_classes == 10
  assert d.y_train.min() >= 0 and d.y_train.max() < 10


def test_tfds_without_test_split_uses_validation():
  # imagenette has train + validation splits (tfds raises "Unknown split 'test'"); its mock images
  # have random sizes, so reaching the size check proves the validation split was loaded
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6), pytest.raises(ValueError, match="different sizes") as e:
    jd.load_dataset("imagenette")
  assert "\n" not in str(e.value) and "npz:PATH" in str(e.value)


NOT_GENERATED = ("Trying to access `splits['train']` but `splits` is empty. This likely indicates the dataset "
                 "has not been generated yet.")  # tfds' words for a dataset not prepared in data_dir


@pytest.mark.parametrize("raised, download, needles", [
    (AssertionError(NOT_GENERATED), False, ["has not been generated", "--download", "pip install tensorflow",
                                            "jaxunlearn data convert"]),
    (ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow"), True,
     ["needs TensorFlow: pip install tensorflow", "reading a prepared one does not", "jaxunlearn data convert"]),
    (ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources"), True,
     ["pip install importlib_resources"]),
])
def test_tfds_failure_says_what_to_do(monkeypatch, raised, download, needles):
  """Offline: that --download exists and what preparing needs (network, TensorFlow); a missing
  module: its pip line. tfds.data_source is replaced, so nothing is downloaded."""
  tfds = pytest.importorskip("tensorflow_datasets")

  def fail(*a, **k):
    raise raised
  monkeypatch.setattr(tfds, "data_source", fail)
  with pytest.raises(ValueError) as e:
    jd.load_dataset("mnist", download=download)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("tfds dataset 'mnist' could not be loaded")
  for n in needles:
    assert n in msg, (n, msg)


def test_unknown_dataset_is_one_clear_error():
  with pytest.raises(ValueError, match="unknown dataset 'not_a_dataset'"):
    jd.load_dataset("not_a_dataset")


def test_npz_plain_and_missing(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
  y = rng.integers(0, 3, 20)
  p = tmp_path / "d.npz"
  np.savez(p, x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
  d = jd.load_dataset(f"npz:{p}")
  np.testing.assert_array_equal(d.x_train, x)
  np.testing.assert_array_equal(d.y_test, y[:5])
  with pytest.raises(ValueError, match="npz file not found"):
    jd.load_dataset(f"npz:{tmp_path / 'nope.npz'}")


def test_npz_float_images_are_scaled(tmp_path):
  x = np.linspace(0, 1, 4 * 5 * 5).reshape(4, 5, 5).astype(np.float32)
  p = tmp_path / "f.npz"
  np.savez(p, x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x, y_test=np.array([1, 0, 1, 0]))
  d = jd.load_npz(p)
  assert d.x_train.shape == (4, 5, 5, 1) and d.x_train.dtype == np.uint8
  assert d.x_train.max() == 255 and d.x_train.min() == 0


def _jpeg_npz(path, n_train=6, n_test=3):
  from PIL import Image
  rng = np.random.default_rng(1)
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    blobs = []
    for im in imgs:
      b = io.BytesIO()
      Image.fromarray(im).save(b, format="JPEG", quality=95)
      blobs.append(np.frombuffer(b.getvalue(), np.uint8))
    out[f"{split}_jpeg"] = np.concatenate(blobs)
    out[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    out[f"y_{split}"] = np.arange(n) % 2
    out[f"_raw_{split}"] = np.stack([np.asarray(Image.open(io.BytesIO(b.tobytes())).convert("RGB"))
                                     for b in blobs])  # independent decode of each file
  raw = {k: out.pop(k) for k in list(out) if k.startswith("_raw")}
  np.savez(path, classes=np.array(["a", "b"]), **out)
  return raw


def test_npz_jpeg_bytes_decoded_and_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  old = os.umask(0o022)
  try:
    p = tmp_path / "data" / "jp.npz"
    p.parent.mkdir()
    raw = _jpeg_npz(p)
    d = jd.load_dataset(f"npz:{p}")
  finally:
    os.umask(old)
  assert d.x_train.shape == (6, 32, 32, 3) and d.x_test.shape == (3, 32, 32, 3)
  assert d.num_classes == 2
  np.testing.assert_array_equal(d.x_train, raw["_raw_train"])
  np.testing.assert_array_equal(d.x_test, raw["_raw_test"])
  np.testing.assert_array_equal(d.y_train, np.arange(6) % 2)
  assert jd.default_cache_dir() == tmp_path / "xdg" / "jaxunlearn"
  assert sorted(x.name for x in p.parent.iterdir()) == ["jp.npz"]  # nothing next to the user's data
  (cache,) = (tmp_path / "xdg" / "jaxunlearn").glob("jp.decoded-*.npz")
  assert cache.stat().st_mode & 0o777 == 0o644  # a normal file mode (umask 022), not mkstemp's 0600
  d2 = jd.load_dataset(f"npz:{p}")  # from the cache
  np.testing.assert_array_equal(d.x_train, d2.x_train)
  d3 = jd.load_dataset(f"npz:{p}", cache_dir=str(tmp_path / "mine"))  # --cache-dir
  np.testing.assert_array_equal(d.x_train, d3.x_train)
  assert len(list((tmp_path / "mine").glob("jp.decoded-*.npz"))) == 1
  (tmp_path / "ro").write_text("a file, not a folder")
  with pytest.raises(ValueError, match=r"cache folder .*ro.* is not writable.*--cache-dir"):
    jd.load_npz(p, cache_dir=tmp_path / "ro")


def test_npz_labels_must_be_whole_numbers_in_range(tmp_path):
  x = np.zeros((4, 5, 5), np.uint8)
  p = tmp_path / "l.npz"
  for y, match in ((np.array([0.5, 1, 0, 1]), r"non-integer values \(e.g. \[0.5\]\)"),
                   (np.array([0, 1, 2**32, 1], np.int64), "labels must lie in"),
                   (np.array(["a", "b", "a", "b"]), "labels must be integers, got dtype <U1")):
    np.savez(p, x_train=x, y_train=y, x_test=x, y_test=np.array([0, 1, 0, 1]), classes=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=match):
      jd.load_npz(p)
  np.savez(p, x_train=x, y_train=np.array([0.0, 1.0, 0.0, 1.0]), x_test=x, y_test=np.array([0, 1, 0, 1]))
  assert jd.load_npz(p).y_train.tolist() == [0, 1, 0, 1]  # whole-number floats are fine


def test_channel_stats_match_numpy():
  x = np.random.default_rng(0).integers(0, 256, (50, 7, 7, 3), dtype=np.uint8)
  from jaxunlearn.data import _datasets
  d = _datasets._finish("t", x, np.arange(50) % 2, x[:5], np.arange(5) % 2)
  xf = x.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(d.mean, xf.mean(0), rtol=1e-12)
  np.testing.assert_allclose(d.std, xf.std(0), rtol=1e-9)


def test_bad_jpeg_npz_fails_on_one_line_and_writes_no_cache(tmp_path):
  p = tmp_path / "bad.npz"
  _jpeg_npz(p)
  d = dict(np.load(p))
  good = dict(d)
  d["train_jpeg"] = d["train_jpeg"].copy()
  a, b = d["train_offsets"][2], d["train_offsets"][3]
  d["train_jpeg"][a:b] = 7  # image 2 is garbage
  np.savez(p, **d)
  with pytest.raises(ValueError, match=r"train image 2 \(bytes \d+:\d+\) is not a decodable JPEG"):
    jd.load_npz(p)
  d["train_offsets"] = d["train_offsets"][::-1].copy()
  np.savez(p, **d)
  with pytest.raises(ValueError, match="offsets must increase strictly"):
    jd.load_npz(p)
  np.savez(p, **{**good, "y_train": np.arange(5) % 2})  # one label short: checked before the cache is written
  with pytest.raises(ValueError, match="6 train images but 5 labels"):
    jd.load_npz(p, cache_dir=tmp_path)
  assert not list(tmp_path.glob("bad.decoded-*")) and not list(tmp_path.glob("*.tmp*"))


def test_damaged_jpeg_cache_is_decoded_again(tmp_path):
  p = tmp_path / "jp.npz"
  raw = _jpeg_npz(p)
  jd.load_npz(p, cache_dir=tmp_path)
  (cache,) = tmp_path.glob("jp.decoded-*.npz")
  cache.write_bytes(b"not an npz")
  np.testing.assert_array_equal(jd.load_npz(p, cache_dir=tmp_path).x_train, raw["_raw_train"])
  assert np.load(cache)["x_train"].shape == (6, 32, 32, 3)  # replaced by a good one


def test_concurrent_cache_writers_do_not_collide(tmp_path):
  from concurrent.futures import ThreadPoolExecutor

  from jaxunlearn.atomic import atomic_savez

  target = tmp_path / "c.npz"
  arrays = [np.full((200, 32, 32, 3), i, np.uint8) for i in range(4)]
  with ThreadPoolExecutor(4) as ex:
    list(ex.map(lambda a: atomic_savez(target, x_train=a, x_test=a[:1]), arrays))
  got = np.load(target)["x_train"]
  assert any((got == a).all() for a in arrays)  # one whole writer's file, never a mix or a crash
  assert not list(tmp_path.glob("*.tmp*"))


def test_atomic_writes_get_normal_file_modes(tmp_path):
  from jaxunlearn.atomic import atomic_savez, write_json_atomic

  old = os.umask(0o027)
  try:
    write_json_atomic(tmp_path / "results.json", {"a": 1})
    atomic_savez(tmp_path / "c.npz", x=np.zeros(2))
  finally:
    os.umask(old)
  # 0666 less the umask, as a plain open() gives: readable by the group, not mkstemp's private 0600
  assert [(tmp_path / f).stat().st_mode & 0o777 for f in ("results.json", "c.npz")] == [0o640, 0o640]


@pytest.fixture(scope="module")
def labels():
  return np.repeat(np.arange(5), 40).astype(np.int32)


@pytest.mark.parametrize("spec,size", [("random:0.1", 20), ("class:3", 40), ("class:1,2", 80),
                                       ("subclass:2:0.5", 20), ("biased:4:0.25", 10),
                                       ("noniid:2,3:0.2", 40), ("confuse:0,1:10", 10)])
def test_forget_builders_sizes_disjoint_deterministic(labels, spec, size):
  s = jd.make_forget_split(spec, labels, num_classes=5, seed=3)
  assert len(s.forget) == size
  assert len(np.intersect1d(s.retain, s.forget)) == 0
  assert len(s.retain) + len(s.forget) == len(labels)
  s2 = jd.make_forget_split(spec, labels, num_classes=5, seed=3)
  np.testing.assert_array_equal(s.forget, s2.forget)
  np.testing.assert_array_equal(s.y_train, s2.y_train)


def test_random_forget_depends_on_seed(labels):
  a = jd.make_forget_split("random:0.1", labels, num_classes=5, seed=0)
  b = jd.make_forget_split("random:0.1", labels, num_classes=5, seed=1)
  assert not np.array_equal(a.forget, b.forget)


def test_class_and_noniid_pick_from_their_classes(labels):
  s = jd.make_forget_split("class:3", labels, num_classes=5)
  assert set(labels[s.forget]) == {3} and 3 not in set(labels[s.retain])
  s = jd.make_forget_split("noniid:2,3:0.2", labels, num_classes=5)
  assert set(labels[s.forget]) <= {2, 3}


def test_confuse_flips_labels(labels):
  s = jd.make_forget_split("confuse:0,1:10", labels, num_classes=5, seed=0)
  changed = np.flatnonzero(s.y_train != labels)
  np.testing.assert_array_equal(np.sort(changed), s.forget)
  orig, new = labels[s.forget], s.y_train[s.forget]
  assert set(zip(orig.tolist(), new.tolist())) == {(0, 1), (1, 0)}
  assert (orig == 0).sum() == 5 and (orig == 1).sum() == 5


@pytest.mark.parametrize("spec,msg", [
    ("random:1.5", "must lie in"), ("random:0", "must lie in"), ("class:7", "class 7 does not exist"),
    ("banana", "malformed forget spec 'banana'"), ("random:abc", "malformed forget spec"),
    ("confuse:1,1:4", "must differ"), ("class:0,1,2,3,4", "whole train split"),
])
def test_bad_forget_specs(labels, spec, msg):
  with pytest.raises(ValueError, match=msg):
    jd.make_forget_split(spec, labels, num_classes=5)


def test_validate_split_catches_overlap_and_empty():
  with pytest.raises(ValueError, match="overlap"):
    jd.validate_split(np.array([0, 1, 2]), np.array([2, 3]), 5)
  with pytest.raises(ValueError, match="empty forget set"):
    jd.validate_split(np.array([0, 1]), np.array([], np.int32), 5)
  with pytest.raises(ValueError, match="out of range"):
    jd.validate_split(np.array([0, 9]), np.array([1]), 5)


def test_random_crop_flip_shapes_and_content():
  import jax
  import jax.numpy as jnp
  x = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1) + 1
  y = jd.random_crop_flip(jax.random.key(0), x, pad=4)
  assert y.shape == x.shape and y.dtype == x.dtype
  # every output pixel is 0 (padding) or one of the image's own values
  for i in range(2):
    vals = set(np.asarray(x[i]).ravel().tolist()) | {0.0}
    assert set(np.asarray(y[i]).ravel().tolist()) <= vals
  # pad=0, flip only: each image is itself or its mirror
  z = jd.random_crop_flip(jax.random.key(1), x, pad=0)
  for i in range(2):
    assert np.array_equal(z[i], x[i]) or np.array_equal(z[i], x[i, :, ::-1])


def test_forget_spec_ignores_surrounding_spaces():
  assert jd.parse_forget_spec("  class:3 ") == jd.parse_forget_spec("class:3")


def test_npz_object_arrays_name_the_file_and_key(tmp_path):
  p = tmp_path / "obj.npz"
  x = np.zeros((2, 4, 4), np.uint8)
  np.savez(p, x_train=np.array([x[0], None], dtype=object), y_train=np.array([0, 1]), x_test=x, y_test=np.array([0, 1]))
  with pytest.raises(ValueError, match=r"obj.npz': array 'x_train' cannot be read"):
    jd.load_npz(p)


def test_channels_first_npz_is_transposed_with_a_note(tmp_path, capsys):
  from jaxunlearn.data import load_npz

  rng = np.random.default_rng(0)
  xtr, xte = rng.integers(0, 256, (6, 3, 8, 10), dtype=np.uint8), rng.integers(0, 256, (2, 3, 8, 10), dtype=np.uint8)
  np.savez(tmp_path / "chw.npz", x_train=xtr, y_train=np.arange(6) % 2, x_test=xte, y_test=np.arange(2))
  ds = load_npz(tmp_path / "chw.npz")
  assert ds.image_shape == (8, 10, 3)
  np.testing.assert_array_equal(ds.x_train, xtr.transpose(0, 2, 3, 1))
  assert len(ds.notes) == 1 and "channels-first" in ds.notes[0] and "(6, 3, 8, 10)" in ds.notes[0]
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "channels-first" in err


def test_one_based_labels_are_refused(tmp_path):
  from jaxunlearn.data import load_npz

  x = np.zeros((6, 8, 8, 1), np.uint8)
  np.savez(tmp_path / "one.npz", x_train=x, y_train=np.array([1, 2, 3, 1, 2, 3]), x_test=x[:3], y_test=[1, 2, 3])
  with pytest.raises(ValueError, match=r"labels run from 1 to 3 with no label 0.*y - 1"):
    load_npz(tmp_path / "one.npz")


def test_npz_path_expands_home(tmp_path, monkeypatch):
  from jaxunlearn.data import load_dataset

  monkeypatch.setenv("HOME", str(tmp_path))
  x = np.zeros((4, 8, 8, 1), np.uint8)
  np.savez(tmp_path / "x.npz", x_train=x, y_train=[0, 1, 0, 1], x_test=x[:2], y_test=[0, 1])
  assert load_dataset("npz:~/x.npz").num_classes == 2


def test_crop_padding_scales_with_the_image():
  import jax

  from jaxunlearn.data import random_crop_flip

  key = jax.random.key(0)
  x8 = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8, 1) + 1
  out = np.asarray(random_crop_flip(key, x8, flip=False))
  # a 1-pixel pad for 8x8 images: at most one zero row and one zero column
  assert ((out == 0).all(axis=(2, 3)).sum(1) <= 1).all() and ((out == 0).all(axis=(1, 3)).sum(1) <= 1).all()
  x32 = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(random_crop_flip(key, x32), random_crop_flip(key, x32, pad=4))  # unchanged


def test_flips_are_a_per_dataset_default_that_augmentation_follows(tmp_path, monkeypatch):
  import jax

  from jaxunlearn.config import JobConfig
  from jaxunlearn.data import flip_ok, load_digits
  from jaxunlearn.train import _step

  assert not any(flip_ok(n) for n in ("digits", "mnist", "svhn_cropped", "mnist:3.0.1"))
  assert all(flip_ok(n) for n in ("cifar10", "cifar100", "fashion_mnist"))
  ds = load_digits()
  assert ds.flip_ok is False
  model = JobConfig(model="mlp", width=0.25).create_model(ds)
  assert model.flip_ok is False
  calls = []
  real = _step.random_crop_flip
  monkeypatch.setattr(_step, "random_crop_flip", lambda k, x, **kw: calls.append(kw) or real(k, x, **kw))
  params, stats = model.init(jax.random.key(0))
  _step.supervised_loss(model, augment=True)(params, stats, (ds.x_train[:4], ds.y_train[:4]), jax.random.key(1))
  assert calls == [{"flip": False}]
  x = np.zeros((2, 8, 8, 1), np.uint8)
  np.savez(tmp_path / "n.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[0, 1])
  from jaxunlearn.data import load_npz
  assert load_npz(tmp_path / "n.npz").flip_ok is True
