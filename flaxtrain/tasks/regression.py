"""Text regression (a one-output head on float targets): squared error per text, values out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import ops
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import regression_metrics
from flaxtrain.tasks.base import TaskModel
from flaxtrain.tasks.classification import ClassifierPredictor, TextClassification

Batch = dict[str, jax.Array]


def regression_loss(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array],
                    deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Squared error of a one-output text regressor on batch {'input_ids', 'label' (float targets), 'weight'}."""
    outputs = apply_fn({"params": params}, batch["input_ids"], deterministic=deterministic, rngs=rngs)
    sums = ops.regression_sums(outputs[:, 0], batch["label"], batch["weight"])
    return sums["loss_sum"], sums


def predict_values(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """Float32 predictions [b] of a one-output regressor on batch['input_ids']."""
    outputs = apply_fn({"params": params}, batch["input_ids"], deterministic=True)
    return outputs[:, 0].astype(jnp.float32)


class RegressorPredictor(ClassifierPredictor):
    """Predicts a float of each raw text: `predict(text)` -> float, `predict(texts)` -> [n] float32."""

    def predict_proba(self, texts: Any) -> np.ndarray:
        raise FlaxtrainError("a regression model has no class probabilities: use predict(texts) for its values")

    def predict(self, texts: str | list[str], return_proba: bool = False) -> Any:
        if return_proba:
            raise FlaxtrainError("a regression model has no class probabilities: drop return_proba")
        values = self.log_probs(self.preproc.encode([texts] if isinstance(texts, str) else texts))
        return float(values[0]) if isinstance(texts, str) else values

    def evaluate(self, texts: list[str], labels: Any) -> tuple[float, dict[str, float]]:
        """(mean squared error, {'mae', 'mse', 'rmse', 'r2'}) on raw texts and their targets."""
        data = self._labelled(texts, labels)
        metrics = regression_metrics(data.labels, self.log_probs(data.input_ids))
        return metrics["mse"], metrics

    def _hf_options(self) -> dict[str, Any]:
        return {"problem_type": "regression"}

    @staticmethod
    def _explain_score(outputs: jax.Array, target: jax.Array) -> jax.Array:
        del target
        return outputs[0, 0].astype(jnp.float32)

    def _explained(self, row: np.ndarray, class_name: Any) -> tuple[int, Any]:
        if class_name is not None:
            raise FlaxtrainError("a regressor's explanation is toward its predicted value: drop class_name")
        return 0, "value"


class TextRegression(TextClassification):
    name = "text_regression"
    predictor = RegressorPredictor
    metric = "mae"

    def matches(self, preproc: Any) -> bool:
        return preproc.regression

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return regression_loss

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return predict_values

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[jax.Array, ...]], tuple[str, ...]]:
        """Predicted values [b] of token ids [b, L]."""
        apply_fn = model.module.apply

        def serving(params: Any, input_ids: jax.Array) -> tuple[jax.Array, ...]:
            return (predict_values(apply_fn, params, {"input_ids": input_ids}),)

        return serving, ("predictions",)

    def report(self, predictor: RegressorPredictor, data: Any, *, class_names: Sequence[Any] | None,
               print_report: bool) -> dict[str, float]:
        """Prints and returns {'mae', 'mse', 'rmse', 'r2'}."""
        metrics = regression_metrics(data.labels, predictor.log_probs(data.input_ids))
        if print_report:
            print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    def top_losses(self, predictor: RegressorPredictor, data: Any, losses: np.ndarray, n: int) -> list[tuple]:
        """(index, squared error, target, prediction)."""
        order = np.argsort(-losses, kind="stable")[:n]
        outputs = predictor.log_probs(data.input_ids)
        return [(int(i), float(losses[i]), float(data.labels[i]), float(outputs[i])) for i in order]

    def format_predictions(self, predictor: RegressorPredictor, texts: list[str]) -> list[str]:
        """'value<TAB>text' per text."""
        return [f"{value:.4f}\t{text}" for value, text in zip(predictor.predict(texts), texts)]
