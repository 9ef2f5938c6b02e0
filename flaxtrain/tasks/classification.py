"""Text classification (TextCNN, fastText, pretrained encoders): cross entropy per text, class names out."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub, ops
from flaxtrain.data import TextDataset, TextPreprocessor
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import classification_metrics, classification_report
from flaxtrain.eval.explanation import Explanation
from flaxtrain.tasks.base import Predictor, Task, TaskModel
from flaxtrain.train import loop

Batch = dict[str, jax.Array]


def classification_loss(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array],
                        deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross entropy of a text classifier on batch {'input_ids', 'label', 'weight'}."""
    logits = apply_fn({"params": params}, batch["input_ids"], deterministic=deterministic, rngs=rngs)
    sums = ops.classification_sums(logits, batch["label"], batch["weight"])
    return sums["loss_sum"], sums


def predict_log_probs(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """Float32 log-probabilities [b, c] of a classifier on batch['input_ids']."""
    logits = apply_fn({"params": params}, batch["input_ids"], deterministic=True)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


class ClassifierPredictor(Predictor):
    """Predicts class names and probabilities of raw texts."""

    hf_head = "sequence"

    def log_probs(self, input_ids: list[np.ndarray]) -> np.ndarray:
        """Float32 log-probabilities [n, c] of encoded texts (regression: predictions [n]), in their order."""
        data = TextDataset(texts=[""] * len(input_ids), input_ids=input_ids, labels=None, preproc=self.preproc)
        batches, count = data.batches(batch_size=self.rows_per_batch(len(input_ids)))
        return loop.predict(self.model.params, batches, steps=self.model.steps, num_examples=len(input_ids),
                            num_batches=count)

    def predict_proba(self, texts: str | list[str]) -> np.ndarray:
        """Class probabilities: [c] for one text, [n, c] for a list."""
        single = isinstance(texts, str)
        probs = np.exp(self.log_probs(self.preproc.encode([texts] if single else texts)))
        return probs[0] if single else probs

    def predict(self, texts: str | list[str], return_proba: bool = False) -> Any:
        """Class name of one text (or a list of names); with return_proba, (names, probabilities)."""
        probs = self.predict_proba(texts)
        labels = self.preproc.decode_labels(np.atleast_2d(probs).argmax(-1))
        result = labels[0] if isinstance(texts, str) else labels
        return (result, probs) if return_proba else result

    def evaluate(self, texts: list[str], labels: Any) -> tuple[float, dict[str, float]]:
        """(mean loss, {'acc', 'precision', 'recall', 'f1'}) on raw texts and their labels.

        F1 and friends are of the positive class (index 1) for two classes, macro averages otherwise.
        """
        data = self._labelled(texts, labels)
        log_probs = self.log_probs(data.input_ids)
        loss = float(-np.mean(log_probs[np.arange(len(data)), data.labels]))
        return loss, classification_metrics(data.labels, log_probs.argmax(-1), self.preproc.num_classes)

    def explain(self, text: str, class_name: Any = None, *, steps: int = 64) -> Explanation:
        """Per-token attributions of the prediction on `text` by integrated gradients (eval/attribution.py):
        [(token, attribution), ...] toward `class_name`'s probability (default: the predicted class; for
        a regressor, toward the predicted value), from a baseline of zero token embeddings. They add up
        to score - baseline (`.error` is the quadrature's remainder; more `steps`, less error). The result
        renders itself: `.html()` (Jupyter shows it coloured), `.terminal()`, `.plot(path)`.
        """
        if not isinstance(text, str):
            raise FlaxtrainError(f"explain takes one text (a str), got {type(text).__name__}: call it once per text")
        ids, tokens = self.preproc.tokens_of(text)
        if len(ids) == 0:
            raise FlaxtrainError(f"{text!r} has no tokens to explain")
        length = next((b for b in self.preproc.buckets if b >= len(ids)), len(ids))
        row = np.full((1, length), self.preproc.pad_id, np.int32)
        row[0, :len(ids)] = ids
        target, name = self._explained(row, class_name)
        return self._attribute({"input_ids": row}, length=len(ids), tokens=tokens, target=target, name=name,
                               score=self._explain_score, steps=steps)

    @staticmethod
    def _explain_score(outputs: jax.Array, target: jax.Array) -> jax.Array:
        return jax.nn.softmax(outputs[0].astype(jnp.float32))[target]

    def _explained(self, row: np.ndarray, class_name: Any) -> tuple[int, Any]:
        """(class index, class name) an explanation is toward."""
        names = list(self.preproc.class_names)
        if class_name is None:
            index = int(self.log_probs([row[0][row[0] != self.preproc.pad_id]])[0].argmax())
            return index, names[index]
        if class_name not in names:
            raise FlaxtrainError(f"class {class_name!r} is not one of the model's classes {names}")
        return names.index(class_name), class_name

    def _labelled(self, texts: list[str], labels: Any) -> TextDataset:
        data = self.preproc.preprocess_test(texts, labels)
        if len(data) == 0:
            raise FlaxtrainError("no texts to evaluate: pass at least one labelled text")
        return data

    def _save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes a pretrained-encoder classifier in Hugging Face format (PyTorch `transformers` loads it
        as *ForSequenceClassification)."""
        if getattr(self.model.config, "encoder", None) is None:
            return super()._save_pretrained(directory)
        return hub.save_pretrained(directory, self.model.config.encoder, self.model.params, self.preproc.tokenizer,
                                   task="sequence", class_names=self.preproc.class_names, **self._hf_options())

    def _hf_options(self) -> dict[str, Any]:
        return {}


class TextClassification(Task):
    name = "text_classification"
    family = "text_classification"
    dataset = TextDataset
    preprocessor = TextPreprocessor
    predictor = ClassifierPredictor

    def matches(self, preproc: Any) -> bool:
        return not preproc.regression

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return classification_loss

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return predict_log_probs

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[jax.Array, ...]], tuple[str, ...]]:
        """Class probabilities [b, c] of token ids [b, L]."""
        apply_fn = model.module.apply

        def serving(params: Any, input_ids: jax.Array) -> tuple[jax.Array, ...]:
            return (jnp.exp(predict_log_probs(apply_fn, params, {"input_ids": input_ids})),)

        return serving, ("probabilities",)

    def report(self, predictor: ClassifierPredictor, data: TextDataset, *, class_names: Sequence[Any] | None,
               print_report: bool) -> np.ndarray:
        """Prints a per-class precision/recall/F1 report; returns the confusion matrix (rows true)."""
        preproc = predictor.preproc
        names = class_names or preproc.class_names
        if len(names) != preproc.num_classes:
            raise FlaxtrainError(f"class_names has {len(names)} names but the model has {preproc.num_classes} classes")
        log_probs = predictor.log_probs(data.input_ids)
        report, matrix = classification_report(data.labels, log_probs.argmax(-1), names)
        if print_report:
            print(report)
            print("confusion matrix (rows: true class, columns: predicted):")
            print(matrix)
        return matrix

    def top_losses(self, predictor: ClassifierPredictor, data: TextDataset, losses: np.ndarray, n: int) -> list[tuple]:
        """(index, loss, true class, predicted class)."""
        order = np.argsort(-losses, kind="stable")[:n]
        outputs = predictor.log_probs(data.input_ids)
        truth = predictor.preproc.decode_labels(data.labels[order])
        predicted = predictor.preproc.decode_labels(outputs[order].argmax(-1))
        return [(int(i), float(losses[i]), t, p) for i, t, p in zip(order, truth, predicted)]

    def format_predictions(self, predictor: ClassifierPredictor, texts: list[str]) -> list[str]:
        """'label<TAB>probability<TAB>text' per text."""
        labels, probs = predictor.predict(texts, return_proba=True)
        return [f"{label}\t{row.max():.4f}\t{text}" for text, label, row in zip(texts, labels, probs)]
