"""Masked-LM pretraining: streamed and packed files, dynamic masking, from scratch and continued,
saved in Hugging Face format and reproduced by PyTorch `transformers`."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain import models
from flaxtrain.data.documents import interleaved_documents, read_documents
from flaxtrain.data.lm import pack
from flaxtrain.errors import FlaxtrainError
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.tasks import masked_lm
from flaxtrain.tasks.masked_lm import mask_tokens, masked_lm_loss, prediction_slots

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402

WORDS = ("the cat dog bird sat ran flew on mat log tree quickly slowly over under big small red blue unbelievably "
         "remarkable").split()
TINY = dict(num_layers=2, hidden_size=32, num_heads=2, mlp_dim=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three text files of blank-line-separated documents (one gzip), and a WordPiece tokenizer trained on them."""
    import gzip

    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for f in range(3):
        docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 70)))) + " ." for _ in range(30)]
        text = "\n\n".join(d if i % 3 else d.replace(" ", "\n", 1) for i, d in enumerate(docs)) + "\n"
        if f == 2:
            with gzip.open(root / "doc2.txt.gz", "wt") as fh:
                fh.write(text)
        else:
            (root / f"doc{f}.txt").write_text(text)
    tokenizer = flaxtrain.text.train_tokenizer(str(root / "doc*"), vocab_size=120)
    tokenizer.save(str(root / "tokenizer.json"))
    return root


def test_documents_stream_and_pack_into_exact_rows(corpus):
    docs = list(read_documents(str(corpus / "doc0.txt")))
    assert len(docs) == 30 and all("\n" not in d and d.endswith(".") for d in docs)  # lines of a document joined
    assert len(list(read_documents(str(corpus / "doc2.txt.gz")))) == 30
    files = [str(corpus / n) for n in ("doc0.txt", "doc1.txt", "doc2.txt.gz")]
    every = list(interleaved_documents(files))
    shards = [list(interleaved_documents(files, i, 3)) for i in range(3)]
    assert sorted(every) == sorted(sum(shards, [])) and len(every) == 90  # processes split the documents
    tokens = [np.arange(1, n + 1, dtype=np.int32) for n in (5, 9, 3, 20)]
    rows = [(ids.copy(), seg.copy()) for ids, seg in pack(iter(tokens), 8, 0, packing=True)]
    assert [list(s) for _, s in rows] == [[1] * 5 + [2] * 3, [1] * 6 + [2] * 2, [1] + [2] * 7,
                                          [1] * 8, [1] * 5 + [0] * 3]
    assert sum(int((s > 0).sum()) for _, s in rows) == 37  # every token once, padding only at the end
    unpacked = list(pack(iter(tokens), 8, 0, packing=False))
    assert len(unpacked) == 7 and all(s[0] == 1 for _, s in unpacked)


def test_a_packed_row_computes_as_its_documents_alone():
    config = models.make_config("masked_lm", encoder=EncoderConfig(vocab_size=50, hidden_size=16, num_layers=2,
                                                                   num_heads=2, mlp_dim=32, max_positions=64))
    module = models.build_model("masked_lm", config)
    rng = np.random.default_rng(1)
    docs = [rng.integers(5, 50, n).astype(np.int32) for n in (7, 12, 4)]
    params = jax.jit(lambda key: module.init(key, jnp.zeros((1, 8), jnp.int32), deterministic=True))(jax.random.key(0))["params"]
    # large weights
    params = jax.jit(lambda p: jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape), p))(params)
    apply = jax.jit(module.apply, static_argnames="deterministic")  # one program per shape, not one per op
    ids = np.zeros((1, 26), np.int32)
    segments = np.zeros((1, 26), np.int32)
    start = 0
    for s, doc in enumerate(docs, start=1):
        ids[0, start:start + len(doc)], segments[0, start:start + len(doc)] = doc, s
        start += len(doc)
    packed = apply({"params": params}, jnp.asarray(ids), segment_ids=jnp.asarray(segments), deterministic=True)
    start = 0
    for doc in docs:
        alone = apply({"params": params}, jnp.asarray(doc[None]), deterministic=True)
        np.testing.assert_allclose(packed[0, start:start + len(doc)], alone[0], atol=1e-5)
        start += len(doc)


