"""Every strategy gives the one-device numbers: pmap, spmd meshes, gradient accumulation, two processes.

The device count is fixed when JAX starts, so each case runs tests/train/strategies_worker.py in a
subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import start_worker, wait_for_worker, worker_xla_flags

WORKER = Path(__file__).with_name("strategies_worker.py")


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = worker_xla_flags(devices)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(extra)
    return env


def _start(out: Path, specs: list[str], devices: int = 8, **extra: str) -> subprocess.Popen:
    log = out.with_name(f"{out.stem}-{len(list(out.parent.glob(out.stem + '-*.log')))}.log")
    return start_worker(WORKER, [str(out), *specs], log, _env(devices, **extra))


def _params(result: dict[str, np.ndarray], spec: str) -> dict[str, np.ndarray]:
    prefix = f"{spec}/param"
    return {k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)}


def _assert_same_run(result: dict[str, np.ndarray], spec: str, reference: dict[str, np.ndarray], ref_spec: str) -> None:
    np.testing.assert_allclose(result[f"{spec}/losses"], reference[f"{ref_spec}/losses"], rtol=1e-5, atol=1e-6)
    ours, ref = _params(result, spec), _params(reference, ref_spec)
    assert ours.keys() == ref.keys() and ours
    for name, value in ref.items():
        np.testing.assert_allclose(ours[name], value, rtol=0, atol=1e-5, err_msg=f"{spec}: {name}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MULTI_SPECS = ["spmd:spmd:8x1x1", "pmap", "mlm-multi:spmd:2x2x2", "t5-multi:spmd:8x1x1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[list[subprocess.Popen], Path]]:
    """Every worker run of this module, started together: they are mostly single-threaded compiles,
    so the 2-core machine overlaps them."""
    tmp = tmp_path_factory.mktemp("strategies")
    port = _free_port()
    # The frozen-encoder and LoRA runs (models/lora.py: adapters on a frozen encoder, sharded as their kernels
    # are) share the main process: one start and import fewer each.
    main = ([_start(tmp / "run.npz", ["single", "pmap", "spmd:spmd:8x1x1", "spmd:spmd:2x4x1", "spmd:spmd:2x2x2",
                                      "accum:single::4", "accum-spmd:spmd:2x2x2:2", "born:spmd:2x2x2",
                                      "frozen:single", "frozen-pmap:pmap", "frozen-spmd:spmd:2x2x2",
                                      "lora:single", "lora-pmap:pmap", "lora-spmd:spmd:2x2x2"])], tmp / "run.npz")
    started = {
        "main": main, "frozen": main, "lora": main,
        # Threefry keys are partitionable: the sharded step draws the one-device masks.
        "dropout": ([_start(tmp / "dropout.npz", ["single", "spmd:spmd:2x2x2"], FLAXTRAIN_TEST_DROPOUT="0.2")],
                    tmp / "dropout.npz"),
        # Pretraining: masked-LM and T5 span corruption on packed rows (segment ids).
        "pretraining": ([_start(tmp / "pretraining.npz", ["mlm:single", "mlm-pmap:pmap", "mlm-spmd:spmd:2x2x2", "t5:single",
                                                          "t5-pmap:pmap", "t5-spmd:spmd:2x2x2"])], tmp / "pretraining.npz"),
        # Two processes of 4 devices each, joined by jax.distributed on 127.0.0.1.
        "multi": ([_start(tmp / "multi.npz", MULTI_SPECS, 4, FLAXTRAIN_TEST_PROCESS=f"{i}/2/{port}") for i in range(2)],
                  tmp / "multi.npz"),
    }
    yield started
    for procs, _ in started.values():
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _results(runs, name: str) -> dict[str, np.ndarray]:
    procs, out = runs[name]
    for proc in procs:
        wait_for_worker(proc)
    return dict(np.load(out))


@pytest.fixture(scope="module")
def eight_devices(runs) -> dict[str, np.ndarray]:
    return _results(runs, "main")


@pytest.mark.parametrize("spec", ["pmap", "spmd:spmd:8x1x1", "spmd:spmd:2x4x1", "spmd:spmd:2x2x2", "born:spmd:2x2x2"])
def test_strategy_matches_one_device(eight_devices, spec):
    assert int(eight_devices["devices"]) == 8
    _assert_same_run(eight_devices, spec, eight_devices, "single")


def test_gradient_accumulation_equals_one_big_step(eight_devices):
    _assert_same_run(eight_devices, "accum:single::4", eight_devices, "single")
    _assert_same_run(eight_devices, "accum-spmd:spmd:2x2x2:2", eight_devices, "single")


def test_spmd_shards_params_by_logical_axes(eight_devices):
    spec = lambda path: str(eight_devices[f"spmd:spmd:2x2x2/spec{path}"])
    assert spec("['encoder']['layer_0']['mlp']['hidden']['kernel']") == "P('fsdp', 'tensor')"
    assert spec("['encoder']['layer_0']['attention']['query']['kernel']") == "P('fsdp', 'tensor', None)"
    assert spec("['encoder']['word']['embedding']") == "P('tensor', 'fsdp')"
    assert spec("['classifier']['kernel']") == "P('fsdp', None)"  # 3 classes do not split
    assert str(eight_devices["spmd:spmd:8x1x1/spec['encoder']['layer_0']['mlp']['hidden']['kernel']"]) == "P(None, None)"


def test_spmd_dropout_masks_match_one_device(runs):
    result = _results(runs, "dropout")
    _assert_same_run(result, "spmd:spmd:2x2x2", result, "single")


def test_a_frozen_encoder_trains_the_same_head_under_every_strategy(runs, eight_devices):
    result = _results(runs, "frozen")  # the worker checks that the encoder params came back unchanged
    for spec in ("frozen-pmap:pmap", "frozen-spmd:spmd:2x2x2"):
        _assert_same_run(result, spec, result, "frozen:single")
    frozen, trained = _params(result, "frozen:single"), _params(eight_devices, "single")
    assert not np.allclose(result["frozen:single/losses"], eight_devices["single/losses"])
    assert not np.allclose(frozen["['classifier']['kernel']"], trained["['classifier']['kernel']"])


def test_lora_adapters_train_the_same_under_every_strategy(runs):
    result = _results(runs, "lora")  # the worker checks that the encoder params came back unchanged
    for spec in ("lora-pmap:pmap", "lora-spmd:spmd:2x2x2"):
        _assert_same_run(result, spec, result, "lora:single")
    adapters = {k: v for k, v in _params(result, "lora:single").items() if k.startswith("['lora']")}
    assert len(adapters) == 2 * 3 * 2  # A and B of query, value and attention/out in two layers
    assert all(np.abs(v).max() > 0 for v in adapters.values())  # B left zero, or A untouched, would fail the sums
    spec = lambda path: str(result[f"lora-spmd:spmd:2x2x2/spec['lora']['encoder']['layer_0']['attention']{path}"])
    assert spec("['query']['a']") == "P('fsdp', None)"  # the kernel's input axis, rank whole
    assert spec("['query']['b']") == "P(None, 'tensor', None)"  # the kernel's heads axis
    assert spec("['out']['a']") == "P('tensor', None, None)"


@pytest.mark.slow
def test_two_processes_match_one_process(eight_devices, runs):
    result = _results(runs, "multi")
    assert int(result["devices"]) == 8
    for spec in MULTI_SPECS[:2]:
        _assert_same_run(result, spec, eight_devices, "single")
    pretraining = _results(runs, "pretraining")  # masked-LM and span corruption steps too
    _assert_same_run(result, "mlm-multi:spmd:2x2x2", pretraining, "mlm:single")
    _assert_same_run(result, "t5-multi:spmd:8x1x1", pretraining, "t5:single")


@pytest.mark.parametrize("kind", ["mlm", "t5"])
def test_pretraining_runs_match_one_device(runs, kind):
    result = _results(runs, "pretraining")
    for spec in (f"{kind}-pmap:pmap", f"{kind}-spmd:spmd:2x2x2"):
        _assert_same_run(result, spec, result, f"{kind}:single")
