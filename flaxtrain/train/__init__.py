"""Training: state, pure steps, optimizer, compiled steps and the loop."""

from flaxtrain.train import schedules
from flaxtrain.train.optim import make_optimizer, set_hyperparams
from flaxtrain.train.partition import CompiledSteps, compile_steps
from flaxtrain.train.state import (
    TrainState,
    create_train_state,
    init_params,
    update_average,
)
from flaxtrain.train.step import LossFn, eval_step, train_step

__all__ = [
    "schedules",
    "make_optimizer",
    "set_hyperparams",
    "CompiledSteps",
    "compile_steps",
    "TrainState",
    "create_train_state",
    "init_params",
    "update_average",
    "LossFn",
    "eval_step",
    "train_step",
]
