"""fit_onecycle(..., seeds=K): K runs in one vmapped job, each equal to the run a learner with its seed makes alone."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from make_predictor_folders import tiny_bert  # noqa: E402

SIZES = dict(embed_dim=8, num_filters=4, kernel_sizes=(2, 3), dropout_rate=0.3)


@pytest.fixture(scope="module")
def data(sentiment_texts):
    texts, labels = sentiment_texts
    return flaxtrain.text.texts_from_array(texts[:120], labels[:120], texts[200:], labels[200:], maxlen=24,
                                           max_features=200, verbose=0)


def test_each_vmapped_run_equals_the_run_of_its_seed_alone(data):
    trn, val, _ = data
    model = flaxtrain.get_model("textcnn", trn, val, params=SIZES, seed=5)
    learner = flaxtrain.get_learner(model, trn, val, batch_size=16, seed=5)
    history = learner.fit_onecycle(1e-2, 2, seeds=3, verbose=0)
    assert [run.seed for run in learner.runs] == [5, 6, 7]
    for i, run in enumerate(learner.runs):
        alone = flaxtrain.get_model("textcnn", trn, val, params=SIZES, seed=5 + i)  # init, data order, dropout: seed 5 + i
        own_learner = flaxtrain.get_learner(alone, trn, val, batch_size=16, seed=5 + i)
        own = own_learner.fit_onecycle(1e-2, 2, verbose=0)
        if i == 0:
            run_zero = own_learner
        for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        for mine, theirs in zip(run.history, own):
            for key in ("loss", "acc", "val_loss", "val_acc"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), (i, key)
    # The summary: mean and sample standard deviation of each metric over the three runs.
    accs = [run.history[-1]["val_acc"] for run in learner.runs]
    assert history[-1]["epoch"] == 2 and history[-1]["val_acc"] == pytest.approx(np.mean(accs))
    assert history[-1]["val_acc_std"] == pytest.approx(np.std(accs, ddof=1))
    assert len({round(run.history[-1]["loss"], 6) for run in learner.runs}) == 3  # three different runs
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(learner.runs[0].params)):
        np.testing.assert_array_equal(a, b)
    # The learner goes on as run 0's learner alone: its optimizer state, step, epochs (data order) and lr trace.
    assert learner.lr_trace == run_zero.lr_trace and len(learner.lr_trace) == 2 * learner._steps_per_epoch()
    again, theirs = learner.fit(1e-3, 1, verbose=0), run_zero.fit(1e-3, 1, verbose=0)
    assert again[0]["epoch"] == theirs[0]["epoch"] == 3 and again[0]["loss"] == pytest.approx(theirs[0]["loss"], rel=1e-5)
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(run_zero.model.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_seeds_keep_a_pretrained_encoder_and_vary_the_head(sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    t = flaxtrain.text.Transformer(str(tiny_bert(tmp_path, texts)), maxlen=16)
    trn = t.preprocess_train(texts[:32], labels[:32], verbose=0)
    model = t.get_classifier()
    first, second = model.initial_params(0), model.initial_params(1)
    for a, b in zip(jax.tree.leaves(first["encoder"]), jax.tree.leaves(model.params["encoder"])):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first["classifier"]["kernel"], second["classifier"]["kernel"])
    learner = flaxtrain.get_learner(model, trn, batch_size=16)
    learner.fit_onecycle(1e-3, 1, seeds=2, verbose=0)
    assert len(learner.runs) == 2 and "val_loss" not in learner.history[-1]


def test_seed_mistakes_get_one_line_errors(data, tmp_path):
    trn, val, _ = data
    learner = flaxtrain.get_learner(flaxtrain.get_model("fasttext", trn, val), trn, val, batch_size=16)
    with pytest.raises(FlaxtrainError, match="seeds must be a whole number"):
        learner.fit_onecycle(1e-2, 1, seeds=0)
    with pytest.raises(FlaxtrainError, match="without checkpoint_dir"):
        learner.fit_onecycle(1e-2, 1, seeds=2, checkpoint_dir=tmp_path)
    bf16 = flaxtrain.get_learner(flaxtrain.get_model("fasttext", trn, val), trn, val, batch_size=16, precision="bfloat16")
    with pytest.raises(FlaxtrainError, match="seeds= vmaps its runs on one device in float32"):
        bf16.fit_onecycle(1e-2, 1, seeds=2)
