"""A linen module written here trains on the Learner: named and user losses, lr_find, one-cycle, checkpoints,
strategies, and a saved predictor that imports the module again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from conftest import quick_compile_env, worker_xla_flags
from flaxtrain.errors import FlaxtrainError


class MeanPoolClassifier(nn.Module):
    """Embeddings averaged over the real tokens, a hidden layer with dropout, class logits."""

    vocab_size: int
    num_classes: int
    width: int = 16
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, input_ids, *, deterministic: bool):
        mask = (input_ids != 0).astype(jnp.float32)[..., None]  # [b, t, 1]
        x = nn.Embed(self.vocab_size, self.width)(input_ids) * mask
        x = x.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
        x = nn.Dropout(self.dropout_rate)(nn.relu(nn.Dense(self.width)(x)), deterministic=deterministic)
        return nn.Dense(self.num_classes)(x)


class NoDropout(nn.Module):
    """A module whose __call__ takes no `deterministic`."""

    vocab_size: int

    @nn.compact
    def __call__(self, input_ids):
        return nn.Dense(1)(nn.Embed(self.vocab_size, 4)(input_ids).mean(axis=1))


def cross_entropy(logits, batch):
    """The user's loss: per-example cross entropy, as optax writes it."""
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])


@pytest.fixture(scope="module")
def data(sentiment_texts):
    texts, labels = sentiment_texts
    return flaxtrain.text.texts_from_array(texts[:200], labels[:200], texts[200:], labels[200:], maxlen=24,
                                           max_features=200, verbose=0)


