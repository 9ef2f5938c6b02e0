"""Several seeds as one job: fit_onecycle(..., seeds=K) against K runs one after another, through the Learner.

Run:  .venv/bin/python benchmarks/seeds.py [--seeds 5] [--train 2000] [--epochs 2] [--model textcnn]

Both ways train the same K runs (run i: initialisation, data order and dropout of seed i) on rotten_tomatoes
texts, in this one process; wall time includes compilation, as a user waits for it. Prints both times, their
ratio, each way's validation accuracy (mean +- std over the seeds) and the largest parameter difference between
the two ways. They are the same runs, but a batch of the vmapped step is padded to the longest of the K runs'
batches and its matmuls are batched, so float rounding differs in the last bits; over many Adam steps that
grows to the scale of one update for params whose gradient is near zero (tests/train/test_seeds.py holds them
to 1e-5 on a short run). CPU first.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

import flaxtrain
import flaxtrain.text

from machine import describe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="textcnn")
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args()
    print(describe())
    print(f"jax {jax.__version__}; {vars(args)}")
    data = flaxtrain.text.load_data("rotten_tomatoes", train=True)
    data = dataclasses.replace(data, train_x=data.train_x[:args.train], train_y=data.train_y[:args.train])
    base = flaxtrain.get_model(args.model, train_data=data, maxlen=64)
    trn, val = base.train_data, base.val_data

    start = time.perf_counter()
    learner = flaxtrain.get_learner(base, trn, val, batch_size=args.batch)
    summary = learner.fit_onecycle(args.lr, args.epochs, seeds=args.seeds, verbose=0)
    together = time.perf_counter() - start

    start = time.perf_counter()
    alone = []
    for i in range(args.seeds):
        model = flaxtrain.get_model(args.model, trn, val, seed=i)
        history = flaxtrain.get_learner(model, trn, val, batch_size=args.batch, seed=i).fit_onecycle(
            args.lr, args.epochs, verbose=0)
        alone.append((model.params, history[-1]["val_acc"]))
    one_by_one = time.perf_counter() - start

    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for run, (params, _) in zip(learner.runs, alone)
               for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(params)))
    last, accs = summary[-1], [acc for _, acc in alone]
    print(f"\n{args.seeds} seeds of {args.model}, {args.epochs} epochs on {len(trn)} texts: val_acc together "
          f"{last['val_acc']:.4f} +- {last['val_acc_std']:.4f}, one by one {np.mean(accs):.4f} +- {np.std(accs, ddof=1):.4f}")
    print(f"together (vmapped): {together:7.1f} s   one by one: {one_by_one:7.1f} s   "
          f"speed-up {one_by_one / together:.2f}x   max |param diff| {diff:.2e}")


if __name__ == "__main__":
    main()
