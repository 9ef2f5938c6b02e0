"""Dense layer whose kernel and bias carry logical axis names."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def Dense(
    features: int,
    kernel_axes: tuple[str, str],
    *,
    use_bias: bool = True,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    name: str | None = None,
) -> nn.Dense:
    """Returns an `nn.Dense` with kernel axes `kernel_axes` and bias axis `kernel_axes[1]`."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), kernel_axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (kernel_axes[1],)),
        name=name,
    )
