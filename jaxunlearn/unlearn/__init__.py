"""Unlearning methods: ``name(state, data, key, config, *, mask=None) -> (state, metrics)``.

Every method is pure and jittable (``jax.jit(fn, static_argnames="config")``); the registry
:data:`METHODS` maps CLI names to functions, config classes and presets.
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

__all__ = (
    "METHODS", "Method", "UnlearnData", "apply_mask", "check_finite_params", "get_method",
    "make_config", "FinetuneConfig", "RetrainConfig", "finetune", "retrain",
)