def test_dynamic_masking_follows_bert(corpus):
    trn, _, preproc = flaxtrain.text.lm_from_files(str(corpus / "doc*"), tokenizer="minilm", maxlen=64, verbose=0)
    rows = np.stack([ids for ids, _ in trn.rows()])
    segments = np.stack([s for _, s in trn.rows()])
    batch = {"input_ids": rows, "segment_ids": segments, "weight": np.ones(len(rows), np.float32)}
    out = mask_tokens(batch, preproc, np.random.default_rng(0))
    chosen = out["labels"] >= 0
    real = (segments > 0) & ~np.isin(rows, preproc.special_ids)
    assert not (chosen & ~real).any() and np.all(out["labels"][chosen] == rows[chosen])  # specials, padding never
    assert abs(chosen.sum() / real.sum() - 0.15) < 0.02
    masked, replaced = out["input_ids"] == preproc.mask_id, out["input_ids"] != rows
    assert abs(masked[chosen].mean() - 0.8) < 0.04 and abs((replaced & ~masked)[chosen].mean() - 0.1) < 0.03
    assert np.array_equal(out["input_ids"][~chosen], rows[~chosen])
    # The train step's gathered view: each row's chosen positions, in order, then unused slots (label -1).
    slots = out["mlm_positions"].shape[1]
    assert slots == prediction_slots(64, 0.15) == 27 and chosen.sum(axis=1).max() <= slots
    used = out["mlm_labels"] >= 0
    for r in range(len(rows)):
        assert np.array_equal(out["mlm_positions"][r][used[r]], np.flatnonzero(chosen[r]))
        assert np.array_equal(out["mlm_labels"][r][used[r]], rows[r][chosen[r]])
    continuation = preproc.continuation_table()
    whole = mask_tokens(batch, preproc, np.random.default_rng(0), continuation)["labels"] >= 0
    pieces = continuation[rows] & real
    pieces[:, 0] = False  # a word cut by a row's start has its first pieces in the row before
    assert pieces.any()
    previous = np.roll(whole, 1, axis=1)
    assert np.array_equal(whole[pieces], previous[pieces])  # a word's pieces are chosen together
    # The task draws new masks every epoch, the same ones again for the same (seed, epoch).
    task = flaxtrain.tasks.named("masked_lm")
    first = [b["labels"] for b in task.batches(trn, batch_size=8, epoch=0)[0]]
    again = [b["labels"] for b in task.batches(trn, batch_size=8, epoch=0)[0]]
    other = [b["labels"] for b in task.batches(trn, batch_size=8, epoch=1)[0]]
    assert all(np.array_equal(a, b) for a, b in zip(first, again)) and not all(
        np.array_equal(a, b) for a, b in zip(first, other))


def test_a_row_with_more_chosen_tokens_than_slots_keeps_its_first_ones(corpus, monkeypatch):
    trn, _, preproc = flaxtrain.text.lm_from_files(str(corpus / "doc*"), tokenizer="minilm", maxlen=64, verbose=0)
    rows = np.stack([ids for ids, _ in trn.rows()])
    batch = {"input_ids": rows, "segment_ids": np.stack([s for _, s in trn.rows()]), "weight": np.ones(len(rows), np.float32)}
    full = mask_tokens(batch, preproc, np.random.default_rng(0))
    monkeypatch.setattr(masked_lm, "prediction_slots", lambda length, probability: 3)
    capped = mask_tokens(batch, preproc, np.random.default_rng(0))
    first = (full["labels"] >= 0) & (np.cumsum(full["labels"] >= 0, axis=1) <= 3)
    assert (full["labels"] >= 0).sum(axis=1).max() > 3 and capped["mlm_positions"].shape == (len(rows), 3)
    assert np.array_equal(capped["labels"] >= 0, first)
    assert np.array_equal(capped["input_ids"][~first], rows[~first])  # the dropped ones are the text again


def test_the_gathered_head_gives_the_loss_and_gradient_of_the_full_logits(corpus):
    trn, _, preproc = flaxtrain.text.lm_from_files(str(corpus / "doc*"), tokenizer=str(corpus / "tokenizer.json"),
                                                   maxlen=32, verbose=0)
    rows = np.stack([ids for ids, _ in trn.rows()])[:6]
    batch = {"input_ids": rows, "segment_ids": np.stack([s for _, s in trn.rows()])[:6],
             "weight": np.array([1, 1, 1, 1, 1, 0], np.float32)}  # a padding row counts for nothing either way
    batch = mask_tokens(batch, preproc, np.random.default_rng(1))
    config = models.make_config("masked_lm", encoder=EncoderConfig(vocab_size=preproc.vocab_size, hidden_size=16,
                                                                   num_layers=1, num_heads=2, mlp_dim=32))
    module = models.build_model("masked_lm", config)
    params = jax.jit(lambda key: module.init(key, jnp.zeros((1, 32), jnp.int32), deterministic=True))(jax.random.key(0))["params"]
    full = {k: v for k, v in batch.items() if not k.startswith("mlm_")}

    @jax.jit  # one compile; op by op, the eager gradient takes ~30 s
    def run(b):
        return jax.value_and_grad(lambda p: masked_lm_loss(module.apply, p, b, rngs={}, deterministic=True),
                                  has_aux=True)(params)

    (loss, sums), grads = run(batch)
    (ref_loss, ref_sums), ref_grads = run(full)
    assert float(sums["count"]) == float(ref_sums["count"]) > 0 and float(sums["correct"]) == float(ref_sums["correct"])
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7)


