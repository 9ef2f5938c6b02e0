"""Pure train, eval and predict steps. No logging, host transfers or branching on array values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flaxtrain.train.state import TrainState

Batch = dict[str, jax.Array]
# loss_fn(apply_fn, params, batch, *, rngs, deterministic) -> (loss_sum, metric sums incl. 'count')
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    loss_fn: LossFn,
    grad_accum_steps: int = 1,
    axis_name: str | None = None,
    skip_nonfinite: bool = False,
    unroll_micro_batches: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on the batch's mean loss.

    Args:
      state: the TrainState.
      batch: dict of [b, ...] arrays with a float32 'weight' ([b], 0 on batch padding).
      rng: base key; the dropout key is `fold_in(rng, state.step)`, so no key is used twice.
      loss_fn: returns (weighted loss sum, metric sums with 'count').
      grad_accum_steps: k > 1 splits the batch into k micro-batches (rows i, i + k, i + 2k, ... form
        micro-batch i, so each stays spread over the data-parallel devices) whose gradients a
        `lax.scan` adds up; the update equals one step on the whole batch, in 1/k of the activation
        memory. Micro-batch i's dropout key is `fold_in(step key, i)`.
      unroll_micro_batches: the micro-batch loop unrolled (the CPU step's choice: XLA's CPU backend leaves
        the convolutions of a loop body in the layouts autodiff gives them and runs them without its
        convolution library, a TextCNN's accumulated step 30x slower; unrolled they are rewritten as
        outside a loop. The compile grows with the number of micro-batches.)
      axis_name: under `pmap`, the mapped axis: gradient and metric sums are `psum`-ed over it, so
        every replica takes the same step as one device would on the whole batch.
      skip_nonfinite: when the batch's loss or the updated params are not finite (say from an
        infinite gradient), keep the params and
        optimizer state unchanged (the step counter still advances), drop the batch from the metric
        sums and count it in an extra 'skipped' sum, instead of letting NaN reach the weights.
        Without it such a step halts the state instead: `state.halted` records the step, that step
        and every later one change nothing (step counter included), and the sums carry
        'nonfinite' = 1 for the host to stop on; the weights stay the last finite ones.

    Returns:
      (new state, metric sums of this batch).
    """
    key = jax.random.fold_in(rng, state.step)

    def grads_and_sums(params: Any, micro: Batch, dropout_key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        def loss_sum(p: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
            return loss_fn(state.apply_fn, p, micro, rngs={"dropout": dropout_key}, deterministic=False)

        return jax.grad(loss_sum, has_aux=True)(params)

    if grad_accum_steps == 1:
        grads, sums = grads_and_sums(state.params, batch, key)
    else:
        micro_batches = jax.tree.map(lambda x: _strided_split(x, grad_accum_steps), batch)
        first = jax.tree.map(lambda x: x[0], micro_batches)
        zeros = jax.tree.map(
            lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(grads_and_sums, state.params, first, key)
        )

        def accumulate(carry: Any, xs: tuple[jax.Array, Batch]) -> tuple[Any, None]:
            i, micro = xs
            out = grads_and_sums(state.params, micro, jax.random.fold_in(key, i))
            return jax.tree.map(jnp.add, carry, out), None

        (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro_batches),
                                        unroll=unroll_micro_batches)
    if axis_name is not None:
        grads, sums = jax.lax.psum((grads, sums), axis_name)
    count = jnp.maximum(sums["count"], 1.0)
    grads = jax.tree.map(lambda g: g / count.astype(g.dtype), grads)

    def updated(s: TrainState) -> TrainState:
        # Optax's Adam raises a Python float to its int32 step count, which strict dtype promotion
        # (on in flaxtrain's tests) rejects; its maths is Optax's own, so it runs under standard rules.
        with jax.numpy_dtype_promotion("standard"):
            return s.apply_gradients(grads=grads)

    # Finite loss and updated weights: a non-finite gradient of a trained param reaches its update
    # (through Adam's moments), while frozen params' gradients are never read, so XLA still drops
    # their backward pass. Each leaf's flag is a sum of (updated weight x 0), NaN if any is not finite: a
    # reduction over the update that stores none of it. The update is then written under `lax.cond`, in
    # place. Selecting between old and new weights after the update instead (a `where` per leaf) costs an
    # is-finite pass and three select passes over every leaf: an AdamW update of a 30522 x 384 table alone
    # took 103 ms so, 40 ms this way (19 ms unguarded); benchmarks/README.md, "The guard".
    leaves = jax.tree.leaves(updated(state).params)
    finite = all_true([jnp.isfinite(sums["loss_sum"])] + [jnp.isfinite(jnp.sum(x * 0)) for x in leaves])
    apply = finite if skip_nonfinite else finite & (state.halted == 0)
    new_state = jax.lax.cond(apply, updated, lambda s: s, state)  # the step counter advances with the update
    if skip_nonfinite:
        sums = {k: jnp.where(finite, v, jnp.zeros_like(v)) for k, v in sums.items()}
        sums["skipped"] = jnp.where(finite, 0.0, 1.0).astype(jnp.float32)
        return new_state.replace(step=state.step + 1), sums
    first_bad = (state.halted == 0) & ~finite
    new_state = new_state.replace(halted=jnp.where(first_bad, state.step + 1, state.halted).astype(jnp.int32))
    sums["nonfinite"] = first_bad.astype(jnp.float32)
    return new_state, sums


def all_true(flags: list[jax.Array]) -> jax.Array:
    """One boolean of many scalar ones, computed once by an op XLA does not copy into its consumers (a
    sort; its first entry is the minimum). As a chain of `&` (or a reduce over the stacked flags, which
    XLA rewrites into one), the whole chain was fused into every leaf's update: quadratic in the number
    of leaves (benchmarks/step_compile.py: 2.8-2.9x the optimized HLO and 1.7x the compile time of a
    small translation model's and MiniLM's train steps, the same step time)."""
    return jnp.sort(jnp.stack(flags).astype(jnp.int32))[0] > 0


def _strided_split(x: jax.Array, k: int) -> jax.Array:
    """[b, ...] -> [k, b / k, ...] with row j of part i = row j * k + i."""
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def eval_step(state: TrainState, batch: Batch, *, loss_fn: LossFn, axis_name: str | None = None) -> dict[str, jax.Array]:
    """Metric sums of the batch without dropout (`psum`-ed over `axis_name` under pmap)."""
    _, sums = loss_fn(state.apply_fn, state.params, batch, rngs={}, deterministic=True)
    return sums if axis_name is None else jax.lax.psum(sums, axis_name)


def example_losses(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, loss_fn: LossFn) -> jax.Array:
    """Float32 loss of every row of the batch [b] without dropout: `loss_fn` vmapped over one-row batches."""

    def one(row: Batch) -> jax.Array:
        single = jax.tree.map(lambda x: x[None], row)
        loss_sum, sums = loss_fn(apply_fn, params, single, rngs={}, deterministic=True)
        return (loss_sum / jnp.maximum(sums["count"], 1e-9)).astype(jnp.float32)

    return jax.vmap(one)(batch)
