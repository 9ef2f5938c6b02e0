"""Sharding hints on activations by logical axis names; no-ops unless a step sets the rules.

`train/partition.py` traces an spmd step inside `activation_rules(rules)` (and `jax.set_mesh`), so
`constrain(x, (BATCH, LENGTH, ACT_EMBED))` pins hidden states to the data-parallel layout there and
does nothing on one device, under pmap, or outside a step. (Flax's `nn.logical_axis_rules` context
is not used for this: under it, flax also constrains every boxed param as it is read, which
failed on the attention output kernel's reshaped [h*d, m] view.)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import jax
from jax.sharding import PartitionSpec

_RULES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("flaxtrain_activation_rules", default=None)


@contextlib.contextmanager
def activation_rules(rules: Sequence[tuple[str, object]]) -> Iterator[None]:
    """Within this block, `constrain` maps logical names to mesh axes through `rules`."""
    token = _RULES.set(dict(rules))
    try:
        yield
    finally:
        _RULES.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`jax.lax.with_sharding_constraint` of x by logical axis names, when rules are set."""
    rules = _RULES.get()
    if rules is None:
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*(rules.get(n) if n else None for n in names)))
