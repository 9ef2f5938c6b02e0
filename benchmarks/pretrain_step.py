"""Masked-LM pretraining step: flaxtrain against PyTorch `transformers`' BertForMaskedLM, one process.

Run:  .venv/bin/python benchmarks/pretrain_step.py [--rounds 5] [--steps 3] [--length 128]

A small BERT (4 layers, width 256, 4 heads, MLP 1024, MiniLM's 30,522 word pieces, tied masked-LM head),
batch 32 packed rows, 15% of the tokens chosen, dropout 0.1, AdamW. flaxtrain's step is the Learner's
(tasks/masked_lm.py's loss on the segment-masked encoder, the vocabulary head on the chosen positions'
prediction slots: 44 of 128); PyTorch's is BertForMaskedLM with labels -100
off the chosen positions. Both run in interleaved rounds; prints the machine, tokens/s (max and median),
the flaxtrain/PyTorch ratio of medians, each one's share of the XLA float32 matmul peak measured here,
flaxtrain's first-step compile time with and without rematerialization, the memory each remat policy's
compiled step needs (XLA's memory analysis), and the first-step time of a 12-layer BERT and a 12+12-layer
T5 (span corruption) with and without scanned blocks.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from encoder_step import _timed, matmul_peak_gflops
from machine import describe

from flaxtrain import models
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.models.seq2seq import PRESETS, Seq2SeqConfig
from flaxtrain.tasks.masked_lm import gathered_targets, masked_lm_loss, prediction_slots, predict_top_tokens
from flaxtrain.tasks.span_corruption import predict_targets, span_corruption_loss
from flaxtrain.train import compile_steps, create_train_state, init_params, make_optimizer

SIZES = dict(vocab_size=30522, hidden_size=256, num_layers=4, num_heads=4, mlp_dim=1024)
BATCH = 32


def step_gflop(length: int, head_positions: int | None = None) -> float:
    """Model FLOPs of a train step, x3: blocks, attention, and the vocabulary head at `head_positions` per
    row (PyTorch's BertForMaskedLM: every position; flaxtrain's step: its prediction slots)."""
    m, f, layers, v = SIZES["hidden_size"], SIZES["mlp_dim"], SIZES["num_layers"], SIZES["vocab_size"]
    blocks = 2 * layers * (4 * m * m + 2 * m * f) + layers * 4 * length * m
    head = 2 * (m * m + m * v) * (length if head_positions is None else head_positions)
    return 3 * BATCH * (length * blocks + head) / 1e9


def batch_of(length: int, vocab: int = SIZES["vocab_size"]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(vocab // 30, vocab, size=(BATCH, length)).astype(np.int32)
    cut = rng.integers(length // 4, length, size=BATCH)  # two packed documents per row
    segments = np.where(np.arange(length)[None, :] < cut[:, None], 1, 2).astype(np.int32)
    chosen = rng.random((BATCH, length)) < 0.15
    chosen &= np.cumsum(chosen, axis=1) <= prediction_slots(length, 0.15)
    # The Learner's batches carry the chosen positions too: flaxtrain's head runs on those slots only.
    return {"input_ids": ids, "segment_ids": segments, "labels": np.where(chosen, ids, -1).astype(np.int32),
            "weight": np.ones(BATCH, np.float32), **gathered_targets(ids, chosen, prediction_slots(length, 0.15))}


def t5_batch(length: int) -> dict[str, np.ndarray]:
    """Span-corruption rows of `length` inputs and the targets that go with them (T5's sizing)."""
    rng = np.random.default_rng(0)
    targets = length // 4
    ids = rng.integers(200, 32000, size=(BATCH, length)).astype(np.int32)
    labels = rng.integers(200, 32000, size=(BATCH, targets)).astype(np.int32)
    return {"input_ids": ids, "segment_ids": np.ones_like(ids), "labels": labels,
            "decoder_input_ids": np.concatenate([np.zeros((BATCH, 1), np.int32), labels[:, :-1]], 1),
            "decoder_segment_ids": np.ones_like(labels), "weight": np.ones(BATCH, np.float32)}


def flaxtrain_step(batch: dict[str, np.ndarray], remat: str, t5: bool = False, **sizes: object):
    """(first-step seconds, run(n), memory()) of the masked-LM step (or with `t5`, the span-corruption step)."""
    if t5:
        config = Seq2SeqConfig(**{**PRESETS["t5"], "vocab_size": 32128, **sizes}, remat=remat)
        module = models.build_model("span_corruption", config)
        steps = compile_steps(module.apply, span_corruption_loss, predict_fn=predict_targets)
    else:
        encoder = EncoderConfig(**{**SIZES, **sizes}, remat=remat)
        module = models.build_model("masked_lm", models.HeadConfig(encoder))
        steps = compile_steps(module.apply, masked_lm_loss, predict_fn=predict_top_tokens)
    sample = {"input_ids": jnp.zeros((1, 16), jnp.int32)}
    state = create_train_state(module, init_params(module, sample, jax.random.key(0)), make_optimizer(1e-4, weight_decay=0.01))
    placed = {k: jnp.asarray(v) for k, v in batch.items()}
    holder = {"state": state}

    def first() -> None:
        holder["state"], sums = steps.train(holder["state"], placed, jax.random.key(0))
        jax.block_until_ready(sums)

    compile_s = _timed(first)

    def run(n: int) -> None:
        sums = None
        for _ in range(n):
            holder["state"], sums = steps.train(holder["state"], placed, jax.random.key(0))
        jax.block_until_ready(sums)

    return compile_s, run, lambda: steps.memory(holder["state"], batch, jax.random.key(0))


def torch_step(batch: dict[str, np.ndarray]):
    config = transformers.BertConfig(vocab_size=SIZES["vocab_size"], hidden_size=SIZES["hidden_size"],
                                     num_hidden_layers=SIZES["num_layers"], num_attention_heads=SIZES["num_heads"],
                                     intermediate_size=SIZES["mlp_dim"], attn_implementation="sdpa")
    net = transformers.BertForMaskedLM(config).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
    seg = torch.from_numpy(batch["segment_ids"])
    mask = (seg[:, :, None] == seg[:, None, :])[:, None].to(torch.float32)  # the same block-diagonal attention
    mask = (1.0 - mask) * torch.finfo(torch.float32).min
    labels = torch.from_numpy(np.where(batch["labels"] >= 0, batch["labels"], -100).astype(np.int64))

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            net(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()

    return run


def _print_memory(memory: dict[str, dict[str, int] | None]) -> None:
    print("  compiled train step memory, 12 scanned layers, vocabulary 1024 (XLA's analysis; peak = arguments + "
          "outputs + temporaries - donated):")
    for policy, sizes in memory.items():
        if sizes is not None:
            print(f"    remat={policy!r:45s} temporaries {sizes['temporaries'] / 2**20:7.1f} MiB  "
                  f"peak {sizes['peak'] / 2**20:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--memory-only", action="store_true", help="only the compiled memory of each remat policy")
    args = parser.parse_args()
    print(describe())
    xla_peak, torch_peak = matmul_peak_gflops()
    print(f"float32 2048x2048 matmul peak: XLA {xla_peak:.0f} GFLOP/s, PyTorch {torch_peak:.0f} GFLOP/s")
    batch = batch_of(args.length)
    # Activation memory by remat policy: 12 scanned layers with a 1,024-piece vocabulary, so that the
    # [b, t, v] masked-LM logits (2 GiB with MiniLM's vocabulary at 32 x 128) do not hide the blocks'.
    memory = {policy: flaxtrain_step(batch_of(args.length, vocab=1024), policy, vocab_size=1024, num_layers=12,
                                     scan_layers=True)[2]() for policy in ("none", "full", "dots")}
    memory["none, 30522-piece vocabulary, 4 layers"] = None
    if args.memory_only:
        _print_memory(memory)
        return
    compile_none, flax_run, memory_none = flaxtrain_step(batch, "none")
    memory["none, 30522-piece vocabulary, 4 layers"] = memory_none()
    compile_full, _, _ = flaxtrain_step(batch, "full")
    torch_run = torch_step(batch)
    torch_run(1)
    rates: dict[str, list[float]] = {"flaxtrain": [], "pytorch": []}
    tokens = BATCH * args.length * args.steps
    for _ in range(args.rounds):
        rates["flaxtrain"].append(tokens / _timed(lambda: flax_run(args.steps)))
        rates["pytorch"].append(tokens / _timed(lambda: torch_run(args.steps)))
    print(f"masked-LM train step, batch {BATCH} x {args.length}; flaxtrain first step (trace + compile + run) "
          f"{compile_none:.1f} s, with remat='full' {compile_full:.1f} s")
    slots = prediction_slots(args.length, 0.15)
    for name, values in rates.items():
        gflops = step_gflop(args.length, slots if name == "flaxtrain" else None) * statistics.median(values) / (
            BATCH * args.length)
        print(f"  {name:10s} tokens/s max {max(values):8.0f} median {statistics.median(values):8.0f}   "
              f"{gflops:6.1f} GFLOP/s = {100 * gflops / xla_peak:4.1f}% of the XLA peak")
    ratio = statistics.median(rates["flaxtrain"]) / statistics.median(rates["pytorch"])
    print(f"  flaxtrain / PyTorch tokens/s (medians) = {ratio:.2f}")
    _print_memory(memory)
    for scan in (False, True):  # compile time grows with the unrolled depth; nn.scan compiles one block
        seconds, _, _ = flaxtrain_step(batch, "none", num_layers=12, scan_layers=scan)
        print(f"  BERT 12 layers, scan_layers={scan}: first step (trace + compile + run) {seconds:.1f} s")
    t5 = t5_batch(args.length)
    t5_sizes = dict(hidden_size=256, num_heads=4, head_dim=64, mlp_dim=1024, num_layers=12, num_decoder_layers=12)
    for scan in (False, True):
        seconds, _, _ = flaxtrain_step(t5, "none", t5=True, scan_layers=scan, **t5_sizes)
        print(f"  T5 12+12 layers, scan_layers={scan}: first step (trace + compile + run) {seconds:.1f} s")


if __name__ == "__main__":
    main()
