"""Position-wise feed-forward block: dense to width f, activation, dense back to width m."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flaxtrain import ops
from flaxtrain.layers import axes
from flaxtrain.layers.dense import Dense

ACTIVATIONS = {
    "gelu": ops.gelu,  # exact erf GELU, as BERT checkpoints expect
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


class MLP(nn.Module):
    """`out(activation(hidden(x)))` with params `hidden` [m, f] and `out` [f, m]."""

    mlp_dim: int
    activation: str = "gelu"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "b t m"]) -> Float[Array, "b t m"]:
        h = Dense(self.mlp_dim, (axes.EMBED, axes.MLP), dtype=self.dtype, param_dtype=self.param_dtype, name="hidden")(x)
        h = ACTIVATIONS[self.activation](h)
        return Dense(x.shape[-1], (axes.MLP, axes.EMBED), dtype=self.dtype, param_dtype=self.param_dtype, name="out")(h)
