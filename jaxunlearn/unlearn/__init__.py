"""Unlearning methods, built by a factory: ``make(name, config)`` returns a pure function
``method(state, data, key, hparams=None, *, mask=None) -> (state, metrics)`` that plain ``jax.jit``
compiles and ``jax.vmap`` maps over keys and hyperparameters (``method.hparams``).

Each method module also exports a convenience function under the method's name,
``name(state, data, key, config=None, *, mask=None)`` (``jax.jit(fn, static_argnames="config")``).
DEL's function is ``del_unlearn`` (``del`` is a Python keyword); its registered name stays ``del``.
Importing this package registers every method; :data:`METHODS` maps names to :class:`MethodSpec`.
"""

from jaxunlearn.train import OptimConfig
from jaxunlearn.unlearn import importance
from jaxunlearn.unlearn import masks
from jaxunlearn.unlearn._data import UnlearnData
from jaxunlearn.unlearn._data import check_finite_params
from jaxunlearn.unlearn._registry import METHODS
from jaxunlearn.unlearn._registry import Method
from jaxunlearn.unlearn._registry import MethodSpec
from jaxunlearn.unlearn._registry import check_mask
from jaxunlearn.unlearn._registry import get_method
from jaxunlearn.unlearn._registry import make
from jaxunlearn.unlearn._registry import make_config
from jaxunlearn.unlearn._registry import option_names
from jaxunlearn.unlearn._registry import register
from jaxunlearn.unlearn._registry import replace
from jaxunlearn.unlearn._registry import trains
from jaxunlearn.unlearn.masks import apply_mask
# the methods (importing a module registers its methods)
from jaxunlearn.unlearn._finetune import FinetuneConfig
from jaxunlearn.unlearn._finetune import RetrainConfig
from jaxunlearn.unlearn._finetune import finetune
from jaxunlearn.unlearn._finetune import retrain
from jaxunlearn.unlearn._neggrad import NegGradConfig
from jaxunlearn.unlearn._neggrad import NegGradPlusConfig
from jaxunlearn.unlearn._neggrad import neggrad
from jaxunlearn.unlearn._neggrad import neggrad_plus
from jaxunlearn.unlearn._random_label import RandomLabelConfig
from jaxunlearn.unlearn._random_label import random_label
from jaxunlearn.unlearn._l1_sparse import L1SparseConfig
from jaxunlearn.unlearn._l1_sparse import l1_sparse
from jaxunlearn.unlearn._bad_teacher import BadTeacherConfig
from jaxunlearn.unlearn._bad_teacher import bad_teacher
from jaxunlearn.unlearn._scrub import ScrubConfig
from jaxunlearn.unlearn._scrub import scrub
from jaxunlearn.unlearn._scrub import scrub_rewind
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
from jaxunlearn.unlearn._influence import InfluenceConfig
from jaxunlearn.unlearn._influence import influence
from jaxunlearn.unlearn._boundary import BoundaryExpandConfig
from jaxunlearn.unlearn._boundary import BoundaryShrinkConfig
from jaxunlearn.unlearn._boundary import boundary_expand
from jaxunlearn.unlearn._boundary import boundary_shrink
from jaxunlearn.unlearn._challenge import CtConfig
from jaxunlearn.unlearn._challenge import MsgConfig
from jaxunlearn.unlearn._challenge import ct
from jaxunlearn.unlearn._challenge import msg
from jaxunlearn.unlearn._registry import check_model
from jaxunlearn.unlearn._fisher import FisherConfig
from jaxunlearn.unlearn._fisher import fisher
from jaxunlearn.unlearn._ssd import LfssdConfig
from jaxunlearn.unlearn._ssd import SsdConfig
from jaxunlearn.unlearn._ssd import lfssd
from jaxunlearn.unlearn._ssd import ssd
from jaxunlearn.unlearn._unsir import UnsirConfig
from jaxunlearn.unlearn._unsir import unsir
from jaxunlearn.unlearn._srl import srl
from jaxunlearn.unlearn.defaults import DataScale
from jaxunlearn.unlearn.defaults import DefaultChoice
from jaxunlearn.unlearn.defaults import choose_defaults
from jaxunlearn.unlearn.defaults import default_config

__all__ = (
    "OptimConfig", "importance", "masks", "UnlearnData", "check_finite_params", "METHODS", "Method", "MethodSpec",
    "check_mask", "get_method", "make", "make_config", "option_names", "register", "replace", "trains", "apply_mask",
    "FinetuneConfig", "RetrainConfig", "finetune", "retrain",
    "NegGradConfig", "NegGradPlusConfig", "neggrad", "neggrad_plus", "RandomLabelConfig", "random_label",
    "L1SparseConfig", "l1_sparse", "BadTeacherConfig", "bad_teacher", "ScrubConfig", "scrub", "scrub_rewind",
    "DelConfig", "SalunConfig", "del_unlearn", "salun", "CFkConfig", "EUkConfig", "cf_k", "eu_k",
    "LauConfig", "lau", "DataScale", "DefaultChoice", "choose_defaults", "default_config",
    "InfluenceConfig", "influence",
    "BoundaryShrinkConfig", "BoundaryExpandConfig", "boundary_shrink", "boundary_expand",
    "MsgConfig", "msg", "CtConfig", "ct", "check_model",
    "FisherConfig", "fisher", "SsdConfig", "ssd", "LfssdConfig", "lfssd",
    "UnsirConfig", "unsir", "srl",
)
