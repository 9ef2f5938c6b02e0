"""Token embedding table with logical axis names."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from flaxtrain.layers import axes


class Embed(nn.Module):
    """Looks up rows of an [v, m] table; params named `embedding` with axes (vocab, embed)."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    init_stddev: float = 0.02

    @nn.compact
    def __call__(self, ids: Int[Array, ...]) -> Float[Array, "... m"]:
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_stddev), (axes.VOCAB, axes.EMBED)),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )
        return jnp.take(table, ids, axis=0).astype(self.dtype)
