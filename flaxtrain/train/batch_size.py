"""The largest batch whose compiled train step fits device memory: the search behind
`Learner.find_batch_size`, over a function giving the step's peak bytes per device at a batch size."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from flaxtrain.errors import FlaxtrainError


def format_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def device_memory_limit() -> int:
    """Bytes one device may use: its allocator's limit on accelerators, the host's available memory on CPU."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 (backends without memory stats raise various errors)
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        return available // max(jax.local_device_count(), 1)  # host devices share the host's memory
    except (OSError, StopIteration, ValueError):
        raise FlaxtrainError(f"the memory of {device.device_kind} is unknown: pass memory_limit (bytes per device)") from None


def largest_fitting(peak: Callable[[int], int], *, data_parallel: int, cap: int, budget: int) -> tuple[int, int]:
    """(largest batch with peak(batch) <= budget, the stride it was searched in). Sizes are multiples of
    8 x data_parallel (of data_parallel below that); peak is taken at two sizes to learn the fixed and
    per-example bytes, then at the predicted size and its neighbours."""
    dp, quantum = data_parallel, 8 * data_parallel
    if peak(dp) > budget:
        raise FlaxtrainError(f"a batch of {dp} already needs {format_bytes(peak(dp))} per device of the "
                             f"{format_bytes(budget)} allowed: use precision='bfloat16', a remat policy, or a "
                             "smaller model or sequence length")
    small, large = min(quantum, cap), min(4 * quantum, cap)
    if peak(small) > budget:  # below one quantum: whole data-parallel groups
        best, step = dp, dp
    else:
        slope = (peak(large) - peak(small)) / max(large - small, 1)
        guess = cap if slope <= 0 else int(small + (budget - peak(small)) / slope)
        best, step = max(small, min(cap, guess) // quantum * quantum), quantum
        while best > small and peak(best) > budget:
            best -= quantum
    while best + step <= cap and peak(best + step) <= budget:
        best += step
    return best, step


def micro_batches(target: int, largest: int, data_parallel: int) -> int:
    """The fewest micro-batches (gradient accumulation steps) that split `target` into equal parts of at
    most `largest` rows, each divisible over the data-parallel devices."""
    dp = data_parallel
    if target < dp or target % dp:
        raise FlaxtrainError(f"target {target} does not divide over {dp} data-parallel devices: use a multiple of {dp}")
    accum = next((k for k in range(1, target // dp + 1) if target % (k * dp) == 0 and target // k <= largest), None)
    if accum is None:
        raise FlaxtrainError(f"no split of {target} into micro-batches of at most {largest} fits: use a target "
                             f"with more divisors, such as {max(target // largest, 1) * largest}")
    return accum


def longest_rows(batches: Iterable[dict[str, Any]], *, look_at: int = 64) -> dict[str, np.ndarray] | None:
    """The batch with the most elements among the first `look_at` (the longest bucket), or None."""
    longest, most = None, -1
    for i, batch in enumerate(batches):
        size = sum(int(np.size(v)) for v in batch.values())
        if size > most:
            longest, most = batch, size
        if i + 1 == look_at:
            break
    return None if longest is None else {k: np.asarray(v) for k, v in longest.items()}
