"""Multi-head attention for self- and cross-attention, with an optional key/value cache for decoding."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flaxtrain import ops
from flaxtrain.layers import axes


class MultiHeadAttention(nn.Module):
    """Projections to h heads of width d, `ops.dot_product_attention`, and an output projection.

    Params: `query`, `key`, `value` ([m, h, d] kernels) and `out` ([h, d, m]), with biases when
    `use_bias`. With `decode=True` the keys and values of earlier calls are kept in the `cache`
    collection, so one new token at a time attends to everything before it; a cross-attention keeps
    the projected encoder states there instead (`cached_kv=True` reads them back, so each decoding
    step projects only its own token).
    """

    num_heads: int
    head_dim: int
    use_bias: bool = True
    scale: float | None = None  # default 1 / sqrt(head_dim); T5 uses 1.0
    dropout_rate: float = 0.0  # on the attention output, before the residual (applied by the caller's block)
    implementation: ops.attention.Implementation = "einsum"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _projection(self, name: str, features: int) -> _HeadsKernel:
        return _HeadsKernel(features, self.num_heads, self.head_dim, self.use_bias, self.param_dtype, name=name)

    @nn.compact
    def __call__(
        self,
        inputs_q: Float[Array, "b t m"],
        inputs_kv: Float[Array, "b s m"] | None = None,
        *,
        mask: Bool[Array, (b #h t s
)] | None = None,
        bias: Float[Array, "#b #h t s"] | None = None,
        decode: bool = False,
        cached_kv: bool = False,
    ) -> Float[Array, "b t m"]:
        """Attends from inputs_q to inputs_kv (to inputs_q itself when None).

        Args:
          inputs_q: [b, t, m] queries' inputs.
          inputs_kv: [b, s, m] keys' and values' inputs, or None for self-attention.
          mask: boolean, True where a query may attend to a key. When decoding, it covers the whole
            cache ([.., t, cache length]); causal masking of the cache is applied here.
          bias: additive attention scores (relative positions).
          decode: self-attention: use and extend the key/value cache. Cross-attention: store the
            projected keys and values of inputs_kv in the cache.
          cached_kv: cross-attention to the keys and values an earlier `decode` call stored
            (inputs_kv is then None).
        """
        names = ("query", "key", "value")
        if cached_kv:
            (query,) = self._project(inputs_q, [self._projection("query", inputs_q.shape[-1])()])
            key, value = self.get_variable("cache", "cross_key"), self.get_variable("cache", "cross_value")
            if key is None:
                raise ValueError("cached_kv=True needs a cache filled by a decode=True call with inputs_kv")
        elif inputs_kv is None:
            # Self-attention: one [m, 3, h, d] matmul instead of three [m, h, d] ones (fewer, larger
            # GEMMs; same params and numbers; the heads axis stays whole for tensor parallelism).
            query, key, value = self._project(inputs_q, [self._projection(n, inputs_q.shape[-1])() for n in names])
        else:
            (query,) = self._project(inputs_q, [self._projection("query", inputs_q.shape[-1])()])
            key, value = self._project(inputs_kv, [self._projection(n, inputs_kv.shape[-1])() for n in names[1:]])
        if cached_kv:
            pass
        elif decode and inputs_kv is None:
            key, value, mask = self._extend_cache(key, value, mask)
        elif decode:  # cross-attention: keep the encoder's projected keys and values for later steps
            self.put_variable("cache", "cross_key", key)
            self.put_variable("cache", "cross_value", value)
        out = ops.dot_product_attention(
            query, key, value, mask=mask, bias=bias, scale=self.scale, implementation=self.implementation
        )
        return nn.DenseGeneral(
            inputs_q.shape[-1],
            axis=(-2, -1),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), (axes.HEADS, axes.HEAD_DIM, axes.EMBED)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.EMBED,)),
            name="out",
        )(out)

    def _project(self, x: jax.Array, projections: list[tuple[jax.Array, jax.Array | None]]) -> list[jax.Array]:
        """x [b, t, m] through k stacked ([m, h, d] kernel, [h, d] bias) pairs in one matmul -> k [b, t, h, d]."""
        kernel = jnp.stack([k for k, _ in projections], axis=1)  # [m, k, h, d]
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        y = jnp.einsum("btm,mkhd->kbthd", x, kernel)
        if self.use_bias:
            bias = jnp.stack([b for _, b in projections], axis=0).astype(y.dtype)  # [k, h, d]
            y = y + bias[:, None, None]
        return list(y)

    def _extend_cache(
        self, key: jax.Array, value: jax.Array, mask: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Writes this call's keys/values at the cache index; returns the whole cache and its mask.

        The cache is created by `init` with the full decode length as the key length, e.g.
        `module.init(rng, jnp.zeros((b, max_length, m)), decode=True)`.
        """
        initialising = not self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if initialising:
            return key, value, mask
        length = key.shape[1]  # new positions this call
        max_length = cached_key.value.shape[1]
        start = index.value
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, start, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, start, 0, 0))
        index.value = start + length
        causal = ops.make_causal_mask(length, offset=start, key_length=max_length)  # [1, 1, t, max_length]
        return cached_key.value, cached_value.value, ops.combine_masks(causal, mask)


class _HeadsKernel(nn.Module):
    """Declares one projection's [m, h, d] kernel and [h, d] bias (as `nn.DenseGeneral` names them)."""

    features: int
    num_heads: int
    head_dim: int
    use_bias: bool
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array | None]:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (axes.EMBED, axes.HEADS, axes.HEAD_DIM)),
            (self.features, self.num_heads, self.head_dim),
            self.param_dtype,
        )
        if not self.use_bias:
            return kernel, None
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.HEADS, axes.HEAD_DIM)),
            (self.num_heads, self.head_dim),
            self.param_dtype,
        )
        return kernel, bias
