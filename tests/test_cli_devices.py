"""The same command on one CPU device and on 8 simulated devices (spmd mesh, pmap) gives the same run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import worker_xla_flags

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT}/configs/textcnn_rotten_tomatoes.py:tiny"


def _train(tmp_path: Path, devices: int, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=worker_xla_flags(devices), TF_CPP_MIN_LOG_LEVEL="3")
    # No dropout: pmap draws its masks per device, so only then is every strategy's run the one-device
    # run (spmd's dropout masks equal one device's: tests/train/test_strategies.py).
    return subprocess.run([sys.executable, "-m", "flaxtrain.cli", "train", "--config", TINY,
                           f"--config.train.workdir={tmp_path}", "--config.train.batch_size=8",
                           "--config.model.dropout_rate=0.0", *overrides],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def _test_metrics(result: subprocess.CompletedProcess) -> dict[str, float]:
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("test  loss"))
    return {k: float(v) for k, v in re.findall(r"(\w+) ([-\d.]+)", line)}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> dict[str, float]:
    result = _train(tmp_path_factory.mktemp("one"), 1)
    assert "training on one device (cpu)" in result.stdout
    assert re.search(r"tokens/s \d+  step [\d.]+ s  MFU [\d.]+%", result.stdout), result.stdout
    return _test_metrics(result)


@pytest.mark.parametrize("overrides, description", [
    (("--config.mesh.strategy=spmd", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"),
     "spmd over 8 devices (data 2, fsdp 2, tensor 2)"),
    ((), "spmd over 8 devices (data 8, fsdp 1, tensor 1)"),
])
def test_eight_devices_give_the_one_device_run(one_device, tmp_path, overrides, description):
    result = _train(tmp_path, 8, *overrides)
    assert f"training on {description}" in result.stdout
    metrics = _test_metrics(result)
    assert metrics.keys() == one_device.keys()
    for name, value in one_device.items():
        assert abs(metrics[name] - value) < 1e-3, (name, metrics[name], value)


def test_batch_that_does_not_divide_over_devices_is_one_line(tmp_path):
    result = _train(tmp_path, 8, "--config.train.batch_size=12")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: batch_size 12 does not divide over 8 data-parallel devices: use a multiple of 8"
    ), result.stderr


def test_pmap_on_eight_devices_gives_the_one_device_run(one_device, tmp_path):
    result = _train(tmp_path, 8, "--config.mesh.strategy=pmap")
    assert "training on pmap over 8 devices" in result.stdout
    metrics = _test_metrics(result)
    assert metrics.keys() == one_device.keys()
    for name, value in one_device.items():  # a replica that missed the others' gradients would differ
        assert abs(metrics[name] - value) < 1e-3, (name, metrics[name], value)
