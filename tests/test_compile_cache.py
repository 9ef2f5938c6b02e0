"""The persistent compilation cache: `enable_compilation_cache()` writes compiled programs to the per-user
folder, keeps a folder the user chose, and `train.compilation_cache` is a config key that turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flaxtrain.cli import _parse_config

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, jax, jax.numpy as jnp, flaxtrain
folder = flaxtrain.enable_compilation_cache()
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(json.dumps([str(folder), jax.config.jax_compilation_cache_dir]))
"""


def _probe(env: dict[str, str]) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def test_programs_go_to_the_per_user_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    folder, configured = _probe(env)
    assert folder == configured == str(tmp_path / "flaxtrain" / "xla")
    assert any((tmp_path / "flaxtrain" / "xla").iterdir())  # the jitted program was written


def test_a_folder_the_user_chose_is_kept(tmp_path):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    folder, configured = _probe(env)
    assert folder == configured == str(tmp_path / "mine")
    assert not (tmp_path / "xdg").exists()


def test_the_config_key_turns_it_off():
    config = _parse_config(["--config", f"{ROOT}/configs/textcnn_rotten_tomatoes.py:tiny", "--config.train.compilation_cache=False"])
    assert config.train.compilation_cache is False
    assert _parse_config(["--config", f"{ROOT}/configs/minilm_rotten_tomatoes.py:tiny"]).train.compilation_cache is True
