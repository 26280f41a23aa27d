"""Hyperparameter grids and seeds as one compiled program: ``jaxunlearn tune`` and ``jaxunlearn run --seeds / --tuned``."""

from jaxunlearn.sweeps.engine import EvalSet
from jaxunlearn.sweeps.engine import Evaluated
from jaxunlearn.sweeps.engine import evaluate_states
from jaxunlearn.sweeps.engine import mia_scores
from jaxunlearn.sweeps.engine import original_key
from jaxunlearn.sweeps.engine import run_grid
from jaxunlearn.sweeps.engine import seed_key
from jaxunlearn.sweeps.engine import train_originals
from jaxunlearn.sweeps.grid import GRID_HELP
from jaxunlearn.sweeps.grid import Grid
from jaxunlearn.sweeps.grid import GridGroup
from jaxunlearn.sweeps.grid import expand_grid
from jaxunlearn.sweeps.grid import parse_grid
from jaxunlearn.sweeps.grid import parse_values
from jaxunlearn.sweeps.seeds import format_seeds
from jaxunlearn.sweeps.seeds import run_job
from jaxunlearn.sweeps.seeds import run_seeds
from jaxunlearn.sweeps.seeds import tuned_config
from jaxunlearn.sweeps.select import SELECT_MODES
from jaxunlearn.sweeps.select import choose
from jaxunlearn.sweeps.select import objective_no_oracle
from jaxunlearn.sweeps.select import objective_oracle
from jaxunlearn.sweeps.tune import TuneConfig
from jaxunlearn.sweeps.tune import default_grid
from jaxunlearn.sweeps.tune import format_tune
from jaxunlearn.sweeps.tune import prepare_tune
from jaxunlearn.sweeps.tune import run_tune
from jaxunlearn.sweeps.tune import execute_tune

__all__ = (
    "GRID_HELP", "SELECT_MODES", "EvalSet", "Evaluated", "Grid", "GridGroup", "TuneConfig", "choose", "default_grid",
    "evaluate_states", "expand_grid", "format_seeds", "format_tune", "mia_scores", "objective_no_oracle",
    "objective_oracle", "original_key", "parse_grid", "parse_values", "prepare_tune", "run_grid", "run_job", "run_tune",
    "run_seeds", "seed_key", "train_originals", "execute_tune", "tuned_config",
)
