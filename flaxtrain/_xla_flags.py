"""XLA compiler options flaxtrain passes to the steps it compiles; the environment is never touched.

On CPU, XLA 0.10's YNNPACK dot fusions run the MiniLM-size encoder step 10-20% slower than its
Eigen dots (benchmarks/README.md), so flaxtrain compiles its own train, eval and predict steps and
its decoding loop with `xla_cpu_experimental_ynn_fusion_type` empty.

XLA's oneDNN dot fusions (`ONEDNN_OPTIONS`: `xla_cpu_use_onednn`, `xla_cpu_experimental_onednn_fusion_type`
= dot) trained the same encoder step 1.13-1.14x faster at 32 x 128 and 32 x 256 (inference 1.06x /
1.24x, outputs within 2.1e-6; benchmarks/encoder_step.py --options, an A/B in one process on the 2-core
AVX-512 machine), but with them the Marian-layout translation model's train step died with SIGILL
(illegal instruction) on that machine: they are not passed. `xla_cpu_prefer_vector_width=512` measured
no gain there. It goes to XLA per compilation
(`jax.jit(..., compiler_options=...)`), never through `XLA_FLAGS`: the user's environment, and every
other program JAX compiles, stay as they were. The user keeps the last word: when their XLA_FLAGS
names the flag, flaxtrain passes nothing. The option is passed only for the jaxlib line it was
measured with (an XLA that does not know an option rejects it) and only changes CPU code.
`jax.pmap` takes no compiler options, so the 'pmap' strategy compiles with XLA's defaults.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os

CPU_OPTIONS: dict[str, object] = {"xla_cpu_experimental_ynn_fusion_type": ""}
# XLA's oneDNN dot fusions, measured faster but not passed: see the module docstring.
ONEDNN_OPTIONS: dict[str, object] = {"xla_cpu_use_onednn": True,
                                     "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
# XLA's loop emitters for CPU fusions instead of its MLIR fusion emitters: measured in benchmarks/encoder_step.py
# --options loop-emitters (see benchmarks/README.md).
LOOP_EMITTER_OPTIONS: dict[str, object] = {"xla_cpu_use_fusion_emitters": False}
TESTED_JAXLIB = ("0.10.",)


def compiler_options() -> dict[str, object] | None:
    """The options for `jax.jit(..., compiler_options=...)`, or None where none apply."""
    return _options(os.environ.get("XLA_FLAGS", ""))


@functools.cache
def _options(user_flags: str) -> dict[str, object] | None:
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not jaxlib.startswith(TESTED_JAXLIB):
        return None
    chosen = {name: value for name, value in CPU_OPTIONS.items() if f"--{name}" not in user_flags}
    return chosen or None
