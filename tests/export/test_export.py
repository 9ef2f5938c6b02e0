"""Export for serving: the 'jax' format (jax.export StableHLO for cpu, cuda and tpu with symbolic batch
and length) and the 'onnx' format (jax2onnx, run by onnxruntime) of classifiers and regressors, proven
equal in a separate process that imports neither flaxtrain nor (for ONNX) JAX; parity.json beside it;
verify_export; one-line errors for everything that can go wrong."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import flaxtrain
import flaxtrain.text
from flaxtrain import hub
from flaxtrain.errors import FlaxtrainError
from flaxtrain.export import pad_rows, runtime


@pytest.fixture(scope="module")
def textcnn(sentiment_texts):
    texts, labels = sentiment_texts
    train, _, preproc = flaxtrain.text.texts_from_array(texts[:120], labels[:120], maxlen=40, verbose=0)
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    model.fit(epochs=1, batch_size=16, verbose=0)
    return flaxtrain.get_predictor(model, preproc)


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory):
    """A random BERT (large weights: std 0.5) with MiniLM's word pieces."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert")
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
        max_position_embeddings=64, initializer_range=0.5))
    model.save_pretrained(folder)
    hub.load_tokenizer("minilm").save(str(folder / "tokenizer.json"))
    return folder


def _served(folder, texts, predictor):
    """The export's outputs on `texts`, through its own loader (in this process)."""
    return runtime.load(folder)({"input_ids": pad_rows(predictor.preproc.encode(texts), predictor.preproc.pad_id, 1)})


