"""Task heads on the Encoder: sequence classification, token classification, span (QA), masked LM.

Each head keeps the layout of its family's Hugging Face model, so fine-tuned weights map one to one.
Params: {'encoder': Encoder params, plus the head's own}.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from flaxtrain.layers import Dense, axes
from flaxtrain.layers.mlp import ACTIVATIONS
from flaxtrain.layers.norm import LayerNorm
from flaxtrain.models.encoder import Encoder, EncoderConfig


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """An encoder and the size of the task head on top of it."""

    encoder: EncoderConfig  # the encoder's config
    num_classes: int = 2  # classes of a sequence or token head (unused by span and masked-LM heads)


def _dtypes(config: EncoderConfig) -> dict[str, jnp.dtype]:
    return {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}


class _EncoderHead(nn.Module):
    config: HeadConfig

    def encode(self, input_ids, attention_mask, token_type_ids, deterministic):
        return Encoder(self.config.encoder, name="encoder")(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, deterministic=deterministic
        )


class SequenceClassifier(_EncoderHead):
    """[b, c] logits from the first token: BERT/ALBERT use the pooler, RoBERTa and DistilBERT their own MLP."""

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b t"], *, attention_mask: Int[Array, "b t"] | None = None,
                 token_type_ids: Int[Array, "b t"] | None = None, deterministic: bool) -> Float[Array, "b c"]:
        cfg, num_classes = self.config.encoder, self.config.num_classes
        hidden, pooled = self.encode(input_ids, attention_mask, token_type_ids, deterministic)
        dropout = nn.Dropout(cfg.dropout_rate, name="classifier_dropout")
        if cfg.family in ("roberta", "xlm-roberta"):
            x = dropout(hidden[:, 0], deterministic=deterministic)
            x = jnp.tanh(Dense(cfg.hidden_size, (axes.EMBED, axes.MLP), name="dense", **_dtypes(cfg))(x))
            x = dropout(x, deterministic=deterministic)
            return Dense(num_classes, (axes.MLP, axes.CLASSES), name="out", **_dtypes(cfg))(x)
        if cfg.family == "distilbert":
            x = nn.relu(Dense(cfg.hidden_size, (axes.EMBED, axes.MLP), name="pre_classifier", **_dtypes(cfg))(hidden[:, 0]))
            x = dropout(x, deterministic=deterministic)
            return Dense(num_classes, (axes.MLP, axes.CLASSES), name="classifier", **_dtypes(cfg))(x)
        x = dropout(pooled, deterministic=deterministic)
        return Dense(num_classes, (axes.EMBED, axes.CLASSES), name="classifier", **_dtypes(cfg))(x)


class TokenClassifier(_EncoderHead):
    """[b, t, c] logits, one per token (NER tags)."""

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b t"], *, attention_mask: Int[Array, "b t"] | None = None,
                 token_type_ids: Int[Array, "b t"] | None = None, deterministic: bool) -> Float[Array, "b t c"]:
        hidden, _ = self.encode(input_ids, attention_mask, token_type_ids, deterministic)
        cfg = self.config.encoder
        x = nn.Dropout(cfg.dropout_rate, name="classifier_dropout")(hidden, deterministic=deterministic)
        return Dense(self.config.num_classes, (axes.EMBED, axes.CLASSES), name="classifier", **_dtypes(cfg))(x)


class SpanClassifier(_EncoderHead):
    """([b, t] start logits, [b, t] end logits) of an answer span (extractive QA)."""

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b t"], *, attention_mask: Int[Array, "b t"] | None = None,
                 token_type_ids: Int[Array, "b t"] | None = None, deterministic: bool
                 ) -> tuple[Float[Array, "b t"], Float[Array, "b t"]]:
        hidden, _ = self.encode(input_ids, attention_mask, token_type_ids, deterministic)
        logits = Dense(2, (axes.EMBED, axes.CLASSES), name="qa_outputs", **_dtypes(self.config.encoder))(hidden)  # [b, t, 2]
        return logits[..., 0], logits[..., 1]


class MaskedLM(_EncoderHead):
    """[b, t, v] vocabulary logits: dense -> activation -> LayerNorm -> tied word embeddings + bias.
    With `positions` ([b, p] token indices), the logits [b, p, v] of those positions only."""

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b t"], *, attention_mask: Int[Array, "b t"] | None = None,
                 token_type_ids: Int[Array, "b t"] | None = None, segment_ids: Int[Array, "b t"] | None = None,
                 positions: Int[Array, "b p"] | None = None, deterministic: bool) -> Float[Array, "b t v"]:
        cfg = self.config.encoder
        encoder = Encoder(cfg, name="encoder")
        hidden, _ = encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            segment_ids=segment_ids, deterministic=deterministic)
        if positions is not None:
            hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # [b, p, m]
        width = cfg.embedding_dim or cfg.hidden_size
        x = Dense(width, (axes.EMBED, axes.MLP), name="transform", **_dtypes(cfg))(hidden)
        x = LayerNorm(cfg.layer_norm_eps, name="transform_norm", **_dtypes(cfg))(ACTIVATIONS[cfg.activation](x))
        table = nn.meta.unbox(encoder.variables["params"]["word"]["embedding"])  # [v, E], tied
        bias = self.param("output_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.VOCAB,)),
                          (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))
        return jnp.einsum("btm,vm->btv", x, table.astype(x.dtype)) + bias.astype(x.dtype)[None, None, :]