def test_a_batch_without_masks_gives_zero_loss_and_gradient():
    config = models.make_config("masked_lm", encoder=EncoderConfig(vocab_size=30, hidden_size=8, num_layers=1,
                                                                   num_heads=2, mlp_dim=16))
    module = models.build_model("masked_lm", config)
    params = jax.jit(lambda key: module.init(key, jnp.zeros((1, 8), jnp.int32), deterministic=True))(jax.random.key(0))["params"]
    batch = {"input_ids": jnp.ones((2, 8), jnp.int32), "segment_ids": jnp.ones((2, 8), jnp.int32),
             "labels": -jnp.ones((2, 8), jnp.int32), "weight": jnp.ones(2, jnp.float32)}
    (loss, sums), grads = jax.jit(jax.value_and_grad(
        lambda p: masked_lm_loss(module.apply, p, batch, rngs={}, deterministic=True), has_aux=True))(params)
    assert float(loss) == 0.0 and float(sums["count"]) == 0.0
    assert all(np.isfinite(g).all() and not np.any(g) for g in jax.tree.leaves(grads))


def test_bert_from_scratch_trains_saves_and_matches_pytorch(corpus, tmp_path):
    trn, val, preproc = flaxtrain.text.lm_from_files([corpus / "doc0.txt", corpus / "doc1.txt"], corpus / "doc2.txt.gz",
                                                     tokenizer=str(corpus / "tokenizer.json"), maxlen=32, verbose=0)
    model = flaxtrain.get_model("bert", train_data=trn, params=TINY)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
    before = learner.validate(print_report=False)
    history = learner.fit_onecycle(5e-3, 3, verbose=0)
    after = learner.validate(print_report=False)
    assert set(after) == {"loss", "accuracy", "perplexity"} and np.isclose(after["perplexity"], np.exp(after["loss"]))
    assert after["loss"] < before["loss"] - 0.3 and np.isclose(history[-1]["val_loss"], after["loss"], rtol=1e-5)
    predictor = flaxtrain.get_predictor(learner.model, preproc)
    filled = predictor.predict("the cat [MASK] on the [MASK] .")
    assert len(filled) == 2 and all(len(m) == 5 and m[0][1] >= m[1][1] for m in filled)
    predictor.save_pretrained(tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    reference = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    texts = ["the cat [MASK] on the [MASK] .", "remarkable birds flew over the small red tree quickly ."]
    ids, best = predictor.top_tokens(texts)
    for row, found in zip(ids, best):
        with torch.no_grad():
            log_probs = reference(torch.tensor(row[None].astype(np.int64))).logits[0].log_softmax(-1).numpy()
        top = -np.sort(-log_probs, axis=-1)[:, :5]
        np.testing.assert_allclose(found[: len(row), :, 0], top, atol=1e-4)
    # Exported (StableHLO; ONNX; TFLite, rows padded to maxlen), the logits are PyTorch's at every real position.
    from flaxtrain.export import runtime

    for fmt, path in (("jax", tmp_path / "jax"), ("onnx", tmp_path / "mlm.onnx"), ("tflite", tmp_path / "mlm.tflite")):
        out = predictor.export(path, format=fmt, texts=texts)
        sample = np.load((out.parent if out.is_file() else out) / "sample.npz")["input_ids"]
        logits = runtime.load(out)({"input_ids": sample})["logits"]
        for row, got in zip(sample, logits):
            real = row != preproc.pad_id
            with torch.no_grad():
                want = reference(torch.tensor(row[real][None].astype(np.int64))).logits[0].numpy()
            np.testing.assert_allclose(got[real], want, atol=1e-4, err_msg=fmt)
    # Continued pretraining of the saved folder starts from exactly those weights, head included.
    again = flaxtrain.get_model(str(tmp_path / "hf"), train_data=trn)
    np.testing.assert_allclose(flaxtrain.get_predictor(again).top_tokens(texts)[1], best, atol=1e-5)
    scanned = flaxtrain.get_model(str(tmp_path / "hf"), train_data=trn, params={"scan_layers": True, "remat": "full"})
    assert "layers" in scanned.params["encoder"] and "layer_0" not in scanned.params["encoder"]
    np.testing.assert_allclose(flaxtrain.get_predictor(scanned).top_tokens(texts)[1], best, atol=1e-5)
    with pytest.raises(FlaxtrainError, match="keeps its checkpoint's sizes: drop params \\['num_layers'\\]"):
        flaxtrain.get_model(str(tmp_path / "hf"), train_data=trn, params={"num_layers": 2})
    with pytest.raises(FlaxtrainError, match="reads its own word pieces"):
        flaxtrain.get_model("minilm", train_data=trn)
    with pytest.raises(FlaxtrainError, match="unknown bert config key 'num_layer' \\(did you mean 'num_layers'\\?\\)"):
        flaxtrain.get_model("bert", train_data=trn, params={"num_layer": 2})


def test_masked_lm_trains_in_bfloat16_with_float32_params(corpus):
    trn, val, _ = flaxtrain.text.lm_from_files(corpus / "doc0.txt", corpus / "doc2.txt.gz",
                                               tokenizer=str(corpus / "tokenizer.json"), maxlen=32, verbose=0)
    model = flaxtrain.get_model("bert", train_data=trn, params=TINY)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16, precision="bfloat16")
    before = learner.validate(print_report=False)["loss"]
    history = learner.fit_onecycle(5e-3, 3, verbose=0)
    assert history[-1]["val_loss"] < before - 0.3 and all(np.isfinite(r["loss"]) for r in history)
    assert {x.dtype for x in jax.tree.leaves(learner.model.params)} == {np.dtype("float32")}
    batch = next(iter(learner._batches(trn, train=True)[0]))
    hlo = learner.steps._jitted["train"].lower(learner._train_state(), batch, jax.random.key(0)).as_text()
    assert hlo.count("bf16") > 10  # the blocks and the tied head run in bf16


