"""Classification metrics and reports (scikit-learn's definitions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, precision, recall and F1.

    For two classes the positive class is index 1 (binary averaging); otherwise macro averages.

    Args:
      y_true: [n] integer labels.
      y_pred: [n] integer predictions.
      num_classes: number of classes c.

    Returns:
      {'acc', 'precision', 'recall', 'f1', 'macro_f1'} as floats.
    """
    from sklearn import metrics as sk_metrics  # imported on use: sklearn sets KMP_* variables at import

    labels = list(range(num_classes))
    average = "binary" if num_classes == 2 else "macro"
    precision, recall, f1, _ = sk_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=average, pos_label=1, zero_division=0
    )
    return {
        "acc": float(sk_metrics.accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(sk_metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> tuple[str, np.ndarray]:
    """Per-class precision/recall/F1 report and the confusion matrix (rows true, columns predicted)."""
    from sklearn import metrics as sk_metrics  # imported on use: sklearn sets KMP_* variables at import

    labels = list(range(len(class_names)))
    report = sk_metrics.classification_report(
        y_true, y_pred, labels=labels, target_names=[str(c) for c in class_names], digits=4, zero_division=0
    )
    matrix = sk_metrics.confusion_matrix(y_true, y_pred, labels=labels)
    return report, matrix


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """{'mae', 'mse', 'rmse', 'r2'} of float predictions (scikit-learn's definitions)."""
    from sklearn import metrics as sk_metrics  # imported on use: sklearn sets KMP_* variables at import

    mse = float(sk_metrics.mean_squared_error(y_true, y_pred))
    return {
        "mae": float(sk_metrics.mean_absolute_error(y_true, y_pred)),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "r2": float(sk_metrics.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
    }
