"""The front end: seed snippet, ktrain vocabulary, save/load, and one-line errors."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError


@pytest.fixture(scope="module")
def trained(tiny_split):
    train, val, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    learner = flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8)
    history = learner.fit(1e-2, 3, verbose=0)
    return model, learner, history


def test_seed_snippet_runs_as_written_on_mocked_imdb():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        # --- the seed's snippet, verbatim but for the package name ---
        data = flaxtrain.text.load_data('imdb', train=True)
        model = flaxtrain.get_model('textcnn', train_data=data, params={'dropout': 0.5})
        model.fit(epochs=5)
        eval_data = flaxtrain.text.load_data('imdb', train=False)
        loss, metrics = model.evaluate(eval_data.val_x, eval_data.val_y)
        label = model.predict("I loved this movie!")
    assert np.isfinite(loss)
    assert set(metrics) >= {"acc", "precision", "recall", "f1"}
    assert label in ("neg", "pos")


def test_fit_learns_and_validate_reports(trained, tiny_split, capsys):
    model, learner, history = trained
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_acc"] >= 0.9
    matrix = learner.validate(class_names=["negative", "positive"])
    out = capsys.readouterr().out
    assert "negative" in out and "positive" in out and "confusion matrix" in out
    assert matrix.shape == (2, 2) and matrix.sum() == len(tiny_split[1])


def test_predictor_predicts_class_names_and_handles_empty_text(trained):
    model, _, _ = trained
    predictor = flaxtrain.get_predictor(model)
    assert predictor.predict("a wonderful and moving film") == "pos"
    assert predictor.predict(["dull tedious plot", "brilliant superb cast"]) == ["neg", "pos"]
    probs = predictor.predict_proba(["dull", ""])
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert predictor.predict("") in ("neg", "pos")


def test_evaluate_on_raw_texts(trained, sentiment_texts):
    model, _, _ = trained
    texts, labels = sentiment_texts
    loss, metrics = model.evaluate(texts[200:], labels[200:])
    assert metrics["acc"] >= 0.9 and loss < 0.5
    with pytest.raises(FlaxtrainError, match="40 texts but 39 labels"):
        model.evaluate(texts[200:], labels[201:])


def test_save_then_load_in_a_new_process_gives_identical_probabilities(trained, tmp_path):
    model, _, _ = trained
    predictor = flaxtrain.get_predictor(model)
    texts = ["a wonderful film", "dull and tedious", "", "the plot"]
    path = predictor.save(tmp_path / "predictor")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "params", "tokenizer.json"]
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["name"] == "textcnn" and config["preprocessor"]["class_names"] == ["neg", "pos"]
    script = textwrap.dedent(f"""
        import json, flaxtrain
        p = flaxtrain.load_predictor({str(path)!r})
        print(json.dumps(p.predict_proba({texts!r}).tolist()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    np.testing.assert_array_equal(np.array(json.loads(out.strip().splitlines()[-1]), np.float32), predictor.predict_proba(texts))


def test_save_replaces_an_existing_predictor_atomically(trained, tmp_path):
    model, _, _ = trained
    predictor = flaxtrain.get_predictor(model)
    target = tmp_path / "p"
    predictor.save(target)
    predictor.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no staging or retired folders left behind
    assert flaxtrain.load_predictor(target).predict("dull") == predictor.predict("dull")


def test_broken_predictor_directories_give_one_line_errors(trained, tmp_path):
    model, _, _ = trained
    good = flaxtrain.get_predictor(model).save(tmp_path / "good")
    with pytest.raises(FlaxtrainError, match="does not exist"):
        flaxtrain.load_predictor(tmp_path / "missing")
    with pytest.raises(FlaxtrainError, match="no config.json"):
        flaxtrain.load_predictor(tmp_path)
    (good / "config.json").write_text("{not json")
    with pytest.raises(FlaxtrainError, match="corrupt"):
        flaxtrain.load_predictor(good)

    weights = flaxtrain.get_predictor(model).save(tmp_path / "weights")
    for path in sorted((weights / "params").rglob("*")):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    with pytest.raises(FlaxtrainError, match="unreadable") as err:
        flaxtrain.load_predictor(weights)
    assert "\n" not in str(err.value)

    tokenizer = flaxtrain.get_predictor(model).save(tmp_path / "tokenizer")
    (tokenizer / "tokenizer.json").write_text("[]")
    with pytest.raises(FlaxtrainError, match="not a valid tokenizer.json"):
        flaxtrain.load_predictor(tokenizer)


def test_front_end_errors():
    with pytest.raises(FlaxtrainError, match="unknown model 'textcn'"):
        flaxtrain.get_model("textcn", train_data=None)
    with pytest.raises(FlaxtrainError, match="did you mean 'imdb'"):
        flaxtrain.text.load_data("imbd")
    with pytest.raises(FlaxtrainError, match="needs a flaxtrain model"):
        flaxtrain.get_learner("not a model")


def test_learner_rejects_data_from_another_preprocessor(trained):
    model, _, _ = trained
    other_train, _, _ = flaxtrain.text.texts_from_array(["a b", "c d", "e f"], ["x", "y", "z"], ["a"], ["x"], verbose=0)
    with pytest.raises(FlaxtrainError, match="encode it with the model's preprocessor"):
        flaxtrain.get_learner(model, train_data=other_train)


def test_fasttext_trains_through_the_same_learner(tiny_split):
    train, val, preproc = tiny_split
    model = flaxtrain.text.text_classifier("fasttext", train, preproc, params={"embed_dim": 16, "num_buckets": 97}, verbose=0)
    history = flaxtrain.get_learner(model, train, val, batch_size=8).fit(2e-2, 3, verbose=0)
    assert history[-1]["val_acc"] >= 0.9


def test_swa_keeps_the_mean_of_epoch_weights(tiny_split):
    import jax

    train, val, preproc = tiny_split
    params = {"embed_dim": 8, "num_filters": 4, "kernel_sizes": (3,)}

    def run(epochs, **kwargs):
        model = flaxtrain.text.text_classifier("textcnn", train, preproc, params=params, verbose=0)
        learner = flaxtrain.get_learner(model, train, val, batch_size=16)
        history = learner.fit(1e-2, epochs, verbose=0, **kwargs)
        return model, learner, history

    one, _, _ = run(1)
    model, learner, history = run(2, swa_from=1)
    last = learner._state.params
    expected = jax.tree.map(lambda a, b: (a + b) / 2, one.params, last)
    for got, want in zip(jax.tree.leaves(model.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert "swa_val_acc" in history[-1]
    with pytest.raises(FlaxtrainError, match="swa_from must lie between 1 and epochs"):
        learner.fit(1e-2, 2, swa_from=3)