def test_continued_pretraining_of_minilm_keeps_its_encoder():
    from flaxtrain.data.lm import wikitext2

    trn, _, preproc = flaxtrain.text.lm_from_files(wikitext2("valid"), tokenizer="minilm", maxlen=64, verbose=0)
    model = flaxtrain.get_model("minilm", train_data=trn)
    assert model.task.name == "masked_lm" and model.config.encoder.num_layers == 6
    from flaxtrain import hub

    _, pretrained, _ = hub.load_pretrained("minilm", task="mlm")
    np.testing.assert_array_equal(model.params["encoder"]["word"]["embedding"], pretrained["encoder"]["word"]["embedding"])
    assert preproc.vocab_size == 30522 and trn.padding_fraction() < 0.01


def test_training_by_steps_stops_mid_epoch_and_resumes_exactly(corpus, tmp_path):
    trn, _, _ = flaxtrain.text.lm_from_files(str(corpus / "doc*"), tokenizer=str(corpus / "tokenizer.json"), maxlen=32,
                                             verbose=0)

    def learner(val=None):
        model = flaxtrain.get_model("bert", train_data=trn, params=TINY, seed=1)
        return flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=8)

    per_epoch = trn.num_batches(8)
    whole = learner(val=trn)  # validated every 4 steps as well as at the epoch ends
    history = whole.fit_onecycle(3e-3, max_steps=per_epoch + 3, verbose=0, evaluate_every=4)
    assert len(history) == 2 and whole.steps.step_of(whole._train_state()) == per_epoch + 3
    middle = [s for s in range(4, per_epoch + 3, 4) if s != per_epoch]
    assert [r["step"] for r in whole.evaluations] == middle
    assert all(np.isfinite(r["val_loss"]) and np.isfinite(r["loss"]) for r in whole.evaluations)
    assert whole.evaluations[-1]["val_loss"] < whole.evaluations[0]["val_loss"]
    assert [step for step, _ in whole.lr_trace] == list(range(per_epoch + 3))
    # A run stopped by a checkpointed interruption and resumed sees the same masked batches: same weights.
    first = learner()
    with pytest.raises(FlaxtrainError):
        first.fit_onecycle(3e-3, max_steps=per_epoch + 3, verbose=0, checkpoint_dir=tmp_path / "ckpt",
                           checkpoint_every=2, **_interrupt_after(first, per_epoch + 1))
    resumed = learner()
    resumed.fit_onecycle(3e-3, max_steps=per_epoch + 3, verbose=0, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=2,
                         resume=True)
    for a, b in zip(jax.tree.leaves(resumed.model.params), jax.tree.leaves(whole.model.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FlaxtrainError, match="pass epochs or max_steps"):
        whole.fit_onecycle(1e-3)


def _interrupt_after(learner, steps):
    """Makes the learner's training batches raise KeyboardInterrupt once `steps` batches were drawn."""
    drawn = [0]
    task_batches = learner._batches

    def counting(data, **kwargs):
        batches, count = task_batches(data, **kwargs)

        def gen():
            for batch in batches:
                if kwargs.get("train") and drawn[0] >= steps:
                    raise KeyboardInterrupt
                drawn[0] += kwargs.get("train", False)
                yield batch

        return gen(), count

    learner._batches = counting
    return {}


def test_validate_and_top_losses_read_the_stream(corpus, capsys):
    trn, val, _ = flaxtrain.text.lm_from_files(str(corpus / "doc0.txt"), str(corpus / "doc1.txt"),
                                               tokenizer=str(corpus / "tokenizer.json"), maxlen=32, verbose=0)
    learner = flaxtrain.get_learner(flaxtrain.get_model("bert", train_data=trn, params=TINY), val_data=val, batch_size=8)
    worst = learner.view_top_losses(3)
    assert [loss for _, loss, _, _ in worst] == sorted((loss for _, loss, _, _ in worst), reverse=True)
    assert all(isinstance(text, str) and text for _, _, text, _ in worst) and "loss" in capsys.readouterr().out
    with pytest.raises(FlaxtrainError, match="has no list of texts"):
        val.texts


def test_two_processes_pretrain_on_their_own_shards_and_resume_exactly(corpus, tmp_path):
    """Two processes (2 CPU devices each, jax.distributed): each reads its own documents, both end with
    the same weights, a stopped and resumed run equals the uninterrupted one, process 0 saves the model."""
    import os
    import socket
    from pathlib import Path

    from conftest import start_worker, wait_for_worker, worker_xla_flags

    (corpus / "val.txt").exists() or (corpus / "val.txt").write_text((corpus / "doc0.txt").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = Path(__file__).with_name("lm_multihost_worker.py")
    procs = [start_worker(worker, [str(tmp_path), str(corpus)], tmp_path / f"log-{i}.txt",
                          {**os.environ, "XLA_FLAGS": worker_xla_flags(2), "TF_CPP_MIN_LOG_LEVEL": "3",
                           "FLAXTRAIN_TEST_PROCESS": f"{i}/2/{port}"}) for i in range(2)]
    for proc in procs:
        wait_for_worker(proc)
    first, second = (np.load(tmp_path / f"result-{i}.npz") for i in range(2))
    every = [d for d in _all_documents(corpus)]
    assert not set(first["documents"]) & set(second["documents"])  # disjoint shards that cover the corpus
    assert sorted([*first["documents"], *second["documents"]]) == sorted(every)
    np.testing.assert_array_equal(first["rows"], second["rows"])
    assert first["steps"][0] == first["steps"][1]
    np.testing.assert_array_equal(first["whole"], second["whole"])  # every process holds the same weights
    np.testing.assert_array_equal(first["resumed"], first["whole"])  # resumed exactly, stream position included
    np.testing.assert_array_equal(second["resumed"], second["whole"])
    np.testing.assert_array_equal(first["losses"], second["losses"])
    assert first["losses"][2] < first["losses"][0] - 0.1
    reloaded = transformers.BertForMaskedLM.from_pretrained(tmp_path / "run" / "hf")
    assert reloaded.config.num_hidden_layers == 2


def _all_documents(corpus):
    from flaxtrain.data.documents import TextFiles

    return list(TextFiles.of(str(corpus / "doc*"), "files").documents())


def test_a_stream_without_documents_is_a_one_line_error(corpus, tmp_path):
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    trn, _, _ = flaxtrain.text.lm_from_files(str(tmp_path / "blank.txt"), tokenizer=str(corpus / "tokenizer.json"),
                                             maxlen=16, verbose=0)
    model = flaxtrain.get_model("bert", train_data=trn, params=TINY)
    with pytest.raises(FlaxtrainError, match="train_data is empty: the stream holds no document: pass files"):
        flaxtrain.get_learner(model, train_data=trn, batch_size=4)
