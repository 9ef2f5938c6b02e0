"""Rematerialization (gradient checkpointing) of a model's blocks by named policy."""

from __future__ import annotations

import flax.linen as nn
import jax

from flaxtrain.errors import FlaxtrainError

# Rematerialization policies by name: what a block keeps from its forward pass for the backward one.
REMAT = {"full": None, "dots": jax.checkpoint_policies.checkpoint_dots}  # None: keep nothing, recompute all


def check_policy(name: str) -> None:
    """A one-line error for an unknown policy name (configs check theirs when built)."""
    if name != "none" and name not in REMAT:
        raise FlaxtrainError(f"remat must be 'none', {', '.join(repr(k) for k in REMAT)}, got {name!r}")


def remat(layer: type[nn.Module], name: str, static_argnums: tuple[int, ...]) -> type[nn.Module]:
    """`layer` itself ('none'), or wrapped to recompute its activations under the named policy."""
    check_policy(name)
    if name == "none":
        return layer
    return nn.remat(layer, policy=REMAT[name], static_argnums=static_argnums)
