"""Evaluation metrics."""

from flaxtrain.eval.entities import entity_metrics
from flaxtrain.eval.generation import generation_metrics, rouge_metrics, translation_metrics
from flaxtrain.eval.metrics import classification_metrics, classification_report, regression_metrics
from flaxtrain.eval.squad import squad_metrics

__all__ = ["classification_metrics", "classification_report", "entity_metrics", "regression_metrics", "squad_metrics",
           "generation_metrics", "rouge_metrics", "translation_metrics"]
