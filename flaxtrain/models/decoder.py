"""Transformer blocks and stacks shared by encoder-decoder models: the encoder stack, and the decoder
stack with causal self-attention (a key/value cache for decoding) and cross-attention.

One config covers the layouts through switches: T5 (Raffel et al. 2020: pre-RMSNorm, relative
position buckets, no biases, gated-GELU in v1.1), BART (Lewis et al. 2020: learned positions with an
offset, post-LN, GELU), Marian (sinusoidal positions, scaled shared embeddings, final-logits bias) and
BERT2BERT (Rothe et al. 2020: BERT-layout stacks warm-started from a pretrained encoder).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from flaxtrain import ops
from flaxtrain.layers import Embed, MultiHeadAttention, axes
from flaxtrain.layers.mlp import MLP
from flaxtrain.layers.norm import LayerNorm, RMSNorm
from flaxtrain.layers.sharding import constrain
from flaxtrain.layers.remat import check_policy, remat
from flaxtrain.models.encoder import stack_layers, unstack_layers

POSITIONS = ("relative", "learned", "sinusoidal")


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    """Sizes, layout switches and special token ids of an encoder-decoder model."""

    vocab_size: int  # shared source/target vocabulary v
    family: str = "t5"  # checkpoint layout: t5, bart, marian or bert2bert
    hidden_size: int = 512  # model width m
    num_layers: int = 6  # encoder blocks
    num_decoder_layers: int = 6  # decoder blocks
    num_heads: int = 8  # attention heads h
    head_dim: int = 64  # width d of one head (T5's d_kv; h * d may differ from m)
    mlp_dim: int = 2048  # feed-forward width f
    activation: str = "relu"  # feed-forward activation (layers.mlp.ACTIVATIONS)
    gated_mlp: bool = False  # T5 v1.1: activation(hidden(x)) * linear(x)
    pre_norm: bool = True  # T5: x + f(rms_norm(x)) and a final norm per stack; else post-LN: norm(x + f(x))
    use_bias: bool = False  # biases on attention projections and feed-forward layers (BART, Marian, BERT)
    positions: str = "relative"  # 'relative' (T5 buckets), 'learned' or 'sinusoidal' absolute positions
    max_positions: int = 512  # absolute positions (learned or sinusoidal table rows)
    position_offset: int = 0  # BART numbers positions from 2
    relative_buckets: int = 32  # T5 relative position buckets
    relative_max_distance: int = 128  # T5: distances beyond share the last bucket
    embed_norm: bool = False  # LayerNorm on the embeddings (BART, BERT)
    scale_embedding: bool = False  # embeddings times sqrt(m) (Marian)
    attention_scale: float | None = None  # score scale; None: 1 / sqrt(d); T5: 1.0
    tie_embeddings: bool = True  # the output projection is the shared embedding table
    scale_logits: bool = False  # T5 with tied embeddings: hidden * m ** -0.5 before the projection
    final_logits_bias: bool = False  # a [v] bias on the logits (BART, Marian, BERT's output bias)
    lm_transform: bool = False  # BERT's head: dense -> activation -> LayerNorm before the projection
    layer_norm_eps: float = 1e-6  # norm epsilon
    dropout_rate: float = 0.1  # dropout on embeddings and sub-layer outputs
    init_std: float = 0.02  # normal init of fresh weights
    pad_id: int = 0  # padding token id
    eos_id: int = 1  # end of sequence
    decoder_start_id: int = 0  # the token every target starts from
    forced_bos_id: int | None = None  # forced as the first generated token (mBART-style checkpoints)
    forced_eos_id: int | None = None  # forced as the last token when generation reaches max length
    attention: str = "einsum"  # ops.dot_product_attention path
    remat: str = "none"  # recompute each block's activations in the backward pass: 'none', 'full' or 'dots'
    scan_layers: bool = False  # each stack's blocks under nn.scan: params stacked in 'layers' (one compile of one block)
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # parameter storage dtype

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        check_policy(self.remat)


def _dtypes(cfg: Seq2SeqConfig) -> dict[str, jnp.dtype]:
    return {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}


def _norm(cfg: Seq2SeqConfig, name: str) -> nn.Module:
    if cfg.pre_norm:
        return RMSNorm(cfg.layer_norm_eps, name=name, **_dtypes(cfg))
    return LayerNorm(cfg.layer_norm_eps, name=name, **_dtypes(cfg))


class Block(nn.Module):
    """Self-attention, cross-attention (decoder blocks) and feed-forward sub-layers, each pre- or
    post-normed with a residual."""

    config: Seq2SeqConfig
    cross: bool  # a decoder block

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "b t m"],
        mask: Bool[Array, "#b 1 t s"] | None,
        bias: Float[Array, "#b h t s"] | None,
        encoder_hidden: Float[Array, "b s m"] | None = None,
        cross_mask: Bool[Array, "b 1 #t s"] | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> Float[Array, "b t m"]:
        cfg = self.config
        drop = nn.Dropout(cfg.dropout_rate)

        def attention(name: str) -> MultiHeadAttention:
            return MultiHeadAttention(cfg.num_heads, cfg.head_dim, use_bias=cfg.use_bias, scale=cfg.attention_scale,
                                      implementation=cfg.attention, name=name, **_dtypes(cfg))

        def sublayer(x: jnp.ndarray, name: str, fn) -> jnp.ndarray:
            if cfg.pre_norm:
                return x + drop(fn(_norm(cfg, f"{name}_norm")(x)), deterministic=deterministic)
            return _norm(cfg, f"{name}_norm")(x + drop(fn(x), deterministic=deterministic))

        x = sublayer(x, "self_attention", lambda h: attention("self_attention")(h, mask=mask, bias=bias, decode=decode))
        if self.cross:
            cached = decode and encoder_hidden is None  # later decoding steps: the encoder's keys/values are cached
            x = sublayer(x, "cross_attention", lambda h: attention("cross_attention")(
                h, encoder_hidden, mask=cross_mask, decode=decode and not cached, cached_kv=cached))
        mlp = MLP(cfg.mlp_dim, cfg.activation, use_bias=cfg.use_bias, gated=cfg.gated_mlp,
                  dropout_rate=cfg.dropout_rate if cfg.pre_norm else 0.0, name="mlp", **_dtypes(cfg))
        return sublayer(x, "mlp", lambda h: mlp(h, deterministic=deterministic))


class ScannedBlock(nn.Module):
    """One step of a scanned stack: a block (rematerialized as configured) on the carried states; the
    masks, position bias and encoder states are the same for every step."""

    config: Seq2SeqConfig
    cross: bool
    deterministic: bool
    decode: bool

    @nn.compact
    def __call__(self, x: Float[Array, "b t m"], mask, bias, encoder_hidden, cross_mask) -> tuple[Float[Array, "b t m"], None]:
        block = remat(Block, "none" if self.decode else self.config.remat, static_argnums=(6, 7))
        x = block(self.config, cross=self.cross, name="layer")(x, mask, bias, encoder_hidden, cross_mask,
                                                               self.deterministic, self.decode)
        return constrain(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)), None


def stack_blocks(params: dict, config: Seq2SeqConfig) -> dict:
    """Seq2Seq params with blocks 'layer_0' .. per stack -> the scanned layout {'layers': {'layer': stacked}}."""
    counts = {"encoder": config.num_layers, "decoder": config.num_decoder_layers}
    return {**params, **{stack: stack_layers(params[stack], count) for stack, count in counts.items()}}


def unstack_blocks(params: dict, config: Seq2SeqConfig) -> dict:
    """The scanned layout back to one entry per block ('layer_0' ..) per stack, as checkpoints name them."""
    counts = {"encoder": config.num_layers, "decoder": config.num_decoder_layers}
    return {**params, **{stack: unstack_layers(params[stack], count) for stack, count in counts.items()}}


class Stack(nn.Module):
    """Token ids -> hidden states: embeddings (the shared table passed in), positions, blocks, final norm.

    The decoder stack (`decoder=True`) is causal and attends to `encoder_hidden`. With `decode=True`
    it runs incrementally on a cache made by a first call on [b, max_length] ids (see eval/decode.py):
    each call takes the next tokens, and positions continue from the cache's count.
    """

    config: Seq2SeqConfig
    decoder: bool

    @nn.compact
    def __call__(
        self,
        ids: Int[Array, "b t"],
        table: Float[Array, "v m"],
        *,
        valid: Bool[Array, "b t"] | None = None,
        encoder_hidden: Float[Array, "b s m"] | None = None,
        encoder_valid: Bool[Array, "b s"] | None = None,
        segment_ids: Int[Array, "b t"] | None = None,
        encoder_segment_ids: Int[Array, "b s"] | None = None,
        deterministic: bool,
        decode: bool = False,
    ) -> Float[Array, "b t m"]:
        """`segment_ids` (1, 2, ... per packed document, 0 on padding; the decoder's need the encoder's
        too) keep documents apart: attention stays inside a document and positions restart in each."""
        cfg = self.config
        dtypes = _dtypes(cfg)
        length = ids.shape[1]
        start = jnp.zeros((), jnp.int32)
        key_length = length
        if decode:
            initialising = not self.has_variable("cache", "cache_index")
            position = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
            keys = self.variable("cache", "key_positions", lambda: jnp.arange(length, dtype=jnp.int32))
            key_length = keys.value.shape[0]
            if not initialising:
                start = position.value
                position.value = start + length
        # iotas over the input's own (possibly symbolic) dimensions: shape-polymorphic exports keep them
        positions = start + jax.lax.broadcasted_iota(jnp.int32, (length,), 0)  # [t]
        if segment_ids is not None:
            positions = ops.segment_positions(segment_ids)  # [b, t]
        x = jnp.take(table, ids, axis=0).astype(dtypes["dtype"])
        if cfg.scale_embedding:
            x = x * jnp.asarray(math.sqrt(cfg.hidden_size), x.dtype)
        if cfg.positions == "learned":
            table_rows = cfg.max_positions + cfg.position_offset
            embedded = Embed(table_rows, cfg.hidden_size, init_stddev=cfg.init_std, name="position", **dtypes)(
                positions + cfg.position_offset)
            x = x + (embedded if segment_ids is not None else jnp.expand_dims(embedded, 0))
        elif cfg.positions == "sinusoidal":
            sinusoids = jnp.asarray(ops.sinusoidal_table(cfg.max_positions, cfg.hidden_size))
            embedded = jnp.take(sinusoids, positions, axis=0).astype(x.dtype)
            x = x + (embedded if segment_ids is not None else jnp.expand_dims(embedded, 0))
        if cfg.embed_norm:
            x = LayerNorm(cfg.layer_norm_eps, name="embed_norm", **dtypes)(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)

        bias = None
        if cfg.positions == "relative":
            table_bias = Embed(cfg.relative_buckets, cfg.num_heads, init_stddev=cfg.init_std, name="relative_bias", **dtypes)
            if segment_ids is None:
                relative = (jax.lax.broadcasted_iota(jnp.int32, (1, key_length), 1)
                            - jnp.expand_dims(positions, 1))  # [t, s]
            else:
                relative = positions[:, None, :] - positions[:, :, None]  # [b, t, s], within each document
            buckets = ops.relative_position_buckets(relative, bidirectional=not self.decoder,
                                                    num_buckets=cfg.relative_buckets,
                                                    max_distance=cfg.relative_max_distance)
            bias = jnp.moveaxis(table_bias(buckets), -1, -3)  # [h, t, s] or [b, h, t, s]
            bias = bias if segment_ids is not None else jnp.expand_dims(bias, 0)
        if segment_ids is not None:  # documents packed in a row: attention stays inside each
            same = ops.make_segment_mask(segment_ids)
            mask = same & ops.make_causal_mask(length) if self.decoder else same
        elif not self.decoder:
            valid = ids != cfg.pad_id if valid is None else valid
            mask = ops.make_key_padding_mask(valid, length)
        else:
            mask = None if decode else ops.make_causal_mask(length)  # decoding: the cache applies causality
        cross_mask = None if encoder_valid is None else encoder_valid[:, None, None, :]
        if segment_ids is not None and encoder_segment_ids is not None:
            cross_mask = (segment_ids[:, :, None] == encoder_segment_ids[:, None, :])[:, None] & (
                encoder_segment_ids[:, None, None, :] > 0)
        layers = cfg.num_decoder_layers if self.decoder else cfg.num_layers
        if cfg.scan_layers:
            scanned = nn.scan(ScannedBlock, variable_axes={"params": 0, "cache": 0},
                              split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast, length=layers,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = scanned(cfg, self.decoder, deterministic, decode, name="layers")(x, mask, bias, encoder_hidden, cross_mask)
        else:
            block = remat(Block, "none" if decode else cfg.remat, static_argnums=(6, 7))  # deterministic, decode: static
            for i in range(layers):
                x = block(cfg, cross=self.decoder, name=f"layer_{i}")(x, mask, bias, encoder_hidden, cross_mask, deterministic,
                                                                      decode)
                x = constrain(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
        if cfg.pre_norm:
            x = _norm(cfg, "final_norm")(x)
            x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        return x
