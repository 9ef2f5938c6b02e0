"""Activations with hand-written gradients where XLA's own are slow on CPU."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, x * Phi(x), as BERT-family checkpoints expect.

    Same values as `jax.nn.gelu(x, approximate=False)`. The backward pass reuses the forward's
    Phi(x) and needs one exp, where autodiff of the erf form re-evaluates erf inside the gradient's
    fusions (a third of a MiniLM train step's element-wise time; benchmarks/README.md).
    """
    return x * _phi(x)


def _phi(x: jax.Array) -> jax.Array:
    return 0.5 * jax.lax.erfc(-x * jnp.asarray(_SQRT_HALF, x.dtype))  # erfc: no cancellation for x << 0


def _gelu_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    phi = _phi(x)
    return x * phi, (x, phi)


def _gelu_backward(residuals: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
    x, phi = residuals
    density = jnp.exp(-0.5 * x * x) * jnp.asarray(_INV_SQRT_2PI, x.dtype)
    return (g * (phi + x * density),)


gelu.defvjp(_gelu_forward, _gelu_backward)
