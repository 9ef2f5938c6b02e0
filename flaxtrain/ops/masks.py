"""Attention masks: boolean [b, 1 | h, t, s] arrays, True where a query may attend to a key."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


def make_padding_mask(query_valid: Bool[Array, "b t"], key_valid: Bool[Array, "b s"]) -> Bool[Array, "b 1 t s"]:
    """True where both the query position and the key position are real tokens."""
    return query_valid[:, None, :, None] & key_valid[:, None, None, :]


def make_key_padding_mask(key_valid: Bool[Array, "b s"], query_length: int) -> Bool[Array, "b 1 t s"]:
    """True where the key is a real token, for every one of `query_length` queries (BERT's convention)."""
    return jnp.broadcast_to(key_valid[:, None, None, :], (key_valid.shape[0], 1, query_length, key_valid.shape[1]))


def make_causal_mask(length: int, *, offset: Int[Array, ""] | int = 0, key_length: int | None = None) -> Bool[Array, "1 1 t s"]:
    """True where key position <= query position + offset (queries start at `offset` in a cache)."""
    key_length = length if key_length is None else key_length
    query_positions = jnp.arange(length)[:, None] + offset
    return (jnp.arange(key_length)[None, :] <= query_positions)[None, None]


def combine_masks(*masks: Bool[Array, ...] | None) -> Bool[Array, ...] | None:
    """Logical and of the masks that are not None (None when all are None)."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for mask in present[1:]:
        out = out & mask
    return out


def make_segment_mask(segment_ids: Int[Array, "b t"]) -> Bool[Array, "b 1 t t"]:
    """True where query and key lie in the same packed document (segment ids > 0; 0 is padding):
    no token attends across a document boundary."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & (segment_ids[:, None, :] > 0))[:, None]
