"""Extractive QA: SQuAD files and arrays, windows over long contexts, span decoding, parity, training."""

import json

import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain import hub
from flaxtrain.data.qa import read_squad
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import squad_metrics
from flaxtrain.eval.spans import best_span
from qa_data import make_qa_examples

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402

SQUAD = {"version": "1.1", "data": [{"title": "Acme", "paragraphs": [
    {"context": "Acme Corp was founded in Oslo in 1921 by Anna Adler.",
     "qas": [{"id": "q1", "question": "Where was Acme Corp founded?", "answers": [{"text": "Oslo", "answer_start": 25}]},
             {"id": "q2", "question": "Who founded Acme Corp?",
              "answers": [{"text": "Anna Adler", "answer_start": 41}, {"text": "Adler", "answer_start": 46}]}]}]}]}


def _write(path, document):
    path.write_text(json.dumps(document, indent=2))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random BertForQuestionAnswering (head included) with MiniLM's word pieces."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("bert_qa")
    reference = transformers.BertForQuestionAnswering(config)
    reference.save_pretrained(path, safe_serialization=True)
    hub.load_tokenizer("minilm").save(str(path / "tokenizer.json"))
    return path, reference


def test_squad_file_reads_and_rejects_bad_answers(tmp_path):
    examples = read_squad(_write(tmp_path / "train.json", SQUAD))
    assert [(e.id, e.answers) for e in examples] == [("q1", ("Oslo",)), ("q2", ("Anna Adler", "Adler"))]
    broken = json.loads(json.dumps(SQUAD))
    broken["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 40
    with pytest.raises(FlaxtrainError, match=r"bad.json, line 2\d \(question 'q2'\): answer_start 40 does not point at "
                                             r"the answer 'Anna Adler'"):
        read_squad(_write(tmp_path / "bad.json", broken))
    empty = json.loads(json.dumps(SQUAD))
    empty["data"][0]["paragraphs"][0]["context"] = " "
    with pytest.raises(FlaxtrainError, match="empty.json, line .*empty context"):
        read_squad(_write(tmp_path / "empty.json", empty))
    (tmp_path / "torn.json").write_text('{"data": [\n{"title": ')
    with pytest.raises(FlaxtrainError, match=r"torn.json, line 2: not valid JSON"):
        read_squad(tmp_path / "torn.json")
    with pytest.raises(FlaxtrainError, match=r"example 2: answer_start 2 does not point at the answer 'Oslo'"):
        flaxtrain.text.qa_from_array(["q", "q"], ["in Oslo", "in Oslo"], ["Oslo", "Oslo"], [3, 2], val_pct=0, verbose=0)
    with pytest.raises(FlaxtrainError, match="2 questions but 1 contexts"):
        flaxtrain.text.qa_from_array(["q", "q"], ["in Oslo"], ["Oslo"], [3], verbose=0)


def test_long_contexts_split_into_windows_that_map_back(checkpoint):
    path, _ = checkpoint
    filler = " ".join(f"word{i}" for i in range(60))
    context = f"{filler} The treasure lies in Lagos near the harbour. {filler}"
    start = context.index("Lagos")
    trn, _, preproc = flaxtrain.text.qa_from_array(["Where is the treasure?"], [context], ["Lagos"], [start], val_pct=0,
                                                   maxlen=48, doc_stride=12, max_query_length=16, verbose=0)
    flaxtrain.text.qa_model(str(path), preproc, verbose=0)
    windows = trn.windows
    assert len(windows.input_ids) > 3 and (windows.example == 0).all()
    assert all(len(ids) <= 48 for ids in windows.input_ids)
    inside = [w for w, (s, e) in enumerate(windows.spans) if s > 0]
    assert inside, "the answer must lie whole inside at least one window"
    for w in inside:
        s, e = windows.spans[w]
        a, b = windows.offsets[w][s, 0], windows.offsets[w][e, 1]
        assert context[a:b] == "Lagos"
        assert (windows.token_type_ids[w][s:e + 1] == 1).all()
    assert any(tuple(span) == (0, 0) for span in windows.spans)  # windows without the answer point at [CLS]


def test_span_decoding_picks_the_best_valid_span_over_windows():
    context = "alpha beta gamma delta"
    offsets = np.array([[-1, -1], [0, 5], [6, 10], [11, 16], [17, 22]])
    low = np.full((5, 2), -5.0)
    w1 = low.copy()
    w1[3, 0], w1[1, 1] = 4.0, 4.0  # end before start: invalid
    w1[2, 1] = 1.0
    w2 = low.copy()
    w2[2, 0], w2[4, 1] = 3.0, 3.5  # 'beta gamma delta': 3 tokens
    best = best_span([w1, w2], [offsets, offsets], context)
    assert best["answer"] == "beta gamma delta" and (best["start"], best["end"]) == (6, 22)
    assert best_span([w1, w2], [offsets, offsets], context, max_answer_length=2)["answer"] == "gamma"
    null = low.copy()
    null[0] = 9.0
    assert best_span([null], [offsets], context, allow_no_answer=True)["answer"] == ""
    assert 0 < best["score"] <= 1


def test_squad_metrics():
    assert squad_metrics(["The Oslo!", "Adler", "x"], ["oslo", ["Anna Adler", "Adler"], "y z"]) == {
        "exact_match": pytest.approx(200 / 3), "f1": pytest.approx(200 / 3)}
    assert squad_metrics(["Anna"], [["Anna Adler"]])["f1"] == pytest.approx(100 * 2 / 3)


def _check_parity(path, reference):
    q, c, a, s = make_qa_examples(2, seed=3)
    trn, _, preproc = flaxtrain.text.qa_from_array(q, c, a, s, val_pct=0, maxlen=96, verbose=0)
    model = flaxtrain.text.qa_model(str(path), preproc, verbose=0)
    batch = next(iter(trn.batches(batch_size=4)[0]))
    start, end = model.module.apply({"params": model.params}, batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                    attention_mask=batch["attention_mask"], deterministic=True)
    with torch.no_grad():
        out = reference.eval()(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                               token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long),
                               attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long))
    real = batch["attention_mask"] > 0
    np.testing.assert_allclose(np.asarray(start)[real], out.start_logits.numpy()[real], atol=1e-4)
    np.testing.assert_allclose(np.asarray(end)[real], out.end_logits.numpy()[real], atol=1e-4)


