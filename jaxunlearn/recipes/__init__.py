"""Training recipes beyond ``jaxunlearn.train``'s default: each one a pure ``(init, fit)`` run for ``train_many``."""

from jaxunlearn.recipes.airbench import GROUPS
from jaxunlearn.recipes.airbench import AirbenchConfig
from jaxunlearn.recipes.airbench import lr_factor
from jaxunlearn.recipes.airbench import make_airbench_fit
from jaxunlearn.recipes.airbench import make_airbench_optimizer
from jaxunlearn.recipes.airbench import param_groups
from jaxunlearn.recipes.airbench import schedule_steps
from jaxunlearn.recipes.airbench_data import FLIP_MODES
from jaxunlearn.recipes.airbench_data import alternating_flips
from jaxunlearn.recipes.airbench_data import epoch_plan
from jaxunlearn.recipes.airbench_data import flip_where
from jaxunlearn.recipes.airbench_data import translate
from jaxunlearn.recipes.airbench_data import whitening_params

__all__ = (
    "AirbenchConfig", "FLIP_MODES", "GROUPS", "alternating_flips", "epoch_plan", "flip_where", "lr_factor",
    "make_airbench_fit", "make_airbench_optimizer", "param_groups", "schedule_steps", "translate",
    "whitening_params",
)
