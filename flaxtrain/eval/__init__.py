"""Evaluation metrics."""

from flaxtrain.eval.metrics import classification_metrics, classification_report, regression_metrics

__all__ = ["classification_metrics", "classification_report", "regression_metrics"]
