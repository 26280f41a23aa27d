"""Many-model studies behind ``jaxunlearn lira``, ``jaxunlearn ulira`` and ``jaxunlearn challenge``.

Each study is a function of a frozen dataclass config (a :class:`jaxunlearn.config.JobConfig`)
that validates every input (and loads the data) before anything is compiled, trains / unlearns /
evaluates its models with :mod:`jaxunlearn.many` (one compiled program per stage, progress bars
with models/s, optional resumable orbax checkpoints), writes ``results.json`` atomically and its
plots into ``config.out``, and returns the results dict. Bad input raises
:class:`jaxunlearn.errors.ConfigError`.

* :func:`run_lira` (:mod:`.lira`) -- LiRA against M models on balanced random halves, leave-one-out.
* :func:`run_ulira` (:mod:`.ulira`) -- U-LiRA of one unlearning method.
* :func:`run_challenge` (:mod:`.challenge`) -- the NeurIPS-2023 unlearning challenge's evaluation.

The attacks' pooling over targets is :func:`jaxunlearn.mia.lira_attacks`; the flags live in
:mod:`jaxunlearn.cli`.
"""

from jaxunlearn.mia.pooling import ATTACKS
from jaxunlearn.mia.pooling import lira_attacks
from jaxunlearn.mia.pooling import ulira_attacks
from jaxunlearn.studies.challenge import ChallengeConfig
from jaxunlearn.studies.challenge import ChallengeEnsemble
from jaxunlearn.studies.challenge import challenge_ensemble
from jaxunlearn.studies.challenge import run_challenge
from jaxunlearn.studies.common import StudyConfig
from jaxunlearn.studies.common import format_result
from jaxunlearn.studies.lira import LiraConfig
from jaxunlearn.studies.lira import run_lira
from jaxunlearn.studies.ulira import UliraConfig
from jaxunlearn.studies.ulira import run_ulira

RUNNERS = {"lira": run_lira, "ulira": run_ulira, "challenge": run_challenge}

__all__ = (
    "ATTACKS", "ChallengeConfig", "ChallengeEnsemble", "LiraConfig", "RUNNERS", "StudyConfig", "UliraConfig",
    "challenge_ensemble", "format_result", "lira_attacks", "run_challenge", "run_lira", "run_ulira", "ulira_attacks",
)
