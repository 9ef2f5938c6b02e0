"""Layer and RMS normalisation computed in float32, with logical axis names on their params."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from flaxtrain import ops
from flaxtrain.layers import axes


class LayerNorm(nn.Module):
    """`ops.layer_norm` over the last axis, params `scale` and `bias` (embed axis), float32 statistics.

    Same params and values as `nn.LayerNorm(use_fast_variance=False)`; its hand-written gradient is
    faster on CPU (benchmarks/README.md).
    """

    epsilon: float = 1e-12
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... m"]) -> Float[Array, "... m"]:
        width = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), (axes.EMBED,)),
                           (width,), self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.EMBED,)),
                          (width,), self.param_dtype)
        return ops.layer_norm(x.astype(self.dtype), scale, bias, self.epsilon)


class RMSNorm(nn.Module):
    """`ops.rms_norm` over the last axis with one param, `scale` (T5's LayerNorm: no mean, no bias)."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... m"]) -> Float[Array, "... m"]:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), (axes.EMBED,)),
                           (x.shape[-1],), self.param_dtype)
        return ops.rms_norm(x.astype(self.dtype), scale, self.epsilon)
