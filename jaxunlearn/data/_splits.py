"""Forget-set builders: deterministic (retain, forget) index arrays over the train split."""

from __future__ import annotations

import dataclasses
import re

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ForgetSplit:
  """Which training examples to forget.

  Attributes:
    spec: the spec string it was built from.
    retain: ``int32 [N_retain]`` sorted indices into the train split.
    forget: ``int32 [N_forget]`` sorted indices, disjoint from ``retain``.
    y_train: ``int32 [N_train]`` training labels to train the original model on (equal to the
      dataset's labels except for ``confuse:`` specs, where the forget examples' labels are swapped).
    classes: the classes the spec targets (empty for ``random``).
  """

  spec: str
  retain: np.ndarray
  forget: np.ndarray
  y_train: np.ndarray
  classes: tuple[int, ...] = ()

  @property
  def whole_class(self) -> bool:
    """Whether the forget set is every example of one or more classes (a ``class:`` spec): a model
    that never saw them does not predict them, so their reference forget accuracy is 0."""
    return self.spec.strip().startswith("class:")


SPEC_HELP = ("random:FRAC | class:C[,C2..] | subclass:C:FRAC | biased:C:FRAC | "
             "noniid:C1,C2:FRAC | confuse:A,B:N")

_FLOAT = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_INTS = r"(-?[0-9]+(?:,-?[0-9]+)*)"


def parse_forget_spec(spec: str) -> tuple[str, tuple]:
  """Checks a forget spec's syntax (no data needed) and returns ``(kind, args)``.

  Raises:
    ValueError: naming the malformed spec.
  """
  if not isinstance(spec, str):
    raise ValueError(f"forget spec must be a string, got {spec!r}")
  pats = {
      "random": rf"random:{_FLOAT}",
      "class": rf"class:{_INTS}",
      "subclass": rf"subclass:(-?[0-9]+):{_FLOAT}",
      "biased": rf"biased:(-?[0-9]+):{_FLOAT}",
      "noniid": rf"noniid:{_INTS}:{_FLOAT}",
      "confuse": r"confuse:(-?[0-9]+),(-?[0-9]+):(-?[0-9]+)",
  }
  spec = spec.strip()
  kind = spec.split(":", 1)[0]
  if kind not in pats:
    raise ValueError(f"malformed forget spec {spec!r}: unknown kind {kind!r}; expected {SPEC_HELP}")
  m = re.fullmatch(pats[kind], spec)
  if not m:
    raise ValueError(f"malformed forget spec {spec!r}; expected {SPEC_HELP}")
  g = m.groups()
  ints = lambda s: tuple(int(v) for v in s.split(","))
  if kind == "random":
    args = (float(g[0]),)
  elif kind == "class":
    args = (ints(g[0]),)
  elif kind in ("subclass", "biased"):
    args = (int(g[0]), float(g[1]))
  elif kind == "noniid":
    args = (ints(g[0]), float(g[1]))
  else:
    args = (int(g[0]), int(g[1]), int(g[2]))
  for a in args:
    if isinstance(a, float) and not 0.0 < a < 1.0:
      raise ValueError(f"forget spec {spec!r}: fraction {a} must lie in (0, 1)")
  return kind, args


def make_forget_split(spec: str, y_train: np.ndarray, *, num_classes: int, seed: int = 0) -> ForgetSplit:
  """Builds the forget set described by ``spec`` over labels ``y_train`` ([N]).

  Specs:
    ``random:FRAC``: a uniformly random FRAC of the train split (user privacy).
    ``class:C`` / ``class:C1,C2``: every example of the class(es) (class forgetting).
    ``subclass:C:FRAC`` (alias ``biased:C:FRAC``): a random FRAC of class C's examples, the
      removing-biases setting where a biased sub-population of one class is forgotten.
    ``noniid:C1,C2:FRAC``: FRAC of the whole train split, drawn only from classes C1, C2 (DEL's non-IID).
    ``confuse:A,B:N``: N examples (N//2 of class A, the rest of class B) get the other class's label;
      they are the forget set and the original model is trained on the flipped labels (SCRUB's
      resolving-confusion setting).

  Deterministic given ``seed``. Raises ValueError on a class that does not exist, an empty forget
  set, or a forget set equal to the whole train split.
  """
  kind, args = parse_forget_spec(spec)
  y = np.asarray(y_train).astype(np.int32)
  n = len(y)
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
  y_out = y.copy()
  classes: tuple[int, ...] = ()

  @property
  def whole_class(self) -> bool:
    """Whether the forget set is every example of one or more classes (a ``class:`` spec): a model
    that never saw them does not predict them, so their reference forget accuracy is 0."""
    return self.spec.strip().startswith("class:")

  def check_classes(cs):
    for c in cs:
      if not 0 <= c < num_classes:
        raise ValueError(f"forget spec {spec!r}: class {c} does not exist (classes are 0..{num_classes - 1})")

  def pick(pool, k):
    k = int(round(k))
    if k > len(pool):
      raise ValueError(f"forget spec {spec!r}: asks for {k} examples but only {len(pool)} are eligible")
    return rng.permutation(pool)[:k]

  if kind == "random":
    forget = pick(np.arange(n), args[0] * n)
  elif kind == "class":
    classes = args[0]
    check_classes(classes)
    forget = np.flatnonzero(np.isin(y, classes))
  elif kind in ("subclass", "biased"):
    c, frac = args
    check_classes((c,))
    classes = (c,)
    pool = np.flatnonzero(y == c)
    forget = pick(pool, frac * len(pool))
  elif kind == "noniid":
    classes, frac = args
    check_classes(classes)
    forget = pick(np.flatnonzero(np.isin(y, classes)), frac * n)
  else:
    a, b, count = args
    check_classes((a, b))
    if a == b:
      raise ValueError(f"forget spec {spec!r}: the two confused classes must differ")
    if count < 2:
      raise ValueError(f"forget spec {spec!r}: N={count} must be at least 2")
    classes = (a, b)
    fa = pick(np.flatnonzero(y == a), count // 2)
    fb = pick(np.flatnonzero(y == b), count - count // 2)
    y_out[fa], y_out[fb] = b, a
    forget = np.concatenate([fa, fb])
  forget = np.sort(forget).astype(np.int32)
  if len(forget) == 0:
    raise ValueError(f"forget spec {spec!r} selects no training example")
  if len(forget) == n:
    raise ValueError(f"forget spec {spec!r} selects the whole train split ({n} examples): nothing to retain")
  retain = np.setdiff1d(np.arange(n, dtype=np.int32), forget).astype(np.int32)
  return ForgetSplit(spec, retain, forget, y_out, tuple(int(c) for c in classes))


def validate_split(retain, forget, n_train: int) -> None:
  """Checks user-given index arrays: in range, no duplicates, disjoint, forget non-empty."""
  retain, forget = np.asarray(retain), np.asarray(forget)
  for name, idx in (("retain", retain), ("forget", forget)):
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"{name} indices must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_train):
      raise ValueError(f"{name} indices out of range [0, {n_train}): min {idx.min()}, max {idx.max()}")
  if forget.size == 0:
    raise ValueError("empty forget set: nothing to unlearn")
  if retain.size == 0:
    raise ValueError("forget set equals the whole train split: nothing to retain")
  both = np.intersect1d(retain, forget)
  if both.size:
    raise ValueError(f"forget and retain sets overlap in {both.size} examples (e.g. index {both[0]})")
