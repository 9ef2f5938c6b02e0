"""The last steps of every matplotlib figure flaxtrain draws (training curves, explanations)."""

from __future__ import annotations

from typing import Any


def finish(fig: Any, path: str | None, dpi: int = 100) -> str | None:
    """Lays the figure out, saves it to `path` (None: not saved), shows it where matplotlib is interactive
    (a notebook), closes it and returns `path`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    if plt.isinteractive():
        plt.show()
    plt.close(fig)
    return path
