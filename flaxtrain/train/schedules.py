"""Per-step hyperparameter schedules (host-side functions of the global step), built on Optax.

Each returns `step -> {'learning_rate': ..., 'b1': ...}`; the loop writes the values into the
optimizer state's injected hyperparams before each step, so one compiled step serves every
schedule and every fit call.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

Schedule = Callable[[int], dict[str, float]]


def constant(lr: float) -> Schedule:
    """The same learning rate at every step."""
    return lambda step: {"learning_rate": lr}


def onecycle(lr: float, total_steps: int, *, start_step: int = 0, pct_start: float = 0.3, div_factor: float = 25.0,
             final_div_factor: float = 1e4, b1_range: tuple[float, float] = (0.95, 0.85)) -> Schedule:
    """Smith's 1cycle policy (Smith & Topin 2019): cosine warm-up from lr / div_factor to lr over
    pct_start of the steps, then cosine annealing to lr / (div_factor * final_div_factor); Adam's
    b1 moves inversely, from b1_range[0] down to b1_range[1] at the peak and back."""
    lr_at = optax.cosine_onecycle_schedule(total_steps, lr, pct_start=pct_start, div_factor=div_factor,
                                           final_div_factor=final_div_factor)
    with jax.numpy_dtype_promotion("standard"):  # Optax's schedule mixes dtypes; evaluated once, vectorised
        table = np.asarray(jax.vmap(lr_at)(jnp.arange(total_steps + 1)), np.float64)
    low = lr / div_factor
    high_b1, low_b1 = b1_range

    def schedule(step: int) -> dict[str, float]:
        t = min(max(step - start_step, 0), total_steps)
        value = float(table[t])
        position = 0.0 if lr == low else min(max((value - low) / (lr - low), 0.0), 1.0)
        return {"learning_rate": value, "b1": high_b1 - (high_b1 - low_b1) * position}

    return schedule


def sgdr(lr: float, steps_per_epoch: int, *, n_cycles: int, cycle_len: int = 1, cycle_mult: int = 1,
         start_step: int = 0, min_lr: float = 0.0) -> tuple[Schedule, int]:
    """SGDR (Loshchilov & Hutter 2017): cosine annealing from lr to min_lr over a cycle of
    cycle_len epochs, restarted n_cycles times, each cycle cycle_mult times longer than the last.

    Returns:
      (schedule, total epochs of all cycles).
    """
    lengths = [cycle_len * cycle_mult**i * steps_per_epoch for i in range(n_cycles)]
    starts = np.cumsum([0, *lengths[:-1]])

    def schedule(step: int) -> dict[str, float]:
        t = step - start_step
        cycle = int(np.searchsorted(starts, t, side="right") - 1)
        cycle = min(max(cycle, 0), n_cycles - 1)
        progress = min((t - starts[cycle]) / lengths[cycle], 1.0)
        return {"learning_rate": float(min_lr + 0.5 * (lr - min_lr) * (1 + np.cos(np.pi * progress)))}

    return schedule, sum(cycle_len * cycle_mult**i for i in range(n_cycles))


def triangular(peak: Callable[[], float], steps_per_epoch: int, *, start_step: int = 0, div_factor: float = 10.0,
               b1_range: tuple[float, float] = (0.95, 0.85)) -> Schedule:
    """The triangular cyclical policy (Smith 2017) with one cycle per epoch: the learning rate
    climbs linearly from peak / div_factor to peak over the first half of each epoch and back down
    over the second; Adam's b1 moves inversely. `peak()` is read at every step, so a plateau rule
    can lower it between epochs."""
    high_b1, low_b1 = b1_range

    def schedule(step: int) -> dict[str, float]:
        position = ((step - start_step) % steps_per_epoch + 0.5) / steps_per_epoch
        height = 1.0 - abs(2.0 * position - 1.0)
        top = peak()
        low = top / div_factor
        return {"learning_rate": low + (top - low) * height, "b1": high_b1 - (high_b1 - low_b1) * height}

    return schedule
