"""The training loop: the only place with control flow, progress bars, logging and eval cadence."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from flaxtrain.errors import FlaxtrainError
from flaxtrain.train.partition import CompiledSteps
from flaxtrain.train.state import TrainState
from flaxtrain.train.throughput import Throughput


def _progress(iterable: Iterable, *, total: int | None, desc: str, verbose: bool) -> Iterable:
    # Bars only on a terminal: logs and CI stay free of carriage-return noise.
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not (verbose and sys.stderr.isatty()))


def _add(total: dict[str, jax.Array] | None, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)


def summarize(sums: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Host-side means from device sums: loss, and acc or mae (when present), per counted example."""
    host = {k: float(v) for k, v in jax.device_get(sums).items()}
    count = max(host.get("count", 0.0), 1.0)
    out = {f"{prefix}loss": host["loss_sum"] / count}
    if "correct" in host:
        out[f"{prefix}acc"] = host["correct"] / count
    if "abs_error" in host:  # regression: loss is the mean squared error
        out[f"{prefix}mae"] = host["abs_error"] / count
    if host.get("skipped"):
        out[f"{prefix}skipped"] = int(host["skipped"])
    return out


def _nonfinite_message(loss_sum: float, *, step: int, epoch: int) -> str:
    what = f"training loss became {loss_sum}" if not math.isfinite(loss_sum) else "the updated weights became non-finite"
    return (
        f"{what} at step {step} (epoch {epoch + 1}); the model keeps the weights of step {step - 1}, the last finite "
        "ones: lower the learning rate, set clip_norm, check the inputs for bad values, or pass skip_nonfinite=True "
        "to skip such batches"
    )


