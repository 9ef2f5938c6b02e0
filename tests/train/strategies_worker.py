"""Trains a tiny encoder classifier 5 steps under one or more strategies; writes losses and params.

Run by tests/train/test_strategies.py in subprocesses (the device count is fixed when JAX starts):
    python strategies_worker.py OUT.npz NAME[:STRATEGY[:MESH[:ACCUM]]] ...
e.g. `pmap`, `spmd:2x4x1`, `single::1x1x1:4`; a NAME starting with `frozen` freezes the encoder, one
starting with `mlm` trains a masked-LM and one starting with `t5` a T5 on span-corruption batches (packed rows). With FLAXTRAIN_TEST_PROCESS=i/n/port the process first
joins a jax.distributed cluster of n local processes and feeds only its rows of each batch.
"""

from __future__ import annotations

import os
import sys

import numpy as np

if os.environ.get("FLAXTRAIN_TEST_PROCESS"):
    import flaxtrain.distributed

    index, count, port = (int(v) for v in os.environ["FLAXTRAIN_TEST_PROCESS"].split("/"))
    flaxtrain.distributed.initialize(f"127.0.0.1:{port}", num_processes=count, process_id=index)

import jax
import jax.numpy as jnp

from flaxtrain import models
from flaxtrain.models import lora
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.models.seq2seq import PRESETS, Seq2SeqConfig
from flaxtrain.tasks.classification import classification_loss
from flaxtrain.tasks.masked_lm import masked_lm_loss
from flaxtrain.tasks.span_corruption import span_corruption_loss
from flaxtrain.train import create_train_state, init_params, make_optimizer
from flaxtrain.train.partition import compile_steps, logical_param_specs, make_strategy

BATCH, LENGTH, STEPS = 16, 12, 5


