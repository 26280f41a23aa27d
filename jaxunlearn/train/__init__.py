"""Training: pure steps, whole runs as ``lax.scan``, optax optimizers, batched evaluation."""

from jaxunlearn.train._config import OPTIMIZERS
from jaxunlearn.train._config import SCHEDULES
from jaxunlearn.train._config import TrainConfig
from jaxunlearn.train._config import make_optimizer
from jaxunlearn.train._config import make_schedule
from jaxunlearn.train._config import steps_per_epoch
from jaxunlearn.train._eval import evaluate
from jaxunlearn.train._eval import predict
from jaxunlearn.train._loop import check_training_set
from jaxunlearn.train._loop import train_model
from jaxunlearn.train._state import ModelState
from jaxunlearn.train._state import TrainState
from jaxunlearn.train._step import cross_entropy
from jaxunlearn.train._step import epoch_batches
from jaxunlearn.train._step import make_epoch
from jaxunlearn.train._step import make_fit
from jaxunlearn.train._step import make_step
from jaxunlearn.train._step import make_train_step
from jaxunlearn.train._step import supervised_loss

__all__ = (
    "OPTIMIZERS", "SCHEDULES", "TrainConfig", "make_optimizer", "make_schedule", "steps_per_epoch",
    "evaluate", "predict", "check_training_set", "train_model", "ModelState", "TrainState", "cross_entropy",
    "epoch_batches", "make_epoch", "make_fit", "make_step", "make_train_step", "supervised_loss",
)
