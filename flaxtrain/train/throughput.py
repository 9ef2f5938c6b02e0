"""Throughput accounting: tokens/s, step time and model FLOPs utilisation (MFU) of a training epoch.

FLOPs per step come from XLA's cost analysis of the compiled step (one lowering per batch shape,
cached); the peak is a table of known accelerators (dense matmul FLOP/s per device) or, on CPU, a
float32 matmul measured once per process on the whole machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# device_kind substring -> (float32, bfloat16) dense peak FLOP/s per device. float32 on A100/H100-class
# GPUs is TF32, which XLA uses for float32 matmuls at default precision. First match wins.
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("TPU v6 lite", 918e12, 918e12),
    ("TPU v5 lite", 197e12, 197e12),
    ("TPU v5p", 459e12, 459e12),
    ("TPU v5", 459e12, 459e12),
    ("TPU v4", 275e12, 275e12),
    ("TPU v3", 123e12, 123e12),
    ("TPU v2", 45e12, 45e12),
    ("H200", 495e12, 989e12),
    ("H100", 495e12, 989e12),
    ("A100", 156e12, 312e12),
    ("L4", 60e12, 121e12),
    ("A10", 62e12, 125e12),
    ("V100", 15.7e12, 125e12),
    ("T4", 8.1e12, 65e12),
)


def peak_flops(precision: str = "float32") -> float | None:
    """Peak FLOP/s of all devices together for `precision`; None for an unknown accelerator."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return measured_cpu_peak()  # host devices share the same cores: the machine's peak
    for name, f32, bf16 in PEAK_FLOPS:
        if name.lower() in device.device_kind.lower():
            return (bf16 if precision == "bfloat16" else f32) * jax.device_count()
    return None


@functools.cache
def measured_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 [size x size] matmul rate on the first CPU device, in FLOP/s."""
    x = jax.device_put(jnp.ones((size, size), jnp.float32), jax.devices("cpu")[0])
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


class Throughput:
    """Counts one epoch's timed steps (all but the first, which includes compilation)."""

    def __init__(self, steps: Any, precision: str = "float32"):
        self.steps = steps
        self.precision = precision
        self._calls = 0
        self._timed = 0
        self._tokens = 0
        self._flops: float | None = 0.0
        self._start: float | None = None

    def add(self, state: Any, batch: dict[str, np.ndarray], rng: jax.Array) -> None:
        """Called before each step is dispatched, with the state and batch it will get."""
        self._calls += 1
        if self._calls == 1:
            return
        if self._calls == 2:
            jax.block_until_ready(state)  # the first (compiling) step is done: start the clock
            self._start = time.perf_counter()
        self._timed += 1
        self._tokens += int(np.size(batch["input_ids"])) * jax.process_count()
        if self._flops is not None:
            flops = self.steps.flops(state, batch, rng)
            self._flops = None if flops is None else self._flops + flops

    def pause(self, state: Any) -> Callable[[], None]:
        """Stops the clock (once `state`'s steps are done) until the returned function is called: time
        spent between steps on something else (a validation pass) does not count as step time."""
        if self._start is None:
            return lambda: None
        jax.block_until_ready(state)
        paused = time.perf_counter()

        def resume() -> None:
            self._start += time.perf_counter() - paused

        return resume

    def finish(self, sums: Any) -> dict[str, float | None]:
        """{'tokens_per_s', 'step_s', 'mfu'} of the timed steps (empty for a one-step epoch; 'mfu' None
        when unknown)."""
        if self._start is None or self._timed == 0:
            return {}
        jax.block_until_ready(sums)
        elapsed = time.perf_counter() - self._start
        out: dict[str, float | None] = {"tokens_per_s": self._tokens / elapsed, "step_s": elapsed / self._timed}
        peak = peak_flops(self.precision)
        # None (printed 'MFU unknown') when XLA gave no FLOP count or the accelerator's peak is not known.
        out["mfu"] = self._flops / elapsed / peak if self._flops and peak else None
        return out
