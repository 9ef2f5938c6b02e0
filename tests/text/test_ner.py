"""NER end to end: parity with PyTorch token classification, CRF and BiLSTM training, MiniLM on unseen names."""

import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain import hub
from ner_data import make_ner_sentences

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402

TAGS = ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def _reference_checkpoint(path, model):
    model.save_pretrained(path, safe_serialization=True)
    hub.load_tokenizer("minilm").save(str(path / "tokenizer.json"))
    return path


def _check_parity(checkpoint, reference):
    words, tags = make_ner_sentences(8, seed=5)
    _, _, preproc = flaxtrain.text.entities_from_array(words, tags, val_pct=0, maxlen=32, verbose=0)
    model = flaxtrain.text.sequence_tagger(str(checkpoint), preproc, verbose=0)
    ids = [preproc.tokenizer.encode(" ".join(w)).ids for w in words[:4]]
    length = max(map(len, ids))
    batch = np.array([i + [0] * (length - len(i)) for i in ids], np.int32)
    ours = model.module.apply({"params": model.params}, batch, deterministic=True)  # every token a word
    with torch.no_grad():
        logits = reference.eval()(input_ids=torch.tensor(batch, dtype=torch.long),
                                  attention_mask=torch.tensor(batch != 0, dtype=torch.long)).logits.numpy()
    real = batch != 0
    np.testing.assert_allclose(np.asarray(ours)[real], logits[real], atol=1e-4)
    return model


def test_token_head_matches_pytorch_on_a_random_tiny_bert(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64, num_labels=len(TAGS))
    reference = transformers.BertForTokenClassification(config)
    model = _check_parity(_reference_checkpoint(tmp_path / "ckpt", reference), reference)
    # Exported (StableHLO; ONNX in onnxruntime), the word scores are still PyTorch's at each word's first piece.
    import onnxruntime

    from flaxtrain.export import runtime

    predictor = flaxtrain.get_predictor(model)
    texts = ["Anna Adler visited Oslo", "In Lagos , Jonas Kowalski founded Acme Corp last spring ."]
    for fmt, path in (("jax", tmp_path / "jax"), ("onnx", tmp_path / "onnx" / "tagger.onnx"),
                      ("saved_model", tmp_path / "saved_model"), ("tflite", tmp_path / "tflite" / "tagger.tflite")):
        out = predictor.export(path, format=fmt, texts=texts)
        sample = np.load((out.parent if out.is_file() else out) / "sample.npz")
        ids, starts = sample["input_ids"], sample["word_starts"]  # tflite: padded to the model's maxlen
        if fmt == "onnx":
            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = dict(zip(["logits", "tags"], session.run(["logits", "tags"], {"input_ids": ids, "word_starts": starts})))
        else:
            got = runtime.load(out)({"input_ids": ids, "word_starts": starts})
        with torch.no_grad():
            logits = reference.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                                      attention_mask=torch.tensor(ids != 0, dtype=torch.long)).logits.numpy()
        words = starts >= 0
        want = np.take_along_axis(logits, np.maximum(starts, 0)[:, :, None], axis=1)
        np.testing.assert_allclose(got["logits"][words], want[words], atol=1e-4, err_msg=fmt)
        assert np.all(got["tags"][~words] == -1)
        tags = [[predictor.preproc.decode_tags(row[row >= 0])] for row in got["tags"]]
        assert [t[0] for t in tags] == [[tag for _, tag in sentence] for sentence in predictor.predict(texts)], fmt


def test_token_head_matches_pytorch_on_real_minilm(tmp_path):
    torch.manual_seed(0)
    reference = transformers.BertForTokenClassification.from_pretrained(str(hub.resolve_checkpoint("minilm")),
                                                                        num_labels=len(TAGS))
    model = _check_parity(_reference_checkpoint(tmp_path, reference), reference)
    # And back: the tagger saved in Hugging Face format loads into PyTorch with the same weights.
    predictor = flaxtrain.get_predictor(model)
    exported = transformers.BertForTokenClassification.from_pretrained(str(predictor.save_pretrained(tmp_path / "hf")))
    for name, tensor in reference.state_dict().items():
        np.testing.assert_allclose(exported.state_dict()[name].numpy(), tensor.numpy(), atol=1e-6, err_msg=name)
    assert exported.config.id2label[1] == "B-LOC"


