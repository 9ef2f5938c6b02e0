"""flaxtrain.allocator: a tuned process reuses XLA's large CPU buffers instead of faulting them in every step."""

import json
import os
import subprocess
import sys

import pytest

from flaxtrain.allocator import ALLOCATOR_ENV

STEPS = """
import json, resource, sys
from flaxtrain.allocator import tune_allocator
tuned = tune_allocator() if sys.argv[1] == "call" else None
import jax, jax.numpy as jnp
step = jax.jit(lambda x: jnp.zeros((4096, 4096), jnp.float32).at[x].add(1.0))  # 64 MiB out per call, as an embedding gradient
x = jnp.arange(0, 4096, 7)
def run():
    out = step(x).block_until_ready()
    out.delete()  # freed now, as a train step's donated buffers are
for _ in range(5):
    run()  # the heap grows to its steady size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    run()
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(mode: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator options")
def test_a_tuned_process_stops_faulting_in_its_step_buffers():
    plain = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    untuned = _run("none", plain)
    called = _run("call", plain)
    by_env = _run("none", {**plain, **ALLOCATOR_ENV})
    assert untuned["faults"] > 500_000, untuned  # 50 x 64 MiB mapped and faulted in anew
    assert called["tuned"] is True and called["faults"] < untuned["faults"] // 4, (called, untuned)
    assert by_env["faults"] < untuned["faults"] // 4, (by_env, untuned)


def test_the_call_changes_nothing_once_other_threads_run():
    code = ("import threading, time; threading.Thread(target=time.sleep, args=(2,)).start(); "
            "from flaxtrain.allocator import tune_allocator; print(tune_allocator())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
