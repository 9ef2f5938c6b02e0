"""`get_predictor` and `load_predictor`: a model's task predictor, and one read back from its saved folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flaxtrain import models, tasks
from flaxtrain.api import custom
from flaxtrain.api.model import Model
from flaxtrain.api.weights import param_shapes
from flaxtrain.errors import FlaxtrainError
from flaxtrain.models import lora
from flaxtrain.tasks import Predictor, folder

__all__ = ["Predictor", "get_predictor", "load_predictor", "read_predictor_config"]

read_predictor_config = folder.read_config


def get_predictor(model: Model, preproc: Any = None, batch_size: int = 32) -> Predictor:
    """ktrain's `get_predictor(model, preproc)`: the predictor of the model's task (class names and
    probabilities, values, tags, answers or generated text)."""
    if not isinstance(model, tasks.TaskModel):
        raise FlaxtrainError(f"get_predictor needs a flaxtrain model, not {type(model).__name__}")
    return model.task.predictor(model, preproc, batch_size)


def load_predictor(directory: str | os.PathLike, batch_size: int = 32) -> Predictor:
    """Loads a predictor saved by `Predictor.save`; needs no network and no pickle."""
    path = Path(directory).absolute()
    config = folder.read_config(path)
    section = config["preprocessor"]
    preproc = tasks.preprocessor_type(section).load(path, section)
    name = config["model"].get("name", "?")
    if name == custom.CUSTOM:  # a user's module, imported again by its path
        model = custom.rebuild(config["model"].get("config", {}), preproc, lambda abstract: folder.read_params(path, abstract))
        return model.task.predictor(model, preproc, batch_size)
    model_config = models.make_config(name, **config["model"].get("config", {}))
    module = models.build_model(name, model_config)
    adapters = config.get("lora")
    if adapters is not None:  # a LoRA model saved unmerged: the adapters are params['lora']
        module = lora.LoraModule(module, lora.LoraConfig.from_dict(adapters))
    params = folder.read_params(path, param_shapes(module))
    model = Model(name, model_config, params, preproc)
    if adapters is not None:
        model.lora, model.module = module.config, module
    model.task.restore_section(model, config)
    return model.task.predictor(model, preproc, batch_size)
