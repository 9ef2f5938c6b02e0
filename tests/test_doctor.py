"""`flaxtrain doctor` / `flaxtrain.doctor()`: the report on this machine, and every trap detector on its
simulated condition (pure facts, and where it can be made real: a package that shadows TensorFlow, a
fake plugin distribution, the allocator's environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import flaxtrain
from flaxtrain.allocator import ALLOCATOR_ENV, allocator_tuned
from flaxtrain.machine import find_traps

ROOT = Path(__file__).resolve().parents[1]


def _healthy(**changes) -> dict:
    facts = {"backend": "cpu", "plugins": {}, "versions": {"jax": "0.10.2", "jaxlib": "0.10.2"}, "backend_errors": {},
             "environment": {}, "tensorflow": {"imports": True, "version": "2.21.0"}, "colab": False, "glibc": True,
             "allocator_tuned": True, "tpu_lockfile": False}
    facts.update(changes)
    return facts


def _names(facts: dict) -> list[str]:
    return [trap["name"] for trap in find_traps(facts)]


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_report_on_this_machine():
    report = flaxtrain.doctor(check_tensorflow=False)
    assert report["backend"] == jax.default_backend() == "cpu"
    assert sum(entry["count"] for entry in report["devices"]) == jax.local_device_count()
    assert report["devices"][0]["memory_bytes"] > 2**30
    assert report["versions"]["jax"] == jax.__version__ and report["versions"]["flaxtrain"] == flaxtrain.__version__
    assert report["process_count"] == 1 and report["tensorflow"] is None
    assert report["peak_flops"]["float32"] > 1e9 and report["peak_flops"]["source"] == "measured float32 matmul"
    assert not [trap for trap in report["traps"] if trap["severity"] == "error"], report["traps"]


def test_the_command_prints_the_report_and_exits_0_on_a_healthy_machine():
    env = {**os.environ, **ALLOCATOR_ENV}
    done = subprocess.run([sys.executable, "-m", "flaxtrain.cli", "doctor", "--json"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backend"] == "cpu" and report["tensorflow"]["imports"] and report["traps"] == []
    done = subprocess.run([sys.executable, "-m", "flaxtrain.cli", "doctor", "--no-tensorflow"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("backend      cpu, 1 device(s)"), done.stdout
    assert "traps        none found" in done.stdout


def test_a_healthy_machine_shows_no_trap():
    assert _names(_healthy()) == []
    assert _names(_healthy(backend="gpu", plugins={"jax-cuda13-plugin": "0.10.2", "jax-cuda13-pjrt": "0.10.2"},
                           environment={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})) == []
    assert _names(_healthy(backend="tpu", plugins={"libtpu": "0.0.30"})) == []


def test_plugin_and_jax_versions_that_do_not_match():
    traps = find_traps(_healthy(backend="gpu", plugins={"jax-cuda13-plugin": "0.9.0"},
                                environment={"XLA_PYTHON_CLIENT_MEM_FRACTION": ".5"}))
    assert [t["name"] for t in traps] == ["plugin_version"] and traps[0]["severity"] == "error"
    assert "jax-cuda13-plugin 0.9.0 does not match jaxlib 0.10.2" in traps[0]["problem"]
    assert "jax[cuda13]==0.10.2" in traps[0]["fix"]
    assert _names(_healthy(versions={"jax": "0.12.0", "jaxlib": "0.11.0"})) == ["jax_version"]


def test_an_accelerator_jax_does_not_use():
    traps = find_traps(_healthy(plugins={"jax-cuda13-plugin": "0.10.2"},
                                backend_errors={"cuda": "INTERNAL: no CUDA-capable device is detected\nmore"}))
    assert [t["name"] for t in traps] == ["gpu_not_used"]
    assert traps[0]["problem"].endswith("runs on cpu: INTERNAL: no CUDA-capable device is detected")
    held = "ABORTED: The TPU is already in use by process with pid 4242. Not attempting to load libtpu.so in this process."
    traps = find_traps(_healthy(plugins={"libtpu": "0.0.30"}, backend_errors={"tpu": held}))
    assert [t["name"] for t in traps] == ["tpu_in_use"] and "pid 4242" in traps[0]["problem"]
    assert _names(_healthy(plugins={"libtpu": "0.0.30"}, tpu_lockfile=True)) == ["tpu_in_use"]
    assert _names(_healthy(plugins={"libtpu": "0.0.30"}, backend_errors={"tpu": "no TPU found"})) == ["tpu_not_used"]


def test_gpu_memory_preallocation_and_a_bad_fraction():
    traps = find_traps(_healthy(backend="gpu"))
    assert [t["name"] for t in traps] == ["gpu_preallocation"] and "XLA_PYTHON_CLIENT_PREALLOCATE=false" in traps[0]["fix"]
    assert _names(_healthy(backend="gpu", environment={"XLA_PYTHON_CLIENT_ALLOCATOR": "platform"})) == []
    assert _names(_healthy(backend="gpu", environment={"XLA_PYTHON_CLIENT_MEM_FRACTION": "75"})) == ["gpu_memory_fraction"]


def test_a_runtime_without_tensorflow(tmp_path):
    traps = find_traps(_healthy(colab=True, tensorflow={"imports": False, "error": "ModuleNotFoundError: No module named 'tensorflow'"}))
    assert [t["name"] for t in traps] == ["no_tensorflow"] and traps[0]["fix"].startswith("Colab's TPU runtime ships without")
    # The real check: a package that shadows TensorFlow the way a broken install does.
    (tmp_path / "tensorflow.py").write_text("raise ImportError('simulated: libtensorflow_framework.so.2 missing')\n")
    env = {**os.environ, **ALLOCATOR_ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = _run("import json, flaxtrain; r = flaxtrain.doctor(measure_peak=False); "
                "print(json.dumps([r['tensorflow'], r['traps']]))", env)
    assert done.returncode == 0, done.stderr
    tensorflow, traps = json.loads(done.stdout.strip().splitlines()[-1])
    assert tensorflow == {"imports": False, "error": "ImportError: simulated: libtensorflow_framework.so.2 missing"}
    assert [t["name"] for t in traps] == ["no_tensorflow"]


def test_a_process_that_already_imported_tensorflow_reports_it_without_a_second_import(monkeypatch):
    import types

    from flaxtrain import machine

    def no_subprocess(*args, **kwargs):
        raise AssertionError("the import check started a process")

    monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(__version__="9.9.9"))
    monkeypatch.setattr(machine.subprocess, "run", no_subprocess)
    assert flaxtrain.doctor(measure_peak=False)["tensorflow"] == {"imports": True, "version": "9.9.9"}
    monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace())  # half-imported: the fresh process decides
    with pytest.raises(AssertionError, match="started a process"):
        machine._tensorflow()


def test_an_untuned_cpu_allocator():
    assert _names(_healthy(allocator_tuned=False)) == ["cpu_allocator"]
    assert _names(_healthy(allocator_tuned=False, glibc=False)) == []
    assert allocator_tuned(ALLOCATOR_ENV) and (allocator_tuned({}) == flaxtrain.allocator._tuned)
    plain = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    traps = "import json, flaxtrain; print(json.dumps(flaxtrain.doctor(check_tensorflow=False, measure_peak=False)['traps']))"
    untuned = _run(traps, plain)
    tuned = _run("import flaxtrain; assert flaxtrain.tune_allocator(); " + traps, plain)
    assert [t["name"] for t in json.loads(untuned.stdout)] == ["cpu_allocator"], untuned.stderr
    assert json.loads(tuned.stdout) == [], tuned.stderr


def test_the_command_exits_1_when_jax_misses_an_installed_accelerator(tmp_path):
    # A plugin distribution that does not match jaxlib (metadata only: JAX finds no plugin to load in it).
    dist = tmp_path / "jax_cuda13_plugin-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: jax-cuda13-plugin\nVersion: 0.0.1\n")
    env = {**os.environ, **ALLOCATOR_ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "flaxtrain.cli", "doctor", "--no-tensorflow"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error        plugin_version: jax-cuda13-plugin 0.0.1 does not match jaxlib" in done.stdout
    assert "error        gpu_not_used: a GPU plugin is installed but JAX runs on cpu" in done.stdout


@pytest.mark.parametrize("name", ["doctor", "tune_allocator"])
def test_public_names_stay_functions_after_their_modules_load(name):
    import flaxtrain.cli  # noqa: F401 (loads flaxtrain.machine and flaxtrain.allocator)
    import flaxtrain.machine  # noqa: F401

    assert callable(getattr(flaxtrain, name))
