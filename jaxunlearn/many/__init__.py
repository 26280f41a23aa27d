"""Many models in one compiled program: train_many, unlearn_many, predict_many (chunked, sharded, resumable)."""

from jaxunlearn.many.airbench import train_airbench_many
from jaxunlearn.many.api import train_many
from jaxunlearn.many.api import run_settings
from jaxunlearn.many.api import unlearn_many
from jaxunlearn.many.autotune import StrategyChoice
from jaxunlearn.many.autotune import autotune_strategy
from jaxunlearn.many.autotune import choose_strategy
from jaxunlearn.many.autotune import clear_strategy_cache
from jaxunlearn.many.autotune import resolve_choice
from jaxunlearn.many.autotune import resolve_strategy
from jaxunlearn.many.engine import MODEL_AXIS
from jaxunlearn.many.engine import model_mesh
from jaxunlearn.many.predict import TTA_LEVELS
from jaxunlearn.many.predict import accuracies_many
from jaxunlearn.many.predict import confidences_many
from jaxunlearn.many.predict import predict_many
from jaxunlearn.many.stack import num_models_of
from jaxunlearn.many.stack import stack_states
from jaxunlearn.many.stack import take
from jaxunlearn.many.strategy import STRATEGIES
from jaxunlearn.many.strategy import batch_over_models
from jaxunlearn.many.strategy import check_strategy

__all__ = (
    "MODEL_AXIS", "STRATEGIES", "StrategyChoice", "TTA_LEVELS", "accuracies_many", "autotune_strategy",
    "batch_over_models", "check_strategy", "choose_strategy", "clear_strategy_cache", "confidences_many",
    "model_mesh", "num_models_of", "predict_many", "resolve_choice", "resolve_strategy", "run_settings",
    "stack_states", "take",
    "train_airbench_many", "train_many", "unlearn_many",
)
