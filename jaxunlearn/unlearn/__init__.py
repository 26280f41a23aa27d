"""Unlearning methods: ``name(state, data, key, config, *, mask=None) -> (state, metrics)``.

Every method is pure and jittable (``jax.jit(fn, static_argnames="config")``) and vmappable over
states/keys; the registry :data:`METHODS` maps CLI names to functions, config classes and presets.
DEL's function is ``del_unlearn`` (``del`` is a Python keyword); its CLI name stays ``del``.
"""

from jaxunlearn.unlearn._common import METHODS
from jaxunlearn.unlearn._common import Method
from jaxunlearn.unlearn._common import UnlearnData
from jaxunlearn.unlearn._common import apply_mask
from jaxunlearn.unlearn._common import check_finite_params
from jaxunlearn.unlearn._common import get_method
from jaxunlearn.unlearn._common import make_config
from jaxunlearn.unlearn._finetune import FinetuneConfig
from jaxunlearn.unlearn._finetune import RetrainConfig
from jaxunlearn.unlearn._finetune import finetune
from jaxunlearn.unlearn._finetune import retrain
# SCRUB and the loss-based baselines
from jaxunlearn.unlearn._scrub import ScrubConfig
from jaxunlearn.unlearn._scrub import scrub
from jaxunlearn.unlearn._scrub import scrub_rewind
from jaxunlearn.unlearn._baselines import BadTeacherConfig
from jaxunlearn.unlearn._baselines import L1SparseConfig
from jaxunlearn.unlearn._baselines import NegGradConfig
from jaxunlearn.unlearn._baselines import NegGradPlusConfig
from jaxunlearn.unlearn._baselines import RandomLabelConfig
from jaxunlearn.unlearn._baselines import bad_teacher
from jaxunlearn.unlearn._baselines import l1_sparse
from jaxunlearn.unlearn._baselines import neggrad
from jaxunlearn.unlearn._baselines import neggrad_plus
from jaxunlearn.unlearn._baselines import random_label
# Localisation (DEL, SalUn), block-wise baselines and Layer Attack Unlearning
from jaxunlearn.unlearn import masks
from jaxunlearn.unlearn._del import DelConfig
from jaxunlearn.unlearn._del import SalunConfig
from jaxunlearn.unlearn._del import del_unlearn
from jaxunlearn.unlearn._del import salun
from jaxunlearn.unlearn._blocks import CFkConfig
from jaxunlearn.unlearn._blocks import EUkConfig
from jaxunlearn.unlearn._blocks import cf_k
from jaxunlearn.unlearn._blocks import eu_k
from jaxunlearn.unlearn._lau import LauConfig
from jaxunlearn.unlearn._lau import lau

__all__ = (
    "METHODS", "Method", "UnlearnData", "apply_mask", "check_finite_params", "get_method",
    "make_config", "FinetuneConfig", "RetrainConfig", "finetune", "retrain",
    "ScrubConfig", "scrub", "scrub_rewind",
    "BadTeacherConfig", "L1SparseConfig", "NegGradConfig", "NegGradPlusConfig", "RandomLabelConfig",
    "bad_teacher", "l1_sparse", "neggrad", "neggrad_plus", "random_label",
    "masks", "DelConfig", "SalunConfig", "del_unlearn", "salun",
    "CFkConfig", "EUkConfig", "cf_k", "eu_k", "LauConfig", "lau",
)
