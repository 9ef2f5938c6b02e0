"""T5 span corruption: exact input and target lengths, sentinels counting down, packed rows kept
apart, from scratch and continued, saved as T5ForConditionalGeneration and reproduced by PyTorch."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import flaxtrain
import flaxtrain.text
from flaxtrain import models
from flaxtrain.data.lm import span_corruption_lengths
from flaxtrain.errors import FlaxtrainError
from flaxtrain.export import runtime as export_runtime
from flaxtrain.models.seq2seq import PRESETS, Seq2SeqConfig

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402

WORDS = "the cat dog bird sat ran flew on mat log tree quickly slowly over under big small red blue .".split()
TINY = dict(num_layers=2, num_decoder_layers=2, hidden_size=32, num_heads=2, head_dim=16, mlp_dim=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5corpus")
    rng = np.random.default_rng(0)
    for f in range(3):
        docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))) for _ in range(40)]
        (root / f"doc{f}.txt").write_text("\n\n".join(docs) + "\n")
    tokenizer = flaxtrain.text.train_tokenizer(str(root / "doc*.txt"), vocab_size=300, kind="unigram")
    tokenizer.save(str(root / "tokenizer.json"))
    return root


def test_lengths_follow_t5():
    assert span_corruption_lengths(512, 0.15, 3.0) == (568, 114)  # T5's own sizes for 512-token inputs
    assert span_corruption_lengths(128, 0.15, 3.0) == (141, 29)


def test_corrupted_rows_have_exact_lengths_and_restore_the_text(corpus):
    trn, _, preproc = flaxtrain.text.lm_from_files(str(corpus / "doc*.txt"), tokenizer=str(corpus / "tokenizer.json"),
                                                   maxlen=40, objective="span_corruption", verbose=0)
    raw = {int(i): ids for i, (ids, _) in enumerate(trn.rows())}
    task = flaxtrain.tasks.named("span_corruption")
    batches, count = task.batches(trn, batch_size=8)
    seen = 0
    for batch in batches:
        assert batch["input_ids"].shape == (8, 40) and batch["labels"].shape == (8, preproc.target_length)
        for r in np.flatnonzero(batch["weight"] > 0):
            inputs, targets = batch["input_ids"][r], batch["labels"][r]
            assert inputs[-1] == targets[-1] == preproc.eos_id and preproc.pad_id not in inputs
            in_sentinels = inputs[inputs > preproc.first_sentinel - 100]
            out_sentinels = targets[targets > preproc.first_sentinel - 100]
            expected = preproc.first_sentinel - np.arange(len(in_sentinels))
            assert np.array_equal(in_sentinels, expected) and np.array_equal(out_sentinels, expected)
            spans = np.split(targets[:-1], np.flatnonzero(targets[:-1] > preproc.first_sentinel - 100)[1:])
            restored = []
            for token in inputs[:-1]:  # each sentinel in the inputs stands for its span in the targets
                restored.extend(spans.pop(0)[1:] if token > preproc.first_sentinel - 100 else [token])
            assert np.array_equal(restored, raw[int(batch["index"][r])])
            seen += 1
    assert seen == len(raw) - 1  # every full row once; the stream's last, padded row has weight 0
    decoder_inputs = batch["decoder_input_ids"]
    assert np.array_equal(decoder_inputs[:, 1:], batch["labels"][:, :-1]) and np.all(decoder_inputs[:, 0] == 0)
    with pytest.raises(FlaxtrainError, match="corrupts full rows: .*packing=True"):
        unpacked, _, _ = flaxtrain.text.lm_from_files(str(corpus / "doc0.txt"), tokenizer=str(corpus / "tokenizer.json"),
                                                      maxlen=40, objective="span_corruption", packing=False, verbose=0)
        task.batches(unpacked, batch_size=8)
    with pytest.raises(FlaxtrainError, match="needs T5's </s> and sentinel tokens"):
        flaxtrain.text.lm_from_files(str(corpus / "doc0.txt"), tokenizer="minilm", objective="span_corruption", verbose=0)


def test_packed_t5_rows_compute_as_their_documents_alone():
    config = Seq2SeqConfig(**{**PRESETS["t5"], **TINY, "vocab_size": 60, "dropout_rate": 0.0})
    module = models.build_model("span_corruption", config)
    rng = np.random.default_rng(2)
    sources = [rng.integers(3, 60, n).astype(np.int32) for n in (9, 5, 14)]
    targets = [rng.integers(3, 60, n).astype(np.int32) for n in (4, 6, 3)]
    params = jax.jit(lambda key: module.init(key, jnp.ones((1, 4), jnp.int32), jnp.ones((1, 3), jnp.int32),
                                             deterministic=True))(jax.random.key(0))["params"]
    params = jax.jit(lambda p: jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.key(3), x.shape), p))(params)
    apply = jax.jit(module.apply, static_argnames="deterministic")  # one program per shape, not one per op

    def packed(rows):
        ids = np.concatenate(rows)[None]
        return ids, np.concatenate([np.full(len(r), s, np.int32) for s, r in enumerate(rows, 1)])[None]

    (src, src_seg), (tgt, tgt_seg) = packed(sources), packed(targets)
    logits = apply({"params": params}, jnp.asarray(src), jnp.asarray(tgt), segment_ids=jnp.asarray(src_seg),
                   decoder_segment_ids=jnp.asarray(tgt_seg), deterministic=True)
    start = 0
    for source, target in zip(sources, targets):
        alone = apply({"params": params}, jnp.asarray(source[None]), jnp.asarray(target[None]), deterministic=True)
        np.testing.assert_allclose(logits[0, start:start + len(target)], alone[0], atol=1e-5)
        start += len(target)


def test_t5_from_scratch_trains_saves_and_matches_pytorch(corpus, tmp_path):
    trn, val, preproc = flaxtrain.text.lm_from_files([corpus / "doc0.txt", corpus / "doc1.txt"], corpus / "doc2.txt",
                                                     tokenizer=str(corpus / "tokenizer.json"), maxlen=32,
                                                     objective="span_corruption", verbose=0)
    model = flaxtrain.get_model("t5", train_data=trn, params=TINY)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=8)
    before = learner.validate(print_report=False)
    learner.fit_onecycle(5e-3, 2, verbose=0)
    after = learner.validate(print_report=False)
    assert set(after) == {"loss", "accuracy", "perplexity"} and after["loss"] < before["loss"] - 0.5
    predictor = flaxtrain.get_predictor(learner.model, preproc)
    predictor.save_pretrained(tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["T5ForConditionalGeneration"]
    reference = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    batch = next(flaxtrain.tasks.named("span_corruption").batches(val, batch_size=8)[0])
    ours = learner.model.module.apply({"params": learner.model.params}, jnp.asarray(batch["input_ids"]),
                                      jnp.asarray(batch["decoder_input_ids"]), deterministic=True)
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(batch["input_ids"].astype(np.int64)),
                           decoder_input_ids=torch.tensor(batch["decoder_input_ids"].astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)
    text = "the cat <extra_id_0> on the mat"
    with torch.no_grad():
        ids = torch.tensor(preproc.encode_documents([text])[0].astype(np.int64)[None])
        generated = reference.generate(ids, max_new_tokens=preproc.target_length, do_sample=False, num_beams=1)
    assert predictor.predict(text) == preproc.tokenizer.decode(
        [t for t in generated[0, 1:].tolist() if t != preproc.pad_id], skip_special_tokens=False)
    again = flaxtrain.get_model(str(tmp_path / "hf"), train_data=trn)  # continued pretraining of the saved folder
    assert again.task.name == "span_corruption" and flaxtrain.get_predictor(again).predict(text) == predictor.predict(text)
    # Exported: the whole greedy loop (StableHLO) and the ONNX and TFLite graphs (T5's relative positions, one cached step),
    # each generating the predictor's fills in its own runtime.
    texts = [text, "a <extra_id_0> sat <extra_id_1> mat", "on the <extra_id_0>"]
    for fmt in ("jax", "onnx", "tflite"):
        out = predictor.export(tmp_path / f"export-{fmt}", format=fmt, texts=texts)
        assert json.loads((out / "parity.json").read_text())["passed"]
        rows = export_runtime.load(out)({"input_ids": np.load(out / "sample.npz")["input_ids"]})["sequences"]
        assert preproc.tokenizer.decode_batch([[int(t) for t in row if t != preproc.pad_id] for row in rows],
                                              skip_special_tokens=False) == predictor.predict(texts), fmt
    # The same folder with its blocks scanned and rematerialized: the same generation, the same saved weights.
    scanned = flaxtrain.get_model(str(tmp_path / "hf"), train_data=trn, params={"scan_layers": True, "remat": "full"})
    assert scanned.config.scan_layers and "layers" in scanned.params["encoder"]
    scanned_predictor = flaxtrain.get_predictor(scanned)
    assert scanned_predictor.predict(text) == predictor.predict(text)
    scanned_predictor.save_pretrained(tmp_path / "scanned")
    saved = [load_file(tmp_path / name / "model.safetensors") for name in ("hf", "scanned")]
    assert saved[0].keys() == saved[1].keys() and all(np.array_equal(saved[0][k], saved[1][k]) for k in saved[0])
    with pytest.raises(FlaxtrainError, match="keeps its checkpoint's sizes: drop params \\['num_layers'\\]"):
        flaxtrain.get_model(str(tmp_path / "hf"), train_data=trn, params={"num_layers": 4, "scan_layers": True})
