"""Learner: trains a Model on a train set and reports on a validation set (ktrain's vocabulary).

The Learner coordinates train/ functions; it holds only the train state and the history.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from flaxtrain.api.model import Model
from flaxtrain.data import TextDataset, make_batches
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import classification_report, regression_metrics
from flaxtrain.train import (
    TrainState,
    create_train_state,
    loop,
    make_optimizer,
    set_hyperparams,
    update_average,
)
from flaxtrain.train.partition import compile_steps, logical_param_specs, make_strategy

PRECISIONS = ("float32", "bfloat16")


def with_compute_dtype(config: Any, dtype: str) -> Any:
    """A copy of a model config (or of the encoder config inside a head config) computing in `dtype`."""
    if not dataclasses.is_dataclass(config):
        return config
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    if "dtype" in names:
        changes["dtype"] = dtype
    for name in names:
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):
            changes[name] = with_compute_dtype(value, dtype)
    return dataclasses.replace(config, **changes)


class Learner:
    """Trains `model` on `train_data`, validating on `val_data` after every epoch.

    Training runs under a strategy (train/partition.py): 'auto' (default) is data parallel over
    every device of every process; 'spmd' with `mesh=(data, fsdp, tensor)` shards params and
    optimizer state too; 'pmap' is classic replicated data parallelism; 'single' one device.
    `batch_size` is the global batch (all devices, all processes).

    Attributes:
      model: the Model; its params are updated at the end of every fit call.
      history: one dict per finished epoch (loss, acc, val_loss, val_acc, tokens/s, step time, MFU).
      strategy: the resolved `Strategy`.
    """

    def __init__(self, model: Model, train_data: TextDataset, val_data: TextDataset | None = None, *,
                 batch_size: int = 32, eval_batch_size: int | None = None, weight_decay: float = 0.0,
                 clip_norm: float | None = None, seed: int = 0, strategy: str = "auto",
                 mesh: tuple[int, int, int] | None = None, grad_accum_steps: int = 1, precision: str = "float32"):
        if not isinstance(train_data, TextDataset):
            raise FlaxtrainError(
                f"train_data must be a dataset from a flaxtrain.text loader, not {type(train_data).__name__}"
            )
        if len(train_data) == 0:
            raise FlaxtrainError("train_data is empty: pass at least one text per class")
        if train_data.labels is None:
            raise FlaxtrainError("train_data has no labels: build it with preproc.preprocess_train(texts, labels)")
        if val_data is not None and val_data.labels is None:
            raise FlaxtrainError("val_data has no labels: build it with preproc.preprocess_test(texts, labels)")
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if data is not None and data.preproc.class_names != model.preproc.class_names:
                raise FlaxtrainError(
                    f"{name} has classes {data.preproc.class_names} but the model predicts {model.preproc.class_names}: "
                    "encode it with the model's preprocessor"
                )
        if precision not in PRECISIONS:
            raise FlaxtrainError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if grad_accum_steps < 1:
            raise FlaxtrainError(f"grad_accum_steps must be at least 1, got {grad_accum_steps}")
        self.strategy = make_strategy(strategy, mesh)
        parts = self.strategy.data_parallel * grad_accum_steps
        eval_size = eval_batch_size or batch_size
        for what, size, need in (("batch_size", batch_size, parts), ("eval_batch_size", eval_size, self.strategy.data_parallel)):
            if size % need:
                raise FlaxtrainError(
                    f"{what} {size} does not divide over {self.strategy.data_parallel} data-parallel devices"
                    + (f" x {grad_accum_steps} micro-batches" if what == "batch_size" and grad_accum_steps > 1 else "")
                    + f": use a multiple of {need}"
                )
        self.precision = precision
        self.grad_accum_steps = grad_accum_steps
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.history: list[dict[str, float]] = []
        self._tx = make_optimizer(model.default_lr, weight_decay=weight_decay, clip_norm=clip_norm)
        self._state: TrainState | None = None
        self._epochs_done = 0
        self._steps = None

    @property
    def steps(self) -> Any:
        """The train/eval steps compiled for this learner's strategy, precision and accumulation."""
        if self._steps is None:
            module = self.model.module
            if self.precision != "float32":  # compute in bf16; params and optimizer state stay float32
                from flaxtrain import models

                module = models.build_model(self.model.name, with_compute_dtype(self.model.config, self.precision))
            sample = {"input_ids": jnp.zeros((1, 16), jnp.int32)}
            self._steps = compile_steps(module.apply, self.model.loss_fn, strategy=self.strategy,
                                        grad_accum_steps=self.grad_accum_steps, param_specs=logical_param_specs(module, sample),
                                        predict_fn=self.model.predict_fn)
        return self._steps

    def _batches(self, data: TextDataset, *, train: bool, epoch: int = 0) -> tuple[Any, int]:
        return make_batches(
            data.input_ids, data.labels, batch_size=self.batch_size if train else self.eval_batch_size,
            buckets=self.model.preproc.buckets, shuffle=train, seed=self.seed, epoch=epoch,
            pad_id=self.model.preproc.pad_id, process_index=jax.process_index(), process_count=jax.process_count(),
        )

    def _train_state(self) -> TrainState:
        if self._state is None:
            # The state owns a copy: the step donates its buffers, and model.params must stay valid.
            params = jax.tree.map(jnp.copy, self.model.params)
            state = create_train_state(self.model.module, params, self._tx)
            self._state = self.steps.place_state(state.replace(apply_fn=self.steps.apply_fn))
        return self._state

    def fit(self, lr: float, epochs: int, *, swa_from: int | None = None, verbose: int = 1) -> list[dict[str, float]]:
        """Trains `epochs` epochs at constant learning rate `lr` (Adam); returns this call's history.

        Repeated calls continue from the current weights and optimizer state.

        Args:
          lr: learning rate.
          epochs: epochs to run.
          swa_from: when set, the model keeps the average of the weights at the end of epochs
            swa_from..epochs of this call (1-based), i.e. stochastic weight averaging (Izmailov et
            al. 2018); training itself continues from the last weights.
          verbose: print a line per epoch.
        """
        if epochs < 1:
            raise FlaxtrainError(f"epochs must be at least 1, got {epochs}")
        if not lr > 0:
            raise FlaxtrainError(f"lr must be positive, got {lr}")
        if swa_from is not None and not 1 <= swa_from <= epochs:
            raise FlaxtrainError(f"swa_from must lie between 1 and epochs ({epochs}), got {swa_from}")
        state = self._train_state()
        state = state.replace(opt_state=set_hyperparams(state.opt_state, learning_rate=lr))
        self._state = None  # donated to the step from here on
        first_epoch = self._epochs_done
        average: dict[str, Any] = {"params": None, "count": 0}

        def accumulate(epoch: int, current: TrainState) -> None:
            if swa_from is None or epoch - first_epoch + 1 < swa_from:
                return
            if average["params"] is None:
                average["params"] = jax.tree.map(jnp.copy, self.steps.params_of(current))
            else:
                average["params"] = update_average(average["params"], self.steps.params_of(current),
                                                   jnp.asarray(average["count"]))
            average["count"] += 1

        val = self.val_data
        state, history, stop = loop.fit(
            state,
            epochs=epochs,
            train_batches=lambda epoch: self._batches(self.train_data, train=True, epoch=epoch),
            val_batches=None if val is None else (lambda: self._batches(val, train=False)),
            steps=self.steps,
            rng=jax.random.key(self.seed),
            start_epoch=first_epoch,
            verbose=bool(verbose),
            on_epoch_end=accumulate,
            precision=self.precision,
        )
        self._state = state
        self._epochs_done += len(history)
        self.history.extend(history)
        final_params = self.steps.params_of(state)
        if stop:
            self.model.params = jax.tree.map(jnp.copy, final_params)
            raise FlaxtrainError(stop)
        if average["params"] is not None:
            self.model.params = average["params"]
            if val is not None:
                batches, count = self._batches(val, train=False)
                swa_state = state.replace(params=average["params"], opt_state=None, step=jnp.zeros((), jnp.int32),
                                          apply_fn=self.model.module.apply)
                record = loop.summarize(loop.evaluate(swa_state, batches, steps=self.model.steps, num_batches=count,
                                                      verbose=bool(verbose)), "val_")
                history[-1].update({f"swa_{k}": v for k, v in record.items()})
                if verbose:
                    print(f"weights averaged over epochs {first_epoch + swa_from}-{first_epoch + epochs}:  "
                          + "  ".join(f"{k} {v:.4f}" for k, v in record.items()))
        else:
            self.model.params = jax.tree.map(jnp.copy, final_params)
        return history

    def validate(self, val_data: TextDataset | None = None, class_names: list[Any] | None = None,
                 print_report: bool = True) -> Any:
        """Prints a per-class precision/recall/F1 report; returns the confusion matrix (rows true).

        For a regression model, prints and returns {'mae', 'mse', 'rmse', 'r2'}.
        """
        from flaxtrain.api.predictor import get_predictor

        data = val_data or self.val_data
        if data is None or data.labels is None:
            raise FlaxtrainError("no labelled validation data: pass val_data to get_learner or to validate")
        log_probs = get_predictor(self.model, batch_size=self.eval_batch_size).log_probs(data.input_ids)
        if self.model.preproc.regression:
            metrics = regression_metrics(data.labels, log_probs)
            if print_report:
                print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            return metrics
        names = class_names or self.model.preproc.class_names
        if len(names) != self.model.preproc.num_classes:
            raise FlaxtrainError(f"class_names has {len(names)} names but the model has {self.model.preproc.num_classes} classes")
        report, matrix = classification_report(data.labels, log_probs.argmax(-1), names)
        if print_report:
            print(report)
            print("confusion matrix (rows: true class, columns: predicted):")
            print(matrix)
        return matrix


def get_learner(model: Model, train_data: TextDataset | None = None, val_data: TextDataset | None = None,
                batch_size: int = 32, eval_batch_size: int | None = None, **kwargs: Any) -> Learner:
    """ktrain's `get_learner(model, train_data, val_data, batch_size)`."""
    if not isinstance(model, Model):
        raise FlaxtrainError(f"get_learner needs a flaxtrain model (from get_model or text_classifier), not {type(model).__name__}")
    if train_data is None:  # the data get_model was given
        train_data, val_data = model.train_data, val_data if val_data is not None else model.val_data
    if train_data is None:
        raise FlaxtrainError("no training data: pass train_data to get_learner")
    return Learner(model, train_data, val_data, batch_size=batch_size, eval_batch_size=eval_batch_size, **kwargs)