def test_a_module_of_ones_own_trains_predicts_saves_and_loads(data, tmp_path):
    trn, val, preproc = data
    module = MeanPoolClassifier(vocab_size=preproc.vocab_size, num_classes=2)
    learner = flaxtrain.get_learner(module, train_data=trn, val_data=val, loss="classification", batch_size=16)
    lr = learner.lr_find(1e-5, 1.0, num_steps=30, verbose=0)
    assert 1e-5 < lr < 1.0
    history = learner.fit_onecycle(1e-2, 4, verbose=0, checkpoint_dir=tmp_path / "ckpt")
    assert history[-1]["val_acc"] >= 0.9, history  # majority class: 0.5
    predictor = flaxtrain.get_predictor(learner.model, preproc)
    assert predictor.predict("a wonderful, moving film") == "pos" and predictor.predict("dull and tedious") == "neg"
    saved = predictor.save(tmp_path / "p")
    section = json.loads((saved / "config.json").read_text())["model"]
    assert section["name"] == "custom" and section["config"]["module"].endswith(":MeanPoolClassifier")
    assert section["config"]["fields"] == {"vocab_size": preproc.vocab_size, "num_classes": 2, "width": 16, "dropout_rate": 0.1}
    again = flaxtrain.load_predictor(saved)
    probe = ["superb", "the plot is dull", "a story"]
    np.testing.assert_array_equal(again.predict_proba(probe), predictor.predict_proba(probe))
    assert again.explain("a brilliant film").target == "pos"  # explanations find its nn.Embed too

    # Resume from the checkpoints: a new learner on the same module finds the run finished, with its weights.
    resumed = flaxtrain.get_learner(MeanPoolClassifier(vocab_size=preproc.vocab_size, num_classes=2), train_data=trn,
                                    val_data=val, loss="classification", batch_size=16)
    resumed.fit_onecycle(1e-2, 4, verbose=0, checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert [r["epoch"] for r in resumed.history] == [r["epoch"] for r in history]
    for a, b in zip(jax.tree.leaves(resumed.model.params), jax.tree.leaves(learner.model.params)):
        np.testing.assert_array_equal(a, b)


def test_a_user_loss_function_equals_the_named_loss_it_writes_out(data):
    trn, val, preproc = data
    runs = {}
    for loss in ("classification", cross_entropy):
        module = MeanPoolClassifier(vocab_size=preproc.vocab_size, num_classes=2)
        learner = flaxtrain.get_learner(module, train_data=trn, val_data=val, loss=loss, batch_size=16)
        runs[loss if isinstance(loss, str) else "user"] = (learner.fit(5e-3, 2, verbose=0), learner.model.params)
    (named, named_params), (user, user_params) = runs["classification"], runs["user"]
    for a, b in zip(named, user):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["val_acc"] == b["val_acc"]
    for a, b in zip(jax.tree.leaves(named_params), jax.tree.leaves(user_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_regression_and_a_module_without_deterministic(data):
    texts = ["a b c", "a a", "c c c c", "b"] * 6
    trn, val, preproc = flaxtrain.text.texts_from_array(texts, [float(len(t.split())) for t in texts], texts[:4],
                                                        [3.0, 2.0, 4.0, 1.0], maxlen=8, verbose=0)
    learner = flaxtrain.get_learner(NoDropout(vocab_size=preproc.vocab_size), trn, val, loss="regression", batch_size=8)
    history = learner.fit(5e-2, 3, verbose=0)
    assert history[-1]["loss"] < history[0]["loss"] and "val_mae" in history[-1]


def test_custom_module_mistakes_get_one_line_errors(data, tmp_path):
    trn, val, preproc = data
    module = MeanPoolClassifier(vocab_size=preproc.vocab_size, num_classes=2)
    with pytest.raises(FlaxtrainError, match="needs loss="):
        flaxtrain.get_learner(module, trn, val)
    with pytest.raises(FlaxtrainError, match="loss 'regression' does not fit text_classification data: use loss='classification'"):
        flaxtrain.get_learner(module, trn, val, loss="regression")
    with pytest.raises(FlaxtrainError, match="unknown loss 'ce'"):
        flaxtrain.get_learner(module, trn, val, loss="ce")
    with pytest.raises(FlaxtrainError, match=r"MeanPoolClassifier.init on a training row \(input_ids \(1, \d+\)\) failed"):
        flaxtrain.get_learner(MeanPoolClassifier(vocab_size=preproc.vocab_size, num_classes=2, width=-3), trn, loss="classification")
    with pytest.raises(FlaxtrainError, match="loss= is for custom modules"):
        flaxtrain.get_learner(flaxtrain.get_model("fasttext", trn, val), trn, loss="classification")

    class Local(nn.Module):  # trains, but a saved predictor could not name it
        @nn.compact
        def __call__(self, input_ids, *, deterministic: bool):
            return nn.Dense(2)(nn.Embed(preproc.vocab_size, 4)(input_ids).mean(axis=1))

    learner = flaxtrain.get_learner(Local(), trn, loss="classification", batch_size=32)
    learner.fit(1e-3, 1, verbose=0)
    with pytest.raises(FlaxtrainError, match="Local is defined inside a function"):
        flaxtrain.get_predictor(learner.model, preproc).save(tmp_path / "local")


WORKER = """
import json, sys
import jax, numpy as np
sys.path[:0] = {paths!r}
import flaxtrain, flaxtrain.text
from conftest import make_sentiment_texts
from test_custom_model import MeanPoolClassifier
texts, labels = make_sentiment_texts(96)
trn, val, preproc = flaxtrain.text.texts_from_array(texts[:64], labels[:64], texts[64:], labels[64:], maxlen=16, verbose=0)
out = {{}}
# Sharded dropout draws the one-device masks (partitionable threefry keys); pmap's replicas draw their own, so
# pmap is compared without dropout.
for name, strategy, mesh, rate in (("single", "single", None, 0.1), ("spmd", "spmd", (2, 4, 1), 0.1),
                                   ("single-0", "single", None, 0.0), ("pmap-0", "pmap", None, 0.0)):
    module = MeanPoolClassifier(vocab_size=preproc.vocab_size, num_classes=2, width=8, dropout_rate=rate)
    learner = flaxtrain.get_learner(module, trn, val, loss="classification", batch_size=16, strategy=strategy, mesh=mesh)
    history = learner.fit(1e-2, 2, verbose=0)
    out[name] = {{"loss": [r["loss"] for r in history], "params": [np.asarray(x).tolist() for x in jax.tree.leaves(learner.model.params)]}}
print("RESULT" + json.dumps(out))
"""


def test_strategies_train_a_custom_module_as_one_device_does(tmp_path):
    tests = Path(__file__).resolve().parents[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(paths=[str(tests), str(tests / "api")]))
    env = {**os.environ, **quick_compile_env(), "XLA_FLAGS": worker_xla_flags(8)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    for name, reference in (("spmd", "single"), ("pmap-0", "single-0")):
        np.testing.assert_allclose(result[name]["loss"], result[reference]["loss"], rtol=1e-5, err_msg=name)
        for a, b in zip(result[name]["params"], result[reference]["params"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
