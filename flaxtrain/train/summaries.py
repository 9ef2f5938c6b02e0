"""TensorBoard event files of a training run (loss, metrics, learning rate, throughput)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from flaxtrain.data.pipeline import import_tensorflow

# History keys -> TensorBoard tags, grouped as TensorBoard shows them.
_TAGS = {"loss": "train/loss", "acc": "train/acc", "mae": "train/mae", "skipped": "train/skipped_batches",
         "tokens_per_s": "speed/tokens_per_s", "step_s": "speed/step_s", "mfu": "speed/mfu"}


def tag_of(key: str) -> str | None:
    """The TensorBoard tag of an epoch-record key ('val_loss' -> 'val/loss'); None for bookkeeping keys."""
    if key in _TAGS:
        return _TAGS[key]
    if key.startswith("val_"):
        return "val/" + key[len("val_"):]
    if key.startswith("swa_val_"):
        return "swa/" + key[len("swa_val_"):]
    return None


class SummaryWriter:
    """Writes scalars to TensorBoard event files in `log_dir` (only on process 0 of a multi-host run)."""

    def __init__(self, log_dir: str | os.PathLike, *, active: bool = True):
        self.log_dir = os.fspath(log_dir)
        self._writer: Any = None
        self._active = active

    def _tf_writer(self) -> Any:
        if self._writer is None:
            tf = import_tensorflow()
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def epoch(self, record: dict[str, Any], step: int) -> None:
        """One epoch's record (as the history holds it) at global step `step`."""
        self.scalars(((tag, value, step) for key, value in record.items()
                      if value is not None and (tag := tag_of(key)) is not None))

    def learning_rates(self, trace: Iterable[tuple[int, float]]) -> None:
        """(step, lr) pairs as 'train/lr'."""
        self.scalars(("train/lr", lr, step) for step, lr in trace)

    def scalars(self, values: Iterable[tuple[str, float, int]]) -> None:
        if not self._active:
            return
        tf = import_tensorflow()
        with self._tf_writer().as_default():
            for tag, value, step in values:
                tf.summary.scalar(tag, float(value), step=int(step))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
