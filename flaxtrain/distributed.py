"""Multi-host training through JAX's own distributed runtime.

    import flaxtrain.distributed
    flaxtrain.distributed.initialize()          # on TPU pods / SLURM / Kubernetes: detected
    flaxtrain.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)  # by hand

Call it first, before any JAX computation. Afterwards every process runs the same script: the
Learner's default strategy spans all devices of all processes, each process reads its own rows of
every global batch, and metrics and saved params are global.
"""

from __future__ import annotations

from typing import Any

from flaxtrain.errors import FlaxtrainError


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, **kwargs: Any) -> None:
    """`jax.distributed.initialize` with the same arguments; CPU collectives use gloo.

    Raises:
      FlaxtrainError: JAX already ran a computation in this process, or the coordinator cannot be
        reached.
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    except RuntimeError as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "should only be called once" in message or "before" in message:
            raise FlaxtrainError(
                f"jax.distributed could not start ({message}): call flaxtrain.distributed.initialize() "
                "once, at the top of the script, before any JAX computation"
            ) from None
        raise FlaxtrainError(
            f"jax.distributed could not start ({message}): check the coordinator address and that "
            "every process was started with the same num_processes"
        ) from None


def process_index() -> int:
    """This process's index (0 on a single host)."""
    import jax

    return jax.process_index()


def process_count() -> int:
    """Number of processes (1 on a single host)."""
    import jax

    return jax.process_count()


def is_main_process() -> bool:
    """True on the process that prints and writes shared files (process 0)."""
    return process_index() == 0
