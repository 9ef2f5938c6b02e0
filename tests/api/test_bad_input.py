"""ktrain's idioms and bad input: each a working call or a one-line FlaxtrainError naming the problem."""

import numpy as np
import pandas as pd
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import entity_metrics, squad_metrics


@pytest.fixture(scope="module")
def int_labelled(sentiment_texts):
    """TextCNN trained on int labels named by class_names (texts_from_array's ktrain idiom)."""
    texts, labels = sentiment_texts
    ints = [1 if label == "pos" else 0 for label in labels]
    trn, val, preproc = flaxtrain.text.texts_from_array(texts[:200], ints[:200], texts[200:], ints[200:],
                                                        class_names=["neg", "pos"], maxlen=24, max_features=100, verbose=0)
    model = flaxtrain.text.text_classifier("textcnn", trn, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=8)
    learner.fit(1e-2, 3, verbose=0)
    return model, learner, preproc, texts[200:], ints[200:]


def test_int_labels_named_by_class_names_work_at_test_time_too(int_labelled):
    model, learner, preproc, texts, ints = int_labelled
    loss, metrics = model.evaluate(texts, ints)
    names = ["pos" if i else "neg" for i in ints]
    assert (loss, metrics) == model.evaluate(texts, names)  # the same labels, as indices or as names
    majority = max(np.mean(ints), 1 - np.mean(ints))
    assert metrics["acc"] >= majority + 0.2, metrics
    np.testing.assert_array_equal(preproc.preprocess_test(texts, ints).labels, ints)
    matrix = learner.validate(preproc.preprocess_test(texts, ints), print_report=False)
    assert matrix.sum() == len(texts) and np.trace(matrix) == round(metrics["acc"] * len(texts))
    with pytest.raises(FlaxtrainError, match=r"label 2 \(example 0\) is not one of the classes \['neg', 'pos'\]"):
        model.evaluate(texts[:1], [2])


def test_float_labels_without_class_names_are_regression(sentiment_texts):
    texts, labels = sentiment_texts
    targets = np.array([0.9 if label == "pos" else 0.1 for label in labels]) + np.linspace(0, 0.05, len(labels))
    trn, val, preproc = flaxtrain.text.texts_from_array(texts, targets, maxlen=24, max_features=100, verbose=0)
    assert preproc.regression and preproc.class_names is None and trn.labels.dtype == np.float32
    frame = pd.DataFrame({"text": texts, "score": targets})
    assert flaxtrain.text.texts_from_df(frame, "text", "score", verbose=0)[2].regression
    model = flaxtrain.text.text_classifier("textcnn", trn, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    flaxtrain.get_learner(model, trn, val, batch_size=8).fit(1e-2, 3, verbose=0)
    mse, metrics = model.evaluate(val.texts, val.labels)
    assert mse == metrics["mse"] < np.var(val.labels) / 2, metrics  # well below predicting the mean
    assert isinstance(model.predict("a superb and moving film"), float)


@pytest.mark.parametrize("labels, match", [
    (["pos", "neg", np.nan, "pos"], r"y_train\[2\] is missing \(nan\)"),
    ([1, 0, None, 1], r"y_train\[2\] is missing \(None\)"),
    ([1.0, 0.0, np.nan, 1.0], r"y_train\[2\] is missing \(nan\)"),
    (np.array([[0, 1], [1, 0], [0, 0], [0, 1]]), r"y_train row 2 marks no class \(all zeros\)"),
    (np.array([[0, 1], [np.nan, 1], [1, 0], [0, 1]]), r"y_train row 1 has a missing or non-finite value"),
])
def test_missing_and_empty_labels_name_their_row(labels, match):
    texts = ["good film", "bad film", "fine plot", "great cast"]
    class_names = ["neg", "pos"] if np.asarray(labels).ndim == 2 else None
    with pytest.raises(FlaxtrainError, match=match):
        flaxtrain.text.texts_from_array(texts, labels, texts, labels, class_names=class_names, verbose=0)


def test_more_bad_input_gets_one_line_errors(int_labelled, tmp_path):
    model, _, preproc, texts, _ = int_labelled
    trn = preproc.preprocess_test(texts, ["neg", "pos"] * (len(texts) // 2))
    predictor = flaxtrain.get_predictor(model)
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (lambda: flaxtrain.text.texts_from_array(["a b", "c d"], ["x", "y"], max_features=0, verbose=0),
         "max_features must be at least 3"),
        (lambda: predictor.predict(None), "texts must be a text or a list of texts, not NoneType"),
        (lambda: predictor.predict(123), "texts must be a text or a list of texts, not int"),
        (lambda: predictor.predict_proba(None), "not NoneType"),
        (lambda: flaxtrain.get_learner(model, trn, batch_size=0), "batch_size must be a positive whole number of examples or 'auto', got 0"),
        (lambda: flaxtrain.get_learner(model, trn, batch_size=-8), "got -8"),
        (lambda: flaxtrain.get_learner(model, trn, batch_size=8, eval_batch_size=0), "eval_batch_size must be a positive"),
        (lambda: flaxtrain.load_predictor(tmp_path / "file.txt"), "is a file, not a predictor directory"),
        (lambda: squad_metrics(["a"], [["a"], ["b"]]), "1 predictions but 2 reference answer lists"),
        (lambda: squad_metrics([], []), "no predictions to score"),
        (lambda: entity_metrics([["O"]], []), "1 true tag sequences but 0 predicted ones"),
    ]
    for call, match in cases:
        with pytest.raises(FlaxtrainError, match=match) as err:
            call()
        assert "\n" not in str(err.value)


def test_nothing_downloads_unless_asked(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    calls = []
    real = tfds.load
    monkeypatch.setattr(tfds, "load", lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    with pytest.raises(FlaxtrainError, match="imdb_reviews is not prepared in .*: pass download=True") as err:
        flaxtrain.text.load_data("imdb", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    assert calls and calls[-1]["download"] is False
    assert not any(tmp_path.rglob("*.tar.gz")) and not (tmp_path / "downloads").exists()
