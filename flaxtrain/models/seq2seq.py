"""Encoder-decoder model (Vaswani et al. 2017) in the T5, BART, Marian and BERT2BERT layouts.

Params: {'shared' [v, m] embedding table, 'encoder', 'decoder' (models/decoder.py stacks), and per
layout 'lm_head' (untied T5), 'transform' + 'transform_norm' (BERT) and 'final_logits_bias' [v]}.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from flaxtrain.layers import Dense, axes
from flaxtrain.layers.mlp import ACTIVATIONS
from flaxtrain.layers.norm import LayerNorm
from flaxtrain.models.decoder import Seq2SeqConfig, Stack, _dtypes

__all__ = ["Seq2Seq", "Seq2SeqConfig", "PRESETS"]

_BASE = dict(hidden_size=256, num_layers=3, num_decoder_layers=3, num_heads=4, head_dim=64, mlp_dim=1024)
# Layouts trained from scratch (sizes overridable through `params`); a local folder loads a checkpoint.
PRESETS: dict[str, dict[str, Any]] = {
    "t5": dict(_BASE, family="t5", activation="gelu_new", gated_mlp=True, pre_norm=True, use_bias=False,
               positions="relative", attention_scale=1.0, scale_logits=True, layer_norm_eps=1e-6, init_std=0.05),
    "bart": dict(_BASE, family="bart", activation="gelu", pre_norm=False, use_bias=True, positions="learned",
                 position_offset=2, embed_norm=True, final_logits_bias=True, layer_norm_eps=1e-5),
    "marian": dict(_BASE, family="marian", activation="silu", pre_norm=False, use_bias=True, positions="sinusoidal",
                   scale_embedding=True, final_logits_bias=True, layer_norm_eps=1e-5),
}


class Seq2Seq(nn.Module):
    """Source ids -> target logits under teacher forcing; `encode` and `decode` for generation.

    `__call__(input_ids, decoder_input_ids)` returns [b, t, v] logits of the token after each
    decoder input. `decode(..., incremental=True)` runs the decoder a few tokens at a time on a
    key/value cache (the `cache` collection), which eval/decode.py's jitted loops use.
    """

    config: Seq2SeqConfig

    def setup(self) -> None:
        cfg = self.config
        dtypes = _dtypes(cfg)
        # Scaled embeddings start at std m ** -0.5 (fairseq's and Marian's init), so tokens weigh as much
        # as the unit-scale sinusoidal positions from the first step.
        std = cfg.hidden_size ** -0.5 if cfg.scale_embedding else cfg.init_std
        self.shared = self.param("shared", nn.with_logical_partitioning(nn.initializers.normal(std),
                                                                        (axes.VOCAB, axes.EMBED)),
                                 (cfg.vocab_size, cfg.hidden_size), dtypes["param_dtype"])
        self.encoder = Stack(cfg, decoder=False)
        self.decoder = Stack(cfg, decoder=True)
        if not cfg.tie_embeddings:
            self.lm_head = Dense(cfg.vocab_size, (axes.EMBED, axes.VOCAB), use_bias=False, **dtypes)
        if cfg.lm_transform:
            self.transform = Dense(cfg.hidden_size, (axes.EMBED, axes.MLP), **dtypes)
            self.transform_norm = LayerNorm(cfg.layer_norm_eps, **dtypes)
        if cfg.final_logits_bias:
            self.final_logits_bias = self.param(
                "final_logits_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.VOCAB,)),
                (cfg.vocab_size,), dtypes["param_dtype"])

    def encode(self, input_ids: Int[Array, "b s"], attention_mask: Int[Array, "b s"] | None = None, *,
               deterministic: bool = True) -> Float[Array, "b s m"]:
        """[b, s, m] encoder states of the source (padding: `attention_mask` 0, else the pad id)."""
        return self.encoder(input_ids, self.shared, valid=self._valid(input_ids, attention_mask), deterministic=deterministic)

    def decode(self, decoder_input_ids: Int[Array, "b t"], encoder_hidden: Float[Array, "b s m"] | None,
               encoder_valid: Bool[Array, "b s"], *, deterministic: bool = True,
               incremental: bool = False) -> Float[Array, "b t v"]:
        """[b, t, v] logits after each decoder input. Incremental decoding stores the encoder's
        projected keys/values on the call that passes `encoder_hidden` and reuses them when it is None."""
        x = self.decoder(decoder_input_ids, self.shared, encoder_hidden=encoder_hidden, encoder_valid=encoder_valid,
                         deterministic=deterministic, decode=incremental)
        return self.logits(x)

    def logits(self, x: Float[Array, "b t m"]) -> Float[Array, "b t v"]:
        cfg = self.config
        if cfg.lm_transform:
            x = self.transform_norm(ACTIVATIONS[cfg.activation](self.transform(x)))
        if not cfg.tie_embeddings:
            logits = self.lm_head(x)
        else:
            if cfg.scale_logits:
                x = x * jnp.asarray(cfg.hidden_size ** -0.5, x.dtype)
            logits = jnp.einsum("btm,vm->btv", x, self.shared.astype(x.dtype))
        if cfg.final_logits_bias:
            logits = logits + self.final_logits_bias.astype(logits.dtype)[None, None, :]
        return logits

    def __call__(self, input_ids: Int[Array, "b s"], decoder_input_ids: Int[Array, "b t"] | None = None, *,
                 attention_mask: Int[Array, "b s"] | None = None, segment_ids: Int[Array, "b s"] | None = None,
                 decoder_segment_ids: Int[Array, "b t"] | None = None, deterministic: bool) -> Float[Array, "b t v"]:
        """Teacher-forced logits; without decoder inputs, those of the start token alone. Packed rows
        give `segment_ids` and `decoder_segment_ids` (a target token's document: 1, 2, ...; 0 padding)."""
        if decoder_input_ids is None:
            decoder_input_ids = jnp.full((input_ids.shape[0], 1), self.config.decoder_start_id, jnp.int32)
        valid = self._valid(input_ids, attention_mask) if segment_ids is None else segment_ids > 0
        hidden = self.encoder(input_ids, self.shared, valid=valid, segment_ids=segment_ids, deterministic=deterministic)
        if decoder_segment_ids is None:
            return self.decode(decoder_input_ids, hidden, valid, deterministic=deterministic)
        x = self.decoder(decoder_input_ids, self.shared, encoder_hidden=hidden, encoder_valid=valid,
                         segment_ids=decoder_segment_ids, encoder_segment_ids=segment_ids, deterministic=deterministic)
        return self.logits(x)

    def _valid(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray | None) -> jnp.ndarray:
        return input_ids != self.config.pad_id if attention_mask is None else attention_mask.astype(bool)