def test_textcnn_exports_to_stablehlo_and_serves_the_same_probabilities(textcnn, sentiment_texts, tmp_path):
    out = textcnn.export(tmp_path / "textcnn", format="jax")
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["max_abs_diff"] <= 1e-4 and report["outputs"]["probabilities"]["label_agreement"] == 1
    assert report["runtime_imported"] == ["jax"]  # the check ran without flaxtrain
    spec = runtime.manifest(out)
    assert spec["platforms"] == ["cpu", "cuda", "tpu"] and spec["class_names"] == ["neg", "pos"]
    texts = sentiment_texts[0][200:213]  # 13 texts of their own lengths: batch and length are symbolic
    served = _served(out, texts, textcnn)["probabilities"]
    np.testing.assert_allclose(served, textcnn.predict_proba(texts), atol=1e-5)
    assert [spec["class_names"][i] for i in served.argmax(-1)] == textcnn.predict(texts)
    # serve.py runs from the command line in a process that never sees flaxtrain
    np.savez(tmp_path / "in.npz", input_ids=np.ones((2, 9), np.int32))
    done = subprocess.run([sys.executable, str(out / "serve.py"), str(out), str(tmp_path / "in.npz"), str(tmp_path / "o.npz")],
                          capture_output=True, text=True, cwd=tmp_path, env={"PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.load(tmp_path / "o.npz")["probabilities"].shape == (2, 2)
    assert flaxtrain.verify_export(out)["passed"]


def test_fasttext_exports_with_its_hashed_ngrams(sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    train, _, preproc = flaxtrain.text.texts_from_array(texts[:120], labels[:120], maxlen=40, verbose=0)
    model = flaxtrain.text.text_classifier("fasttext", train, preproc, params={"embed_dim": 16, "num_buckets": 97},
                                           verbose=0)
    model.fit(epochs=1, batch_size=16, verbose=0)
    predictor = flaxtrain.get_predictor(model, preproc)
    probe = texts[200:209]
    for fmt in ("jax", "saved_model"):
        out = predictor.export(tmp_path / fmt, format=fmt)
        np.testing.assert_allclose(_served(out, probe, predictor)["probabilities"], predictor.predict_proba(probe),
                                   atol=1e-5, err_msg=fmt)
    # TFLite has no uint32 pad (nor division) for the n-gram hash: one line, naming the format that holds it
    with pytest.raises(FlaxtrainError, match=r"the TFLite converter could not convert this model \(.*'tfl.pad'.*\): "
                                             r"export format='saved_model' instead"):
        predictor.export(tmp_path / "fasttext.tflite", format="tflite")
    assert not (tmp_path / "fasttext.tflite").exists()


@pytest.mark.parametrize("regression", [False, True], ids=["classifier", "regressor"])
def test_an_encoder_model_exports_with_parity_on_given_texts(bert_checkpoint, sentiment_texts, tmp_path, regression):
    texts, labels = sentiment_texts
    if regression:
        t = flaxtrain.text.Transformer(str(bert_checkpoint), maxlen=24)
        trn = t.preprocess_train(texts[:32], [float(i % 5) / 4 for i in range(32)], verbose=0)
    else:
        t = flaxtrain.text.Transformer(str(bert_checkpoint), maxlen=24, class_names=["neg", "pos"])
        trn = t.preprocess_train(texts[:32], labels[:32], verbose=0)
    model = t.get_classifier(verbose=0) if not regression else t.get_regression_model(verbose=0)
    predictor = flaxtrain.get_predictor(model, preproc=t)
    probe = texts[40:51]
    out = predictor.export(tmp_path / "bert", format="jax", texts=probe)
    report = flaxtrain.verify_export(out)
    name = "predictions" if regression else "probabilities"
    assert report["passed"] and list(report["outputs"]) == [name] and report["rows"] == len(probe)
    served = _served(out, probe, predictor)[name]
    expected = predictor.predict(probe) if regression else predictor.predict_proba(probe)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    # A SavedModel whose serving_default takes raw strings: MiniLM's word pieces run as tensorflow-text ops,
    # with BERT's normalizer: format and control characters inside a word join its halves (a zero-width space,
    # a soft hyphen, a BOM, a NUL), a no-break space separates words, U+FFFD is dropped
    probe = probe + ["Un café (très) CHARMANT, isn't it?", "x" * 130, "zero\u200bwidth soft\u00adhyphen bom\ufeffword",
                     "a\u00a0dull\x07film nul\x00led rep\ufffdlay", "tab\tnew\nline \u2060joined"]
    saved = predictor.export(tmp_path / "sm", format="saved_model", texts=probe)
    assert {"texts/" + name} <= set(json.loads((saved / "parity.json").read_text())["outputs"])
    by_text = runtime.load(saved).texts(probe)
    np.testing.assert_allclose(by_text[name], predictor.predict(probe) if regression else predictor.predict_proba(probe),
                               atol=1e-5)
    if not regression:
        assert list(by_text["labels"]) == predictor.predict(probe)
    del trn


def test_export_errors_are_one_line_and_leave_nothing_behind(textcnn, tmp_path):
    with pytest.raises(FlaxtrainError, match=r"unknown export format 'pdf': use one of 'jax', 'onnx', 'saved_model', "
                                             r"'tflite'"):
        textcnn.export(tmp_path / "a", format="pdf")
    with pytest.raises(FlaxtrainError, match=r"a.onnx names a .onnx file but format is 'jax': pass format='onnx'"):
        textcnn.export(tmp_path / "a.onnx", format="jax")
    with pytest.raises(FlaxtrainError, match="quantize=True applies to format='tflite'"):
        textcnn.export(tmp_path / "a", format="jax", quantize=True)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(FlaxtrainError, match="exists and is not a flaxtrain export"):
        textcnn.export(tmp_path / "taken", format="jax")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    class OwnTask(flaxtrain.tasks.base.Task):  # a task of the user's that says nothing of export
        name = "own_task"

    with pytest.raises(FlaxtrainError, match="own_task model cannot be exported yet: export supports text "
                                             "classification, regression, sequence tagging, extractive QA, masked-LM, "
                                             "span corruption and seq2seq"):
        OwnTask().export_outputs(textcnn.model)
    with pytest.raises(FlaxtrainError, match="is not a flaxtrain export"):
        flaxtrain.verify_export(tmp_path / "taken")
    # a tolerance the export cannot meet: refused, and nothing that looks finished is left
    with pytest.raises(FlaxtrainError, match="differs from JAX by .*nothing was written"):
        textcnn.export(tmp_path / "strict", format="jax", tolerance=-1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_verify_finds_a_changed_or_broken_artifact(textcnn, tmp_path):
    out = textcnn.export(tmp_path / "e", format="jax")
    with np.load(out / "params.npz") as stored:
        params = {k: stored[k] for k in stored.files}
    params["p00000"] = params["p00000"] + 1.0  # someone changed the weights
    np.savez(out / "params.npz", **params)
    with pytest.raises(FlaxtrainError, match="differs from the JAX outputs it was made with"):
        flaxtrain.verify_export(out)
    (out / "model.jax").write_bytes(b"not stablehlo")
    with pytest.raises(FlaxtrainError, match="runtime could not run the export .*: export it again"):
        flaxtrain.verify_export(out)


def test_cli_exports_and_verifies(textcnn, tmp_path, capsys):
    from flaxtrain.cli import main

    textcnn.save(tmp_path / "predictor")
    assert main(["export", "--model", str(tmp_path / "predictor"), "--format", "jax", str(tmp_path / "out")]) == 0
    assert main(["verify", str(tmp_path / "out")]) == 0
    assert main(["export", "--model", str(tmp_path / "predictor"), "--format", "onnx", str(tmp_path / "o" / "m.onnx")]) == 0
    assert main(["verify", str(tmp_path / "o" / "m.onnx")]) == 0
    assert main(["export", "--model", str(tmp_path / "predictor"), "--format", "pdf", str(tmp_path / "x")]) == 2
    assert main(["export", "--model", str(tmp_path / "predictor"), "--format", "tflite", "--quantize",
                 str(tmp_path / "t" / "m.tflite")]) == 0
    assert "MB (float32" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "t" / "m.tflite")]) == 0
    assert not (tmp_path / "x").exists()


# The runtime the parity check of a TensorFlow format runs in (parity.json's "runtime").
RUNTIME = {"saved_model": "tensorflow", "tflite": "ai-edge-litert"}

TF_SERVER = """
import json, sys, numpy as np, tensorflow as tf
artifact, ids, out, width = sys.argv[1], np.load(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if artifact.endswith(".tflite"):  # rows padded to the export's fixed width, the batch symbolic
    runner = tf.lite.Interpreter(model_path=artifact).get_signature_runner("serving_default")
    np.save(out, runner(input_ids=np.pad(ids, ((0, 0), (0, width - ids.shape[1]))))["probabilities"])
else:  # raw strings in: the SavedModel tokenizes them itself
    import tensorflow_text  # registers the tokenizer ops
    texts = json.loads(open(sys.argv[5]).read())
    results = tf.saved_model.load(artifact).signatures["serving_default"](texts=tf.constant(texts))
    np.save(out, results["probabilities"].numpy())
    print(json.dumps([label.decode() for label in results["labels"].numpy()]))
print("flaxtrain" in sys.modules)
"""


def test_textcnn_exports_to_saved_model_and_tflite_served_by_tensorflow_alone(textcnn, sentiment_texts, tmp_path):
    probe = sentiment_texts[0][200:213]  # 13 texts of their own lengths
    ids = pad_rows(textcnn.preproc.encode(probe), textcnn.preproc.pad_id, 1)
    np.save(tmp_path / "ids.npy", ids)
    (tmp_path / "texts.json").write_text(json.dumps(probe))
    (tmp_path / "server.py").write_text(TF_SERVER)
    saved = textcnn.export(tmp_path / "sm", format="saved_model")
    lite = textcnn.export(tmp_path / "lite" / "textcnn.tflite", format="tflite")
    assert runtime.manifest(saved)["inputs"][0]["shape"] == ["batch", "length"]
    assert runtime.manifest(saved)["platforms"] == ["cpu", "cuda", "tpu"]
    assert runtime.manifest(lite.parent)["inputs"][0] == {"name": "input_ids", "dtype": "int32", "shape": ["batch", 40],
                                                          "pad": 0}
    for fmt, artifact in (("saved_model", saved / "saved_model"), ("tflite", lite)):
        report = json.loads((artifact.parent / "parity.json").read_text())
        assert report["passed"] and report["max_abs_diff"] <= 1e-4 and report["format"] == fmt, report
        # The parity check's runtime: TensorFlow for the SavedModel, LiteRT (in the export extra) for the
        # .tflite file; the server below then serves both with TensorFlow alone.
        assert "flaxtrain" not in report["runtime_imported"] and list(report["runtime"]) == [RUNTIME[fmt]], report
        assert fmt != "tflite" or report["runtime_imported"] == [], report  # LiteRT alone: no TensorFlow, no JAX
        done = subprocess.run([sys.executable, str(tmp_path / "server.py"), str(artifact), str(tmp_path / "ids.npy"),
                               str(tmp_path / f"{fmt}.npy"), "40", str(tmp_path / "texts.json")], capture_output=True,
                              text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "False"  # TensorFlow alone serves it
        if fmt == "saved_model":  # serving_default took the raw strings: the predictor's labels
            assert json.loads(done.stdout.strip().splitlines()[-2]) == textcnn.predict(probe)
            assert set(report["outputs"]) == {"probabilities", "texts/probabilities", "texts/labels"}
        np.testing.assert_allclose(np.load(tmp_path / f"{fmt}.npy"), textcnn.predict_proba(probe), atol=1e-5)
        np.testing.assert_allclose(_served(artifact.parent, probe, textcnn)["probabilities"],
                                   textcnn.predict_proba(probe), atol=1e-5)
    with pytest.raises(ValueError, match="rows of 41 tokens do not fit this export's 40: truncate them first"):
        runtime.load(lite)({"input_ids": np.ones((1, 41), np.int32)})
    assert flaxtrain.verify_export(saved)["passed"] and flaxtrain.verify_export(lite)["passed"]
    lite.write_bytes(b"not a flatbuffer")
    with pytest.raises(FlaxtrainError, match="tflite runtime could not run the export .*: export it again"):
        flaxtrain.verify_export(lite)


def test_int8_tflite_export_of_an_encoder_reports_size_and_accuracy(sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64)).save_pretrained(tmp_path / "bert")
    hub.load_tokenizer("minilm").save(str(tmp_path / "bert" / "tokenizer.json"))
    t = flaxtrain.text.Transformer(str(tmp_path / "bert"), maxlen=24, class_names=["neg", "pos"])
    learner = flaxtrain.get_learner(t.get_classifier(verbose=0), train_data=t.preprocess_train(texts[:160], labels[:160],
                                                                                               verbose=0), batch_size=16)
    learner.fit_onecycle(3e-3, 4, verbose=0)
    predictor = flaxtrain.get_predictor(learner.model, preproc=t)
    probe, truth = texts[200:240], labels[200:240]
    with pytest.raises(FlaxtrainError, match=r"labels= needs texts= of the same length \(2 labels, 40 texts\)"):
        predictor.export(tmp_path / "x.tflite", format="tflite", texts=probe, labels=truth[:2])
    with pytest.raises(FlaxtrainError, match=r"labels= must be class names of this classifier \(\['neg', 'pos'\]\)"):
        predictor.export(tmp_path / "x.tflite", format="tflite", texts=probe[:1], labels=["great"])
    out = predictor.export(tmp_path / "int8" / "bert.tflite", format="tflite", quantize=True, texts=probe, labels=truth)
    spec, report = (json.loads((out.parent / name).read_text()) for name in ("export.json", "parity.json"))
    assert spec["quantized"] == "int8 weights (dynamic range)" and spec["bytes"] < spec["float32_bytes"], spec
    assert report["passed"] and report["tolerance"] == 0.1 and report["min_label_agreement"] == 0.95, report
    assert report["outputs"]["probabilities"]["label_agreement"] >= 0.95
    jax_accuracy = float(np.mean(np.array(predictor.predict(probe)) == np.array(truth)))
    assert report["accuracy"]["jax"] == pytest.approx(jax_accuracy) and jax_accuracy > 0.8, report
    assert abs(report["accuracy"]["tflite"] - jax_accuracy) <= 0.05, report
    served = runtime.load(out)({"input_ids": np.load(out.parent / "sample.npz")["input_ids"]})["probabilities"]
    np.testing.assert_allclose(served, predictor.predict_proba(probe), atol=0.1)
    assert not (tmp_path / "x.tflite").exists()


ONNX_SERVER = """
import sys, numpy as np, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
ids = np.load(sys.argv[2])
print([(i.name, i.type, i.shape) for i in session.get_inputs()], [(o.name, o.shape) for o in session.get_outputs()])
np.save(sys.argv[3], session.run(None, {"input_ids": ids})[0])
print(sorted(m for m in ("jax", "flaxtrain", "tensorflow") if m in sys.modules))
"""


@pytest.mark.parametrize("kind", ["textcnn", "fasttext"])
def test_word_models_export_to_onnx_and_serve_in_onnxruntime_alone(kind, textcnn, sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    if kind == "textcnn":
        predictor = textcnn
    else:
        train, _, preproc = flaxtrain.text.texts_from_array(texts[:120], labels[:120], maxlen=40, verbose=0)
        model = flaxtrain.text.text_classifier("fasttext", train, preproc, params={"embed_dim": 16, "num_buckets": 97},
                                               verbose=0)
        model.fit(epochs=1, batch_size=16, verbose=0)
        predictor = flaxtrain.get_predictor(model, preproc)
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "app.py").write_text("# the user's own file")
    out = predictor.export(tmp_path / "serving" / "model.onnx", format="onnx")
    assert out == tmp_path / "serving" / "model.onnx" and out.is_file()
    report = json.loads((out.parent / "parity.json").read_text())  # parity.json beside the file
    assert report["passed"] and report["max_abs_diff"] <= 1e-4 and report["outputs"]["probabilities"]["label_agreement"] == 1
    assert report["runtime_imported"] == [] and "onnxruntime" in report["runtime"]  # checked without JAX or flaxtrain
    assert (tmp_path / "serving" / "app.py").read_text() == "# the user's own file"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    # 13 texts of their own lengths, in a process that has onnxruntime and numpy only
    probe = texts[200:213]
    ids = pad_rows(predictor.preproc.encode(probe), predictor.preproc.pad_id, 1)
    np.save(tmp_path / "ids.npy", ids)
    (tmp_path / "server.py").write_text(ONNX_SERVER)
    done = subprocess.run([sys.executable, str(tmp_path / "server.py"), str(out), str(tmp_path / "ids.npy"),
                           str(tmp_path / "probs.npy")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    signature, imported = done.stdout.strip().splitlines()
    assert signature == "[('input_ids', 'tensor(int32)', ['batch', 'length'])] [('probabilities', ['batch', 2])]"
    assert imported == "[]"
    served = np.load(tmp_path / "probs.npy")
    np.testing.assert_allclose(served, predictor.predict_proba(probe), atol=1e-5)
    assert [runtime.manifest(out.parent)["class_names"][i] for i in served.argmax(-1)] == predictor.predict(probe)
    assert flaxtrain.verify_export(out)["passed"]


def test_onnx_exports_refuse_clearly_and_verify_finds_a_broken_file(textcnn, tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "tokenizer.json").write_text("{}")  # not ours: never overwritten
    with pytest.raises(FlaxtrainError, match=r"already holds tokenizer.json \(not from a flaxtrain export\): export "
                                             "into a folder of its own"):
        textcnn.export(tmp_path / "project" / "model.onnx", format="onnx")
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["tokenizer.json"]
    # a folder path holds model.onnx; exporting again replaces it
    out = textcnn.export(tmp_path / "folder", format="onnx")
    assert (out / "model.onnx").is_file() and flaxtrain.verify_export(out)["format"] == "onnx"
    assert flaxtrain.verify_export(out / "model.onnx")["passed"]
    (out / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(FlaxtrainError, match="onnx runtime could not run the export .*: export it again"):
        flaxtrain.verify_export(out / "model.onnx")
    textcnn.export(tmp_path / "folder", format="onnx")
    assert flaxtrain.verify_export(out)["passed"]
    # without the extra installed, the error names it
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax2onnx" else real(name, *a))
    with pytest.raises(FlaxtrainError, match=r"format='onnx' needs jax2onnx: pip install 'flaxtrain\[export\]'"):
        textcnn.export(tmp_path / "other.onnx", format="onnx")
    assert not (tmp_path / "other.onnx").exists()


def test_a_translation_model_exports_its_generation_loop(tmp_path):
    from flaxtrain.data import django_translations, translation_from_pairs

    sources, targets = django_translations("de")
    trn, _, preproc = translation_from_pairs(sources[:48], targets[:48], val_pct=0, maxlen=24, max_target_length=12,
                                             vocab_size=300, verbose=0)
    model = flaxtrain.get_model("marian", trn, params=dict(hidden_size=32, num_layers=1, num_decoder_layers=1,
                                                           head_dim=16, mlp_dim=64, dropout_rate=0.0))
    flaxtrain.get_learner(model, trn, batch_size=16).fit_onecycle(3e-3, 2, verbose=0)
    predictor = flaxtrain.get_predictor(model)
    probe = sources[:5]
    for fmt in ("jax", "saved_model", "tflite", "onnx"):
        out = predictor.export(tmp_path / fmt, format=fmt, texts=probe)
        report = json.loads((out / "parity.json").read_text())
        assert report["passed"] and report["max_abs_diff"] == 0, report
        ids = np.load(out / "sample.npz")["input_ids"]
        sequences = runtime.load(out)({"input_ids": ids})["sequences"]
        assert sequences.shape == (len(probe), 12) and np.issubdtype(sequences.dtype, np.integer)
        assert preproc.decode(sequences) == predictor.predict(probe), fmt  # the whole greedy loop, in the artifact
        if fmt == "saved_model":  # raw strings in, generated text out: the tokenizer and its decoder in the graph
            import tensorflow as tf
            import tensorflow_text  # noqa: F401 - registers the sentencepiece ops

            assert "generated" in runtime.manifest(out)["text_signature"]["outputs"]
            unseen = sources[70:74]
            served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"](texts=tf.constant(unseen))
            assert [t.decode() for t in served["generated"].numpy()] == predictor.predict(unseen)
        if fmt == "tflite":  # the encoder with the first step, and one cached decoder step, looped by serve.py
            assert sorted(p.name for p in out.glob("*.tflite")) == ["model.step.tflite", "model.tflite"]
            assert report["runtime_imported"] == [] and list(report["runtime"]) == [RUNTIME[fmt]], report
    # ONNX: the encoder with the first step, and one cached decoder step, looped by serve.py with onnxruntime alone
    assert report["runtime_imported"] == [] and sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx",
                                                                                                "model.step.onnx"]
    probe = sources[60:67]  # unseen texts of other lengths, int64 ids
    out = predictor.export(tmp_path / "mt64.onnx", format="onnx", texts=probe, ids_dtype="int64")
    ids = pad_rows(preproc.encode_sources(probe), preproc.pad_id, 1).astype(np.int64)
    assert preproc.decode(runtime.load(out)({"input_ids": ids})["sequences"]) == predictor.predict(probe)
    model.generation = {"num_beams": 3, "length_penalty": 0.8}  # a checkpoint's settings: beam search exported
    out = predictor.export(tmp_path / "beams", format="jax", texts=probe)
    sequences = runtime.load(out)({"input_ids": np.load(out / "sample.npz")["input_ids"]})["sequences"]
    assert preproc.decode(sequences) == predictor.predict(probe)
    with pytest.raises(FlaxtrainError, match=r"format='onnx' holds greedy decoding .* decodes with 3 beams: export "
                                             r"format='jax' or 'saved_model'"):
        predictor.export(tmp_path / "beams.onnx", format="onnx")
    with pytest.raises(FlaxtrainError, match=r"format='tflite' holds greedy decoding .* decodes with 3 beams"):
        predictor.export(tmp_path / "mt.tflite", format="tflite")


def test_int64_token_ids_for_onnx_and_tflite(textcnn, sentiment_texts, tmp_path):
    """ids_dtype='int64': the graphs take int64 input_ids (as serving stacks built around PyTorch exports
    feed them), cast to int32 inside, and give the int32 export's probabilities."""
    import onnxruntime
    import tensorflow as tf

    probe = sentiment_texts[0][200:209]
    ids = pad_rows(textcnn.preproc.encode(probe), textcnn.preproc.pad_id, 1).astype(np.int64)
    onnx_file = textcnn.export(tmp_path / "o" / "model.onnx", format="onnx", ids_dtype="int64")
    assert runtime.manifest(onnx_file.parent)["inputs"][0]["dtype"] == "int64"
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("input_ids", "tensor(int64)")]
    np.testing.assert_allclose(session.run(["probabilities"], {"input_ids": ids})[0], textcnn.predict_proba(probe),
                               atol=1e-5)
    with pytest.raises(Exception, match="int32"):  # the int32 type is gone from the graph's input
        session.run(["probabilities"], {"input_ids": ids.astype(np.int32)})

    lite = textcnn.export(tmp_path / "l" / "model.tflite", format="tflite", ids_dtype="int64")
    runner = tf.lite.Interpreter(model_path=str(lite)).get_signature_runner("serving_default")
    assert runner.get_input_details()["input_ids"]["dtype"] == np.int64
    padded = runtime.pad_to(ids, 40, textcnn.preproc.pad_id, "int64")
    np.testing.assert_allclose(runner(input_ids=padded)["probabilities"], textcnn.predict_proba(probe), atol=1e-5)
    assert flaxtrain.verify_export(lite)["passed"] and flaxtrain.verify_export(onnx_file)["passed"]

    with pytest.raises(FlaxtrainError, match="format='jax' takes int32 token ids"):
        textcnn.export(tmp_path / "j", format="jax", ids_dtype="int64")
    with pytest.raises(FlaxtrainError, match="ids_dtype must be 'int32' or 'int64', not 'int16'"):
        textcnn.export(tmp_path / "j", format="onnx", ids_dtype="int16")
    assert not (tmp_path / "j").exists()
