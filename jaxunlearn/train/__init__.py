"""Training: optimizer settings, pure steps, the one epoch/step loop, whole runs and batched evaluation."""

from jaxunlearn.train._checks import check_bool
from jaxunlearn.train._checks import check_choice
from jaxunlearn.train._checks import check_int
from jaxunlearn.train._checks import check_int_tuple
from jaxunlearn.train._checks import check_real
from jaxunlearn.train._config import TrainConfig
from jaxunlearn.train._config import steps_per_epoch
from jaxunlearn.train._eval import SCORING_PRECISION
from jaxunlearn.train._eval import evaluate
from jaxunlearn.train._eval import map_batches
from jaxunlearn.train._eval import predict
from jaxunlearn.train._fit import check_training_set
from jaxunlearn.train._fit import make_epoch
from jaxunlearn.train._fit import make_fit
from jaxunlearn.train._fit import train_model
from jaxunlearn.train._loop import EXECUTORS
from jaxunlearn.train._loop import branch
from jaxunlearn.train._loop import current_executor
from jaxunlearn.train._loop import Batches
from jaxunlearn.train._loop import cycled_batches
from jaxunlearn.train._loop import epoch_batches
from jaxunlearn.train._loop import epoch_keys
from jaxunlearn.train._loop import pass_keys
from jaxunlearn.train._loop import resolve_executor
from jaxunlearn.train._loop import count_steps
from jaxunlearn.train._loop import run_epochs
from jaxunlearn.train._loop import scan_epochs
from jaxunlearn.train._loop import scan_steps
from jaxunlearn.train._loop import use_executor
from jaxunlearn.train._optim import OPTIMIZERS
from jaxunlearn.train._optim import SCHEDULES
from jaxunlearn.train._optim import OptimConfig
from jaxunlearn.train._optim import as_hparams
from jaxunlearn.train._optim import hparam
from jaxunlearn.train._optim import hparam_fields
from jaxunlearn.train._optim import make_optimizer
from jaxunlearn.train._optim import make_schedule
from jaxunlearn.train._state import ModelState
from jaxunlearn.train._state import TrainState
from jaxunlearn.train._step import cross_entropy
from jaxunlearn.train._step import make_step
from jaxunlearn.train._step import make_train_step
from jaxunlearn.train._step import supervised_loss

__all__ = (
    "check_bool", "check_choice", "check_int", "check_int_tuple", "check_real",
    "TrainConfig", "steps_per_epoch", "SCORING_PRECISION", "evaluate", "map_batches", "predict",
    "check_training_set", "make_epoch", "make_fit", "train_model",
    "EXECUTORS", "branch", "count_steps", "current_executor", "resolve_executor", "use_executor",
    "Batches", "cycled_batches", "epoch_batches", "epoch_keys", "pass_keys", "run_epochs", "scan_epochs", "scan_steps",
    "OPTIMIZERS", "SCHEDULES", "OptimConfig", "as_hparams", "hparam", "hparam_fields", "make_optimizer",
    "make_schedule", "ModelState", "TrainState", "cross_entropy", "make_step", "make_train_step",
    "supervised_loss",
)
