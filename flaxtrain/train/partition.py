"""Compiles the pure steps once per model, with the train state donated."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax

from flaxtrain.train import step as step_lib


class CompiledSteps(NamedTuple):
    train: Callable  # (state, batch, rng) -> (state, sums); state donated
    eval: Callable  # (state, batch) -> sums
    predict: Callable  # (params, batch) -> log-probs


def compile_steps(apply_fn: Callable, loss_fn: step_lib.LossFn = step_lib.classification_loss) -> CompiledSteps:
    """Jitted train/eval/predict steps for one model on the default device."""
    return CompiledSteps(
        train=jax.jit(functools.partial(step_lib.train_step, loss_fn=loss_fn), donate_argnums=0),
        eval=jax.jit(functools.partial(step_lib.eval_step, loss_fn=loss_fn)),
        predict=jax.jit(functools.partial(step_lib.predict_step, apply_fn)),
    )