def test_bilstm_crf_tagger_learns_trains_and_reports(tmp_path, capsys):
    words, tags = make_ner_sentences(200, seed=0)
    val_words, val_tags = make_ner_sentences(60, seed=1)  # the names seen in training: a BiLSTM reads words
    trn, val, preproc = flaxtrain.text.entities_from_array(words, tags, val_words, val_tags, maxlen=24, verbose=0)
    model = flaxtrain.text.sequence_tagger("bilstm", preproc, use_crf=True, embed_dim=32, hidden_dim=32, verbose=0)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
    lr = learner.lr_find(1e-5, 1.0, num_steps=20, verbose=0)  # the same Learner tools
    curve = learner.lr_finder  # the curve comes down, and the suggestion lies before its lowest point
    lowest = int(np.argmin(curve.smoothed))
    assert lr == curve.valley and curve.smoothed[lowest] < curve.smoothed[0] and curve.lrs[0] < lr < curve.lrs[lowest]
    history = learner.fit(1e-2, 3, verbose=0)
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["val_acc"] > 0.95, history
    metrics = learner.validate()
    assert metrics["f1"] >= 0.95, metrics
    assert "PER" in capsys.readouterr().out
    transitions = np.asarray(learner.model.params["crf_transitions"])
    o, i_per = TAGS.index("O"), TAGS.index("I-PER")
    assert transitions[o, i_per] < transitions[TAGS.index("B-PER"), i_per]  # learned: I-PER follows B-PER, not O
    worst = learner.top_losses(3)
    assert len(worst) == 3 and worst[0][1] >= worst[-1][1] and len(worst[0][2]) == len(worst[0][3])
    predictor = flaxtrain.get_predictor(learner.model)
    again = flaxtrain.load_predictor(predictor.save(tmp_path / "ner"))
    text = ["Jonas Kowalski visited Lagos last week .", "In Oslo , Anna founded Acme Corp ."]
    assert again.predict(text) == predictor.predict(text)
    loss, scores = again.evaluate(val_words, val_tags)
    assert scores["f1"] >= 0.95 and np.isfinite(loss)
    # Exported (StableHLO, Viterbi included), it gives the predictor's tags; ONNX cannot hold flax's LSTM scan
    from flaxtrain.errors import FlaxtrainError
    from flaxtrain.export import runtime

    for fmt in ("jax", "saved_model", "tflite"):
        out = again.export(tmp_path / fmt, format=fmt, texts=text)
        sample = np.load(out / "sample.npz")
        served = runtime.load(out)({k: sample[k] for k in ("input_ids", "word_starts")})
        decoded = [[again.preproc.decode_tags(row[row >= 0])] for row in served["tags"]]
        assert [d[0] for d in decoded] == [[t for _, t in sentence] for sentence in again.predict(text)], fmt
    with pytest.raises(FlaxtrainError, match=r"jax2onnx could not convert this model \(.*\): export format='jax' instead"):
        again.export(tmp_path / "ner.onnx", format="onnx")
    assert not (tmp_path / "ner.onnx").exists()


@pytest.mark.slow
def test_minilm_tagger_finds_unseen_names():
    words, tags = make_ner_sentences(240, seed=0)
    test_words, test_tags = make_ner_sentences(100, test=True, seed=1)  # every name unseen in training
    trn, val, preproc = flaxtrain.text.entities_from_array(words, tags, test_words, test_tags, maxlen=32, verbose=0)
    model = flaxtrain.text.sequence_tagger("minilm", preproc)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
    learner.fit(1e-4, 2)
    metrics = learner.validate()
    print(f"MiniLM tagger on unseen names: {metrics}")
    assert metrics["f1"] >= 0.90, metrics
    predictor = flaxtrain.get_predictor(learner.model)
    assert predictor.predict("Barack Obama visited Paris last week .", merge_entities=True) == [
        ("Barack Obama", "PER"), ("Paris", "LOC")]
