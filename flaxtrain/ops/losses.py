"""Losses computed in float32 and returned as sums and counts, so weighted means stay exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def softmax_cross_entropy(logits: Float[Array, "b c"], labels: Int[Array, " b"]) -> Float[Array, " b"]:
    """Per-example cross entropy of integer labels, computed in float32.

    Args:
      logits: [b, c] unnormalised scores, any float dtype.
      labels: [b] integer class ids in [0, c).

    Returns:
      [b] float32 negative log-likelihoods.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)
    return -picked[:, 0]


def classification_sums(
    logits: Float[Array, "b c"], labels: Int[Array, " b"], weights: Float[Array, " b"]
) -> dict[str, Float[Array, ""]]:
    """Loss and accuracy of a batch as weighted sums, plus the weight count.

    Args:
      logits: [b, c] scores.
      labels: [b] integer class ids.
      weights: [b] float32, 1 for real examples and 0 for batch padding.

    Returns:
      {'loss_sum', 'correct', 'count'}: float32 scalars.
    """
    weights = weights.astype(jnp.float32)
    losses = softmax_cross_entropy(logits, labels)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(losses * weights),
        "correct": jnp.sum(hits * weights),
        "count": jnp.sum(weights),
    }


def regression_sums(
    predictions: Float[Array, " b"], targets: Float[Array, " b"], weights: Float[Array, " b"]
) -> dict[str, Float[Array, ""]]:
    """Squared and absolute errors of a batch as weighted float32 sums, plus the weight count.

    Returns:
      {'loss_sum' (squared errors), 'abs_error', 'count'}: float32 scalars.
    """
    weights = weights.astype(jnp.float32)
    errors = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(errors * errors * weights),
        "abs_error": jnp.sum(jnp.abs(errors) * weights),
        "count": jnp.sum(weights),
    }


def token_cross_entropy(
    logits: Float[Array, "b t v"], labels: Int[Array, "b t"], *, label_smoothing: float = 0.0
) -> Float[Array, "b t"]:
    """Per-token cross entropy in float32, with label smoothing as `torch.nn.CrossEntropyLoss` has it:
    (1 - eps) * nll(label) + eps * mean over the vocabulary of -log p. Labels < 0 give 0 loss."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = -jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if label_smoothing:
        picked = (1.0 - label_smoothing) * picked - label_smoothing * jnp.mean(log_probs, axis=-1)
    return jnp.where(labels >= 0, picked, 0.0)
