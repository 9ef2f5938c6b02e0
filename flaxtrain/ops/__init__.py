"""Pure jnp maths with no parameters: losses, masks, pooling."""

from flaxtrain.ops.losses import classification_sums, softmax_cross_entropy
from flaxtrain.ops.pooling import masked_max_over_time, masked_mean_over_time

__all__ = ["classification_sums", "softmax_cross_entropy", "masked_max_over_time", "masked_mean_over_time"]
