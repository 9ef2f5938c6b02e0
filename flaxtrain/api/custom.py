"""Custom models: a user's `flax.linen.Module` on the same Learner, predictor and saved folder as flaxtrain's own.

`get_learner(MyModule(), train_data, loss='classification')` wraps the module in a `CustomModel`: params are
initialised on the training set's first row, the task comes from the data (text classification or
regression: the module maps `input_ids` [b, t] to logits [b, c] or values [b, 1]), and the loss is the task's
own or the user's `loss(outputs, batch) -> [b]` per-example losses. A saved predictor names the module by its
import path and its dataclass fields ({'module': 'pkg.mod:MyModule', 'fields': {...}}): loading imports it
again, so no pickle is involved and the folder loads wherever that module is importable.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import ops, tasks
from flaxtrain.api.model import Model
from flaxtrain.errors import FlaxtrainError

CUSTOM = "custom"  # the model name of every custom module (its predictor folder's model.name)
LOSSES = ("classification", "regression")
_TASKS = {"classification": "text_classification", "regression": "text_regression"}


class _Adapter:
    """The user's module where flaxtrain's modules stand: `apply(variables, input_ids, *, deterministic, rngs)`,
    passing `deterministic` on only when the module's __call__ takes it."""

    def __init__(self, module: nn.Module):
        self.base = module
        parameters = inspect.signature(type(module).__call__).parameters
        self._deterministic = "deterministic" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs if self._deterministic else {k: v for k, v in kwargs.items() if k != "deterministic"}

    def init(self, rngs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.base.init(rngs, *args, **self._kwargs(kwargs))

    def apply(self, variables: Any, *args: Any, **kwargs: Any) -> Any:
        return self.base.apply(variables, *args, **self._kwargs(kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def import_path(obj: Any) -> str | None:
    """'package.module:QualName' of a class or function defined at a module's top level (a notebook's or
    script's own are '__main__:Name': they load again in that program), else None."""
    name = getattr(obj, "__qualname__", "<>")
    return None if "<" in name else f"{obj.__module__}:{name}"


def resolve(path: str) -> Any:
    """The object an `import_path` names."""
    module_name, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise FlaxtrainError(f"cannot import {path} ({err}): make its module importable (on sys.path) to load this model") from None
    return obj


def module_fields(module: nn.Module) -> dict[str, Any]:
    """The module's own dataclass fields (not flax's parent/name), checked to be JSON-ready."""
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module) if f.init and f.name not in ("parent", "name")}
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    try:
        json.dumps(fields)
    except TypeError as err:
        raise FlaxtrainError(f"{type(module).__name__}'s fields must be plain values (numbers, strings, lists) for a saved "
                             f"predictor to rebuild it ({err})") from None
    return fields


class CustomModel(Model):
    """A user's linen module as a flaxtrain Model (see the file's docstring).

    Attributes:
      user_module: the module as the user gave it.
      loss: 'classification', 'regression' or the user's `loss(outputs, batch) -> [b]` function.
    """

    def __init__(self, module: nn.Module, params: Any, preproc: Any, *, loss: str | Callable[..., Any],
                 sample: dict[str, np.ndarray], train_data: Any = None, val_data: Any = None):
        config = {"module": import_path(type(module)), "fields": module_fields(module),
                  "loss": loss if isinstance(loss, str) else import_path(loss), "sample_length": int(sample["input_ids"].shape[1])}
        super().__init__(CUSTOM, config, params, preproc, train_data=train_data, val_data=val_data, module=_Adapter(module))
        self.user_module = module
        self.loss = loss
        self.sample = sample

    @property
    def task(self) -> tasks.Task:
        return tasks.for_data(None, self.preproc)

    @property
    def loss_fn(self) -> Any:
        if isinstance(self.loss, str):
            return self.task.loss_fn(self)
        return _user_loss(self.loss, regression=self.preproc.regression)

    @property
    def default_lr(self) -> float:
        return 1e-3

    @property
    def sample_inputs(self) -> dict[str, jax.Array]:
        return {k: jnp.asarray(v) for k, v in self.sample.items()}

    def build(self, precision: str | None = None) -> Any:
        if precision not in (None, "float32"):
            raise FlaxtrainError(f"precision={precision!r} sets the compute dtype of flaxtrain's own networks; give your "
                                 "module a dtype field and set it there")
        return self.module

    def initial_params(self, seed: int) -> Any:
        return jax.device_get(_init(self.module, self.sample["input_ids"], seed))

    def folder_config(self) -> dict[str, Any]:
        if self.config["module"] is None:
            raise FlaxtrainError(f"{type(self.user_module).__qualname__} is defined inside a function: define it at the top "
                                 "of a module (or a notebook cell) so a saved predictor can name it")
        return dict(self.config)


def _init(adapter: _Adapter, sample: np.ndarray, seed: int) -> Any:
    return jax.jit(lambda rng: nn.meta.unbox(adapter.init({"params": rng, "dropout": rng}, jnp.asarray(sample),
                                                          deterministic=True)["params"]))(jax.random.key(seed))


def _user_loss(loss: Callable[..., Any], *, regression: bool) -> Callable[..., Any]:
    """The step's loss function around a user's `loss(outputs, batch) -> [b]`: their weighted sum, with the
    task's metric sums (accuracy, absolute error) beside it."""

    def loss_fn(apply_fn: Callable[..., Any], params: Any, batch: dict[str, jax.Array], *, rngs: dict[str, jax.Array],
                deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        outputs = apply_fn({"params": params}, batch["input_ids"], deterministic=deterministic, rngs=rngs)
        per_row = jnp.asarray(loss(outputs, batch), jnp.float32)
        if per_row.shape != batch["weight"].shape:
            raise FlaxtrainError(f"the loss function must return one loss per row, shape {batch['weight'].shape}, "
                                 f"got {per_row.shape}")
        sums = (ops.regression_sums(outputs[:, 0], batch["label"], batch["weight"]) if regression
                else ops.classification_sums(outputs, batch["label"], batch["weight"]))
        sums["loss_sum"] = jnp.sum(per_row * batch["weight"].astype(jnp.float32))
        return sums["loss_sum"], sums

    return loss_fn


def custom_model(module: nn.Module, train_data: Any, val_data: Any = None, *, loss: str | Callable[..., Any] | None,
                 seed: int = 0) -> CustomModel:
    """A CustomModel of `module` for `train_data` (a texts_from_* / preprocess_train set), params from `seed`."""
    data_task = tasks.for_data(train_data)
    if data_task is None or data_task.family != "text_classification":
        raise FlaxtrainError("a custom module trains on text classification or regression data (texts_from_* or "
                             "preproc.preprocess_train): the module maps input_ids [b, t] to logits [b, c] or values [b, 1]")
    if loss is None:
        raise FlaxtrainError(f"a custom module needs loss=: one of {', '.join(LOSSES)}, or a function "
                             "loss(outputs, batch) -> per-example losses [b]")
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise FlaxtrainError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}, or pass a function")
        if tasks.named(_TASKS[loss]) is not data_task:
            raise FlaxtrainError(f"loss {loss!r} does not fit {data_task.name} data: use loss="
                                 f"'{'regression' if train_data.preproc.regression else 'classification'}'")
    elif not callable(loss):
        raise FlaxtrainError(f"loss must be a name or a function, got {type(loss).__name__}")
    if len(train_data) == 0:
        raise FlaxtrainError(f"train_data is empty: {train_data.empty_hint}")
    first, _ = data_task.batches(train_data, batch_size=1, shuffle=False)
    sample = {"input_ids": np.asarray(next(iter(first))["input_ids"])}
    adapter = _Adapter(module)
    try:
        params = _init(adapter, sample["input_ids"], seed)
    except FlaxtrainError:
        raise
    except Exception as err:  # the user's module failed on a real row: say which call and why, in one line
        first_line = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise FlaxtrainError(f"{type(module).__name__}.init on a training row (input_ids {sample['input_ids'].shape}) "
                             f"failed: {first_line}") from None
    return CustomModel(module, params, train_data.preproc, loss=loss, sample=sample, train_data=train_data, val_data=val_data)


def rebuild(config: dict[str, Any], preproc: Any, read_params: Callable[[Any], Any]) -> CustomModel:
    """A CustomModel from a saved predictor's model config; `read_params(abstract params)` restores its params."""
    cls = resolve(config["module"])
    try:
        module = cls(**config.get("fields", {}))
    except TypeError as err:
        raise FlaxtrainError(f"{config['module']} no longer takes the saved fields ({err}): load it with the code it was "
                             "saved with") from None
    loss = config.get("loss") or ("regression" if preproc.regression else "classification")
    loss = loss if loss in LOSSES else resolve(loss)
    sample = {"input_ids": np.zeros((1, int(config.get("sample_length", preproc.maxlen))), np.int32)}
    params = read_params(jax.eval_shape(lambda: _init(_Adapter(module), sample["input_ids"], 0)))
    return CustomModel(module, params, preproc, loss=loss, sample=sample)
