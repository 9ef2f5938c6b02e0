"""Several seeds as one job: K copies of a model trained in one compiled step, vmapped over their states.

Run i is the run a Learner with seed s_i would make on its own: params initialised from s_i, its data
order shuffled by s_i, its dropout keys folded from key(s_i). The K train states are stacked on a leading
axis and `jax.vmap(train_step)` takes one step of all of them on K batches (one from each run's stream,
padded to a common length: every network here masks padding), so the device sees K-times larger
matmuls instead of K small jobs, and XLA compiles one step. Validation runs the K param sets on the
same batches, also vmapped.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain._xla_flags import compiler_options
from flaxtrain.errors import FlaxtrainError
from flaxtrain.train import step as step_lib
from flaxtrain.train.fitting import Progress
from flaxtrain.train.loop import summarize
from flaxtrain.train.state import TrainState

ADAM_B1 = 0.9  # Adam's b1 where a schedule sets none (as train/fitting.py)


@dataclasses.dataclass
class SeedRun:
    """One run of a several-seed fit: its seed, its final params (on the host) and its own history."""

    seed: int
    params: Any
    history: list[dict[str, float]]


def stack(trees: list[Any]) -> Any:
    """One tree whose leaves hold the trees' leaves on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stack_batches(batches: list[dict[str, np.ndarray]], pad_values: dict[str, int]) -> dict[str, np.ndarray]:
    """The runs' batches of one step as one [K, b, ...] batch; token arrays padded to the longest with
    `pad_values[name]` (0 for any other name)."""
    out = {}
    for name in batches[0]:
        arrays = [np.asarray(b[name]) for b in batches]
        if arrays[0].ndim >= 2:
            length = max(a.shape[1] for a in arrays)
            arrays = [np.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2),
                             constant_values=pad_values.get(name, 0)) for a in arrays]
        out[name] = np.stack(arrays)
    return out


def _with_hyperparams(states: TrainState, values: dict[str, float], count: int) -> TrainState:
    hyper = dict(states.opt_state.hyperparams)
    for name, value in values.items():
        hyper[name] = jnp.full((count,), value, jnp.float32)
    return states.replace(opt_state=states.opt_state._replace(hyperparams=hyper))


def _summary(records: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over the runs, and its standard deviation as `<metric>_std`."""
    out: dict[str, float] = {"epoch": records[0]["epoch"]}
    for key in records[0]:
        if key == "epoch":
            continue
        values = np.asarray([r[key] for r in records], np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def fit_seeds(*, apply_fn: Callable[..., Any], loss_fn: step_lib.LossFn, tx: Any, params: list[Any], seeds: list[int],
              schedule: Callable[[int], dict[str, float]], epochs: int,
              train_batches: Callable[[int, int], Iterable[dict[str, np.ndarray]]],
              val_batches: Callable[[], Iterable[dict[str, np.ndarray]]] | None, pad_values: dict[str, int],
              progress: Progress, verbose: bool) -> tuple[list[SeedRun], list[dict[str, float]], TrainState]:
    """Trains len(seeds) runs together for `epochs` epochs (see the file's docstring).

    Args:
      apply_fn, loss_fn, tx: the model's apply, its task's loss and the optimizer (frozen parts included).
      params: each run's initial params.
      seeds: each run's seed (data order and dropout keys).
      schedule: global step -> optimizer hyperparams (learning_rate, b1), set before each step.
      train_batches: (seed, epoch) -> that run's training batches of the epoch.
      val_batches: () -> validation batches (one stream for all runs), or None.
      pad_values: padding value of each token array ('input_ids': the pad id).
      progress: the learner's; gets the summaries, the epochs and the learning rates, as run 0's own fit would.

    Returns:
      (the runs, one summary record per epoch: mean and `_std` of every metric over the runs, the first
      run's final train state: params, optimizer state and step, as its learner alone would hold them).
    """
    count = len(seeds)
    states = stack([TrainState.create(apply_fn=apply_fn, params=p, tx=tx, halted=jnp.zeros((), jnp.int32)) for p in params])
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    train = jax.jit(jax.vmap(functools.partial(step_lib.train_step, loss_fn=loss_fn)), donate_argnums=0,
                    compiler_options=compiler_options())
    evaluate = jax.jit(jax.vmap(functools.partial(step_lib.eval_step, loss_fn=loss_fn), in_axes=(0, None)),
                       compiler_options=compiler_options())
    histories: list[list[dict[str, float]]] = [[] for _ in seeds]
    summaries = []
    global_step = 0
    for epoch in range(epochs):
        totals = None
        for batches in zip(*(train_batches(seed, epoch) for seed in seeds), strict=True):
            states = _with_hyperparams(states, {"b1": ADAM_B1, **schedule(global_step)}, count)
            states, sums = train(states, stack_batches(list(batches), pad_values), keys)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
            global_step += 1
        if totals is None:
            raise FlaxtrainError("the training data gave no batches: pass a non-empty training set")
        host = jax.device_get(totals)
        bad = [s for s, flag in zip(seeds, host["nonfinite"]) if flag > 0]
        if bad:
            raise FlaxtrainError(f"the run of seed {bad[0]} hit a non-finite loss or weights in epoch {epoch + 1}: lower "
                                 "the learning rate or set clip_norm")
        records = [{"epoch": epoch + 1, **summarize({k: v[i] for k, v in host.items() if k != "nonfinite"})}
                   for i in range(count)]
        if val_batches is not None:
            val = None
            for batch in val_batches():
                sums = evaluate(states, batch)
                val = sums if val is None else jax.tree.map(jnp.add, val, sums)
            val = jax.device_get(val)
            for i, record in enumerate(records):
                record.update(summarize({k: v[i] for k, v in val.items()}, "val_"))
        for history, record in zip(histories, records):
            history.append(record)
        summaries.append(_summary(records))
        if verbose:
            shown = {k: round(v, 4) for k, v in summaries[-1].items() if k != "epoch"}
            print(f"epoch {epoch + 1}: mean (std) over {count} seeds: {shown}")
    finals = jax.device_get(states.params)
    runs = [SeedRun(seed, jax.tree.map(lambda x, i=i: x[i], finals), history)
            for i, (seed, history) in enumerate(zip(seeds, histories))]
    progress.history.extend(summaries)
    progress.epochs_done += epochs
    progress.lr_trace.extend((step, schedule(step)["learning_rate"]) for step in range(global_step))
    return runs, summaries, jax.tree.map(lambda x: x[0], states)
