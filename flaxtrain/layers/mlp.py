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
    "silu": jax.nn.silu,  # Marian's "swish"
}


class MLP(nn.Module):
    """`out(activation(hidden(x)))` with params `hidden` [m, f] and `out` [f, m].

    `gated=True` is the gated variant of Shazeer 2020 (T5 v1.1): `out(activation(hidden(x)) * linear(x))`.
    """

    mlp_dim: int
    activation: str = "gelu"
    use_bias: bool = True
    gated: bool = False
    dropout_rate: float = 0.0  # on the activations before `out` (T5)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "b t m"], *, deterministic: bool = True) -> Float[Array, "b t m"]:
        dense = lambda width, kernel_axes, name: Dense(  # noqa: E731
            width, kernel_axes, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        h = ACTIVATIONS[self.activation](dense(self.mlp_dim, (axes.EMBED, axes.MLP), "hidden")(x))
        if self.gated:
            h = h * dense(self.mlp_dim, (axes.EMBED, axes.MLP), "linear")(x)
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return dense(x.shape[-1], (axes.MLP, axes.EMBED), "out")(h)
