"""A checkpoint fine-tuned for sequence classification keeps its trained head on every public path:
checkpoint folder -> Transformer(...).get_classifier() / get_model / text_classifier -> predictor ->
probabilities equal to PyTorch `transformers` on the same folder, for all five encoder families."""

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

import flaxtrain
import flaxtrain.text
from flaxtrain import hub
from flaxtrain.errors import FlaxtrainError

WORDS = ("the a film plot cast is was and but not very quite so dull tedious awful wonderful moving brilliant "
         "funny charming superb story ending with its feels").split()
TEXTS = ["a wonderful film", "the plot is dull and the cast is not very funny but the ending feels quite moving",
         "superb", "awful tedious story with a dull ending and a plot that was not charming", "brilliant cast unknownword"]
CLASSES = ["negative", "neutral", "positive"]
# Odd sizes, so a swapped axis or a wrong reshape fails: width 52 = 4 heads of 13, MLP 75, 3 layers.
SIZES = dict(hidden_size=52, num_attention_heads=4, intermediate_size=75, num_hidden_layers=3, max_position_embeddings=40)


def _tokenizer(roberta: bool) -> Tokenizer:
    """A word-level tokenizer with the family's special tokens: BERT's [PAD]=0 [UNK] [CLS] [SEP],
    or RoBERTa's <s>=0 <pad>=1 </s>=2 <unk>."""
    specials = ["<s>", "<pad>", "</s>", "<unk>"] if roberta else ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate([*specials, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=specials[3] if roberta else specials[1]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    first, last = ("<s>", "</s>") if roberta else ("[CLS]", "[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}", special_tokens=[(first, vocab[first]), (last, vocab[last])])
    return tokenizer


def _reference(family: str, num_labels: int = 3):
    """A *ForSequenceClassification with every weight drawn with std 0.2 (norm scales around 1)."""
    vocab = len(WORDS) + 4
    labels = dict(num_labels=num_labels, id2label={i: c for i, c in enumerate(CLASSES[:num_labels])},
                  label2id={c: i for i, c in enumerate(CLASSES[:num_labels])})
    if family == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=vocab, dim=52, n_heads=4, hidden_dim=75, n_layers=3,
                                               max_position_embeddings=40, **labels)
    elif family in ("roberta", "xlm-roberta"):
        cls = transformers.RobertaConfig if family == "roberta" else transformers.XLMRobertaConfig
        config = cls(vocab_size=vocab, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                     layer_norm_eps=1e-5, **SIZES, **labels)
    elif family == "albert":
        config = transformers.AlbertConfig(vocab_size=vocab, embedding_size=19, hidden_act="gelu_new", **SIZES, **labels)
    else:
        config = transformers.BertConfig(vocab_size=vocab, **SIZES, **labels)
    prefix = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert",
              "albert": "Albert"}[family]
    torch.manual_seed(7)
    model = getattr(transformers, prefix + "ForSequenceClassification")(config).eval()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            weight.normal_(1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0, 0.2)
    return model


def _save(model, path, family):
    model.save_pretrained(path)
    _tokenizer(family in ("roberta", "xlm-roberta")).save(str(path / "tokenizer.json"))
    return path


def _torch_probs(model, tokenizer_file, texts, maxlen):
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=maxlen)
    pad = model.config.pad_token_id
    rows = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != pad).long()).logits
    return torch.softmax(logits, -1).numpy()


# TFLite (jax2tf, then TF's converter: the suite's slowest format) for each distinct head and encoder layout;
# xlm-roberta is roberta's graph with another vocabulary, distilbert's blocks are bert's without token types.
TFLITE_FAMILIES = ("bert", "roberta", "albert")


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "distilbert", "albert"])
def test_a_fine_tuned_head_predicts_as_pytorch_does(family, tmp_path, capsys):
    reference = _reference(family)
    path = _save(reference, tmp_path / "ckpt", family)
    maxlen = 12  # the second and fourth texts are truncated; the batch is padded
    want = _torch_probs(reference, path / "tokenizer.json", TEXTS, maxlen)

    t = flaxtrain.text.Transformer(str(path), maxlen=maxlen, class_names=CLASSES)
    model = t.get_classifier()
    assert "new sequence-classification head" not in capsys.readouterr().out
    predictor = flaxtrain.get_predictor(model, preproc=t)  # ktrain passes the Transformer
    got = predictor.predict_proba(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert t.get_classes() == CLASSES

    # Exported for serving (StableHLO; ONNX run by onnxruntime; symbolic batch and length; TFLite), it still
    # gives PyTorch's probabilities.
    import onnxruntime

    from flaxtrain.export import pad_rows, runtime

    ids = pad_rows(predictor.preproc.encode(TEXTS), predictor.preproc.pad_id, 1)
    exported = predictor.export(tmp_path / "served", format="jax", texts=TEXTS)
    np.testing.assert_allclose(runtime.load(exported)({"input_ids": ids})["probabilities"], want, atol=1e-4)
    onnx_file = predictor.export(tmp_path / "onnx" / "model.onnx", format="onnx", texts=TEXTS)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["probabilities"], {"input_ids": ids})[0], want, atol=1e-4)
    if family in TFLITE_FAMILIES:
        lite = predictor.export(tmp_path / "lite" / "model.tflite", format="tflite", texts=TEXTS)  # through a SavedModel
        np.testing.assert_allclose(runtime.load(lite)({"input_ids": ids})["probabilities"], want, atol=1e-4)
    # This tokenizer (lower-case + whitespace split) has no tensorflow-text twin: a SavedModel of it says so
    # and takes token ids (tests/export/test_export.py covers the raw-string signature of BERT's pipeline).
    from flaxtrain.export import text_graph

    with pytest.raises(text_graph.Unsupported, match="normalizer Lowercase / pre-tokenizer Whitespace differ"):
        text_graph.describe(predictor.preproc.tokenizer, maxlen, True)

    # No class_names: the checkpoint's own labels, in its own order.
    t = flaxtrain.text.Transformer(str(path), maxlen=maxlen)
    predictor = flaxtrain.get_predictor(t.get_classifier(), preproc=t)
    assert t.get_classes() == CLASSES
    assert predictor.predict(TEXTS) == [CLASSES[i] for i in want.argmax(-1)]


