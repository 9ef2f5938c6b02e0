"""Layer normalisation computed in float32, with logical axis names on its params."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from flaxtrain.layers import axes


def LayerNorm(epsilon: float = 1e-12, *, dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,  # noqa: N802
              name: str | None = None) -> nn.LayerNorm:
    """An `nn.LayerNorm` (params `scale`, `bias` on the embed axis) whose statistics are float32."""
    return nn.LayerNorm(
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
        force_float32_reductions=True,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axes.EMBED,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.EMBED,)),
        name=name,
    )
