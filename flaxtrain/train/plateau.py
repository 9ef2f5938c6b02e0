"""autofit's watcher: the monitored metric's best value, epochs without improvement, the current lr."""

from __future__ import annotations

from typing import Any

from flaxtrain.errors import FlaxtrainError
from flaxtrain.train.state import copy_tree


def metric_mode(name: str) -> str:
    """'max' for metrics where higher is better (accuracy, F1, R², exact match, BLEU...), else 'min'."""
    higher = ("acc", "f1", "r2", "precision", "recall", "exact", "bleu", "rouge", "chrf")
    return "max" if any(part in name for part in higher) else "min"


class Plateau:
    """autofit's watcher: best value of `monitor`, epochs without improvement, the current peak lr."""

    def __init__(self, *, lr: float, monitor: str, early_stopping: int | None, reduce_on_plateau: int | None,
                 reduce_factor: float, verbose: bool):
        self.lr, self.monitor, self.verbose = lr, monitor, verbose
        self.early_stopping, self.reduce_on_plateau, self.reduce_factor = early_stopping, reduce_on_plateau, reduce_factor
        self.mode = metric_mode(monitor)
        self.best: float | None = None
        self.best_epoch = 0
        self.best_params: Any = None
        self.wait = 0  # epochs since the last improvement
        self.stopped = False

    def update(self, record: dict[str, float], epoch: int, params: Any) -> str | None:
        """Takes one epoch's record; returns a message when training should stop."""
        if self.monitor not in record:
            raise FlaxtrainError(f"monitor {self.monitor!r} is not among the epoch metrics {sorted(record)}: pick one of them")
        value = record[self.monitor]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            self.best_params = copy_tree(params)
            return None
        self.wait += 1
        if self.reduce_on_plateau and self.wait % self.reduce_on_plateau == 0:
            self.lr /= self.reduce_factor
            if self.verbose:
                print(f"{self.monitor} has not improved for {self.wait} epochs: lr reduced to {self.lr:.2e}")
        if self.early_stopping and self.wait >= self.early_stopping:
            self.stopped = True
            return f"early stopping: {self.monitor} has not improved for {self.wait} epochs"
        return None

    def dump(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load(self, saved: dict[str, Any], best_params: Any) -> None:
        self.lr, self.best, self.best_epoch, self.wait = saved["lr"], saved["best"], saved["best_epoch"], saved["wait"]
        self.best_params = best_params