def test_every_public_path_keeps_the_head_and_says_when_it_starts_a_new_one(tmp_path, capsys):
    reference = _reference("bert")
    path = _save(reference, tmp_path / "ckpt", "bert")
    want = _torch_probs(reference, path / "tokenizer.json", TEXTS, 16)
    labels = ["negative", "positive", "neutral", "negative", "positive"]

    t = flaxtrain.text.Transformer(str(path), maxlen=16, class_names=CLASSES)
    trn = t.preprocess_train(TEXTS, labels, verbose=0)
    for model in (flaxtrain.text.text_classifier(str(path), trn, t.preproc, verbose=0),
                  flaxtrain.get_model(str(path), trn),
                  flaxtrain.get_model(str(path), flaxtrain.text.LoadedData("x", TEXTS, labels, [], [], CLASSES), maxlen=16)):
        np.testing.assert_allclose(model.predict_proba(TEXTS), want, atol=1e-4)
    assert "new sequence-classification head" not in capsys.readouterr().out

    # Two classes against a three-way head: a new head, and one line that says why.
    two = flaxtrain.text.Transformer(str(path), maxlen=16, class_names=["neg", "pos"]).get_classifier()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "new sequence-classification head" in line and "its head has 3 outputs, this model needs 2" in line
    assert two.params["classifier"]["kernel"].shape == (52, 2)
    base = tmp_path / "base"
    transformers.BertModel(reference.config).save_pretrained(base)
    (base / "tokenizer.json").write_text((path / "tokenizer.json").read_text())
    flaxtrain.text.Transformer(str(base), maxlen=16, class_names=CLASSES).get_classifier()
    assert "it holds none" in capsys.readouterr().out


def test_weights_that_do_not_fit_the_config_name_the_tensor_and_both_shapes(tmp_path):
    import json

    path = _save(_reference("bert"), tmp_path / "ckpt", "bert")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(FlaxtrainError, match=r"embeddings.word_embeddings.weight has shape \(\d+, 52\) in the checkpoint "
                                             r"but config.json needs \(\d+, 64\)"):
        flaxtrain.text.Transformer(str(path), maxlen=16, class_names=CLASSES)
    (path / "config.json").write_text(json.dumps({**config, "num_attention_heads": 5}))
    with pytest.raises(FlaxtrainError, match="hidden_size 52 does not divide into num_attention_heads 5"):
        hub.load_pretrained(path)


def test_real_minilm_with_a_trained_three_way_head(tmp_path):
    source = hub.resolve_checkpoint("minilm")
    torch.manual_seed(11)
    reference = transformers.BertForSequenceClassification.from_pretrained(
        str(source), num_labels=3, id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)}).eval()
    with torch.no_grad():  # a "trained" head: large weights, so keeping or dropping it shows
        reference.classifier.weight.normal_(0.0, 0.2)
        reference.classifier.bias.normal_(0.0, 0.2)
    reference.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text((source / "tokenizer.json").read_text())
    texts = ["A gripping, beautifully acted film.", "Dull.", "The plot never quite comes together, sadly, despite a cast "
             "that does everything it can with a script this thin."]
    t = flaxtrain.text.Transformer(str(tmp_path), maxlen=24)
    got = flaxtrain.get_predictor(t.get_classifier(), preproc=t).predict_proba(texts)
    np.testing.assert_allclose(got, _torch_probs(reference, tmp_path / "tokenizer.json", texts, 24), atol=1e-4)
    assert t.get_classes() == CLASSES


def test_a_tokenizer_padding_with_another_id_than_the_config_is_masked_as_transformers_does(tmp_path):
    """A RoBERTa checkpoint (config.json: pad_token_id 1) beside a tokenizer whose [PAD] is 0: rows are padded
    with 0 and masked as padding, as transformers masks them through the tokenizer's attention mask, while
    positions still count from config.json's id."""
    reference = _reference("roberta")
    path = reference.save_pretrained(tmp_path / "ckpt") or tmp_path / "ckpt"
    _tokenizer(False).save(str(path / "tokenizer.json"))  # BERT's specials: [PAD] 0
    texts = ["a gripping story", "dull"]  # padded in one batch
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    rows = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        want = torch.softmax(reference(input_ids=ids, attention_mask=mask).logits, -1).numpy()
    t = flaxtrain.text.Transformer(str(path), maxlen=12, class_names=CLASSES)
    got = flaxtrain.get_predictor(t.get_classifier(), preproc=t).predict_proba(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)
