"""Test-wide settings: strict dtype and rank promotion, and small learnable text data."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent XLA compilation cache for the whole run, shared with the subprocesses tests start:
# the many tiny models here compile the same programs again and again (about 8 s each for a small
# BERT train step on this CPU). Same program, same executable, so no numbers change.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="flaxtrain-test-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# A test worker holds millions of objects (JAX, TensorFlow, PyTorch, transformers), and tracing allocates many
# more: with Python's default thresholds (700, 10, 10) its collector ran about 4,000 times in one API test file
# and took 9% of its time. Rarer collections in the test workers (their subprocesses keep Python's defaults):
# five test files under two workers, 2026-12-03, 311 s -> 283 s, 595 -> 548 CPU-seconds (subprocesses included).
gc.set_threshold(50_000, 50, 100)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

_POSITIVE = ["wonderful", "moving", "brilliant", "funny", "charming", "superb", "delightful", "gripping"]
_NEGATIVE = ["dull", "tedious", "awful", "clumsy", "boring", "lifeless", "muddled", "dreary"]
_FILLER = ["the", "film", "is", "a", "story", "and", "its", "cast", "plot", "feels", "quite", "with", "ending"]


def make_sentiment_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short texts whose label is given by which word list their opinion words come from."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = list(rng.choice(_FILLER, size=int(rng.integers(3, 20))))
        opinion = _POSITIVE if label == "pos" else _NEGATIVE
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(opinion)))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


# XLA's CPU collectives end the process when a device's thread is 40 s late to an all-reduce; with 8
# simulated devices on 2 cores shared with the other test worker, one was (tests/test_cli_devices.py, once).
COLLECTIVE_PATIENCE = "--xla_cpu_collective_call_terminate_timeout_seconds=600"


# What `_quick_compiles` below passes to flaxtrain's steps, and subprocesses get as XLA_FLAGS: LLVM's
# optimisation passes off, and XLA's loop emitters for CPU fusions instead of its MLIR fusion emitters (most of
# a tiny model's compile time is spent compiling each fusion through MLIR's pass pipelines). At these settings
# the 2-layer test encoder's train step compiled in 2.2 s instead of 4.3 s, a T5's in 4.6 s instead of 5.4 s,
# and ran at 0.85-1.05x the speed; at XLA's default level the loop emitters compile and run slower (a 2 x 128 masked-LM
# step: 12.7 s and 186 ms instead of 9.5 s and 167 ms), so slow tests keep the defaults. In process, every other
# program a quick test compiles gets `jax_disable_most_optimizations` (the same LLVM level, and LLVM's
# expensive passes off, which QUICK_FLAGS names too). Five test files under two workers, 2026-12-03:
# 440 s -> 306 s, 810 -> 586 CPU-seconds.
QUICK_OPTIONS: dict[str, object] = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": False}
QUICK_FLAGS = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
               "--xla_llvm_disable_expensive_passes=true")


def worker_xla_flags(devices: int) -> str:
    """XLA_FLAGS of a test's worker process: `devices` CPU devices, `QUICK_FLAGS`, and `COLLECTIVE_PATIENCE`.
    The workers run tiny models for a few steps, so compiling is most of their time (tests/train/
    test_strategies.py: 188 s -> 126 s with LLVM's optimisation off). Only for runs compared with runs under
    the same flags: the numbers may differ in the last bits from an in-process run."""
    return f"--xla_force_host_platform_device_count={devices} {QUICK_FLAGS} {COLLECTIVE_PATIENCE}"


def quick_compile_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that runs flaxtrain at tiny sizes (a CLI call, a notebook kernel):
    `QUICK_FLAGS`, as `_quick_compiles` below passes them in process, and `extra` on top."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} {QUICK_FLAGS}".strip()
    return {**os.environ, "XLA_FLAGS": flags, **extra}


def start_worker(script: Path, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Runs a test's worker script in its own process; its stderr goes to `log` (a file, not a pipe:
    a process that waits for its reader would stall)."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.DEVNULL, stderr=err)
    proc.log = log
    return proc


def wait_for_worker(proc: subprocess.Popen, timeout: float = 600) -> None:
    """Waits for a `start_worker` process (killing it past `timeout`) and fails with its log's tail."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.log.read_text()[-3000:]


@pytest.fixture(scope="session")
def sentiment_texts() -> tuple[list[str], list[str]]:
    return make_sentiment_texts(240)


@pytest.fixture(scope="session")
def tiny_split(sentiment_texts):
    """(train, val, preproc) of the synthetic sentiment texts, with small buckets."""
    from flaxtrain.text import texts_from_array

    texts, labels = sentiment_texts
    return texts_from_array(texts[:200], labels[:200], texts[200:], labels[200:], maxlen=24, max_features=100, verbose=0)


@pytest.fixture(autouse=True)
def _quick_compiles(request, monkeypatch):
    """Most tests compile tiny models and run them for a few steps: compiling is their time. flaxtrain's own
    steps compile with `QUICK_OPTIONS` (passed as compiler options, like flaxtrain's other CPU options) and
    every other program with `jax_disable_most_optimizations`, except in tests marked `slow` (real
    training: unoptimised loops run it 2-3x slower) or `xla_defaults` (they check the options themselves).
    Measured on tests/hub + tests/models + two API files: 5m22 -> 4m17 on the 2-core machine (LLVM level 0
    for flaxtrain's steps alone)."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("xla_defaults"):
        yield
        return
    from flaxtrain import _xla_flags

    for name, value in QUICK_OPTIONS.items():
        monkeypatch.setitem(_xla_flags.CPU_OPTIONS, name, value)
    _xla_flags._options.cache_clear()
    before = jax.config.read("jax_disable_most_optimizations")  # JAX_DISABLE_MOST_OPTIMIZATIONS=1 stays on
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
    monkeypatch.undo()
    _xla_flags._options.cache_clear()


def pytest_collection_modifyitems(config, items):
    """Modules with slow (minutes-long) tests run first, so that under `make test`'s two workers
    (`-n 2 --dist loadfile`) neither worker is left with one long module at the end."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)
