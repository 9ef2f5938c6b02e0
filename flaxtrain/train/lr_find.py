"""Learning-rate range test (Smith 2017) on a device copy of the train state.

The learning rate grows exponentially from start_lr to end_lr, one step per batch (the learner's own
compiled train step, so a fit after it compiles nothing new; the copy donated from step to step),
until the loss is non-finite or exceeds stop_factor x the best loss so far. The caller's state is
never touched and nothing goes to disk. (A single `lax.scan` over all steps was measured 20x slower
per step on XLA's CPU backend for a TextCNN with a 30522 x 384 embedding: 3.6 s against 0.19 s;
benchmarks/README.md.)
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import jax
import numpy as np

from flaxtrain.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """The range test's curve and its suggestions."""

    lrs: np.ndarray  # learning rate of each step that ran
    losses: np.ndarray  # that step's mean batch loss
    smoothed: np.ndarray  # bias-corrected exponential moving average of the losses (beta 0.98)
    steepest: float  # lr where the smoothed loss falls fastest (per log-lr)
    valley: float  # fastai's valley: 2/3 down the longest descending stretch of the curve
    minimum_over_10: float  # lr of the lowest smoothed loss, divided by 10

    @property
    def suggested(self) -> float:
        return self.valley


class Steps(Protocol):
    """What the range test needs of compiled steps (flaxtrain.train.CompiledSteps has both)."""

    def train(self, state: TrainState, batch: dict[str, np.ndarray],
              rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]: ...

    def with_hyperparams(self, state: TrainState, **values: float) -> TrainState: ...


def lr_range_test(steps: Steps, work: TrainState, batches: list[dict[str, np.ndarray]], rng: jax.Array, *,
                  start_lr: float, end_lr: float, stop_factor: float = 4.0) -> LRFinderResult:
    """Runs the range test over `batches` with `steps.train`, the step `fit` runs (so it is compiled once for
    both), from `work`: a copy of the train state placed for those steps, donated step by step."""
    lrs = np.geomspace(start_lr, end_lr, len(batches)).astype(np.float32)
    losses: list[float] = []
    best = float("inf")
    for lr, batch in zip(lrs, batches):
        work = steps.with_hyperparams(work, learning_rate=float(lr))
        work, sums = steps.train(work, batch, rng)
        host = jax.device_get(sums)
        # A step that skipped its batch (skip_nonfinite) reports zero sums: its loss was not finite.
        skipped = float(host.get("skipped", 0.0)) > 0
        loss = float("nan") if skipped else float(host["loss_sum"]) / max(float(host["count"]), 1.0)
        losses.append(loss)
        if not np.isfinite(loss) or loss > stop_factor * best:
            break
        best = min(best, loss)
    finite = np.isfinite(losses)
    keep = len(losses) if finite.all() else int(np.argmin(finite))
    return suggestions(lrs[:keep], np.asarray(losses[:keep], np.float32))


def suggestions(lrs: np.ndarray, losses: np.ndarray, beta: float = 0.98) -> LRFinderResult:
    """Smoothed curve and the steepest / valley / minimum-over-10 learning rates."""
    if len(losses) < 3:
        edge = float(lrs[0]) if len(lrs) else float("nan")
        return LRFinderResult(lrs, losses, losses, edge, edge, edge / 10)
    average, smoothed = 0.0, np.empty(len(losses), np.float64)
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * float(loss)
        smoothed[i] = average / (1 - beta ** (i + 1))
    slopes = np.gradient(smoothed, np.log(lrs))
    skip = max(len(slopes) // 10, 1)  # the moving average's first points are too noisy to rank
    steepest = float(lrs[int(np.argmin(slopes[skip:-1])) + skip])
    # valley: the longest decreasing subsequence of the smoothed curve, 2/3 of the way along it
    n = len(smoothed)
    run = np.ones(n, np.int64)
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
    end = int(np.argmax(run))
    start = max(end - int(run[end]), 0)
    third = (end - start) / 3
    valley = float(lrs[min(start + int(third) + int(third / 2), n - 1)])
    return LRFinderResult(lrs, losses, smoothed.astype(np.float32), steepest, valley,
                          float(lrs[int(np.argmin(smoothed))]) / 10)
