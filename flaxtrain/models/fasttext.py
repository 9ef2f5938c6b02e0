"""fastText classifier (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification")."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from flaxtrain import ops
from flaxtrain.layers import Dense, Embed, axes

_HASH_MULTIPLIER = 1_000_003  # odd prime: mixes the left token id before adding the right one


@dataclasses.dataclass(frozen=True)
class FastTextConfig:
    """Sizes of a fastText classifier."""

    vocab_size: int  # rows of the word embedding table
    num_classes: int  # output classes
    embed_dim: int = 64  # embedding width m
    ngram_range: int = 2  # longest n-gram embedded (1 = bag of words, 2 adds hashed bigrams)
    num_buckets: int = 100_000  # hash buckets shared by all n-grams longer than 1 (section 2.2)
    dropout_rate: float = 0.0  # dropout on the averaged embedding
    pad_id: int = 0  # token id of padding
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # parameter storage dtype


def hash_ngram_ids(input_ids: Int[Array, "b t"], n: int, num_buckets: int) -> Int[Array, "b t"]:
    """Bucket ids of the n-grams ending at each position (position < n - 1 gets bucket 0)."""
    ids = input_ids.astype(jnp.uint32)
    hashed = ids
    for shift in range(1, n):
        previous = jnp.pad(ids[:, :-shift], ((0, 0), (shift, 0)))  # [b, t]: the token `shift` places back
        hashed = hashed * jnp.uint32(_HASH_MULTIPLIER) + previous
    buckets = jnp.uint32(num_buckets)
    return (hashed - (hashed // buckets) * buckets).astype(jnp.int32)  # hashed % buckets, without a rem op (ONNX export)


class FastText(nn.Module):
    """Mean of word and hashed n-gram embeddings -> dropout -> dense."""

    config: FastTextConfig

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b t"], *, deterministic: bool) -> Float[Array, "b c"]:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        mask = input_ids != cfg.pad_id  # [b, t]
        embed = Embed(cfg.vocab_size, cfg.embed_dim, dtype=dtype, param_dtype=param_dtype, init_stddev=0.1, name="embed")
        pieces = [ops.masked_mean_over_time(embed(input_ids), mask)]
        if cfg.ngram_range > 1:
            buckets = Embed(
                cfg.num_buckets, cfg.embed_dim, dtype=dtype, param_dtype=param_dtype, init_stddev=0.1, name="ngrams"
            )
            for n in range(2, cfg.ngram_range + 1):
                # An n-gram counts when its n tokens are all real.
                ngram_mask = mask & jnp.pad(mask[:, : -(n - 1)], ((0, 0), (n - 1, 0)))
                pieces.append(ops.masked_mean_over_time(buckets(hash_ngram_ids(input_ids, n, cfg.num_buckets)), ngram_mask))
        features = sum(pieces[1:], pieces[0]) / len(pieces)  # [b, m]
        features = nn.Dropout(cfg.dropout_rate, name="dropout")(features, deterministic=deterministic)
        return Dense(cfg.num_classes, (axes.EMBED, axes.CLASSES), dtype=dtype, param_dtype=param_dtype, name="head")(
            features
        )
