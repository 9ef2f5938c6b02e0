"""Scaled dot-product attention (Vaswani et al. 2017, equation 1): interchangeable formulations, and the
choice among them by backend ('auto': cuDNN's fused flash attention on GPUs where its constraints hold)."""

from __future__ import annotations

import logging
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

Implementation = Literal["auto", "einsum", "xla", "cudnn"]
IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")
_logged: set[tuple[str, str]] = set()


def choose_implementation(requested: str, *, backend: str, dtype: jnp.dtype, head_dim: int, query_length: int,
                          key_length: int) -> tuple[str, str]:
    """(implementation, why) for one attention call. 'auto' takes cuDNN's flash attention on a GPU for
    bf16/fp16 inputs, head widths up to 128 in multiples of 8, and queries as long as their keys (not the
    one-token steps of cached decoding, cross-attention); anything else takes the XLA path ('xla': `jax.nn.dot_product_attention`
    for float32, explicit einsums for reduced precision). A named implementation is taken as given."""
    if requested not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {requested!r}: use one of {', '.join(IMPLEMENTATIONS)}")
    if requested != "auto":
        return requested, "requested"
    reasons = []
    if backend != "gpu":
        reasons.append(f"the backend is {backend}")
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        reasons.append(f"{jnp.dtype(dtype).name} inputs (cuDNN fuses bf16 and fp16)")
    if head_dim > 128 or head_dim % 8:
        reasons.append(f"head width {head_dim} (cuDNN: a multiple of 8 up to 128)")
    if query_length != key_length:
        reasons.append(f"{query_length} queries over {key_length} keys (cross-attention or cached decoding)")
    if reasons:
        return "xla", "; ".join(reasons)
    return "cudnn", f"{jnp.dtype(dtype).name} on a GPU, head width {head_dim}"


def _log_choice(requested: str, chosen: str, why: str) -> None:
    if (chosen, why) not in _logged:
        _logged.add((chosen, why))
        logging.getLogger("flaxtrain").info("attention %r: %s (%s)", requested, chosen, why)


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
      implementation: 'einsum' (explicit matmuls, float32 softmax), 'xla'
        (`jax.nn.dot_product_attention` for float32 inputs; bf16 inputs take the einsum path), 'cudnn'
        (cuDNN's fused flash attention, GPUs only) or 'auto' (`choose_implementation`).

    Returns:
      [b, t, h, d] in the query's dtype.
    """
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    chosen, why = choose_implementation(implementation, backend=jax.default_backend(), dtype=query.dtype,
                                        head_dim=query.shape[-1], query_length=query.shape[1], key_length=key.shape[1])
    _log_choice(implementation, chosen, why)
    implementation = chosen
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(
            query, key, value, bias=None if bias is None else bias.astype(query.dtype), mask=mask, scale=scale,
            implementation="cudnn")
    # jax.nn.dot_product_attention's XLA path mixes bf16 and float32 inside (its backward pass fails under
    # strict dtype promotion), so reduced-precision inputs take the einsum path: bf16 matmuls, float32 softmax.
    if implementation == "xla" and query.dtype == jnp.float32:
        return jax.nn.dot_product_attention(
            query, key, value, bias=None if bias is None else bias.astype(query.dtype), mask=mask, scale=scale
        )
    if implementation == "xla":
        implementation = "einsum"
    scores = jnp.einsum("bthd,bshd->bhts", query, key).astype(jnp.float32) * scale
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    return jnp.einsum("bhts,bshd->bthd", weights, value)
