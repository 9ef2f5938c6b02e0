import numpy as np

from flaxtrain.eval import classification_metrics, classification_report


def test_binary_metrics_are_of_the_positive_class():
    y_true = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    y_pred = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    m = classification_metrics(y_true, y_pred, 2)
    assert m["acc"] == 6 / 8
    assert m["precision"] == 3 / 4 and m["recall"] == 3 / 4 and m["f1"] == 3 / 4


def test_multiclass_metrics_are_macro_averages():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    m = classification_metrics(y_true, y_pred, 3)
    recalls = [1 / 2, 2 / 2, 2 / 3]
    np.testing.assert_allclose(m["recall"], np.mean(recalls))
    assert m["f1"] == m["macro_f1"]


def test_report_names_classes_and_counts_confusions():
    report, matrix = classification_report(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ["neg", "neu", "pos"])
    assert "neg" in report and "pos" in report and "macro avg" in report
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
