"""Transformer encoder in the BERT layout (Devlin et al. 2019): embeddings, post-LN blocks, pooler.

One stack covers the BERT family through its config: DistilBERT (no token types, no pooler),
RoBERTa and XLM-R (positions counted from pad_id + 1 over real tokens), ALBERT (factorised
embeddings of width embedding_dim projected to the model width, one block shared by all layers).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from flaxtrain import ops
from flaxtrain.layers import Dense, Embed, MultiHeadAttention, axes
from flaxtrain.layers.mlp import MLP
from flaxtrain.layers.norm import LayerNorm
from flaxtrain.layers.remat import check_policy, remat
from flaxtrain.layers.sharding import constrain


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Sizes and switches of a BERT-layout encoder."""

    vocab_size: int  # word-piece vocabulary v
    family: str = "bert"  # checkpoint family: bert, roberta, xlm-roberta, distilbert, albert (sets head layouts)
    hidden_size: int = 768  # model width m
    num_layers: int = 12  # encoder blocks
    num_heads: int = 12  # attention heads h (head width d = m / h)
    mlp_dim: int = 3072  # feed-forward width f
    max_positions: int = 512  # learned absolute positions
    type_vocab_size: int = 2  # token types (segments)
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    dropout_rate: float = 0.1  # dropout on embeddings and block outputs
    activation: str = "gelu"  # feed-forward activation (layers.mlp.ACTIVATIONS)
    pad_id: int = 0  # token id of padding (config.json's pad_token_id: RoBERTa positions count from it)
    mask_pad_id: int | None = None  # the tokenizer's padding id where it differs from pad_id: masked as padding
    embedding_dim: int | None = None  # ALBERT: embedding width E, projected to hidden_size (None: hidden_size)
    share_layers: bool = False  # ALBERT: one block's params used by every layer
    roberta_positions: bool = False  # RoBERTa/XLM-R: position of a real token = pad_id + its 1-based index
    use_pooler: bool = True  # tanh(dense(first token)); DistilBERT has none and returns the first token
    attention: str = "auto"  # ops.dot_product_attention path: "auto" (cuDNN flash attention on GPUs where it applies,
    # else "xla", faster than "einsum" on CPU: benchmarks/README.md), or one of "xla", "einsum", "cudnn"
    remat: str = "none"  # recompute each block's activations in the backward pass: 'none', 'full' or 'dots' (REMAT)
    scan_layers: bool = False  # the blocks under nn.scan: params stacked in 'layers' (one compile of one block)
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # parameter storage dtype

    def __post_init__(self) -> None:
        check_policy(self.remat)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class EncoderLayer(nn.Module):
    """Post-LN block: x = norm(x + attention(x)); x = norm(x + mlp(x))."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, x: Float[Array, "b t m"], mask: jnp.ndarray, deterministic: bool) -> Float[Array, "b t m"]:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        h = MultiHeadAttention(cfg.num_heads, cfg.head_dim, implementation=cfg.attention, dtype=dtype,
                               param_dtype=param_dtype, name="attention")(x, mask=mask)
        h = nn.Dropout(cfg.dropout_rate, name="attention_dropout")(h, deterministic=deterministic)
        x = LayerNorm(cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name="attention_norm")(x + h)
        h = MLP(cfg.mlp_dim, cfg.activation, dtype=dtype, param_dtype=param_dtype, name="mlp")(x)
        h = nn.Dropout(cfg.dropout_rate, name="mlp_dropout")(h, deterministic=deterministic)
        return LayerNorm(cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name="mlp_norm")(x + h)


class ScannedLayer(nn.Module):
    """One step of the scanned stack: a block (rematerialized as configured) on the carried states."""

    config: EncoderConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Float[Array, "b t m"], mask: jnp.ndarray) -> tuple[Float[Array, "b t m"], None]:
        block = remat(EncoderLayer, self.config.remat, static_argnums=(3,))
        x = block(self.config, name="layer")(x, mask, self.deterministic)
        return constrain(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)), None


def stack_layers(params: dict, num_layers: int) -> dict:
    """Encoder params with blocks 'layer_0' .. 'layer_{n-1}' -> the scanned layout {'layers': {'layer': stacked}}."""
    import numpy as np

    blocks = [params[f"layer_{i}"] for i in range(num_layers)]
    rest = {k: v for k, v in params.items() if not k.startswith("layer_")}
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *blocks)
    return {**rest, "layers": {"layer": stacked}}


def unstack_layers(params: dict, num_layers: int) -> dict:
    """The scanned layout back to one entry per block ('layer_0' ..), as checkpoints name them (arrays, or
    their abstract shapes)."""
    def pick(x, i: int):
        return jax.ShapeDtypeStruct(x.shape[1:], x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x[i]

    rest = {k: v for k, v in params.items() if k != "layers"}
    return {**rest, **{f"layer_{i}": jax.tree.map(lambda x, i=i: pick(x, i), params["layers"]["layer"])
                       for i in range(num_layers)}}


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
        segment_ids: Int[Array, "b t"] | None = None,
        deterministic: bool,
    ) -> tuple[Float[Array, "b t m"], Float[Array, "b m"]]:
        """`segment_ids` (1, 2, ... per packed document, 0 on padding) keep each document's tokens
        attending only to each other, with positions restarting at every document."""
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        is_token = input_ids != cfg.pad_id
        if attention_mask is not None:
            valid = attention_mask.astype(bool)
        else:  # padding is what the tokenizer pads with (transformers masks it by the tokenizer's attention mask)
            valid = is_token if cfg.mask_pad_id is None else input_ids != cfg.mask_pad_id
        if segment_ids is not None:
            valid = valid & (segment_ids > 0)
            positions = ops.segment_positions(segment_ids)
            if cfg.roberta_positions:  # a document's first real token sits at pad_id + 1
                positions = (positions + 1) * valid.astype(jnp.int32) + cfg.pad_id
        elif cfg.roberta_positions:
            # fairseq's numbering (as in Hugging Face's create_position_ids_from_input_ids).
            counted = is_token.astype(jnp.int32)
            positions = jnp.cumsum(counted, axis=1) * counted + cfg.pad_id
        else:
            positions = jax.lax.broadcasted_iota(jnp.int32, input_ids.shape, 1)
        width = cfg.embedding_dim or cfg.hidden_size
        embed = lambda n, name: Embed(n, width, dtype=dtype, param_dtype=param_dtype, name=name)  # noqa: E731
        x = embed(cfg.vocab_size, "word")(input_ids) + embed(cfg.max_positions, "position")(positions)
        if cfg.type_vocab_size > 0:
            token_types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + embed(cfg.type_vocab_size, "token_type")(token_types)
        x = LayerNorm(cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name="embed_norm")(x)
        x = nn.Dropout(cfg.dropout_rate, name="embed_dropout")(x, deterministic=deterministic)
        if cfg.embedding_dim is not None:
            x = Dense(cfg.hidden_size, (axes.EMBED, axes.MLP), dtype=dtype, param_dtype=param_dtype,
                      name="embed_projection")(x)
        if segment_ids is not None:
            mask = ops.make_segment_mask(jnp.where(valid, segment_ids, 0))  # [b, 1, t, t]
        else:
            mask = ops.make_key_padding_mask(valid, input_ids.shape[1])  # [b, 1, t, t]
        if cfg.scan_layers and not cfg.share_layers:
            stack = nn.scan(ScannedLayer, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                            in_axes=nn.broadcast, length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = stack(cfg, deterministic, name="layers")(x, mask)
        else:
            block = remat(EncoderLayer, cfg.remat, static_argnums=(3,))  # deterministic is static
            shared = block(cfg, name="layer") if cfg.share_layers else None
            for i in range(cfg.num_layers):
                layer = shared or block(cfg, name=f"layer_{i}")
                x = layer(x, mask, deterministic)
                x = constrain(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))  # rows stay data-parallel
        if not cfg.use_pooler:
            return x, x[:, 0]
        pooled = Dense(cfg.hidden_size, (axes.EMBED, axes.MLP), dtype=dtype, param_dtype=param_dtype, name="pooler")(x[:, 0])
        return x, jnp.tanh(pooled)
