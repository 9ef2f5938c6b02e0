"""TextCNN (Kim 2014, "Convolutional Neural Networks for Sentence Classification")."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from flaxtrain import ops
from flaxtrain.layers import Dense, Embed, axes


@dataclasses.dataclass(frozen=True)
class TextCNNConfig:
    """Sizes of a TextCNN classifier."""

    vocab_size: int  # rows of the word embedding table
    num_classes: int  # output classes
    embed_dim: int = 128  # word vector width m
    num_filters: int = 100  # feature maps per kernel width
    kernel_sizes: tuple[int, ...] = (3, 4, 5)  # convolution widths in tokens (Kim 2014, section 3.1)
    dropout_rate: float = 0.5  # dropout on the pooled features
    word_dropout_rate: float = 0.0  # drops whole word vectors while training (Iyyer et al. 2015, section 3.2)
    pad_id: int = 0  # token id of padding
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # parameter storage dtype


class TextCNN(nn.Module):
    """Word embeddings -> parallel 1-D convolutions -> max-over-time pooling -> dropout -> dense."""

    config: TextCNNConfig

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b t"], *, deterministic: bool) -> Float[Array, "b c"]:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        mask = input_ids != cfg.pad_id  # [b, t]
        x = Embed(cfg.vocab_size, cfg.embed_dim, dtype=dtype, param_dtype=param_dtype, init_stddev=0.1, name="embed")(
            input_ids
        )
        # Padding is a zero vector, as in Kim 2014, so a learned pad row cannot leak into the windows.
        x = x * jnp.expand_dims(mask, -1).astype(x.dtype)
        x = nn.Dropout(cfg.word_dropout_rate, broadcast_dims=(2,), name="word_dropout")(x, deterministic=deterministic)
        pooled = []
        for width in cfg.kernel_sizes:
            # Zeros after the text give every token a window that starts on it (t windows in all), so
            # the output does not depend on how much padding follows.
            padded = jnp.pad(x, ((0, 0), (0, width - 1), (0, 0)))  # [b, t + width - 1, m]
            h = nn.Conv(
                cfg.num_filters,
                kernel_size=(width,),
                padding="VALID",
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.he_normal(), (axes.KERNEL, axes.EMBED, axes.MLP)
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.MLP,)),
                name=f"conv{width}",
            )(padded)  # [b, t, f]
            h = nn.relu(h)
            # A window counts if it starts on a real token; an empty text keeps its first window.
            starts = mask | (jax.lax.broadcasted_iota(jnp.int32, mask.shape, 1) == 0)
            pooled.append(ops.masked_max_over_time(h, starts))
        features = jnp.concatenate(pooled, axis=-1)  # [b, f * len(kernel_sizes)]
        features = nn.Dropout(cfg.dropout_rate, name="dropout")(features, deterministic=deterministic)
        return Dense(cfg.num_classes, (axes.MLP, axes.CLASSES), dtype=dtype, param_dtype=param_dtype, name="head")(
            features
        )
