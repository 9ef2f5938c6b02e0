"""Pure train, eval and predict steps. No logging, host transfers or branching on array values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flaxtrain import ops
from flaxtrain.train.state import TrainState

Batch = dict[str, jax.Array]
# loss_fn(apply_fn, params, batch, *, rngs, deterministic) -> (loss_sum, metric sums incl. 'count')
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def classification_loss(
    apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array], deterministic: bool
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross entropy of a text classifier on batch {'input_ids', 'label', 'weight'}."""
    logits = apply_fn({"params": params}, batch["input_ids"], deterministic=deterministic, rngs=rngs)
    sums = ops.classification_sums(logits, batch["label"], batch["weight"])
    return sums["loss_sum"], sums


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, loss_fn: LossFn) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on the batch's mean loss.

    Args:
      state: the TrainState.
      batch: dict of [b, ...] arrays with a float32 'weight' ([b], 0 on batch padding).
      rng: base key; the dropout key is `fold_in(rng, state.step)`, so no key is used twice.
      loss_fn: returns (weighted loss sum, metric sums with 'count').

    Returns:
      (new state, metric sums of this batch).
    """
    rngs = {"dropout": jax.random.fold_in(rng, state.step)}

    def mean_loss(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        loss_sum, sums = loss_fn(state.apply_fn, params, batch, rngs=rngs, deterministic=False)
        return loss_sum / jnp.maximum(sums["count"], 1.0), sums

    grads, sums = jax.grad(mean_loss, has_aux=True)(state.params)
    # Optax's Adam raises a Python float to its int32 step count, which strict dtype promotion
    # (on in flaxtrain's tests) rejects; its maths is Optax's own, so it runs under standard rules.
    with jax.numpy_dtype_promotion("standard"):
        state = state.apply_gradients(grads=grads)
    return state, sums


def eval_step(state: TrainState, batch: Batch, *, loss_fn: LossFn) -> dict[str, jax.Array]:
    """Metric sums of the batch without dropout."""
    _, sums = loss_fn(state.apply_fn, state.params, batch, rngs={}, deterministic=True)
    return sums


def predict_step(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """Float32 log-probabilities [b, c] of a classifier on batch['input_ids']."""
    logits = apply_fn({"params": params}, batch["input_ids"], deterministic=True)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
