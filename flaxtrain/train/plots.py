"""Training curves with matplotlib: the lr_find curve and the fit history (loss per epoch, lr per step)."""

from __future__ import annotations

from typing import Any

import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.figures import finish
from flaxtrain.train.lr_find import LRFinderResult


def lr_finder(result: LRFinderResult, path: str | None, *, suggestion: bool = True) -> str | None:
    """Loss against learning rate (log scale), the valley and steepest-descent suggestions marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    if suggestion:
        for name, value, marker in (("valley", result.valley, "o"), ("steepest", result.steepest, "s")):
            index = int(np.argmin(np.abs(result.lrs - value)))
            ax.plot(value, result.smoothed[index], marker, label=f"{name} {value:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.legend()
    return finish(fig, path)


def history(progress: Any, kind: str, path: str | None) -> str | None:
    """'loss': train and validation loss per epoch of `progress.history`; 'lr': `progress.lr_trace`."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if kind == "loss":
        if not progress.history:
            plt.close(fig)
            raise FlaxtrainError("no training history yet: fit first")
        epochs = [r["epoch"] for r in progress.history]
        ax.plot(epochs, [r["loss"] for r in progress.history], "o-", label="train")
        if "val_loss" in progress.history[0]:
            ax.plot(epochs, [r["val_loss"] for r in progress.history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend()
    elif kind == "lr":
        if not progress.lr_trace:
            plt.close(fig)
            raise FlaxtrainError("no training steps yet: fit first")
        steps, lrs = zip(*progress.lr_trace)
        ax.plot(steps, lrs)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
    else:
        plt.close(fig)
        raise FlaxtrainError(f"unknown plot {kind!r}: use 'loss' or 'lr'")
    return finish(fig, path)
