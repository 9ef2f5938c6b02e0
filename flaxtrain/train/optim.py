"""The Optax optimizer chain built from a few knobs; its learning rate can be changed between fits."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def param_path(path: tuple) -> str:
    """'encoder/layer_0/mlp/up/kernel' for a params-tree key path."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def is_frozen(path: str, frozen: tuple[str, ...]) -> bool:
    """Whether a param path lies under one of the `frozen` prefixes ('encoder', 'decoder/layer_0')."""
    return any(path == name or path.startswith(name + "/") for name in frozen)


def _adamw_chain(
    learning_rate: float, weight_decay: float, b1: float, b2: float, eps: float, clip_norm: float | None,
    frozen: tuple[str, ...] = (),
) -> optax.GradientTransformation:
    parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    parts.append(optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    chain = optax.chain(*parts)
    if not frozen:
        return chain

    def labels(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if is_frozen(param_path(path), frozen) else "train", params)

    # Frozen params get zero updates and no Adam moments; their gradients are never read, so XLA
    # drops the backward pass into them.
    return optax.multi_transform({"train": chain, "frozen": optax.set_to_zero()}, labels)


def make_optimizer(
    learning_rate: float | optax.Schedule,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    frozen: tuple[str, ...] = (),
) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019), optionally after global-norm clipping, with injected hyperparams.

    The learning rate, weight decay and betas live in the optimizer state (`optax.inject_hyperparams`),
    so `set_hyperparams` changes them between steps (schedules, one-cycle momentum) without
    recompiling the step. (Adam raises b1 and b2 to its integer step count; the train step runs the
    update under standard dtype promotion for that.)

    Args:
      learning_rate: a constant or an Optax schedule of the step.
      weight_decay: decoupled weight decay; 0 gives Adam.
      clip_norm: clip the global gradient norm to this value when set.
      b1, b2, eps: Adam's moment decay rates and epsilon.
      frozen: param path prefixes ('encoder', 'shared', 'decoder/layer_0') left as they are: zero
        updates, no weight decay, no optimizer state, and outside the clipped gradient norm.
    """
    return optax.inject_hyperparams(_adamw_chain, static_args=("eps", "clip_norm", "frozen"))(
        learning_rate=learning_rate, weight_decay=weight_decay, b1=b1, b2=b2, eps=eps, clip_norm=clip_norm,
        frozen=tuple(frozen),
    )


def set_hyperparams(opt_state: Any, **values: float) -> Any:
    """A copy of `opt_state` with injected hyperparams (e.g. learning_rate=3e-4) replaced, as float32 scalars."""
    hyperparams = dict(opt_state.hyperparams)
    for name, value in values.items():
        hyperparams[name] = jnp.asarray(value, jnp.float32)
    return opt_state._replace(hyperparams=hyperparams)
