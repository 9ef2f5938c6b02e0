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
from flaxtrain.export import qa_graph, runtime, text_graph
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
    # Unicode spaces), a control character with no word pieces, words past maxlen tagged 'O', an empty text,
    # a NUL (tensorflow-text's split would end the text there) and a zero-width space.
    unseen = ["Anna Okafor-Weber flew to São Paulo, didn't she?", "naïve\u00a0café \x07 3.5km — ok", "",
              "Lisbon " * 12 + "end.", PROBE[4], "Jonas\x00 Kowalski vi\u200bsited Lagos ."]
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"](texts=tf.constant(unseen))
    for i, text in enumerate(unseen):
        pairs = [(w.decode(), t.decode()) for w, t in zip(served["words"][i].numpy(), served["labels"][i].numpy()) if w]
        assert pairs == predictor.predict(text), (layout, text)
    assert any(tag != "O" for text in unseen for _, tag in predictor.predict(text))  # the check compares real tags
    # 14 words and room for 12 pieces between [CLS] / <s> and [SEP] / </s>: the words past it are 'O'
    kept = len(predictor.preproc.encode([unseen[3].split()[:-1] + ["end", "."]])[1][0])
    assert kept <= 12 and served["words"].shape[1] == 14
    assert [t.decode() for t in served["labels"][3].numpy()][kept:] == ["O"] * (14 - kept)


QA_PAIRS = [("Who wrote it?", "The novel was written by Mary Shelley in 1818, at Lake Geneva; a café naïve ÉLAN."),
            ("Where is the very long question that goes on and on and on?", "It rained in Oslo. " * 8),
            ("When?", "Déjà vu\u200b happened\u00a0today (x\u0301y).")]


def test_a_qa_saved_model_answers_raw_questions_about_raw_contexts(wordpiece_folder, tmp_path):
    """questions and contexts in, the predictor's answers out: the context cut into overlapping windows, each
    piece's character offsets (accents, a zero-width space, a control character and a combining accent
    dropped as the tokenizer drops them) and the best span over all of a question's windows."""
    _, _, preproc = flaxtrain.text.qa_from_array(["who?"], ["Ann did."], ["Ann"], [0], val_pct=0, maxlen=32,
                                                 doc_stride=6, max_query_length=8, verbose=0)
    predictor = flaxtrain.get_predictor(flaxtrain.text.qa_model(str(wordpiece_folder), preproc, verbose=0))
    out = predictor.export(tmp_path / "sm", format="saved_model", texts=QA_PAIRS)
    spec = runtime.manifest(out)
    assert "text_signature_missing" not in spec, spec["text_signature_missing"]
    assert spec["text_signature"]["inputs"] == ["questions", "contexts"]
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and {"texts/answers", "texts/starts", "texts/scores"} <= set(report["outputs"]), report
    unseen = [("what?", "Anna Okafor-Weber flew to São Paulo, didn't she? " * 4), ("x", "y"),
              ("Is it ½ ﬁne?", "ﬁne ½ dull\x07 dreary — ok"), (QA_PAIRS[1][0] * 3, "Rain. " * 30)]
    assert len(flaxtrain.data.qa.QADataset(flaxtrain.data.qa.examples_from_arrays(
        [unseen[0][0]], [unseen[0][1]], None, None, "t"), preproc).windows.input_ids) > 2
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"](
        questions=tf.constant([q for q, _ in unseen]), contexts=tf.constant([c for _, c in unseen]))
    for i, (question, context) in enumerate(unseen):
        want = predictor.predict(question, context)
        got = (served["answers"][i].numpy().decode(), int(served["starts"][i]), int(served["ends"][i]))
        assert got == (want["answer"], want["start"], want["end"]), (i, got, want)
        assert abs(float(served["scores"][i]) - want["score"]) < 1e-5 and want["answer"]


@pytest.mark.parametrize("allow_no_answer", [False, True])
def test_the_graphs_span_choice_is_best_span(allow_no_answer):
    """qa_graph.best_spans against flaxtrain.eval.spans.best_span on random logits over uneven windows:
    candidates limited to the n best starts and ends, the length limit, ties, windows of one question,
    windows with no context token, and SQuAD 2.0's empty answer."""
    from flaxtrain.eval.spans import best_span

    rng = np.random.default_rng(0)
    contexts = ["abcdefghijklmnopqrstuvwxyz0123456789"[int(rng.integers(0, 9)):] for _ in range(12)]
    rows = []
    for example, context in enumerate(contexts):
        for w in range(1 + example % 3):
            length = int(rng.integers(6, 20))
            starts = np.full(length, -1)
            if not (example == 2 and w == 0):  # a window with no context tokens
                first = int(rng.integers(1, 4))
                starts[first:length - 1] = np.sort(rng.choice(len(context) - 1, length - 1 - first, replace=False))
            logits = np.round(rng.normal(size=(length, 2)) * 2, 1).astype(np.float32)  # rounded: ties happen
            if example == 1:
                logits[0] = 9.0  # [CLS] beats every span
            rows.append((example, starts, logits))
    width = max(len(s) for _, s, _ in rows)
    pad = lambda values, fill: np.stack([np.pad(v, (0, width - len(v)), constant_values=fill) for v in values])  # noqa: E731
    windows = {"attention_mask": pad([np.ones(len(s), np.int32) for _, s, _ in rows], 0),
               "starts": pad([s for _, s, _ in rows], -1), "ends": pad([np.where(s >= 0, s + 1, -1) for _, s, _ in rows], -1),
               "example": np.asarray([e for e, _, _ in rows], np.int32)}
    got = qa_graph.best_spans(pad([g[:, 0] for *_, g in rows], 0.0), pad([g[:, 1] for *_, g in rows], 0.0),
                                {k: tf.constant(v) for k, v in windows.items()}, tf.constant(contexts), n_best=3,
                                max_answer_length=4, allow_no_answer=allow_no_answer)
    limits_matter = set()
    for example, context in enumerate(contexts):
        mine = [(s, g) for e, s, g in rows if e == example]
        args = ([g for _, g in mine], [np.stack([s, np.where(s >= 0, s + 1, -1)], 1) for s, _ in mine], context)
        want = best_span(*args, n_best=3, max_answer_length=4, allow_no_answer=allow_no_answer)
        assert (got["answers"][example].numpy().decode(), int(got["starts"][example]),
                int(got["ends"][example])) == (want["answer"], want["start"], want["end"]), (example, want)
        assert abs(float(got["scores"][example]) - want["score"]) < 1e-5
        for name, loose in (("n_best", {"n_best": 50, "max_answer_length": 4}), ("length", {"n_best": 3, "max_answer_length": 50})):
            if best_span(*args, allow_no_answer=allow_no_answer, **loose)["start"] != want["start"]:
                limits_matter.add(name)
    assert limits_matter == {"n_best", "length"}  # the data tests both limits
    assert allow_no_answer == (got["answers"][1].numpy() == b"")
