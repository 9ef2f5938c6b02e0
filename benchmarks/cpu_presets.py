"""XLA's CPU optimisation presets and schedulers on the MiniLM-size train step (issue 20's first route).

Run:  .venv/bin/python benchmarks/cpu_presets.py [--rounds 3] [--length 128]

Each setting is passed on top of flaxtrain's own options (`flaxtrain._xla_flags.CPU_OPTIONS`, through
`jax.jit(..., compiler_options=...)`) to the train step of all-MiniLM-L6-v2's shape with a 2-class head
(batch 32, dropout 0.1, AdamW), each in a fresh process (no compilation cache), the settings interleaved
round by round. Prints the first step (compile + run), the median of 5 steps after it, and the loss (the
settings must not change the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "flaxtrain's options": {},
    "+ FAST_COMPILE preset": {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"},
    "+ FAST_RUNTIME preset": {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_RUNTIME"},
    "+ MEMORY_OPTIMIZED scheduler": {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"},
    "+ CONCURRENCY_OPTIMIZED scheduler": {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"},
}


def child(extra: dict[str, object], length: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from flaxtrain import _xla_flags, models
    from flaxtrain.models.encoder import EncoderConfig
    from flaxtrain.tasks.classification import classification_loss, predict_log_probs
    from flaxtrain.train import compile_steps, create_train_state, init_params, make_optimizer

    _xla_flags.CPU_OPTIONS.update(extra)
    _xla_flags._options.cache_clear()
    batch = 32
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30522, size=(batch, length)).astype(np.int32)
    labels = rng.integers(0, 2, size=batch).astype(np.int32)
    config = models.HeadConfig(EncoderConfig(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, mlp_dim=1536,
                                             dropout_rate=0.1), num_classes=2)
    module = models.build_model("transformer", config)
    params = init_params(module, {"input_ids": jnp.zeros((1, 16), jnp.int32)}, jax.random.key(0))
    steps = compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs)
    data = {"input_ids": jnp.asarray(ids), "label": jnp.asarray(labels), "weight": jnp.ones(batch, jnp.float32)}
    state = create_train_state(module, params, make_optimizer(5e-5, weight_decay=0.01))
    key = jax.random.key(0)
    start = time.perf_counter()
    state, sums = steps.train(state, data, key)
    jax.block_until_ready(sums)
    first = time.perf_counter() - start
    times = []
    for _ in range(5):
        start = time.perf_counter()
        state, sums = steps.train(state, data, key)
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - start)
    return {"first_step_s": first, "step_s": statistics.median(times), "loss": float(sums["loss_sum"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child), args.length)))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import describe

    print(describe())
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"} | {"PYTHONPATH": str(ROOT)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, extra in SETTINGS.items():
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(extra), "--length", str(args.length)],
                                  capture_output=True, text=True, cwd=ROOT, env=env)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nbatch 32 x {args.length}, {args.rounds} rounds")
    print("| setting | first step (s), each round | step (s), each round | loss |\n|---|---|---|---|")
    for name, done in runs.items():
        firsts = ", ".join(f"{r['first_step_s']:.1f}" for r in done)
        steps = ", ".join(f"{r['step_s']:.2f}" for r in done)
        print(f"| {name} | {firsts} | {steps} | {done[0]['loss']:.6f} |")


if __name__ == "__main__":
    main()
