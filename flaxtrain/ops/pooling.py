"""Pooling over the time axis that ignores padded positions."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def masked_max_over_time(x: Float[Array, "b t f"], mask: Bool[Array, "b t"]) -> Float[Array, "b f"]:
    """Max over t of x where mask is True; rows with no True position give 0.

    Args:
      x: [b, t, f] features.
      mask: [b, t] True at positions that count.

    Returns:
      [b, f] maxima, in x's dtype.
    """
    lowest = jnp.finfo(x.dtype).min
    pooled = jnp.max(jnp.where(jnp.expand_dims(mask, -1), x, lowest), axis=1)
    has_any = jnp.any(mask, axis=1, keepdims=True)
    return jnp.where(has_any, pooled, jnp.zeros_like(pooled))


def masked_mean_over_time(x: Float[Array, "b t f"], mask: Bool[Array, "b t"]) -> Float[Array, "b f"]:
    """Mean over t of x where mask is True; rows with no True position give 0.

    Args:
      x: [b, t, f] features.
      mask: [b, t] True at positions that count.

    Returns:
      [b, f] means, in x's dtype.
    """
    weights = jnp.expand_dims(mask.astype(x.dtype), -1)
    total = jnp.sum(x * weights, axis=1)
    count = jnp.maximum(jnp.sum(weights, axis=1), jnp.ones((), x.dtype))
    return total / count
