"""Transformer encoder in the BERT layout (Devlin et al. 2019): embeddings, post-LN blocks, pooler."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from flaxtrain import ops
from flaxtrain.layers import Dense, Embed, MultiHeadAttention, axes
from flaxtrain.layers.mlp import MLP
from flaxtrain.layers.norm import LayerNorm


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Sizes and switches of a BERT-layout encoder."""

    vocab_size: int  # word-piece vocabulary v
    hidden_size: int = 768  # model width m
    num_layers: int = 12  # encoder blocks
    num_heads: int = 12  # attention heads h (head width d = m / h)
    mlp_dim: int = 3072  # feed-forward width f
    max_positions: int = 512  # learned absolute positions
    type_vocab_size: int = 2  # token types (segments)
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    dropout_rate: float = 0.1  # dropout on embeddings and block outputs
    activation: str = "gelu"  # feed-forward activation (layers.mlp.ACTIVATIONS)
    pad_id: int = 0  # token id of padding
    attention: str = "einsum"  # ops.dot_product_attention implementation: 'einsum' or 'xla'
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # parameter storage dtype

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class EncoderLayer(nn.Module):
    """Post-LN block: x = norm(x + attention(x)); x = norm(x + mlp(x))."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, x: Float[Array, "b t m"], *, mask: jnp.ndarray, deterministic: bool) -> Float[Array, "b t m"]:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        h = MultiHeadAttention(cfg.num_heads, cfg.head_dim, implementation=cfg.attention, dtype=dtype,
                               param_dtype=param_dtype, name="attention")(x, mask=mask)
        h = nn.Dropout(cfg.dropout_rate, name="attention_dropout")(h, deterministic=deterministic)
        x = LayerNorm(cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name="attention_norm")(x + h)
        h = MLP(cfg.mlp_dim, cfg.activation, dtype=dtype, param_dtype=param_dtype, name="mlp")(x)
        h = nn.Dropout(cfg.dropout_rate, name="mlp_dropout")(h, deterministic=deterministic)
        return LayerNorm(cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name="mlp_norm")(x + h)


class Encoder(nn.Module):
    """Token ids -> ([b, t, m] hidden states, [b, m] pooled first-token state)."""

    config: EncoderConfig

    @nn.compact
    def __call__(
        self,
        input_ids: Int[Array, "b t"],
        *,
        attention_mask: Int[Array, "b t"] | None = None,
        token_type_ids: Int[Array, "b t"] | None = None,
        deterministic: bool,
    ) -> tuple[Float[Array, "b t m"], Float[Array, "b m"]]:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        valid = (input_ids != cfg.pad_id) if attention_mask is None else attention_mask.astype(bool)
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        token_types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        embed = lambda n, size: Embed(n, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype, name=size)  # noqa: E731
        x = embed(cfg.vocab_size, "word")(input_ids) + embed(cfg.max_positions, "position")(positions)
        if cfg.type_vocab_size > 0:
            x = x + embed(cfg.type_vocab_size, "token_type")(token_types)
        x = LayerNorm(cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name="embed_norm")(x)
        x = nn.Dropout(cfg.dropout_rate, name="embed_dropout")(x, deterministic=deterministic)
        mask = ops.make_key_padding_mask(valid, input_ids.shape[1])  # [b, 1, t, t]
        for i in range(cfg.num_layers):
            x = EncoderLayer(cfg, name=f"layer_{i}")(x, mask=mask, deterministic=deterministic)
        pooled = Dense(cfg.hidden_size, (axes.EMBED, axes.MLP), dtype=dtype, param_dtype=param_dtype, name="pooler")(x[:, 0])
        return x, jnp.tanh(pooled)
