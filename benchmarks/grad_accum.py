"""Gradient accumulation on CPU: the micro-batch loop as XLA's while loop against unrolled.

Run:  .venv/bin/python benchmarks/grad_accum.py [--batch 320] [--micro 4] [--rounds 3]

XLA's CPU backend leaves the convolutions of a while-loop body in the layouts autodiff gives them and runs
them without its convolution library; unrolled, they are canonicalized as in a plain step. This times
TextCNN train steps on one fixed batch in one process, interleaved rounds: the whole batch in one step,
`--micro` micro-batches as a loop, and unrolled (flaxtrain's CPU choice). Prints the CPU, the median and
min step times, their ratios to the one-step time, and each variant's compile time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from flaxtrain import models  # noqa: E402
from flaxtrain.tasks.classification import classification_loss  # noqa: E402
from flaxtrain.train import step as step_lib  # noqa: E402
from flaxtrain.train import create_train_state, init_params, make_optimizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=320)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(describe())
    module = models.build_model("textcnn", models.TextCNNConfig(vocab_size=18_000, num_classes=2))
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(1, 18_000, (args.batch, args.length)).astype(np.int32),
             "label": rng.integers(0, 2, args.batch).astype(np.int32), "weight": np.ones(args.batch, np.float32)}
    params = init_params(module, {"input_ids": batch["input_ids"][:2]}, jax.random.key(0))
    variants = {"one step": dict(grad_accum_steps=1), f"{args.micro} micro, loop": dict(grad_accum_steps=args.micro),
                f"{args.micro} micro, unrolled": dict(grad_accum_steps=args.micro, unroll_micro_batches=True)}
    tx = make_optimizer(1e-3)  # one optimizer: it is part of the state's static structure
    steps, compile_s, times = {}, {}, {name: [] for name in variants}
    for name, options in variants.items():
        fn = jax.jit(lambda s, b, r, o=options: step_lib.train_step(s, b, r, loss_fn=classification_loss, **o),
                     donate_argnums=0)  # (each state starts from a copy of the params)
        state = create_train_state(module, jax.tree.map(np.array, params), tx)
        start = time.perf_counter()
        steps[name] = fn.lower(state, batch, jax.random.key(1)).compile()
        compile_s[name] = time.perf_counter() - start
    for _ in range(args.rounds):
        for name, compiled in steps.items():
            state = create_train_state(module, jax.tree.map(np.array, params), tx)
            state, _ = compiled(state, batch, jax.random.key(1))  # warm-up
            jax.block_until_ready(state)
            start = time.perf_counter()
            for _ in range(args.steps):
                state, _ = compiled(state, batch, jax.random.key(1))
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times["one step"])
    print(f"TextCNN, batch {args.batch} x {args.length}, {args.rounds} rounds of {args.steps} steps")
    print(f"{'variant':<22} {'median s':>9} {'min s':>8} {'x one step':>11} {'compile s':>10}")
    for name, values in times.items():
        print(f"{name:<22} {statistics.median(values):>9.3f} {min(values):>8.3f} "
              f"{statistics.median(values) / base:>11.2f} {compile_s[name]:>10.1f}")


if __name__ == "__main__":
    main()
