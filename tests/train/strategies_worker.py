"""Trains a tiny encoder classifier 5 steps under one or more strategies; writes losses and params.

Run by tests/train/test_strategies.py in subprocesses (the device count is fixed when JAX starts):
    python strategies_worker.py OUT.npz NAME[:STRATEGY[:MESH[:ACCUM]]] ...
e.g. `pmap`, `spmd:2x4x1`, `single::1x1x1:4`; a NAME starting with `frozen` freezes the encoder. With FLAXTRAIN_TEST_PROCESS=i/n/port the process first
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
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.tasks.classification import classification_loss
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


def run(spec: str, dropout: float) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    name, strategy, mesh, accum = (spec.split(":") + ["", "", ""])[:4]
    strategy = strategy or name
    mesh_shape = tuple(int(n) for n in mesh.split("x")) if mesh else None
    config = models.HeadConfig(
        EncoderConfig(vocab_size=64, hidden_size=16, num_layers=2, num_heads=4, mlp_dim=32, max_positions=16,
                      dropout_rate=dropout),
        num_classes=3,
    )
    module = models.build_model("transformer", config)
    sample = {"input_ids": jnp.zeros((1, LENGTH), jnp.int32)}
    params = init_params(module, sample, jax.random.key(0))
    initial_encoder = jax.device_get(params["encoder"])  # a host copy: the steps donate the state's buffers
    steps = compile_steps(module.apply, classification_loss, strategy=make_strategy(strategy, mesh_shape),
                          grad_accum_steps=int(accum or 1), param_specs=logical_param_specs(module, sample))
    tx = make_optimizer(3e-3, weight_decay=0.01, frozen=("encoder",) if name.startswith("frozen") else ())
    if name.startswith("born"):  # params created sharded by a jitted init
        state = steps.init_state(module, sample, jax.random.key(0), tx)
    else:
        state = steps.place_state(create_train_state(module, params, tx))
    losses = []
    process, processes = jax.process_index(), jax.process_count()
    for batch in batches():
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
    if name.startswith("frozen"):  # the encoder leaves the steps as it came in (no weight decay either)
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
