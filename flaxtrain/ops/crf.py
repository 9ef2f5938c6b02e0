"""Linear-chain conditional random field (Lafferty et al. 2001): log-likelihood and Viterbi decoding.

Shapes: emissions [b, t, c] (per-position tag scores), tags [b, t] int, mask [b, t] bool with each
row a prefix of True (the sequence) followed by False (padding); transitions [c, c] (row: from,
column: to), start and end [c]. A row with no True position has log-likelihood 0 and decodes to 0s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


def _as_float32(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(a).astype(jnp.float32) for a in arrays)


def sequence_score(
    emissions: Float[Array, "b t c"], tags: Int[Array, "b t"], mask: Bool[Array, "b t"],
    transitions: Float[Array, "c c"], start: Float[Array, " c"], end: Float[Array, " c"],
) -> Float[Array, " b"]:
    """Unnormalised score of `tags`: start + sum of emissions and transitions along the sequence + end."""
    emissions, transitions, start, end = _as_float32(emissions, transitions, start, end)
    tags, mask = jnp.asarray(tags), jnp.asarray(mask)
    maskf = mask.astype(jnp.float32)
    emitted = jnp.take_along_axis(emissions, tags[..., None], axis=-1)[..., 0]
    score = jnp.sum(emitted * maskf, axis=1)
    steps = transitions[tags[:, :-1], tags[:, 1:]]
    score = score + jnp.sum(steps * maskf[:, 1:], axis=1)
    length = jnp.sum(mask.astype(jnp.int32), axis=1)
    last = jnp.take_along_axis(tags, jnp.maximum(length - 1, 0)[:, None], axis=1)[:, 0]
    has_any = length > 0
    return jnp.where(has_any, score + start[tags[:, 0]] + end[last], 0.0)


def log_partition(
    emissions: Float[Array, "b t c"], mask: Bool[Array, "b t"],
    transitions: Float[Array, "c c"], start: Float[Array, " c"], end: Float[Array, " c"],
) -> Float[Array, " b"]:
    """log Z: the forward algorithm (log-sum-exp over all tag sequences) as a `lax.scan` over positions."""
    emissions, transitions, start, end = _as_float32(emissions, transitions, start, end)
    mask = jnp.asarray(mask)
    alpha = start[None, :] + emissions[:, 0]  # [b, c]

    def step(alpha: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        emit, keep = xs  # [b, c], [b]
        scores = alpha[:, :, None] + transitions[None] + emit[:, None, :]  # [b, from, to]
        new = jax.nn.logsumexp(scores, axis=1)
        return jnp.where(keep[:, None], new, alpha), None

    alpha, _ = jax.lax.scan(step, alpha, (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1)))
    return jnp.where(mask[:, 0], jax.nn.logsumexp(alpha + end[None, :], axis=-1), 0.0)


def log_likelihood(
    emissions: Float[Array, "b t c"], tags: Int[Array, "b t"], mask: Bool[Array, "b t"],
    transitions: Float[Array, "c c"], start: Float[Array, " c"], end: Float[Array, " c"],
) -> Float[Array, " b"]:
    """log p(tags | emissions) per row."""
    return (sequence_score(emissions, tags, mask, transitions, start, end)
            - log_partition(emissions, mask, transitions, start, end))


def viterbi_decode(
    emissions: Float[Array, "b t c"], mask: Bool[Array, "b t"],
    transitions: Float[Array, "c c"], start: Float[Array, " c"], end: Float[Array, " c"],
) -> tuple[Int[Array, "b t"], Float[Array, " b"]]:
    """The highest-scoring tag sequence of each row (0 on padding) and its score (Viterbi 1967)."""
    emissions, transitions, start, end = _as_float32(emissions, transitions, start, end)
    mask = jnp.asarray(mask)
    delta = start[None, :] + emissions[:, 0]

    def forward(delta: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        emit, keep = xs
        scores = delta[:, :, None] + transitions[None]  # [b, from, to]
        best_from = jnp.argmax(scores, axis=1)  # [b, to]
        new = jnp.max(scores, axis=1) + emit
        # On padding keep delta and point each tag to itself, so backtracking passes through unchanged.
        identity = jnp.broadcast_to(jnp.arange(delta.shape[1]), best_from.shape)
        return jnp.where(keep[:, None], new, delta), jnp.where(keep[:, None], best_from, identity)

    delta, pointers = jax.lax.scan(forward, delta, (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1)))
    final = delta + end[None, :]
    last = jnp.argmax(final, axis=-1)  # [b]
    score = jnp.max(final, axis=-1)

    def backward(tag: jax.Array, pointer: jax.Array) -> tuple[jax.Array, jax.Array]:
        previous = jnp.take_along_axis(pointer, tag[:, None], axis=1)[:, 0]
        return previous, tag

    # A forward scan over the flipped pointers (the same as scan(..., reverse=True), which ONNX export lacks).
    first, later = jax.lax.scan(backward, last, jnp.flip(pointers, axis=0))  # later[i]: the tag at t - 1 - i
    path = jnp.concatenate([first[:, None], jnp.flip(jnp.swapaxes(later, 0, 1), axis=1)], axis=1)
    path = jnp.where(mask, path, 0)
    return path.astype(jnp.int32), jnp.where(mask[:, 0], score, 0.0)
