"""Scaled dot-product attention (Vaswani et al. 2017, equation 1), two interchangeable formulations."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

Implementation = Literal["einsum", "xla"]


def dot_product_attention(
    query: Float[Array, "b t h d"],
    key: Float[Array, "b s h d"],
    value: Float[Array, "b s h d"],
    *,
    mask: Bool[Array, (b #h t s
)] | None = None,
    bias: Float[Array, "#b #h t s"] | None = None,
    scale: float | None = None,
    implementation: Implementation = "einsum",
) -> Float[Array, "b t h d"]:
    """softmax(q k^T * scale + bias, masked) v, with the softmax in float32.

    Args:
      query: [b, t, h, d].
      key, value: [b, s, h, d].
      mask: boolean, broadcastable to [b, h, t, s]; False positions get no weight. A query whose
        keys are all masked attends uniformly (its output is then meaningless but finite).
      bias: additive scores broadcastable to [b, h, t, s] (relative positions, ALiBi).
      scale: multiplies the scores; default 1 / sqrt(d).
      implementation: 'einsum' (explicit matmuls, float32 softmax) or 'xla'
        (`jax.nn.dot_product_attention` for float32 inputs, which may pick a fused kernel on
        accelerators; bf16 inputs take the einsum path).

    Returns:
      [b, t, h, d] in the query's dtype.
    """
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    # jax.nn.dot_product_attention's XLA path mixes bf16 and float32 inside (its backward pass fails under
    # strict dtype promotion), so reduced-precision inputs take the einsum path: bf16 matmuls, float32 softmax.
    if implementation == "xla" and query.dtype == jnp.float32:
        return jax.nn.dot_product_attention(
            query, key, value, bias=None if bias is None else bias.astype(query.dtype), mask=mask, scale=scale
        )
    if implementation == "xla":
        implementation = "einsum"
    if implementation != "einsum":
        raise ValueError(f"unknown attention implementation {implementation!r}: use 'einsum' or 'xla'")
    scores = jnp.einsum("bthd,bshd->bhts", query, key).astype(jnp.float32) * scale
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    return jnp.einsum("bhts,bshd->bthd", weights, value)
