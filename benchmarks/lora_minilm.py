"""LoRA against full fine-tuning: all-MiniLM-L6-v2 on rotten_tomatoes, through the public Learner.

Run:  .venv/bin/python benchmarks/lora_minilm.py [--train 4000] [--epochs 2] [--batch 32] [--maxlen 64]

Two runs in this one process, same data, same schedule (one-cycle), same seed: the whole model at
`--full-lr`, and LoRA r=8 (alpha 16) on query and value with the classifier head trained beside it at
`--lora-lr`. Prints test accuracy (of the model as fit left it), trainable params, the train step's time
(median of 10 steps on the longest training batch, after the fit) and its per-device memory from XLA's analysis of the compiled step (arguments, temporaries, peak), and the
LoRA/full ratios. CPU model and ISA first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import jax
import numpy as np

import flaxtrain
import flaxtrain.text
from flaxtrain.train.optim import is_frozen, param_path

from machine import describe


def trainable_params(learner) -> int:
    leaves = jax.tree_util.tree_leaves_with_path(learner.model.params)
    return int(sum(np.size(x) for path, x in leaves if not is_frozen(param_path(path), learner.frozen)))


def step_seconds(learner, rows: dict, repeats: int = 10) -> float:
    """Median time of one train step on a fixed batch, after two warm-up steps (no compile, no data)."""
    state, rng = learner._train_state(), jax.random.key(0)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        state, sums = learner.steps.train(state, rows, rng)
        jax.block_until_ready(sums)
        if i >= 2:
            times.append(time.perf_counter() - start)
    learner._keep_state(state)
    return statistics.median(times)


def run(kind: str, args, data, test_texts, test_labels) -> dict:
    model = flaxtrain.get_model("minilm", train_data=data, maxlen=args.maxlen)
    learner = flaxtrain.get_learner(model, batch_size=args.batch)
    if kind == "lora":
        learner.add_lora(rank=8, alpha=16, targets=("query", "value"))
    rows = max(learner._batches(learner.train_data, train=True)[0], key=lambda b: b["input_ids"].shape[1])
    memory = learner.steps.memory(learner._train_state(), rows, jax.random.key(0))
    start = time.perf_counter()
    history = learner.fit_onecycle(args.lora_lr if kind == "lora" else args.full_lr, args.epochs, verbose=0)
    seconds = time.perf_counter() - start
    predictor = flaxtrain.get_predictor(learner.model)
    accuracy = float(np.mean(np.asarray(predictor.predict(test_texts)) == np.asarray(test_labels)))
    step = step_seconds(learner, rows)  # after the fit and its accuracy: extra steps on a copy of the state
    return {"kind": kind, "test_acc": accuracy, "trainable_params": trainable_params(learner),
            "all_params": model.num_params(), "step_s": step, "rows": list(rows["input_ids"].shape),
            "fit_s": seconds, "memory": memory, "val_acc": history[-1].get("val_acc")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=4000, help="training texts (rotten_tomatoes has 8530)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--maxlen", type=int, default=64)
    parser.add_argument("--full-lr", type=float, default=1e-4)
    parser.add_argument("--lora-lr", type=float, default=2e-3)
    args = parser.parse_args()
    print(describe())
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; {json.dumps(vars(args))}")
    data = flaxtrain.text.load_data("rotten_tomatoes", train=True)
    data = dataclasses.replace(data, train_x=data.train_x[:args.train], train_y=data.train_y[:args.train])
    test = flaxtrain.text.load_data("rotten_tomatoes", train=False)
    texts, labels = test.val_x, test.val_y
    results = [run(kind, args, data, texts, labels) for kind in ("full", "lora")]
    mib = lambda n: f"{n / 2**20:8.1f}"  # noqa: E731
    print(f"\n{'run':6} {'test acc':>8} {'trainable':>11} {'of all':>7} {'step ms':>8} {'args MiB':>9} {'temp MiB':>9} {'peak MiB':>9}")
    for r in results:
        m = r["memory"] or {"arguments": 0, "temporaries": 0, "peak": 0}
        print(f"{r['kind']:6} {r['test_acc']:8.4f} {r['trainable_params']:11,d} {r['trainable_params'] / r['all_params']:7.2%} "
              f"{r['step_s'] * 1e3:8.1f} {mib(m['arguments'])} {mib(m['temporaries'])} {mib(m['peak'])}")
    full, lora = results
    print(f"\nLoRA / full: step time {lora['step_s'] / full['step_s']:.2f}x, peak memory "
          f"{(lora['memory'] or {}).get('peak', 0) / max((full['memory'] or {}).get('peak', 1), 1):.2f}x, "
          f"trainable params {lora['trainable_params'] / full['trainable_params']:.4f}x, "
          f"test accuracy {lora['test_acc'] - full['test_acc']:+.4f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
