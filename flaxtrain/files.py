"""Writing a whole directory atomically: build it beside the target, then swap it in."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty staging folder; on success it replaces `directory`, on error it is deleted.

    A crash while writing never leaves a half-written directory, nor loses the one already there.
    """
    target = Path(directory).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def written_by_main_process(directory: str | os.PathLike, write: Callable[[], object]) -> Path:
    """Runs `write()` (which writes `directory`) on process 0 alone, and returns once it is done.

    In a multi-host run every process calls this (a barrier across processes): process 0 writes,
    the others wait for it, so a `load_predictor` right after finds the files on a shared disk. On
    one process it just calls `write()`.
    """
    import jax

    if jax.process_count() == 1:
        write()
        return Path(directory).absolute()
    from jax.experimental import multihost_utils

    try:
        if jax.process_index() == 0:
            write()
    finally:  # also when writing failed, so the other processes are not left waiting
        multihost_utils.sync_global_devices(f"flaxtrain wrote {Path(directory).absolute()}")
    if not Path(directory).exists():
        from flaxtrain.errors import FlaxtrainError

        raise FlaxtrainError(f"process 0 did not write {directory} (see its error), or it is not on a disk this "
                             "process shares: save to a shared path")
    return Path(directory).absolute()
