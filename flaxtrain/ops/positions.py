"""Position encodings: T5's relative position buckets (Raffel et al. 2020) and sinusoidal tables."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int


def relative_position_buckets(
    relative_position: Int[Array, "t s"], *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> Int[Array, "t s"]:
    """Bucket of each (key position - query position), as T5 numbers them.

    Half the buckets are exact distances 0, 1, ...; the rest grow logarithmically up to
    `max_distance` (farther keys share the last bucket). Bidirectional (encoder) buckets keep the
    sign: the upper half of the buckets holds keys after the query; a causal decoder counts only
    keys before the query.
    """
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (scaled * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, distance, large)


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
    """[num_positions, dim] float32: sines in the first half of each row, cosines in the second
    (Marian's layout of Vaswani et al. 2017's encoding, not interleaved)."""
    position = np.arange(num_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angles = position / np.power(10000, 2 * (j // 2) / dim)[None, :]
    half = (dim + 1) // 2
    table = np.empty((num_positions, dim), np.float64)
    table[:, :half] = np.sin(angles[:, 0::2])
    table[:, half:] = np.cos(angles[:, 1::2])
    return table.astype(np.float32)


def segment_positions(segment_ids: Int[Array, "b t"]) -> Int[Array, "b t"]:
    """Position of each token inside its packed document: 0 at every segment start, counting up."""
    index = jnp.broadcast_to(jnp.arange(segment_ids.shape[1]), segment_ids.shape)
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    first = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return index - first