class _Guard:
    """Finds the first step whose loss or updated weights were not finite without making the host wait.

    Each step's flag is read as soon as the device has computed it (polled after every dispatch,
    never waited for), and all pending flags are read at the latest every `check_every` steps or
    before a save. The train step halts the state at the bad step (train/step.py), so the steps
    dispatched before the host notices change nothing.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, jax.Array, jax.Array]] = []  # (step number, non-finite flag, loss sum)

    def add(self, step: int, sums: dict[str, jax.Array]) -> None:
        if "nonfinite" in sums:  # skip_nonfinite steps drop bad batches themselves
            self.pending.append((step, sums["nonfinite"], sums["loss_sum"]))

    def poll(self, epoch: int) -> str | None:
        """Reads the flags the device has already finished, oldest first."""
        ready = 0
        while ready < len(self.pending) and self.pending[ready][1].is_ready():
            ready += 1
        return self._read(ready, epoch)

    def check(self, epoch: int) -> str | None:
        """Reads every pending flag (waits for the device)."""
        return self._read(len(self.pending), epoch)

    def _read(self, count: int, epoch: int) -> str | None:
        if not count:
            return None
        done, self.pending = self.pending[:count], self.pending[count:]
        flags = jax.device_get([flag for _, flag, _ in done])
        for (step, _, loss), flag in zip(done, flags):
            if float(flag) > 0:
                return _nonfinite_message(float(jax.device_get(loss)), step=step, epoch=epoch)
        return None


def train_epoch(
    state: TrainState,
    batches: Iterator[dict[str, np.ndarray]],
    *,
    steps: CompiledSteps,
    rng: jax.Array,
    epoch: int,
    num_batches: int | None = None,
    check_every: int = 10,
    verbose: bool = True,
    meter: Throughput | None = None,
    schedule: Callable[[int], dict[str, float]] | None = None,
    first_step: int = 0,
    start_batch: int = 0,
    initial: dict[str, jax.Array] | None = None,
    save_every: int | None = None,
    save: Callable[[TrainState, int, int, dict[str, jax.Array]], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    last_step: int | None = None,
    evaluate_every: int | None = None,
    on_evaluate: Callable[[TrainState, int, dict[str, jax.Array]], None] | None = None,
) -> tuple[TrainState, dict[str, jax.Array], str | None]:
    """Runs the train step over one epoch of batches (or until global step `last_step`).

    Metrics stay on device; the host reads each step's non-finite flag once the device has it
    (without waiting), and waits for all of them every `check_every` steps and before every save.
    A non-finite loss therefore stops training at most `check_every` steps after the bad step
    (usually one or two), and the steps in between change nothing (the state halts itself).
    A `meter` counts the epoch's tokens and model FLOPs (read from the batch shapes on the host).
    A `schedule` maps the global step (`first_step` is the epoch's first) to optimizer
    hyperparams, written into the state before each step.

    Args (resuming and saving):
      start_batch: batches of this epoch already trained (skipped here); `initial` their metric sums.
      save_every: call `save(state, epoch, batches done, sums)` after every `save_every`-th global step.
      should_stop: polled after each step; a message stops the epoch after saving (a SIGTERM).
      evaluate_every, on_evaluate: call `on_evaluate(state, global step, epoch sums so far)` after every
        `evaluate_every`-th global step that does not end the epoch (the epoch's end validates anyway).

    Returns:
      (state, the epoch's metric sums, None or why training must stop: a non-finite loss, an
      interrupt or a stop request). The state is always the last one computed, so no finished
      step is lost.
    """
    total = initial
    applied: dict[str, float] | None = None
    guard = _Guard()
    rest = itertools.islice(batches, start_batch, None)
    bar = _progress(rest, total=None if num_batches is None else num_batches - start_batch, desc=f"epoch {epoch + 1}",
                    verbose=verbose)
    i = start_batch
    try:
        for i, batch in enumerate(bar, start=start_batch):
            if schedule is not None:
                values = dict(schedule(first_step + i))
                if values != applied:  # a constant lr is written once, not sent to the device every step
                    state, applied = steps.with_hyperparams(state, **values), values
            if meter is not None:
                meter.add(state, batch, rng)
            state, sums = steps.train(state, batch, rng)
            total = _add(total, sums)
            guard.add(first_step + i + 1, sums)
            stop = should_stop() if should_stop is not None else None
            ends = i + 1 == num_batches or (last_step is not None and first_step + i + 1 >= last_step)
            periodic = bool(save_every) and (first_step + i + 1) % save_every == 0 and not ends  # an epoch end saves
            saving = save is not None and (stop is not None or periodic)
            bad = guard.check(epoch) if saving or (i + 1) % check_every == 0 else guard.poll(epoch)
            if bad:
                return state, total, bad
            if saving or (i + 1) % check_every == 0:
                if saving:
                    save(state, epoch, i + 1, total)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(summarize(total))
            if stop is not None:
                return state, total, stop
            if on_evaluate is not None and evaluate_every and (first_step + i + 1) % evaluate_every == 0 and not ends:
                resume_clock = meter.pause(state) if meter is not None else None
                on_evaluate(state, first_step + i + 1, total)
                if resume_clock is not None:
                    resume_clock()
            if last_step is not None and first_step + i + 1 >= last_step:
                break
    except KeyboardInterrupt:
        return state, total, f"interrupted at step {steps.step_of(state)} (epoch {epoch + 1})"
    if total is None:
        raise FlaxtrainError("the training data gave no batches: pass a non-empty training set")
    return state, total, guard.check(epoch)


def evaluate(
    state: TrainState, batches: Iterable[dict[str, np.ndarray]], *, steps: CompiledSteps, num_batches: int | None = None,
    verbose: bool = True,
) -> dict[str, jax.Array]:
    """Sums of the eval step over all batches (on device until read)."""
    total = None
    for batch in _progress(batches, total=num_batches, desc="evaluate", verbose=verbose):
        total = _add(total, steps.eval(state, batch))
    if total is None:
        raise FlaxtrainError("the evaluation data gave no batches: pass a non-empty evaluation set")
    return total


def predict(
    params: Any, batches: Iterable[dict[str, np.ndarray]], *, steps: CompiledSteps, num_examples: int,
    num_batches: int | None = None, verbose: bool = False,
) -> np.ndarray:
    """Stacks the predict step's outputs back into example order using each batch's 'index'.

    Per-token outputs ([b, L] with L the batch's bucket length) are padded to the longest bucket
    seen, with -1 for integer outputs (tag ids) and 0 otherwise.
    """
    pending = []
    for batch in _progress(batches, total=num_batches, desc="predict", verbose=verbose):
        pending.append((batch["index"], batch["weight"], steps.predict(params, batch)))
    if not pending:
        raise FlaxtrainError("nothing to predict: pass at least one text")
    results = [np.asarray(result) for _, _, result in pending]  # read back after dispatching all batches
    trailing = tuple(np.max([r.shape[1:] for r in results], axis=0).tolist()) if results[0].ndim > 1 else ()
    dtype = results[0].dtype
    out = np.full((num_examples, *trailing), -1 if np.issubdtype(dtype, np.integer) else 0, dtype)
    for (index, weight, _), result in zip(pending, results):
        keep = weight > 0
        out[(index[keep], *(slice(0, n) for n in result.shape[1:]))] = result[keep]
    return out


_FORMATS = {"lr": ("lr", "{:.2e}"), "tokens_per_s": ("tokens/s", "{:.0f}"), "step_s": ("step", "{:.3f} s"), "mfu": ("MFU", "{:.1%}")}


def format_record(record: dict[str, Any]) -> str:
    """One epoch's history line: 'epoch 1  loss 0.6931  acc 0.5000  ...  tokens/s 5120  step 0.100 s  MFU 12.0%'."""
    parts = []
    for key, value in record.items():
        label, fmt = _FORMATS.get(key, (key, "{:.4f}" if isinstance(value, float) else "{}"))
        parts.append(f"{label} unknown" if value is None else f"{label} {fmt.format(value)}")
    return "  ".join(parts)


def fit(
    state: TrainState,
    *,
    epochs: int,
    train_batches: Callable[[int], tuple[Iterator[dict[str, np.ndarray]], int]],
    val_batches: Callable[[], tuple[Iterator[dict[str, np.ndarray]], int]] | None,
    steps: CompiledSteps,
    rng: jax.Array,
    start_epoch: int = 0,
    verbose: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, TrainState], None] | None = None,
    precision: str = "float32",
    schedule: Callable[[int], dict[str, float]] | None = None,
    start_batch: int = 0,
    initial_sums: dict[str, jax.Array] | None = None,
    save_every: int | None = None,
    save: Callable[[TrainState, int, int, dict[str, jax.Array]], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    after_epoch: Callable[[int, TrainState, dict[str, float]], str | None] | None = None,
    last_step: int | None = None,
    evaluate_every: int | None = None,
    on_evaluate: Callable[[TrainState, int, dict[str, jax.Array]], None] | None = None,
) -> tuple[TrainState, list[dict[str, float]], str | None]:
    """Trains for `epochs` epochs, validating after each.

    Args:
      state: the TrainState (donated to the step: do not reuse the one passed in).
      epochs: epochs to run.
      train_batches: epoch -> (batch iterator, number of batches); reshuffles by epoch.
      val_batches: () -> (batch iterator, number of batches), or None to skip validation.
      steps: the compiled steps.
      rng: the run's base key.
      start_epoch: index of the first epoch (continues the shuffling of earlier fit calls).
      verbose: print a line per epoch and show progress bars on a terminal.
      log: where epoch lines go.
      on_epoch_end: called with (epoch, state) after each finished epoch, before validation.
      precision: the compute precision, for the MFU's peak.
      schedule: global step -> optimizer hyperparams (learning_rate, b1), set before each step.
      start_batch, initial_sums: resuming inside `start_epoch`: batches already trained and their sums.
      save_every, save, should_stop: as `train_epoch` takes them.
      after_epoch: called with (epoch, state, record) once the epoch's record (with validation)
        exists; a message it returns ends training there (early stopping).
      last_step: stop after this global step (the epoch it falls in is cut short, then validated).
      evaluate_every, on_evaluate: as `train_epoch` takes them (validation between epoch ends).

    Returns:
      (last state, per-epoch history, None or why training stopped early).
    """
    history: list[dict[str, float]] = []
    step = steps.step_of(state) - start_batch  # global step at the start of the first epoch
    last: dict[str, float] = {}

    def remembered(global_step: int) -> dict[str, float]:
        last.update(schedule(global_step))
        return last
    for epoch in range(start_epoch, start_epoch + epochs):
        batches, num_batches = train_batches(epoch)
        meter = Throughput(steps, precision)
        skip, initial = (start_batch, initial_sums) if epoch == start_epoch else (0, None)
        state, sums, stop = train_epoch(
            state, batches, steps=steps, rng=rng, epoch=epoch, num_batches=num_batches, verbose=verbose, meter=meter,
            schedule=None if schedule is None else remembered, first_step=step, start_batch=skip, initial=initial,
            save_every=save_every, save=save, should_stop=should_stop, last_step=last_step,
            evaluate_every=evaluate_every, on_evaluate=on_evaluate,
        )
        step += num_batches
        if stop:
            return state, history, stop
        record_speed = meter.finish(sums)
        if on_epoch_end is not None:
            on_epoch_end(epoch, state)
        record = {"epoch": epoch + 1, **summarize(sums), **record_speed}
        if "learning_rate" in last:
            record["lr"] = last["learning_rate"]
        if val_batches is not None:
            batches, num_batches = val_batches()
            record.update(summarize(evaluate(state, batches, steps=steps, num_batches=num_batches, verbose=verbose), "val_"))
        history.append(record)
        if verbose:
            log(format_record(record))
        if after_epoch is not None:
            stop = after_epoch(epoch, state, record)
            if stop:
                return state, history, stop
    return state, history, None
