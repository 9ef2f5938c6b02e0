"""Training checkpoints on Orbax: train state plus where the run stands, written atomically.

A checkpoint directory holds two Orbax `CheckpointManager`s:
  latest/<step>/  the last `keep` checkpoints (every N steps and at each epoch end, async), to resume;
  best/<step>/    the one with the best monitored metric (epoch ends with validation only).
Each step folder holds `state` (step, params, optimizer state, and the running weight average when
there is one) and `meta` (JSON: the fit plan, epoch and batch position, the seed, the epoch's
running metric sums, the history so far). Orbax writes a step to a temporary folder and renames it
when complete, so a run killed mid-save leaves only complete checkpoints visible. A step folder that
cannot be read back is moved to unreadable/ (kept, never deleted) and the previous one is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from flaxtrain.errors import FlaxtrainError

FORMAT = "flaxtrain-checkpoint"
FORMAT_VERSION = 1
LATEST, BEST, UNREADABLE = "latest", "best", "unreadable"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


@contextlib.contextmanager
def _quiet_asyncio():
    """Orbax's reads run in asyncio tasks that log every failed array read; one message is enough."""
    logger = logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def saving_on_sigterm(active: bool, received: dict[str, str]):
    """While training with checkpoints, SIGTERM only sets `received['name']`: the loop then saves a
    checkpoint and stops, and the learner re-raises the signal. Outside the main thread it is a no-op."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        received["name"] = signal.Signals(signum).name

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with their shardings) of a tree of arrays: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Saves and restores training checkpoints in `directory` (see the module docstring).

    Args:
      directory: where checkpoints go (created when missing).
      keep: how many of the latest checkpoints to keep.
      monitor: the epoch metric (e.g. 'val_loss') that picks the best checkpoint, or None.
      mode: 'min' or 'max' for `monitor`.
      async_save: write in a background thread while training continues.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, monitor: str | None = None, mode: str = "min",
                 async_save: bool = True):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise FlaxtrainError(f"keep must be at least 1 checkpoint, got {keep}")
        if mode not in ("min", "max"):
            raise FlaxtrainError(f"mode must be 'min' or 'max', got {mode!r}")
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise FlaxtrainError(f"checkpoint_dir {self.directory} is a file: pass a directory")
        self.monitor = monitor
        self._ocp = ocp
        self._options = dict(keep=keep, mode=mode, async_save=async_save)
        self._latest = self._manager(LATEST)
        self._best = None

    def _manager(self, name: str) -> Any:
        ocp = self._ocp
        # Each manager syncs processes under its own barrier names: latest/ and best/ save the same
        # step at an epoch's end, and shared names would let one manager's barrier pass on the other's.
        common = dict(create=True, enable_async_checkpointing=self._options["async_save"],
                      multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=f"flaxtrain-{name}"))
        if name == LATEST:
            options = ocp.CheckpointManagerOptions(max_to_keep=self._options["keep"], **common)
        else:
            monitor = self.monitor
            options = ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda metrics: metrics[monitor],
                                                   best_mode=self._options["mode"], **common)
        return ocp.CheckpointManager(self.directory / name, options=options)

    # --- saving ----------------------------------------------------------------------------------
    def save(self, step: int, tree: Any, meta: dict[str, Any], *, wait: bool = False) -> None:
        """Saves `tree` (arrays) and `meta` (JSON) as checkpoint `step` of latest/ (async unless `wait`)."""
        ocp = self._ocp
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, **meta}
        if step in self._latest.all_steps():  # already saved (an epoch end right after a step save)
            return
        self._latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
        if wait:
            self._latest.wait_until_finished()

    def save_best(self, step: int, params: Any, metrics: dict[str, float]) -> None:
        """Offers `params` as the best checkpoint; Orbax keeps it when `metrics[monitor]` beats the saved one."""
        if self.monitor is None or self.monitor not in metrics:
            return
        if self._best is None:
            self._best = self._manager(BEST)
        ocp = self._ocp
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, "metrics": metrics}
        self._best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
                        metrics={self.monitor: float(metrics[self.monitor])})

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self._latest.wait_until_finished()
        if self._best is not None:
            self._best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._latest.close()
        if self._best is not None:
            self._best.close()

    # --- reading ---------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Steps of the complete checkpoints in latest/, oldest first."""
        return sorted(self._latest.all_steps())

    def last_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(self, target: Callable[[dict[str, Any]], Any]) -> tuple[Any, dict[str, Any]] | None:
        """(tree, meta) of the newest readable checkpoint, restored onto the shapes, dtypes and
        shardings of `target(meta)` (so a run may resume on another device count); None when there
        is none.

        A checkpoint that fails to read is moved to unreadable/ with a warning, and the one before it
        is tried; if none can be read the error says so.
        """
        ocp = self._ocp
        tried = []
        for step in reversed(self.steps()):
            try:
                with _quiet_asyncio():
                    meta = self._read_meta(step)
                    wanted = target(meta)  # may refuse a different run: that error propagates
                    self._check_fits(step, wanted)
                    restored = self._latest.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(wanted), meta=ocp.args.JsonRestore()))
                return restored["state"], meta
            except FlaxtrainError:
                raise
            except Exception as err:  # Orbax and TensorStore raise many types for unreadable files
                moved = self._set_aside(step)
                tried.append(step)
                logging.getLogger("flaxtrain").warning(
                    "checkpoint step %d in %s is unreadable (%s); moved it to %s and trying the one before",
                    step, self.directory / LATEST, _first_line(err), moved)
                print(f"warning: checkpoint step {step} is unreadable ({_first_line(err)}); moved to {moved}, "
                      "using the previous checkpoint")
        if tried:
            raise FlaxtrainError(
                f"no readable checkpoint in {self.directory / LATEST} (steps {tried} were unreadable and moved to "
                f"{self.directory / UNREADABLE}): start without resume=True or pass another checkpoint_dir"
            )
        return None

    def _check_fits(self, step: int, wanted: Any) -> None:
        """Refuses, in one line and moving nothing, a readable checkpoint whose params have other
        names or shapes than `wanted['params']` (it was saved for another model)."""
        from etils import epath

        # A broken file raises here, and the checkpoint is set aside as unreadable.
        saved = self._ocp.StandardCheckpointHandler().metadata(epath.Path(self.directory / LATEST / str(step) / "state")).tree
        leaves = lambda tree: {jax.tree_util.keystr(k): tuple(v.shape) for k, v in  # noqa: E731
                               jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))}
        there = leaves(saved.get("params", {}) if isinstance(saved, dict) else {})
        here = leaves(wanted["params"])
        for key in sorted(here.keys() | there.keys()):
            if here.get(key) != there.get(key):
                what = (f"param {key} has shape {there[key]} there, {here[key]} here" if key in here and key in there else
                        f"param {key} is {'only in the checkpoint' if key in there else 'not in the checkpoint'}")
                raise FlaxtrainError(
                    f"checkpoint step {step} in {self.directory / LATEST} was saved for another model ({what}): "
                    "resume with the model that saved it, or pass a new checkpoint_dir")

    def _read_meta(self, step: int) -> dict[str, Any]:
        path = self.directory / LATEST / str(step) / "meta" / "metadata"
        meta = json.loads(path.read_text())  # a broken file raises here and the checkpoint is set aside
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not flaxtrain checkpoint metadata")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise FlaxtrainError(f"checkpoint {path.parent.parent} was written by a newer flaxtrain: upgrade flaxtrain")
        return meta

    def _set_aside(self, step: int) -> Path:
        source = self.directory / LATEST / str(step)
        target = self.directory / UNREADABLE / str(step)
        suffix = 1
        while target.exists():
            target = self.directory / UNREADABLE / f"{step}-{suffix}"
            suffix += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        self._latest.close()
        self._latest = self._manager(LATEST)  # forget the step it listed
        return target

    def restore_best(self, target: Any) -> tuple[Any, dict[str, Any]] | None:
        """(params, meta) of the best checkpoint, or None when none was saved."""
        if self.monitor is None or not (self.directory / BEST).is_dir():
            return None
        if self._best is None:
            self._best = self._manager(BEST)
        step = self._best.best_step()
        if step is None:
            return None
        ocp = self._ocp
        with _quiet_asyncio():
            restored = self._best.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target),
                                                                        meta=ocp.args.JsonRestore()))
        return restored["params"], restored["meta"]
