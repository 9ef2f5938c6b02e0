"""Pure jnp maths with no parameters: activations, attention, masks, losses, normalisation, pooling, positions."""

from flaxtrain.ops import crf
from flaxtrain.ops.activations import gelu
from flaxtrain.ops.attention import dot_product_attention
from flaxtrain.ops.losses import classification_sums, regression_sums, softmax_cross_entropy, token_cross_entropy
from flaxtrain.ops.masks import (
    combine_masks,
    make_causal_mask,
    make_key_padding_mask,
    make_padding_mask,
    make_segment_mask,
)
from flaxtrain.ops.normalization import layer_norm, rms_norm
from flaxtrain.ops.positions import relative_position_buckets, segment_positions, sinusoidal_table
from flaxtrain.ops.pooling import masked_max_over_time, masked_mean_over_time

__all__ = [
    "crf",
    "gelu",
    "layer_norm",
    "rms_norm",
    "relative_position_buckets",
    "sinusoidal_table",
    "token_cross_entropy",
    "dot_product_attention",
    "classification_sums",
    "regression_sums",
    "softmax_cross_entropy",
    "combine_masks",
    "make_causal_mask",
    "make_key_padding_mask",
    "make_padding_mask",
    "make_segment_mask",
    "segment_positions",
    "masked_max_over_time",
    "masked_mean_over_time",
]
