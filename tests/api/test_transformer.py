"""Pretrained encoders through the same Learner and Predictor: flaxtrain.text.Transformer and get_model."""

import jax
import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain import hub
from flaxtrain.errors import FlaxtrainError

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random BERT with MiniLM's uncased word-piece vocabulary, saved in Hugging Face format."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("bert")
    transformers.BertModel(config).save_pretrained(path, safe_serialization=True)
    hub.load_tokenizer("minilm").save(str(path / "tokenizer.json"))
    return path


def test_transformer_preprocesses_with_special_tokens(checkpoint):
    t = flaxtrain.text.Transformer(str(checkpoint), maxlen=8, class_names=["neg", "pos"])
    data = t.preprocess_train(["a wonderful film", "one two three four five six seven eight nine"], ["pos", "neg"],
                              verbose=0)
    cls, sep = t.tokenizer.token_to_id("[CLS]"), t.tokenizer.token_to_id("[SEP]")
    assert data.input_ids[0][0] == cls and data.input_ids[0][-1] == sep
    assert len(data.input_ids[1]) == 8 and data.input_ids[1][-1] == sep  # truncated, [SEP] kept
    with pytest.raises(FlaxtrainError, match="exceeds the 64 positions"):
        flaxtrain.text.Transformer(str(checkpoint), maxlen=100)


def test_fine_tune_predict_save_load(checkpoint, sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    t = flaxtrain.text.Transformer(str(checkpoint), maxlen=32)
    trn = t.preprocess_train(texts[:200], labels[:200], verbose=0)
    val = t.preprocess_test(texts[200:], labels[200:])
    model = t.get_classifier()
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
    history = learner.fit(3e-3, 4, verbose=0)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_acc"] >= 0.9, history
    predictor = flaxtrain.get_predictor(learner.model, preproc=t.preproc)
    assert predictor.predict("a brilliant and moving story") == "pos"
    path = predictor.save(tmp_path / "p")
    again = flaxtrain.load_predictor(path)
    probe = ["dull and tedious", "superb", ""]
    np.testing.assert_array_equal(again.predict_proba(probe), predictor.predict_proba(probe))

    # Hugging Face format: PyTorch transformers reproduces flaxtrain's probabilities.
    exported = predictor.save_pretrained(tmp_path / "hf")
    reference = transformers.BertForSequenceClassification.from_pretrained(str(exported)).eval()
    encoded = [list(ids) for ids in t.preproc.encode(probe[:2])]
    length = max(map(len, encoded))
    ids = torch.tensor([e + [0] * (length - len(e)) for e in encoded])
    with torch.no_grad():
        logits = reference(input_ids=ids, attention_mask=(ids != 0).long()).logits
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), predictor.predict_proba(probe[:2]), atol=1e-5)
    assert reference.config.id2label == {0: "neg", 1: "pos"}


def test_get_model_takes_a_checkpoint_folder(checkpoint, sentiment_texts):
    texts, labels = sentiment_texts
    data = flaxtrain.text.LoadedData("synthetic", texts[:40], labels[:40], texts[40:50], labels[40:50], ["neg", "pos"])
    model = flaxtrain.get_model(str(checkpoint), train_data=data, maxlen=32)
    assert model.name == "transformer" and model.config.num_classes == 2
    assert len(model.val_data) == 10
    with pytest.raises(FlaxtrainError, match="unknown model 'minilmm'"):
        flaxtrain.get_model("minilmm", train_data=data)


def test_the_new_head_starts_as_in_a_whole_model_initialisation(checkpoint):
    """get_classifier never initialises the encoder it replaces (XLA drops those draws): the head's params are
    the ones a whole-model initialisation with the same seed gives, the encoder's the checkpoint's."""
    from flaxtrain import models
    from flaxtrain.api.weights import init_model_params

    model = flaxtrain.text.Transformer(str(checkpoint), maxlen=16, class_names=["a", "b", "c"]).get_classifier(seed=3)
    whole = init_model_params(models.build_model("transformer", model.config), 3)
    assert set(model.params) == set(whole) and "classifier" in whole
    for name in set(whole) - {"encoder"}:
        jax.tree.map(np.testing.assert_array_equal, model.params[name], whole[name])
    _, pretrained, _ = hub.load_pretrained(str(checkpoint), task="sequence")
    jax.tree.map(np.testing.assert_array_equal, model.params["encoder"], pretrained["encoder"])
    assert not np.array_equal(whole["encoder"]["word"]["embedding"], pretrained["encoder"]["word"]["embedding"])


def test_pretrained_minilm_loads_by_name():
    t = flaxtrain.text.Transformer("minilm", maxlen=64, class_names=["neg", "pos"])
    model = t.get_classifier()
    assert model.config.encoder.hidden_size == 384 and model.config.encoder.num_layers == 6
    probs = flaxtrain.get_predictor(model).predict_proba(["a fine film"])
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)


def test_regression_model_trains_predicts_and_exports(checkpoint, sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    targets = np.where(np.asarray(labels) == "pos", 1.0, 0.0).astype(np.float32)  # a learnable score
    t = flaxtrain.text.Transformer(str(checkpoint), maxlen=32)
    trn = t.preprocess_train(texts[:200], targets[:200], verbose=0)
    val = t.preprocess_test(texts[200:], targets[200:])
    assert t.preproc.regression and trn.labels.dtype == np.float32
    with pytest.raises(FlaxtrainError, match="use get_regression_model"):
        t.get_classifier()
    model = t.get_regression_model()
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
    history = learner.fit(3e-3, 6, verbose=0)
    assert history[-1]["val_mae"] < 0.2 and history[-1]["loss"] < history[0]["loss"], history  # the mean: mae 0.5
    metrics = learner.validate(print_report=False)
    assert metrics["r2"] > 0.7 and abs(metrics["mae"] - history[-1]["val_mae"]) < 1e-4
    predictor = flaxtrain.get_predictor(learner.model)
    value = predictor.predict("a brilliant and moving story")
    assert isinstance(value, float) and value > 0.5
    loss, scores = predictor.evaluate(texts[200:], targets[200:])
    assert loss == scores["mse"] and scores["mae"] < 0.2
    with pytest.raises(FlaxtrainError, match="no class probabilities"):
        predictor.predict_proba("superb")
    probe = ["dull and tedious", "superb"]
    again = flaxtrain.load_predictor(predictor.save(tmp_path / "p"))
    np.testing.assert_array_equal(again.predict(probe), predictor.predict(probe))
    reference = transformers.BertForSequenceClassification.from_pretrained(str(predictor.save_pretrained(tmp_path / "hf")))
    assert reference.config.problem_type == "regression" and reference.config.num_labels == 1
    encoded = [list(e) for e in t.preproc.encode(["superb", "dreary"])]
    length = max(map(len, encoded))
    ids = torch.tensor([e + [0] * (length - len(e)) for e in encoded])
    with torch.no_grad():
        out = reference.eval()(input_ids=ids, attention_mask=(ids != 0).long()).logits[:, 0].numpy()
    np.testing.assert_allclose(out, predictor.predict(["superb", "dreary"]), atol=1e-5)


def test_regression_targets_are_checked(checkpoint):
    t = flaxtrain.text.Transformer(str(checkpoint), maxlen=16)
    with pytest.raises(FlaxtrainError, match=r"regression target nan \(example 1\) is not finite"):
        t.preprocess_train(["good", "bad"], np.array([1.0, np.nan]), verbose=0)
    with pytest.raises(FlaxtrainError, match="not class_names"):
        flaxtrain.text.Transformer(str(checkpoint), maxlen=16, class_names=["a", "b"]).get_regression_model()
