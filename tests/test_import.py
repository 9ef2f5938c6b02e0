"""`import flaxtrain` is cheap and changes nothing; XLA options reach only flaxtrain's own compiled steps."""

import os
import subprocess
import sys
import time

import pytest


def test_import_is_light_fast_and_leaves_the_environment_alone():
    code = (
        "import os, sys, time; before = dict(os.environ); t = time.perf_counter(); import flaxtrain; "
        "t = time.perf_counter() - t; print(t, 'tensorflow' in sys.modules, 'jax' in sys.modules, dict(os.environ) == before)"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out[1:] == ["False", "False", "True"], "import flaxtrain imported TensorFlow or JAX, or changed os.environ"
    assert float(out[0]) < 2.0
    assert time.perf_counter() - start < 10
    # flaxtrain.text loads JAX (which sets TPU_SKIP_MDS_QUERY and TF_CPP_MIN_LOG_LEVEL itself): flaxtrain adds nothing.
    code = ("import os, sys, jax; before = dict(os.environ); import flaxtrain.text; "
            "print('tensorflow' in sys.modules, dict(os.environ) == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out == ["False", "True"], "flaxtrain.text imported TensorFlow or changed os.environ"


@pytest.mark.xla_defaults
def test_compiler_options_reach_only_flaxtrain_steps(tiny_split, monkeypatch):
    import jax
    import jax.numpy as jnp

    import flaxtrain
    from flaxtrain import _xla_flags

    measured = jax.__version_info__[:2] == (0, 10)  # the jaxlib line the option was measured on
    # The user's own XLA_FLAGS have the last word: naming the flag there means flaxtrain passes nothing.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1 --xla_cpu_experimental_ynn_fusion_type=")
    assert _xla_flags.compiler_options() is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    assert _xla_flags.compiler_options() == ({"xla_cpu_experimental_ynn_fusion_type": ""} if measured else None)
    train, _, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    learner = flaxtrain.get_learner(model, train_data=train, batch_size=8)
    batch = next(iter(learner._batches(train, train=True)[0]))
    compiled = learner.steps._jitted["train"].lower(learner._train_state(), batch, jax.random.key(0)).compile().as_text()
    plain = jax.jit(lambda a: a @ a).lower(jnp.ones((64, 64))).compile().as_text()  # the user's own code
    assert "__ynn_fusion" not in compiled and "__onednn_fusion" not in compiled  # flaxtrain's step: Eigen dots
    assert ("__ynn_fusion" in plain) == measured  # everything else: XLA's defaults, as the user set them
    assert "__onednn_fusion" not in plain
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"  # nothing written to the environment
