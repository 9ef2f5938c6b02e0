"""Layer normalisation (Ba et al. 2016) with a hand-written gradient, and RMS normalisation (T5)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the last axis; statistics in float32.

    Returns x's dtype. The backward pass is the closed form (one pass of two row sums over the
    saved normalised x), which XLA on CPU runs faster than the autodiff of the forward.
    """
    return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _normalise(x: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array]:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
    return centred * rstd, rstd


def _layer_norm_forward(x, scale, bias, epsilon):
    xhat, rstd = _normalise(x, epsilon)
    y = (xhat * _row(scale, x.ndim) + _row(bias, x.ndim)).astype(x.dtype)
    return y, (xhat, rstd, scale, bias)


def _layer_norm_backward(epsilon, residuals, g):
    del epsilon
    xhat, rstd, scale, bias = residuals
    g32 = g.astype(jnp.float32)
    reduce_axes = tuple(range(g.ndim - 1))
    dscale = jnp.sum(g32 * xhat, axis=reduce_axes).astype(scale.dtype)
    dbias = jnp.sum(g32, axis=reduce_axes).astype(bias.dtype)
    dxhat = g32 * _row(scale, g.ndim)
    dx = rstd * (dxhat - jnp.mean(dxhat, axis=-1, keepdims=True) - xhat * jnp.mean(dxhat * xhat, axis=-1, keepdims=True))
    return materialised(dx.astype(g.dtype)), dscale, dbias


def materialised(x: jax.Array) -> jax.Array:
    """x, unchanged; on CPU computed once into a buffer of its own.

    In a post-LN encoder the residual stream's gradient is, layer after layer, an element-wise chain of
    the LayerNorm backwards above it. XLA's CPU fusion copies that chain into every consumer (each
    LayerNorm's scale and bias sums, each weight-gradient operand): the fusions of the lowest layers
    recompute all the layers above. `jax.lax.optimization_barrier` does not stop it (XLA's CPU pipeline
    removes barriers before fusion); a dot does, as XLA on CPU never fuses a dot's operands: x as
    [n, 2] pairs times the 2 x 2 identity, exact (x * 1 + y * 0 = x for finite values) and nearly free.
    MiniLM's train step at batch 32 x 32 tokens: 3.0 s -> 1.5 s on a 2-core CPU (benchmarks/README.md).
    Other backends get x as it is (their fusion passes differ; the cut was measured on CPU only).
    """
    if x.size % 2:
        return x
    return jax.lax.platform_dependent(x, cpu=_through_identity_dot, default=lambda v: v)


def _through_identity_dot(x: jax.Array) -> jax.Array:
    return jnp.matmul(x.reshape(-1, 2), jnp.eye(2, dtype=x.dtype)).reshape(x.shape)


def _row(v: jax.Array, ndim: int) -> jax.Array:
    """A [m] param as float32 [1, ..., 1, m] (explicit rank, for strict rank promotion)."""
    return v.astype(jnp.float32).reshape((1,) * (ndim - 1) + v.shape)


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


def rms_norm(x: jax.Array, scale: jax.Array, epsilon: float) -> jax.Array:
    """x / sqrt(mean(x^2) + epsilon) * scale over the last axis (no centring, no bias), as T5's
    LayerNorm computes it: statistics in float32, the result cast back to x's dtype."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + epsilon)
    return (normed * _row(scale, x.ndim)).astype(x.dtype)
