"""MiniLM-size encoder classifier: flaxtrain train and inference steps against PyTorch `transformers`.

Run:  .venv/bin/python benchmarks/encoder_step.py [--rounds 5] [--steps 5] [--lengths 128 256]
      .venv/bin/python benchmarks/encoder_step.py --options   # flaxtrain's XLA options against + oneDNN dot fusions

Both systems run in this one process in interleaved rounds. The model is all-MiniLM-L6-v2's shape (6
layers, width 384, 12 heads, MLP 1536, vocabulary 30522) with a 2-class head, batch 32, dropout 0.1
in training, AdamW. Prints tokens/s (max and median over rounds), the flaxtrain/PyTorch ratio of
medians, flaxtrain's compile time, and achieved GFLOP/s against a float32 matmul peak measured here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from flaxtrain import models
from flaxtrain.tasks.classification import classification_loss, predict_log_probs
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.train import compile_steps, create_train_state, init_params, make_optimizer

SIZES = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, mlp_dim=1536)


def matmul_peak_gflops() -> tuple[float, float]:
    """Best of 5 float32 2048x2048 matmuls, in XLA and in PyTorch."""
    a = jax.random.normal(jax.random.key(0), (2048, 2048))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    xla = min(_timed(lambda: f(a).block_until_ready()) for _ in range(5))
    t = torch.randn(2048, 2048)
    pt = min(_timed(lambda: t @ t) for _ in range(5))
    flops = 2 * 2048**3 / 1e9
    return flops / xla, flops / pt


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_gflop(batch: int, length: int, train: bool) -> float:
    """Model FLOPs of one step: 2 per weight per token, plus attention scores and mixing; x3 to train."""
    m, f, layers = SIZES["hidden_size"], SIZES["mlp_dim"], SIZES["num_layers"]
    weights = layers * (4 * m * m + 2 * m * f)
    forward = batch * length * (2 * weights + layers * 4 * length * m)
    return forward * (3 if train else 1) / 1e9


def run(length: int, rounds: int, steps: int, peaks: dict[str, float], attention: str) -> None:
    """peaks: each system's own float32 matmul peak ('flaxtrain': XLA's, 'pytorch': PyTorch's), measured here."""
    batch = 32
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, SIZES["vocab_size"], size=(batch, length)).astype(np.int32)
    ids[:, 0] = 101
    lengths = rng.integers(length // 2, length + 1, size=batch)
    ids[np.arange(length)[None, :] >= lengths[:, None]] = 0  # padded tails, as real batches have
    labels = rng.integers(0, 2, size=batch).astype(np.int32)

    config = models.HeadConfig(EncoderConfig(**SIZES, dropout_rate=0.1, attention=attention), num_classes=2)
    module = models.build_model("transformer", config)
    params = init_params(module, {"input_ids": jnp.zeros((1, 16), jnp.int32)}, jax.random.key(0))
    steps_ = compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs)
    batch_j = {"input_ids": jnp.asarray(ids), "label": jnp.asarray(labels), "weight": jnp.ones(batch, jnp.float32)}
    tx = make_optimizer(5e-5, weight_decay=0.01)  # one optimizer: a new one is new pytree metadata, and a recompile
    holder = {"state": create_train_state(module, params, tx)}
    key = jax.random.key(0)
    compile_s = _timed(lambda: jax.block_until_ready(steps_.train(holder["state"], batch_j, key)))
    # the call above donated the state; rebuild it for the timed rounds
    holder["state"] = create_train_state(module, init_params(module, {"input_ids": jnp.zeros((1, 16), jnp.int32)},
                                                                     jax.random.key(0)), tx)
    jax.block_until_ready(steps_.predict(holder["state"].params, batch_j))

    def flax_train() -> None:
        out = None
        for _ in range(steps):
            holder["state"], out = steps_.train(holder["state"], batch_j, key)
        jax.block_until_ready(out)

    def flax_infer() -> None:
        out = None
        for _ in range(steps):
            out = steps_.predict(holder["state"].params, batch_j)
        jax.block_until_ready(out)

    hf_config = transformers.BertConfig(vocab_size=SIZES["vocab_size"], hidden_size=384, num_hidden_layers=6,
                                        num_attention_heads=12, intermediate_size=1536, num_labels=2,
                                        attn_implementation="sdpa")
    net = transformers.BertForSequenceClassification(hf_config)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-5, weight_decay=0.01)
    t_ids, t_mask = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy((ids != 0).astype(np.int64))
    t_labels = torch.from_numpy(labels.astype(np.int64))

    def torch_train() -> None:
        net.train()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            net(input_ids=t_ids, attention_mask=t_mask, labels=t_labels).loss.backward()
            opt.step()

    def torch_infer() -> None:
        net.eval()
        with torch.inference_mode():
            for _ in range(steps):
                torch.log_softmax(net(input_ids=t_ids, attention_mask=t_mask).logits, -1)

    torch_train(), torch_infer()
    rates: dict[str, list[float]] = {k: [] for k in ("flaxtrain train", "pytorch train", "flaxtrain infer", "pytorch infer")}
    tokens = batch * length * steps
    for _ in range(rounds):
        for name, fn in (("flaxtrain train", flax_train), ("pytorch train", torch_train),
                         ("flaxtrain infer", flax_infer), ("pytorch infer", torch_infer)):
            rates[name].append(tokens / _timed(fn))
    print(f"\nbatch {batch} x {length} tokens, attention '{attention}'; flaxtrain first train step (trace + compile + run) {compile_s:.1f} s")
    for name, values in rates.items():
        train = name.endswith("train")
        gflops = step_gflop(batch, length, train) * statistics.median(values) / (batch * length)
        print(f"  {name:16s} tokens/s max {max(values):8.0f} median {statistics.median(values):8.0f}"
              f"   {gflops:6.1f} GFLOP/s = {100 * gflops / peaks[name.split()[0]]:4.1f}% of its own matmul peak")
    for kind in ("train", "infer"):
        ratio = statistics.median(rates[f"flaxtrain {kind}"]) / statistics.median(rates[f"pytorch {kind}"])
        print(f"  {kind}: flaxtrain / PyTorch tokens/s (medians) = {ratio:.2f}")


