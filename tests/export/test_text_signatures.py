"""SavedModels of classifiers whose tokenizer is a unigram (sentencepiece) model take raw strings: T5's,
XLM-R's and ALBERT's tokenizer.json layouts run as tensorflow-text's SentencepieceTokenizer inside the
graph and give the predictor's ids, probabilities and labels; a tokenizer the graph cannot mirror keeps
serving_default on token ids and says why."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the sentencepiece op for the loaded graph
import torch
import transformers
from tokenizers import Regex, normalizers, processors

import flaxtrain
import flaxtrain.text
from flaxtrain.export import runtime, text_graph
from flaxtrain.hub.sentencepiece import tokenizer_from_sentencepiece

PROBE = ["Café  déjà vu, the FILM is wonderful!", "``Dull'' and naïve — ÉLAN 42", "a gripping  story", "ok",
         "Ünïcödé ﬁne ½ dull dreary", "the cast is charming; the plot isn't"]


@pytest.fixture(scope="module")
def unigram_folder(tmp_path_factory, sentiment_texts):
    """A sentencepiece unigram model trained here (XLM-R's special ids: <s> 0, <pad> 1, </s> 2, <unk> 3,
    with [CLS] / [SEP] pieces for ALBERT's template) and a random XLM-R checkpoint of its vocabulary."""
    folder = tmp_path_factory.mktemp("unigram")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(sentiment_texts[0] + PROBE[:3] + ["Déjà vu, café, naïve élan."] * 5))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=60, hard_vocab_limit=False, model_type="unigram",
        character_coverage=0.98, bos_id=0, pad_id=1, eos_id=2, unk_id=3, user_defined_symbols=["[CLS]", "[SEP]"],
        minloglevel=2)
    torch.manual_seed(0)
    transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=40, pad_token_id=1, initializer_range=0.5)).save_pretrained(folder)
    return folder


def _variant(folder, tmp_path, name):
    """The checkpoint with one of three tokenizer.json layouts of the same unigram model."""
    tokenizer = tokenizer_from_sentencepiece(folder)  # T5's: precompiled map, spaces collapsed, ... </s>
    if name == "xlm-r":
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0),
                                                                                                      ("</s>", 2)])
    if name == "albert":
        steps = json.loads(tokenizer.to_str())["normalizer"]["normalizers"]
        charsmap = next(s["precompiled_charsmap"] for s in steps if s["type"] == "Precompiled")
        tokenizer.normalizer = normalizers.Sequence([
            normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
            normalizers.StripAccents(), normalizers.Lowercase(),
            normalizers.Precompiled(__import__("base64").b64decode(charsmap)), normalizers.Replace(Regex(" {2,}"), " ")])
        tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 4),
                                                                                                         ("[SEP]", 5)])
    variant = tmp_path / name
    variant.mkdir()
    for item in folder.iterdir():
        if item.name in ("config.json", "model.safetensors"):
            (variant / item.name).symlink_to(item)
    tokenizer.save(str(variant / "tokenizer.json"))
    return variant


