"""Leave-one-out LiRA / U-LiRA over many target models, pooled into one set of scores per attack (numpy only)."""

from __future__ import annotations

import numpy as np

from jaxunlearn.mia.lira import lira as _lira
from jaxunlearn.mia.lira import ulira as _ulira

__all__ = ("ATTACKS", "lira_attacks", "ulira_attacks")

ATTACKS = ("online", "online_fixed_variance", "offline", "offline_fixed_variance", "global_threshold")


def lira_attacks(conf: np.ndarray, member: np.ndarray, targets, *, ulira: bool = False,
                 columns=None, convention: str = "ours",
                 statistic: str = "median") -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Leave-one-out LiRA / U-LiRA over target models, pooled.

  For each target t, the shadow models are all others; examples (``columns``, default all) that
  have no "in" or no "out" shadow model are left out for that target.

  Args:
    conf: ``[M, N, A]`` logit confidences.
    member: ``bool [M, N]``: trained on (LiRA) / trained on then unlearned (U-LiRA). For U-LiRA
      every model outside ``member`` must never have seen the example in ``columns``.
    targets: iterable of target model indices.
    ulira: use :func:`jaxunlearn.mia.ulira` (else :func:`jaxunlearn.mia.lira`).
    columns: example indices to attack (default all N).
    convention, statistic: passed to :func:`jaxunlearn.mia.lira` / :func:`jaxunlearn.mia.ulira`
      (``"reference"``: tensorflow/privacy's ``plot.py``; ``"mean"``: DeepUnlearn's centres).

  Returns:
    ``{attack: (scores [P], is_member [P])}`` pooled over targets, for every name in ``ATTACKS``.
  """
  fn = _ulira if ulira else _lira
  m_total, n, _ = conf.shape
  cols = np.arange(n) if columns is None else np.asarray(columns)
  pooled: dict[str, list] = {a: [] for a in ATTACKS}
  labels: list = []
  for t in targets:
    others = np.array([m for m in range(m_total) if m != t])
    sh_in = member[others][:, cols]
    ok = sh_in.any(0) & (~sh_in).any(0)
    c = cols[ok]
    if c.size == 0:
      continue
    tgt, sh, mem = conf[t][c], conf[others][:, c], member[others][:, c]
    for name, online, fixed in (("online", True, False), ("online_fixed_variance", True, True),
                                ("offline", False, False), ("offline_fixed_variance", False, True)):
      pooled[name].append(fn(tgt, sh, mem, online=online, fixed_variance=fixed, convention=convention,
                             statistic=statistic))
    pooled["global_threshold"].append(tgt.mean(-1))
    labels.append(member[t, c])
  if not labels:
    raise ValueError("no example has both in and out shadow models: use more models")
  y = np.concatenate(labels)
  return {a: (np.concatenate(v), y) for a, v in pooled.items()}


def ulira_attacks(conf: np.ndarray, unlearned: np.ndarray, targets, *, columns=None, **kw) -> dict:
  """:func:`lira_attacks` with U-LiRA (``member`` = trained on and then unlearned)."""
  return lira_attacks(conf, unlearned, targets, ulira=True, columns=columns, **kw)
