"""Sequence taggers (NER): a token-classification head on a pretrained encoder, or a BiLSTM, with an
optional linear-chain CRF on top.

The module returns one row of tag scores per word, read at each word's first sub-token
(`word_starts`, -1 on padding), so sub-tokens and special tokens never reach the loss.
Params of the encoder tagger: {'encoder', 'classifier'} exactly as Hugging Face's
`*ForTokenClassification` (so weights map one to one), plus {'crf': transitions, start, end}.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from flaxtrain.layers import Dense, Embed, axes
from flaxtrain.models.encoder import Encoder, EncoderConfig


@dataclasses.dataclass(frozen=True)
class TaggerConfig:
    """A sequence tagger: on a pretrained encoder (`encoder` set) or a BiLSTM over word vectors."""

    num_classes: int  # tags, 'O' included
    use_crf: bool = False  # a linear-chain CRF over the word scores (Lafferty et al. 2001)
    encoder: EncoderConfig | None = None  # the pretrained encoder's config; None: BiLSTM
    vocab_size: int = 0  # BiLSTM: rows of the word embedding table
    embed_dim: int = 100  # BiLSTM: word vector width
    hidden_dim: int = 100  # BiLSTM: LSTM units per direction
    dropout_rate: float = 0.1  # dropout before the tag scores
    pad_id: int = 0  # token id of padding
    dtype: str = "float32"  # compute dtype (BiLSTM; the encoder has its own)
    param_dtype: str = "float32"


class SequenceTagger(nn.Module):
    """[b, w, c] tag scores per word (w = the padded length; rows past the words are padding)."""

    config: TaggerConfig

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b t"], *, deterministic: bool, word_starts: Int[Array, "b t"] | None = None,
                 attention_mask: Int[Array, "b t"] | None = None) -> Float[Array, "b t c"]:
        cfg = self.config
        if word_starts is None:  # every token a word
            word_starts = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        if cfg.encoder is not None:
            enc = cfg.encoder
            dtypes = {"dtype": jnp.dtype(enc.dtype), "param_dtype": jnp.dtype(enc.param_dtype)}
            hidden, _ = Encoder(enc, name="encoder")(input_ids, attention_mask=attention_mask, deterministic=deterministic)
            x = nn.Dropout(enc.dropout_rate, name="classifier_dropout")(hidden, deterministic=deterministic)
            scores = Dense(cfg.num_classes, (axes.EMBED, axes.CLASSES), name="classifier", **dtypes)(x)
        else:
            dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
            lengths = jnp.sum((input_ids != cfg.pad_id).astype(jnp.int32), axis=1)
            x = Embed(cfg.vocab_size, cfg.embed_dim, dtype=dtype, param_dtype=param_dtype, init_stddev=0.1,
                      name="embed")(input_ids)
            x = nn.Dropout(cfg.dropout_rate, name="embed_dropout")(x, deterministic=deterministic)
            forward = nn.RNN(nn.OptimizedLSTMCell(cfg.hidden_dim, dtype=dtype, param_dtype=param_dtype), name="forward")
            backward = nn.RNN(nn.OptimizedLSTMCell(cfg.hidden_dim, dtype=dtype, param_dtype=param_dtype), name="backward")
            x = nn.Bidirectional(forward, backward, name="bilstm")(x, seq_lengths=lengths)
            x = nn.Dropout(cfg.dropout_rate, name="classifier_dropout")(x, deterministic=deterministic)
            scores = Dense(cfg.num_classes, (axes.MLP, axes.CLASSES), name="classifier", dtype=dtype,
                           param_dtype=param_dtype)(x)
        if cfg.use_crf:  # created here so init makes them; the loss and decoding read them from params
            c = cfg.num_classes
            self.param("crf_transitions", nn.initializers.zeros, (c, c), jnp.float32)
            self.param("crf_start", nn.initializers.zeros, (c,), jnp.float32)
            self.param("crf_end", nn.initializers.zeros, (c,), jnp.float32)
        words = jnp.maximum(word_starts, 0)
        return jnp.take_along_axis(scores.astype(jnp.float32), words[:, :, None], axis=1)