def test_span_head_matches_pytorch_on_a_random_tiny_bert(checkpoint, tmp_path):
    _check_parity(*checkpoint)
    # Exported (StableHLO; ONNX in onnxruntime), the start and end logits of every window are PyTorch's.
    import onnxruntime

    from flaxtrain.export import runtime

    path, reference = checkpoint
    q, c, a, s = make_qa_examples(3, seed=4)
    _, _, preproc = flaxtrain.text.qa_from_array(q, c, a, s, val_pct=0, maxlen=64, doc_stride=16, max_query_length=16,
                                                  verbose=0)
    predictor = flaxtrain.get_predictor(flaxtrain.text.qa_model(str(path), preproc, verbose=0))
    pairs = list(zip(q, c))
    for fmt, target in (("jax", tmp_path / "jax"), ("onnx", tmp_path / "qa.onnx"), ("saved_model", tmp_path / "sm"),
                        ("tflite", tmp_path / "qa.tflite")):
        out = predictor.export(target, format=fmt, texts=pairs)
        sample = np.load((out.parent if out.is_file() else out) / "sample.npz")
        feed = {k: sample[k] for k in ("input_ids", "token_type_ids", "attention_mask")}  # tflite: maxlen wide
        if fmt == "onnx":
            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = dict(zip(["start_logits", "end_logits"], session.run(None, feed)))
        else:
            got = runtime.load(out)(feed)
        with torch.no_grad():
            want = reference.eval()(**{k: torch.tensor(v, dtype=torch.long) for k, v in feed.items()})
        real = feed["attention_mask"] > 0
        np.testing.assert_allclose(got["start_logits"][real], want.start_logits.numpy()[real], atol=1e-4, err_msg=fmt)
        np.testing.assert_allclose(got["end_logits"][real], want.end_logits.numpy()[real], atol=1e-4, err_msg=fmt)
    with pytest.raises(FlaxtrainError, match=r"export sample is \(question, context\) pairs"):
        predictor.export(tmp_path / "bad", format="jax", texts=["just a question"])


def test_span_head_matches_pytorch_on_real_minilm(tmp_path):
    torch.manual_seed(0)
    reference = transformers.BertForQuestionAnswering.from_pretrained(str(hub.resolve_checkpoint("minilm")))
    reference.save_pretrained(tmp_path, safe_serialization=True)
    hub.load_tokenizer("minilm").save(str(tmp_path / "tokenizer.json"))
    _check_parity(tmp_path, reference)


def test_tiny_qa_model_trains_through_the_learner_and_saves(checkpoint, tmp_path):
    path, _ = checkpoint
    q, c, a, s = make_qa_examples(24, seed=0)
    trn, val, preproc = flaxtrain.text.qa_from_array(q, c, a, s, maxlen=96, verbose=0)
    model = flaxtrain.text.qa_model(str(path), preproc, verbose=0)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=8)
    history = learner.fit_onecycle(3e-3, 3, verbose=0, checkpoint_dir=tmp_path / "ckpt")  # the same Learner tools
    assert history[-1]["loss"] < history[0]["loss"], history
    assert (tmp_path / "ckpt" / "latest" / str(3 * learner._steps_per_epoch())).is_dir()
    metrics = learner.validate(print_report=False)
    assert set(metrics) == {"exact_match", "f1"}
    worst = learner.top_losses(2)
    assert len(worst) == 2 and worst[0][1] >= worst[1][1]
    predictor = flaxtrain.get_predictor(learner.model)
    again = flaxtrain.load_predictor(predictor.save(tmp_path / "qa"))
    pairs = [(q[0], c[0]), (q[1], c[1])]
    assert again.predict(pairs) == predictor.predict(pairs)
    one = predictor.predict(q[0], c[0])
    assert set(one) == {"answer", "start", "end", "score"} and c[0][one["start"]:one["end"]] == one["answer"]


@pytest.mark.slow
def test_minilm_answers_questions_about_unseen_entities():
    q, c, a, s = make_qa_examples(48, seed=0)
    tq, tc, ta, ts = make_qa_examples(20, test=True, seed=1)  # every entity unseen in training
    trn, val, preproc = flaxtrain.text.qa_from_array(q, c, a, s, tq, tc, ta, ts, maxlen=64, max_query_length=24,
                                                     doc_stride=16)
    learner = flaxtrain.get_learner(flaxtrain.text.qa_model("minilm", preproc), train_data=trn, val_data=val,
                                    batch_size=16)
    learner.fit(1e-4, 2)
    metrics = learner.validate()
    print(f"MiniLM QA on unseen entities: {metrics}")
    assert metrics["exact_match"] >= 80, metrics
    answer = flaxtrain.get_predictor(learner.model).predict(tq[0], tc[0])
    assert answer["answer"] == ta[0] and tc[0][answer["start"]:answer["end"]] == ta[0]
