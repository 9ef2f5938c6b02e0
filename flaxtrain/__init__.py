"""flaxtrain: ktrain's few-lines NLP workflow on a JAX/Flax core.

    import flaxtrain, flaxtrain.text
    data = flaxtrain.text.load_data('rotten_tomatoes', train=True)
    model = flaxtrain.get_model('textcnn', train_data=data)
    model.fit(epochs=3)

Importing this package is cheap and changes nothing (no environment variables, no global
settings): the public names below load their modules on first use, and TensorFlow loads only when
an input pipeline is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flaxtrain._version import __version__
from flaxtrain.errors import FlaxtrainError


_LAZY = {
    "get_model": "flaxtrain.api.factory",
    "Model": "flaxtrain.api.model",
    "get_learner": "flaxtrain.api.factory",
    "Learner": "flaxtrain.api.learner",
    "get_predictor": "flaxtrain.api.predictor",
    "load_predictor": "flaxtrain.api.predictor",
    "Predictor": "flaxtrain.api.predictor",
    "verify_export": "flaxtrain.export",
    "tune_allocator": "flaxtrain.allocator",
    "doctor": "flaxtrain.machine",
    "enable_compilation_cache": "flaxtrain.compile_cache",
}
_SUBMODULES = ("text", "api", "data", "eval", "layers", "models", "ops", "tasks", "train", "cli", "distributed", "export")

__all__ = ["FlaxtrainError", "__version__", *_LAZY, "text"]

if TYPE_CHECKING:
    from flaxtrain import text
    from flaxtrain.api.learner import Learner
    from flaxtrain.api.factory import get_learner, get_model
    from flaxtrain.api.model import Model
    from flaxtrain.api.predictor import Predictor, get_predictor, load_predictor
    from flaxtrain.allocator import tune_allocator
    from flaxtrain.machine import doctor
    from flaxtrain.compile_cache import enable_compilation_cache
    from flaxtrain.export import verify_export


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"flaxtrain.{name}")
    raise AttributeError(f"module 'flaxtrain' has no attribute {name!r}")