@pytest.mark.parametrize("layout", ["t5", "xlm-r", "albert"])
def test_unigram_tokenizers_run_inside_the_saved_model(layout, unigram_folder, sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    t = flaxtrain.text.Transformer(str(_variant(unigram_folder, tmp_path, layout)), maxlen=24, class_names=["neg", "pos"])
    t.preprocess_train(texts[:40], labels[:40], verbose=0)
    predictor = flaxtrain.get_predictor(t.get_classifier(), preproc=t)
    settings = text_graph.describe(predictor.preproc.tokenizer, 24, True)
    assert settings["kind"] == "sentencepiece"
    out = predictor.export(tmp_path / "sm", format="saved_model", texts=PROBE)
    spec = runtime.manifest(out)
    assert spec["text_signature"]["input"] == "texts" and "text_signature_missing" not in spec
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and {"texts/probabilities", "texts/labels"} <= set(report["outputs"]), report
    # the graph's own tokens: the same ids as the tokenizer, for texts it never saw
    tokenize = text_graph.string_tokenizer(settings, predictor.preproc.pad_id)
    unseen = ["Über-naïve ``quotes''  and  spaces", "x", texts[200]]
    encoded = predictor.preproc.encode(unseen)
    in_graph = tokenize(tf.constant(unseen)).numpy()
    for row, ids in zip(in_graph, encoded):
        assert row[: len(ids)].tolist() == list(ids) and np.all(row[len(ids):] == predictor.preproc.pad_id), layout
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"](texts=tf.constant(unseen))
    assert [label.decode() for label in served["labels"].numpy()] == predictor.predict(unseen)
    np.testing.assert_allclose(served["probabilities"].numpy(), predictor.predict_proba(unseen), atol=1e-5)


def test_a_tokenizer_the_graph_cannot_mirror_keeps_token_ids_and_says_why(unigram_folder, sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    variant = _variant(unigram_folder, tmp_path, "t5")
    spec = json.loads((variant / "tokenizer.json").read_text())
    spec["normalizer"]["normalizers"].append({"type": "Prepend", "prepend": "▁"})  # no sentencepiece counterpart here
    (variant / "tokenizer.json").write_text(json.dumps(spec))
    t = flaxtrain.text.Transformer(str(variant), maxlen=24, class_names=["neg", "pos"])
    t.preprocess_train(texts[:40], labels[:40], verbose=0)
    out = flaxtrain.get_predictor(t.get_classifier(), preproc=t).export(tmp_path / "sm", format="saved_model")
    spec = runtime.manifest(out)
    assert "text_signature" not in spec
    assert spec["text_signature_missing"] == ("serving_default takes input_ids: normalizer step Prepend has no "
                                              "sentencepiece counterpart here")


@pytest.fixture(scope="module")
def wordpiece_folder(tmp_path_factory):
    """A random BERT (large weights) with MiniLM's word pieces (lower-cased, accents stripped)."""
    from flaxtrain import hub

    folder = tmp_path_factory.mktemp("wordpiece")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=40, initializer_range=0.5)).save_pretrained(folder)
    hub.load_tokenizer("minilm").save(str(folder / "tokenizer.json"))
    return folder


@pytest.mark.parametrize("layout", ["wordpiece", "xlm-r"])
def test_a_tagger_saved_model_splits_tokenizes_and_tags_raw_strings(layout, wordpiece_folder, unigram_folder, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "text"))
    from ner_data import make_ner_sentences

    folder = wordpiece_folder if layout == "wordpiece" else _variant(unigram_folder, tmp_path, "xlm-r")
    words, tags = make_ner_sentences(16, seed=3)
    _, _, preproc = flaxtrain.text.entities_from_array(words, tags, val_pct=0.25, maxlen=14, verbose=0)
    predictor = flaxtrain.get_predictor(flaxtrain.text.sequence_tagger(str(folder), preproc, verbose=0))
    out = predictor.export(tmp_path / "sm", format="saved_model", texts=PROBE[:4])
    spec = runtime.manifest(out)
    assert "text_signature_missing" not in spec, spec["text_signature_missing"]
    assert set(spec["text_signature"]["outputs"]) == {"logits", "tags", "labels", "words"}
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and {"texts/labels", "texts/words", "texts/logits"} <= set(report["outputs"]), report
    # Texts it never saw: words split as predict splits them (hyphens, apostrophes, decimals, punctuation,
    # Unicode spaces), a control character with no word pieces, words past maxlen tagged 'O', an empty text.
    unseen = ["Anna Okafor-Weber flew to São Paulo, didn't she?", "naïve\u00a0café \x07 3.5km — ok", "",
              "Lisbon " * 12 + "end.", PROBE[4]]
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"](texts=tf.constant(unseen))
    for i, text in enumerate(unseen):
        pairs = [(w.decode(), t.decode()) for w, t in zip(served["words"][i].numpy(), served["labels"][i].numpy()) if w]
        assert pairs == predictor.predict(text), (layout, text)
    assert any(tag != "O" for text in unseen for _, tag in predictor.predict(text))  # the check compares real tags
    # 14 words and room for 12 pieces between [CLS] / <s> and [SEP] / </s>: the words past it are 'O'
    kept = len(predictor.preproc.encode([unseen[3].split()[:-1] + ["end", "."]])[1][0])
    assert kept <= 12 and served["words"].shape[1] == 14
    assert [t.decode() for t in served["labels"][3].numpy()][kept:] == ["O"] * (14 - kept)
