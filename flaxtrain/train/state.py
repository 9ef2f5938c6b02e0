"""TrainState: step, params and optimizer state, and how to create one."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, optimizer state) plus `halted`: 0 while every step was
    finite, else the 1-based step whose loss or updated weights were not, after which the train step
    changes nothing (so the weights stay the last finite ones until the loop sees it and stops)."""

    halted: jax.Array | int = struct.field(default=0)


def init_params(module: nn.Module, sample_inputs: dict[str, jax.Array], rng: jax.Array) -> Any:
    """Initialises `module` on `sample_inputs` and returns its params without partitioning boxes."""
    variables = module.init({"params": rng, "dropout": rng}, **sample_inputs, deterministic=True)
    return nn.meta.unbox(variables["params"])


def copy_tree(tree: Any) -> Any:
    """A copy of every array in `tree`, placed as it was (buffers the train step may donate). Arrays this
    process holds whole are copied by the runtime, not by `jnp.copy`, which compiles one tiny program per
    leaf shape; arrays spanning several processes (a multi-host state) by `jnp.copy`, which keeps their sharding."""
    def copy(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jnp.copy(x)
        return jax.device_put(x, may_alias=False)

    return jax.tree.map(copy, tree)


def init_opt_state(tx: optax.GradientTransformation, params: Any) -> Any:
    """`tx.init(params)` as one compiled program (run eagerly, its zeros compile one program per leaf shape)."""
    return jax.jit(tx.init)(params)


def create_train_state(module: nn.Module, params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A TrainState at step 0 for `params`, with a fresh optimizer state."""
    return TrainState(step=0, apply_fn=module.apply, params=params, tx=tx, opt_state=init_opt_state(tx, params),
                      halted=jnp.zeros((), jnp.int32))


@jax.jit
def update_average(average: Any, params: Any, count: jax.Array) -> Any:
    """Running mean of params after `count` earlier ones: average + (params - average) / (count + 1).

    Stochastic weight averaging (Izmailov et al. 2018, equation 2) of per-epoch weights.
    """
    weight = 1.0 / (count.astype(jnp.float32) + 1.0)
    return jax.tree.map(lambda a, p: a + (p - a) * weight.astype(a.dtype), average, params)