def batches(seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        ids = rng.integers(3, 61, size=(BATCH, LENGTH)).astype(np.int32)
        lengths = rng.integers(4, LENGTH + 1, size=BATCH)
        ids[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
        weight = np.ones(BATCH, np.float32)
        weight[-2:] = 0.0  # batch padding rows, as the pipeline makes them
        out.append({"input_ids": ids, "label": rng.integers(0, 3, size=BATCH).astype(np.int32), "weight": weight})
    return out


def _segments(rng: np.random.Generator, length: int) -> np.ndarray:
    """[BATCH, length] segment ids of rows packing two documents."""
    cut = rng.integers(2, length - 1, size=BATCH)
    return np.where(np.arange(length)[None, :] < cut[:, None], 1, 2).astype(np.int32)


def pretraining_batches(kind: str, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Masked-LM ('mlm') or span-corruption ('t5') batches of packed rows, as the tasks make them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        ids = rng.integers(3, 61, size=(BATCH, LENGTH)).astype(np.int32)
        weight = np.ones(BATCH, np.float32)
        weight[-2:] = 0.0
        batch = {"input_ids": ids, "segment_ids": _segments(rng, LENGTH), "weight": weight}
        if kind == "mlm":
            batch["labels"] = np.where(rng.random((BATCH, LENGTH)) < 0.3, ids, -1).astype(np.int32)
        else:
            labels = rng.integers(3, 61, size=(BATCH, 6)).astype(np.int32)
            batch.update(labels=labels, decoder_segment_ids=_segments(rng, 6),
                         decoder_input_ids=np.concatenate([np.zeros((BATCH, 1), np.int32), labels[:, :-1]], axis=1))
        out.append(batch)
    return out


def _model(name: str, dropout: float):
    """(module, loss function, batches) of the run's model."""
    encoder = EncoderConfig(vocab_size=64, hidden_size=16, num_layers=2, num_heads=4, mlp_dim=32, max_positions=16,
                            dropout_rate=dropout)
    if name.startswith("mlm"):
        return models.build_model("masked_lm", models.HeadConfig(encoder)), masked_lm_loss, pretraining_batches("mlm")
    if name.startswith("t5"):
        config = Seq2SeqConfig(**{**PRESETS["t5"], "vocab_size": 64, "hidden_size": 16, "num_layers": 2,
                                  "num_decoder_layers": 2, "num_heads": 4, "head_dim": 4, "mlp_dim": 32,
                                  "dropout_rate": dropout})
        return models.build_model("span_corruption", config), span_corruption_loss, pretraining_batches("t5")
    config = models.HeadConfig(encoder, num_classes=3)
    module = models.build_model("transformer", config)
    if name.startswith("lora"):  # adapters on the query, value and attention-output kernels ([m, h, d] and [h, d, m])
        kernels = lora.kernel_paths(jax.eval_shape(lambda rng: module.init(
            {"params": rng, "dropout": rng}, input_ids=jnp.zeros((1, LENGTH), jnp.int32), deterministic=True),
            jax.random.key(0))["params"])
        targets = lora.match_targets(list(kernels), ("query", "value", "attention/out"))
        module = lora.LoraModule(module, lora.LoraConfig(4, 8.0, tuple(targets),
                                                         tuple(lora.input_axes(*kernels[t]) for t in targets)))
    return module, classification_loss, batches()


def run(spec: str, dropout: float) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    name, strategy, mesh, accum = (spec.split(":") + ["", "", ""])[:4]
    strategy = strategy or name
    mesh_shape = tuple(int(n) for n in mesh.split("x")) if mesh else None
    module, loss_fn, run_batches = _model(name, dropout)
    sample = {"input_ids": jnp.zeros((1, LENGTH), jnp.int32)}
    params = init_params(module, sample, jax.random.key(0))
    initial_encoder = jax.device_get(params.get("encoder"))  # a host copy: the steps donate the state's buffers
    steps = compile_steps(module.apply, loss_fn, strategy=make_strategy(strategy, mesh_shape),
                          grad_accum_steps=int(accum or 1), param_specs=logical_param_specs(module, sample))
    tx = make_optimizer(3e-3, weight_decay=0.01, frozen=("encoder",) if name.startswith(("frozen", "lora")) else ())
    if name.startswith("born"):  # params created sharded by a jitted init
        state = steps.init_state(module, sample, jax.random.key(0), tx)
    else:
        state = steps.place_state(create_train_state(module, params, tx))
    losses = []
    process, processes = jax.process_index(), jax.process_count()
    for batch in run_batches:
        rows = BATCH // processes
        local = {k: v[process * rows:(process + 1) * rows] for k, v in batch.items()}
        state, sums = steps.train(state, local, jax.random.key(1))
        losses.append(float(sums["loss_sum"]) / float(sums["count"]))
    final = steps.params_of(state)
    from jax.experimental import multihost_utils

    flat = {jax.tree_util.keystr(path): np.asarray(multihost_utils.process_allgather(x, tiled=True)
                                                   if not x.is_fully_addressable else x)
            for path, x in jax.tree_util.tree_flatten_with_path(final)[0]}
    specs = {jax.tree_util.keystr(path): str(getattr(x.sharding, "spec", ""))
             for path, x in jax.tree_util.tree_flatten_with_path(final)[0]}
    if name.startswith(("frozen", "lora")):  # the encoder leaves the steps as it came in (no weight decay either)
        same = jax.tree.map(lambda a, b: np.array_equal(a, np.asarray(b)), initial_encoder, final["encoder"])
        assert all(jax.tree.leaves(same)), same
    return np.asarray(losses), flat, specs


def main() -> None:
    out, *specs = sys.argv[1:]
    dropout = float(os.environ.get("FLAXTRAIN_TEST_DROPOUT", "0"))
    result = {"devices": np.asarray(jax.device_count())}
    for spec in specs:
        losses, params, shardings = run(spec, dropout)
        result[f"{spec}/losses"] = losses
        result.update({f"{spec}/param{k}": v for k, v in params.items()})
        result.update({f"{spec}/spec{k}": np.asarray(v) for k, v in shardings.items()})
    if jax.process_index() == 0:
        np.savez(out, **result)


if __name__ == "__main__":
    main()
