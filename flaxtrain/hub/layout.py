"""Shape checks for Hugging Face tensors before they are laid out as flaxtrain params.

PyTorch `Linear` stores [out, in]; flaxtrain kernels are [in, out], with attention projections
split into heads. Each conversion kind names one such layout change; `hf_shape` inverts it, so a
tensor can be checked against the shape its config asks for before any reshape runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flaxtrain.errors import FlaxtrainError


def hf_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The Hugging Face shape of a flaxtrain param of `shape` converted by `kind`."""
    if kind == "linear":
        return tuple(reversed(shape))
    if kind == "heads_in":  # [m, h, d] <- [h * d, m]
        return (shape[1] * shape[2], shape[0])
    if kind == "heads_bias":  # [h, d] <- [h * d]
        return (math.prod(shape),)
    if kind == "heads_out":  # [h, d, m] <- [m, h * d]
        return (shape[2], shape[0] * shape[1])
    if kind == "row":  # [v] <- [1, v]
        return (1, *shape)
    return tuple(shape)


def check_tensor(name: str, array: Any, kind: str, expected: tuple[int, ...]) -> None:
    """Fails in one line naming the tensor and both shapes when `array` does not fit the config."""
    want = hf_shape(tuple(expected), kind)
    got = tuple(np.shape(array))
    if got != want:
        raise FlaxtrainError(f"{name} has shape {got} in the checkpoint but config.json needs {want}: "
                             "config.json and the weights disagree (use the config the weights were saved with)")
