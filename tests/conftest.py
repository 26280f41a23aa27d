"""Shared fixtures: tiny synthetic data and models so the CPU suite stays fast."""

import os
import shutil
import subprocess
import sys
import tempfile

# XLA:CPU's legacy (non-MLIR) fusion emitters compile the suite's many small programs much faster: the
# whole suite took 445 s with them and 778 s without on 2 cores (2 workers, 2026-12-06); results agree up
# to float32 rounding (three tests that compared two different programs bit for bit now allow it). The
# flag is for the tests only, and only where the installed jaxlib accepts it (a future one may drop it:
# an unknown XLA flag aborts the process), checked once per session in a child process; the xdist
# workers and the scripts the tests start inherit the choice. A user's own XLA_FLAGS wins.
_BASE_FLAGS = "--xla_force_host_platform_device_count=1"
_FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"
if "XLA_FLAGS" not in os.environ:
  _probe = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(2).block_until_ready()"],
                          env={**os.environ, "XLA_FLAGS": f"{_BASE_FLAGS} {_FAST_COMPILE}", "JAX_PLATFORMS": "cpu"},
                          capture_output=True, timeout=300)
  os.environ["XLA_FLAGS"] = f"{_BASE_FLAGS} {_FAST_COMPILE}" if _probe.returncode == 0 else _BASE_FLAGS
# decoded-JPEG caches of the tests' files go to a throwaway folder, never the user's ~/.cache
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="jaxunlearn-test-cache-")
# one persistent compilation cache per test session, shared by the xdist workers (children of one process)
# and by the scripts the tests start: many tests compile the same small programs from fresh closures, which
# the in-memory jit cache cannot reuse. A cache hit returns the executable of the same HLO, so results are
# unchanged; the paper-script smokes and README tours took 75 s with it, 98-103 s without (2 workers).
# A user's own JAX_COMPILATION_CACHE_DIR wins.
_session = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
_JIT_CACHE = None if "JAX_COMPILATION_CACHE_DIR" in os.environ else \
    os.path.join(tempfile.gettempdir(), f"jaxunlearn-test-jit-{_session}")
if _JIT_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _JIT_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import numpy as np
import pytest

jax.config.update("jax_disable_most_optimizations", True)

from jaxunlearn import models as jmodels  # noqa: E402
from jaxunlearn import train as jtrain  # noqa: E402
from jaxunlearn import unlearn as jun  # noqa: E402


def make_blobs(n_per_class=40, num_classes=4, size=8, seed=0, noise=0.15, noise_seed=None):
  """Linearly separable images: class c lights up quadrant-ish pattern c. uint8 [N, size, size, 1].

  ``seed`` fixes the class prototypes. The per-image noise and the shuffle come from the same generator
  when ``noise_seed`` is None (the training set, unchanged), else from an independent generator seeded
  with ``noise_seed``: same prototypes, fresh images (a test split). Two calls with the same ``seed`` and
  no ``noise_seed`` share their noise draws as a prefix, so they would share images.
  """
  rng = np.random.default_rng(seed)
  protos = rng.uniform(0, 1, (num_classes, size, size, 1))
  if noise_seed is not None:
    rng = np.random.default_rng(noise_seed)
  y = np.repeat(np.arange(num_classes), n_per_class)
  x = protos[y] + noise * rng.standard_normal((len(y), size, size, 1))
  x = np.clip(x, 0, 1)
  perm = rng.permutation(len(y))
  return (x[perm] * 255).round().astype(np.uint8), y[perm].astype(np.int32)


def pytest_sessionfinish(session, exitstatus):
  """The session's compilation cache goes when the session ends (the xdist controller, or a lone process)."""
  if _JIT_CACHE and "PYTEST_XDIST_WORKER" not in os.environ:
    shutil.rmtree(_JIT_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def key():
  return jax.random.key(0)


@pytest.fixture(scope="session")
def blobs():
  """(x_train, y_train, x_test, y_test) with 4 classes, 160 train / 80 test 8x8x1 images."""
  x, y = make_blobs(40, seed=0)
  xt, yt = make_blobs(20, seed=0, noise_seed=1)  # same prototypes, independent noise: no training image
  return x, y, xt, yt


@pytest.fixture(scope="session")
def tiny_model():
  return jmodels.create_model("cnn", num_classes=4, input_shape=(8, 8, 1), width=0.25)


@pytest.fixture(scope="session")
def mlp_model():
  return jmodels.create_model("mlp", num_classes=4, input_shape=(8, 8, 1), width=0.125)


@pytest.fixture(scope="session")
def class_split(blobs):
  """Forget class 0."""
  x, y, _, _ = blobs
  forget = np.flatnonzero(y == 0).astype(np.int32)
  retain = np.flatnonzero(y != 0).astype(np.int32)
  return retain, forget


@pytest.fixture(scope="session")
def trained(blobs, tiny_model):
  """The original model trained on all of ``blobs`` (a few epochs; ~100 % train accuracy)."""
  x, y, _, _ = blobs
  cfg = jtrain.TrainConfig(epochs=8, batch_size=32, lr=0.05)
  state, _ = jtrain.train_model(tiny_model, cfg, x, y, np.arange(len(y)), jax.random.key(1), progress=False)
  return state


@pytest.fixture(scope="session")
def mlp_trained(blobs, mlp_model):
  """A small MLP original trained briefly on all of ``blobs`` (for tests that run every method)."""
  x, y, _, _ = blobs
  st, _ = jtrain.train_model(mlp_model, jtrain.TrainConfig(epochs=2, batch_size=32, lr=0.05), x, y,
                             np.arange(len(y)), jax.random.key(1), progress=False)
  return st


@pytest.fixture(scope="session")
def class_data(blobs, class_split):
  x, y, xt, yt = blobs
  retain, forget = class_split
  return jun.UnlearnData.create(x, y, retain, forget, num_classes=4, x_val=xt[yt == 0], y_val=yt[yt == 0])


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after every test module. Each worker process runs many modules; without this
  its compiled executables pile up (5.7 GB resident by the end) until XLA:CPU crashes while compiling
  (a segfault in backend_compile_and_load, reproduced at 94 % of a serial run)."""
  yield
  jax.clear_caches()
