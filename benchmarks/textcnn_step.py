"""TextCNN train and inference step: flaxtrain (JAX/XLA) against the same network in PyTorch eager.

Run:  .venv/bin/python benchmarks/textcnn_step.py [--batch 50] [--length 64] [--rounds 5]

Both run in this one process, in interleaved rounds (so machine noise hits both alike); each round
times `--steps` steps after warm-up. Prints min and median steps/s and the flaxtrain/PyTorch ratio
(above 1: flaxtrain is faster), plus flaxtrain's compile time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn as tnn

from flaxtrain import models
from flaxtrain.tasks.classification import classification_loss, predict_log_probs
from flaxtrain.train import compile_steps, create_train_state, init_params, make_optimizer

VOCAB, CLASSES, EMBED, FILTERS, WIDTHS = 18_000, 2, 128, 100, (3, 4, 5)


class TorchTextCNN(tnn.Module):
    """The same network as flaxtrain's TextCNN: zero-padded windows, masked max pooling."""

    def __init__(self):
        super().__init__()
        self.embed = tnn.Embedding(VOCAB, EMBED)
        self.convs = tnn.ModuleList([tnn.Conv1d(EMBED, FILTERS, w) for w in WIDTHS])
        self.dropout = tnn.Dropout(0.5)
        self.head = tnn.Linear(FILTERS * len(WIDTHS), CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != 0
        x = (self.embed(ids) * mask[..., None]).transpose(1, 2)  # [b, m, t]
        pooled = []
        for width, conv in zip(WIDTHS, self.convs):
            h = torch.relu(conv(tnn.functional.pad(x, (0, width - 1))))  # [b, f, t]
            starts = mask.clone()
            starts[:, 0] = True
            pooled.append(h.masked_fill(~starts[:, None, :], float("-inf")).amax(-1))
        return self.head(self.dropout(torch.cat(pooled, -1)))


def _rate(fn, steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, size=(args.batch, args.length)).astype(np.int32)
    ids[:, args.length // 2:] *= rng.integers(0, 2, size=(args.batch, 1)).astype(np.int32)  # some padding
    labels = rng.integers(0, CLASSES, size=args.batch).astype(np.int32)

    # flaxtrain
    config = models.make_config("textcnn", vocab_size=VOCAB, num_classes=CLASSES, embed_dim=EMBED, num_filters=FILTERS)
    module = models.build_model("textcnn", config)
    params = init_params(module, {"input_ids": jnp.zeros((1, 16), jnp.int32)}, jax.random.key(0))
    steps = compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs)
    batch = {"input_ids": jnp.asarray(ids), "label": jnp.asarray(labels), "weight": jnp.ones(args.batch, jnp.float32)}
    holder = {"state": create_train_state(module, params, make_optimizer(1e-3))}
    key = jax.random.key(0)
    start = time.perf_counter()
    holder["state"], sums = steps.train(holder["state"], batch, key)
    jax.block_until_ready(sums)
    compile_s = time.perf_counter() - start
    jax.block_until_ready(steps.predict(holder["state"].params, batch))

    def jax_train(n: int) -> None:
        for _ in range(n):
            holder["state"], out = steps.train(holder["state"], batch, key)
        jax.block_until_ready(out)

    def jax_infer(n: int) -> None:
        for _ in range(n):
            out = steps.predict(holder["state"].params, batch)
        jax.block_until_ready(out)

    # PyTorch
    net = TorchTextCNN()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t_ids, t_labels = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))

    def torch_train(n: int) -> None:
        net.train()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            tnn.functional.cross_entropy(net(t_ids), t_labels).backward()
            opt.step()

    def torch_infer(n: int) -> None:
        net.eval()
        with torch.inference_mode():
            for _ in range(n):
                torch.log_softmax(net(t_ids), -1)

    torch_train(3), torch_infer(3)
    rates: dict[str, list[float]] = {k: [] for k in ("flax train", "torch train", "flax infer", "torch infer")}
    for _ in range(args.rounds):
        rates["flax train"].append(_rate(jax_train, args.steps))
        rates["torch train"].append(_rate(torch_train, args.steps))
        rates["flax infer"].append(_rate(jax_infer, args.steps))
        rates["torch infer"].append(_rate(torch_infer, args.steps))
    print(f"TextCNN batch {args.batch} x {args.length} tokens, {args.rounds} rounds of {args.steps} steps; "
          f"flaxtrain first step (trace + compile + run) {compile_s:.2f} s")
    for name, values in rates.items():
        print(f"  {name:12s} steps/s  max {max(values):8.1f}  median {statistics.median(values):8.1f}")
    for kind in ("train", "infer"):
        ratio = statistics.median(rates[f"flax {kind}"]) / statistics.median(rates[f"torch {kind}"])
        print(f"  {kind}: flaxtrain / PyTorch (median) = {ratio:.2f}")


if __name__ == "__main__":
    main()
