"""XLA flags flaxtrain sets by default, before JAX starts its CPU backend.

On CPU, XLA 0.10's YNNPACK dot fusions run the MiniLM-size encoder step 10-20% slower than its
Eigen dots (benchmarks/README.md), so flaxtrain turns them off unless XLA_FLAGS already names
the flag or FLAXTRAIN_XLA_DEFAULTS=0. The flag only affects CPU compilation, and it is added only
for the jaxlib line it was measured with (an XLA that does not know a flag aborts the process).
"""

from __future__ import annotations

import importlib.metadata
import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
TESTED_JAXLIB = ("0.10.",)


def apply_defaults() -> None:
    """Appends CPU_FLAGS to XLA_FLAGS (no effect once JAX's backends have started)."""
    if os.environ.get("FLAXTRAIN_XLA_DEFAULTS", "1") == "0":
        return
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    if not jaxlib.startswith(TESTED_JAXLIB):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [flag for flag in CPU_FLAGS if flag.split("=")[0] not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