# Option sets `--options NAME` compares with flaxtrain's own (flaxtrain/_xla_flags.py).
OPTION_SETS = {"onednn": ("+ oneDNN dot fusions", "ONEDNN_OPTIONS"),
               "loop-emitters": ("+ XLA's loop fusion emitters", "LOOP_EMITTER_OPTIONS")}


def options_ab(length: int, rounds: int, steps: int, peak: float, which: str) -> None:
    """flaxtrain's train and predict steps compiled with its CPU compiler options (flaxtrain/_xla_flags.py) and
    with the option set `which` of `OPTION_SETS` added, interleaved in this process; first-step (compile) times
    and outputs compared."""
    from flaxtrain import _xla_flags

    batch = 32
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, SIZES["vocab_size"], size=(batch, length)).astype(np.int32)
    ids[np.arange(length)[None, :] >= rng.integers(length // 2, length + 1, size=batch)[:, None]] = 0
    batch_j = {"input_ids": jnp.asarray(ids), "label": jnp.asarray(rng.integers(0, 2, size=batch).astype(np.int32)),
               "weight": jnp.ones(batch, jnp.float32)}
    module = models.build_model("transformer", models.HeadConfig(EncoderConfig(**SIZES, dropout_rate=0.1), num_classes=2))

    def state():
        params = init_params(module, {"input_ids": jnp.zeros((1, 16), jnp.int32)}, jax.random.key(0))
        return create_train_state(module, params, make_optimizer(5e-5, weight_decay=0.01))

    chosen = dict(_xla_flags.CPU_OPTIONS)
    label, extra = OPTION_SETS[which]
    variants = {"flaxtrain's options": chosen, label: {**chosen, **getattr(_xla_flags, extra)}}
    held, key, first = {}, jax.random.key(0), {}
    for name, options in variants.items():
        _xla_flags.CPU_OPTIONS = options
        _xla_flags._options.cache_clear()
        held[name] = [compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs), state()]
        start = time.perf_counter()
        held[name][1], out = held[name][0].train(held[name][1], batch_j, key)
        jax.block_until_ready(out)
        first[name] = time.perf_counter() - start
    _xla_flags.CPU_OPTIONS = chosen
    _xla_flags._options.cache_clear()
    fresh = state().params
    outputs = [np.asarray(steps_.predict(fresh, batch_j)) for steps_, _ in held.values()]
    rates = {f"{name} {kind}": [] for name in held for kind in ("train", "infer")}
    for _ in range(rounds):
        for name, h in held.items():
            def train(h=h):
                out = None
                for _ in range(steps):
                    h[1], out = h[0].train(h[1], batch_j, key)
                jax.block_until_ready(out)

            def infer(h=h):
                jax.block_until_ready([h[0].predict(h[1].params, batch_j) for _ in range(steps)])

            rates[f"{name} train"].append(batch * length * steps / _timed(train))
            rates[f"{name} infer"].append(batch * length * steps / _timed(infer))
    print(f"\nbatch {batch} x {length}: flaxtrain steps under two XLA option sets; max |output diff| "
          f"{float(np.max(np.abs(outputs[0] - outputs[1]))):.1e}; first train step (compile + run): "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in first.items()))
    for name, values in rates.items():
        gflops = step_gflop(batch, length, name.endswith("train")) * statistics.median(values) / (batch * length)
        print(f"  {name:26s} tokens/s median {statistics.median(values):8.0f}   {100 * gflops / peak:4.1f}% of peak")
    for kind in ("train", "infer"):
        names = list(held)
        ratio = statistics.median(rates[f"{names[1]} {kind}"]) / statistics.median(rates[f"{names[0]} {kind}"])  # oneDNN / ours
        print(f"  {kind}: {label} / flaxtrain's options = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--attention", default="auto", choices=["auto", "einsum", "xla"],
                        help="ops.dot_product_attention path (default: the Encoder's own, 'auto')")
    parser.add_argument("--options", choices=sorted(OPTION_SETS), help="A/B of flaxtrain's options and this set instead")
    args = parser.parse_args()
    from machine import describe

    print(describe())
    xla_peak, torch_peak = matmul_peak_gflops()
    print(f"float32 2048x2048 matmul peak: XLA {xla_peak:.0f} GFLOP/s, PyTorch {torch_peak:.0f} GFLOP/s")
    for length in args.lengths:
        if args.options:
            options_ab(length, args.rounds, args.steps, xla_peak, args.options)
        else:
            run(length, args.rounds, args.steps, {"flaxtrain": xla_peak, "pytorch": torch_peak}, args.attention)


if __name__ == "__main__":
    main()
