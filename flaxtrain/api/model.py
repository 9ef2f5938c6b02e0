"""Model: a registered network, its params, its preprocessor and so its task; the seed's fit / evaluate / predict."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from flaxtrain import models, tasks
from flaxtrain.api.learner import get_learner
from flaxtrain.errors import FlaxtrainError
from flaxtrain.train import CompiledSteps, compile_steps


class Model:
    """A network with its params and preprocessor; the seed's `fit / evaluate / predict` live here.

    Attributes:
      name: registry name ('textcnn', 'fasttext', 'transformer', 'sequence_tagger', 'qa', 'seq2seq').
      config: the model's frozen config dataclass.
      module: the linen module.
      params: current params (updated by every fit).
      preproc: the preprocessor that encodes its inputs.
      task: the `flaxtrain.tasks.Task` it is trained for (from its network and preprocessor).
      train_data, val_data: the data `get_model` was given (used by `fit`).
      label_smoothing: seq2seq: target smoothing of the training loss.
      generation: seq2seq: a checkpoint's decoding settings (transformers' names).
    """

    def __init__(self, name: str, config: Any, params: Any, preproc: Any, *, train_data: Any = None,
                 val_data: Any = None):
        self.name = name
        self.config = config
        self.module = models.build_model(name, config)
        self.params = params
        self.preproc = preproc
        self.train_data = train_data
        self.val_data = val_data
        self._steps: CompiledSteps | None = None
        self._learner: Any = None
        self.label_smoothing = 0.0
        self.generation: dict[str, Any] = {}

    @property
    def task(self) -> tasks.Task:
        return tasks.for_model(self.name, self.preproc)

    @property
    def steps(self) -> CompiledSteps:
        """The jitted train/eval/predict steps, compiled once per model."""
        if self._steps is None:
            self._steps = compile_steps(self.module.apply, self.loss_fn, predict_fn=self.predict_fn)
        return self._steps

    @property
    def loss_fn(self) -> Any:
        """The task's train/eval loss (cross entropy per text or tagged word, the CRF likelihood, squared
        error, span or token cross entropy)."""
        return self.task.loss_fn(self)

    @property
    def predict_fn(self) -> Any:
        """The task's predict function (log-probabilities, values, tag ids, span logits, token ids)."""
        return self.task.predict_fn(self)

    @property
    def default_lr(self) -> float:
        if getattr(self.config, "encoder", None) is not None:  # fine-tuning a pretrained encoder
            return models.get_entry("transformer").default_lr
        return models.get_entry(self.name).default_lr

    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))

    # The seed's vocabulary: model.fit / model.evaluate / model.predict.
    def fit(self, epochs: int = 1, lr: float | None = None, batch_size: int = 32, verbose: int = 1) -> list[dict[str, float]]:
        """Trains on the data given to `get_model` (validating on its held-out part); returns the history."""
        if self.train_data is None:
            raise FlaxtrainError("this model has no training data: use flaxtrain.get_learner(model, train_data=...)")
        if self._learner is None or self._learner.batch_size != batch_size:
            self._learner = get_learner(self, self.train_data, self.val_data, batch_size=batch_size)
        return self._learner.fit(lr or self.default_lr, epochs, verbose=verbose)

    def evaluate(self, x: Any, y: Any, batch_size: int = 32) -> tuple[float, dict[str, float]]:
        """(loss, {'acc', 'precision', 'recall', 'f1'}) on raw texts and labels; for translation and
        summarization, (loss, BLEU/chrF or ROUGE) on sources and targets."""
        return self.task.predictor(self, batch_size=batch_size).evaluate(x, y)

    def predict(self, texts: str | list[str]) -> Any:
        """Class name of one text, or a list of class names for a list of texts (each task's outputs)."""
        return self.task.predictor(self).predict(texts)

    def predict_proba(self, texts: str | list[str]) -> np.ndarray:
        """Class probabilities [c] of one text or [n, c] of a list."""
        return self.task.predictor(self).predict_proba(texts)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.num_params():,} params, {self.preproc!r})"
