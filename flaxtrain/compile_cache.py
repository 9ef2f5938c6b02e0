"""JAX's persistent compilation cache in a per-user folder: the second run of a command skips XLA's compiles.

`flaxtrain train` turns it on for its own process (config key `train.compilation_cache`, on by default;
False turns it off); a script may call `enable_compilation_cache()` itself. `import flaxtrain` and the
Learner never do: JAX's configuration is the user's. A cache folder the user already chose
(`JAX_COMPILATION_CACHE_DIR`, or `jax.config.update('jax_compilation_cache_dir', ...)`) is kept.
Measured (benchmarks/README.md): the tiny TextCNN command 26.7 s -> 12.5 s from start to saved predictor.
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_COMPILE_SECONDS = 0.5  # programs that compile faster are not worth a file read (JAX's default: 1 s)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/flaxtrain/xla`, or `~/.cache/flaxtrain/xla`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flaxtrain" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Turns on JAX's persistent compilation cache in `path` (default: `default_cache_dir()`) for this
    process, unless the user already chose a folder; returns the folder in effect."""
    import jax

    chosen = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if chosen:
        return Path(chosen)
    folder = Path(path) if path is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default, not the user's choice
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder
