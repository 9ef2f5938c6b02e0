"""predictor.explain: integrated gradients per token, complete, exact where the network is linear, and pointing
at the words that decide the class."""

import sys
from pathlib import Path

import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from encoder_families import FAMILIES, family_checkpoint  # noqa: E402

POSITIVE = {"wonderful", "moving", "brilliant", "funny", "charming", "superb", "delightful", "gripping"}
NEGATIVE = {"dull", "tedious", "awful", "clumsy", "boring", "lifeless", "muddled", "dreary"}


@pytest.fixture(scope="module")
def words(sentiment_texts):
    texts, labels = sentiment_texts
    return flaxtrain.text.texts_from_array(texts[:200], labels[:200], texts[200:], labels[200:], maxlen=24,
                                           max_features=200, verbose=0)


@pytest.mark.parametrize("name", ["textcnn", "fasttext"])
def test_attributions_are_complete_and_point_at_the_opinion_words(words, name, tmp_path):
    trn, val, preproc = words
    model = flaxtrain.get_model(name, trn, val)
    history = flaxtrain.get_learner(model, trn, val, batch_size=16).fit(1e-2, 4, verbose=0)
    assert history[-1]["val_acc"] >= 0.85, history  # majority class: 0.5
    predictor = flaxtrain.get_predictor(model, preproc)
    for text, label, opinion in (("the plot is quite brilliant and the cast superb", "pos", POSITIVE),
                                 ("its story feels dull with a tedious ending", "neg", NEGATIVE)):
        explanation = predictor.explain(text)
        assert explanation.target == label == predictor.predict(text)
        assert [token for token, _ in explanation] == text.split()
        # Completeness: the attributions add up to p(label | text) - p(label | zero embeddings), up to the
        # quadrature's error. TextCNN's ReLU and max-pooling make the gradient along the path piecewise constant,
        # which 64 Gauss-Legendre nodes integrate to within a few 1e-3 of the gap (measured on these texts:
        # 8e-5 to 4e-3 of it at 32-256 nodes, not monotone); fastText's to 2e-7.
        assert abs(explanation.error) <= 1e-2 * max(abs(explanation.score - explanation.baseline), 1e-3), explanation.error
        top = sorted(explanation, key=lambda pair: -pair[1])[:2]
        assert {token for token, _ in top} <= opinion, explanation
        # Toward the other class the opinion words count against it.
        other = predictor.explain(text, "neg" if label == "pos" else "pos")
        assert all(value < 0 for token, value in other if token in opinion), other
    html = explanation.html()
    assert "tedious" in html and "rgba(0, 160, 0" in html and "rgba(200, 0, 0" in html
    assert "\033[" in explanation.terminal()
    assert Path(explanation.plot(str(tmp_path / "e.png"))).stat().st_size > 1000


def test_a_linear_network_gets_its_exact_attributions():
    """fastText without n-grams as a regressor is linear in its embeddings: the attribution of token p is
    exactly embedding[id_p] . w / (number of tokens)."""
    texts = ["a brilliant film", "dull dull and tedious", "the cast"]
    data = flaxtrain.text.texts_from_array(texts * 4, [0.5, -1.0, 0.2] * 4, maxlen=8, verbose=0)
    model = flaxtrain.get_model("fasttext", data[0], params={"ngram_range": 1})
    flaxtrain.get_learner(model, data[0], batch_size=4).fit(1e-2, 2, verbose=0)
    predictor = flaxtrain.get_predictor(model, data[2])
    for text in texts:
        explanation = predictor.explain(text, steps=4)
        ids, _ = data[2].tokens_of(text)
        table, w = np.asarray(model.params["embed"]["embedding"]), np.asarray(model.params["head"]["kernel"])[:, 0]
        np.testing.assert_allclose([a for _, a in explanation], table[ids] @ w / len(ids), rtol=1e-5, atol=1e-6)
        assert explanation.target == "value"
        np.testing.assert_allclose(explanation.score, predictor.predict(text), rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_explanations_are_complete(family, sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    checkpoint = family_checkpoint(family, tmp_path / "ckpt")
    t = flaxtrain.text.Transformer(str(checkpoint), maxlen=20)
    trn = t.preprocess_train(texts[:16], labels[:16], verbose=0)
    model = flaxtrain.get_model(str(checkpoint), trn)
    predictor = flaxtrain.get_predictor(model, t)
    explanation = predictor.explain("a gorgeous, moving film", "neg")
    tokens = [token for token, _ in explanation]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "gorgeous" in tokens and "," in tokens
    assert explanation.score == pytest.approx(float(predictor.predict_proba("a gorgeous, moving film")[0]), abs=1e-6)
    assert abs(explanation.error) <= 1e-3, (explanation.error, explanation.score - explanation.baseline)


def test_explain_mistakes_get_one_line_errors(words):
    trn, val, preproc = words
    predictor = flaxtrain.get_predictor(flaxtrain.get_model("fasttext", trn, val), preproc)
    with pytest.raises(FlaxtrainError, match="explain takes one text"):
        predictor.explain(["a", "b"])
    with pytest.raises(FlaxtrainError, match="class 'meh' is not one of the model's classes"):
        predictor.explain("a film", "meh")
    with pytest.raises(FlaxtrainError, match="has no tokens to explain"):
        predictor.explain("")
    with pytest.raises(FlaxtrainError, match="steps must be a whole number"):
        predictor.explain("a film", steps=1)


def test_tagger_and_qa_explanations_are_complete(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "text"))
    from ner_data import make_ner_sentences

    checkpoint = family_checkpoint("bert", tmp_path / "ckpt")
    words, tags = make_ner_sentences(8, seed=5)
    _, _, preproc = flaxtrain.text.entities_from_array(words, tags, val_pct=0, maxlen=32, verbose=0)
    tagger = flaxtrain.get_predictor(flaxtrain.text.sequence_tagger(str(checkpoint), preproc, verbose=0))
    text = " ".join(words[0])
    predicted = tagger.predict(text)
    explanation = tagger.explain(text, 2)
    assert explanation.target == predicted[2]  # (word, its predicted tag)
    assert explanation[0][0] == "[CLS]" and explanation[-1][0] == "[SEP]"
    assert abs(explanation.error) <= 1e-3, explanation.error
    assert tagger.explain(text, words[0][2]).target == predicted[2]
    with pytest.raises(FlaxtrainError, match="word must be a word of the text or its index"):
        tagger.explain(text, 99)

    context = "The treasure was buried in Lagos by the old pirate in 1820."
    _, _, qa_preproc = flaxtrain.text.qa_from_array(["Where is the treasure?"] * 2, [context] * 2, ["Lagos"] * 2,
                                                    [context.index("Lagos")] * 2, val_pct=0, maxlen=40, doc_stride=8,
                                                    max_query_length=16, verbose=0)
    qa = flaxtrain.get_predictor(flaxtrain.text.qa_model(str(checkpoint), qa_preproc, verbose=0))
    answer = qa.predict("Where is the treasure?", context)
    explanation = qa.explain("Where is the treasure?", context)
    assert explanation.target == answer["answer"]
    assert [t for t, _ in explanation][:2] == ["[CLS]", "where"]
    assert abs(explanation.error) <= 1e-3 * max(explanation.score, 1e-3), (explanation.error, explanation.score)
    with pytest.raises(FlaxtrainError, match="windows of 40 word pieces"):
        qa.explain("Where is the treasure?", context * 12)
