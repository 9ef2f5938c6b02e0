"""Encoder-decoders through the front end: a checkpoint folder with its tokenizer straight into a
predictor, save / load, bert2bert warm-started from a BERT checkpoint, and one-line errors."""

import numpy as np
import pytest

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402

import flaxtrain  # noqa: E402
from flaxtrain import FlaxtrainError, hub  # noqa: E402
from flaxtrain.data import django_translations, translation_from_pairs  # noqa: E402
from flaxtrain.data.seq2seq import train_seq2seq_tokenizer  # noqa: E402

V = 120


@pytest.fixture(scope="module")
def marian_folder(tmp_path_factory):
    """A random tiny Marian checkpoint saved by transformers, with a tokenizer.json of its vocabulary."""
    sources, targets = django_translations("de")
    tokenizer = train_seq2seq_tokenizer(sources + targets, vocab_size=V)
    torch.manual_seed(0)
    config = transformers.MarianConfig(vocab_size=V, decoder_vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2,
                                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                       decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=0, eos_token_id=1,
                                       decoder_start_token_id=0, forced_eos_token_id=1, scale_embedding=True)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("marian")
    model.save_pretrained(path)
    tokenizer.save(str(path / "tokenizer.json"))
    return path, model, tokenizer, sources


def test_a_checkpoint_folder_predicts_with_its_own_tokenizer(marian_folder, tmp_path):
    path, reference, tokenizer, sources = marian_folder
    model = flaxtrain.get_model(str(path), task="translation")
    predictor = flaxtrain.get_predictor(model, batch_size=4)  # no preprocessor: the folder's tokenizer
    texts = sources[:6]
    got = predictor.predict(texts, num_beams=4, max_new_tokens=10)
    ids = [tokenizer.encode(t).ids for t in texts]
    width = max(map(len, ids))
    batch = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    with torch.no_grad():
        want = reference.generate(input_ids=batch, attention_mask=(batch != 0).long(), num_beams=4, max_new_tokens=10)
    assert got == tokenizer.decode_batch(want.tolist(), skip_special_tokens=True)
    assert predictor.predict(texts[0], num_beams=4, max_new_tokens=10) == got[0]
    assert len(predictor.predict(texts[0], num_beams=4, num_return_sequences=3, max_new_tokens=10)) == 3

    predictor.save(tmp_path / "saved")
    again = flaxtrain.load_predictor(tmp_path / "saved", batch_size=4)
    assert again.predict(texts, num_beams=4, max_new_tokens=10) == got
    predictor.save_pretrained(tmp_path / "hf")
    back = transformers.MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        np.testing.assert_array_equal(back.generate(input_ids=batch, attention_mask=(batch != 0).long(), num_beams=4,
                                                    max_new_tokens=10).numpy(), want.numpy())


def _tiny_bert(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w.lower() for s in django_translations("de")[0][:200]
                                                                    for w in s.split()})[:95]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=4, intermediate_size=64,
                                                          max_position_embeddings=64)).eval()
    bert.save_pretrained(path)
    return bert, tokenizer


def test_bert2bert_starts_both_stacks_from_the_pretrained_encoder(tmp_path):
    bert, tokenizer = _tiny_bert(tmp_path)
    sources = [s for s in django_translations("de")[0] if len(s.split()) < 8][:32]
    trn, _, _ = translation_from_pairs(sources, sources, val_pct=0, maxlen=16, max_target_length=16, verbose=0)
    model = flaxtrain.get_model("bert2bert", trn, params={"encoder": str(tmp_path)})
    assert trn.preproc is model.preproc and model.preproc.decoder_start_id == 2 and model.preproc.eos_id == 3
    ids = trn.input_ids[0][None]
    assert ids[0, 0] == 2 and ids[0, -1] == 3  # re-encoded by the encoder's own tokenizer
    hidden = model.module.apply({"params": model.params}, ids, method="encode")
    with torch.no_grad():
        want = bert(input_ids=torch.tensor(np.asarray(ids, np.int64))).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(hidden), want, atol=1e-4)
    p = model.params
    np.testing.assert_array_equal(p["decoder"]["layer_1"]["self_attention"]["query"]["kernel"],
                                  p["encoder"]["layer_1"]["self_attention"]["query"]["kernel"])
    assert "cross_attention" in p["decoder"]["layer_0"] and "cross_attention" not in p["encoder"]["layer_0"]
    copied = flaxtrain.get_model("bert2bert", trn, params={"encoder": str(tmp_path), "cross_attention_init": "self"})
    np.testing.assert_array_equal(copied.params["decoder"]["layer_0"]["cross_attention"]["key"]["kernel"],
                                  p["encoder"]["layer_0"]["self_attention"]["key"]["kernel"])
    learner = flaxtrain.get_learner(model, trn, batch_size=8)
    learner.fit(1e-3, 1, verbose=0)  # labels line up with decoder inputs: one epoch lowers the loss
    assert learner.history[-1]["loss"] < np.log(model.config.vocab_size)


def test_encoder_decoder_mistakes_get_one_line_errors(marian_folder):
    path, *_ = marian_folder
    trn, _, _ = translation_from_pairs(["a b", "c d"], ["x y", "z w"], val_pct=0, vocab_size=20, verbose=0)
    cases = [
        (lambda: flaxtrain.get_model("mariam", trn), r"unknown encoder-decoder 'mariam' \(did you mean 'marian'\?\)"),
        (lambda: flaxtrain.get_model("marian", task="translation"), "takes its vocabulary from the data"),
        (lambda: flaxtrain.get_model("t5", trn, params={"hidden": 8}), "unknown t5 config key 'hidden'"),
        (lambda: flaxtrain.get_model("t5", trn, task="poetry"), "task must be one of translation, summarization"),
        (lambda: flaxtrain.get_predictor(flaxtrain.get_model(str(path), task="translation")).predict("Save", num_beam=2),
         r"unknown generation setting 'num_beam' \(did you mean 'num_beams'\?\)"),
        (lambda: flaxtrain.get_predictor(flaxtrain.get_model(str(path), task="translation")).predict(
            "Save", num_beams=2, num_return_sequences=3), "num_return_sequences 3 exceeds num_beams 2"),
        (lambda: hub.load_pretrained(str(path)), "holds a marian encoder-decoder"),
    ]
    for call, message in cases:
        with pytest.raises(FlaxtrainError, match=message):
            call()


def _large_random(family: str, vocab: int):
    """A transformers model with every trained weight from N(0, 0.3) and end of sequence made likely,
    special ids as all-MiniLM-L6-v2's WordPiece vocabulary has them ([PAD] 0, [CLS] 101, [SEP] 102)."""
    torch.manual_seed(3)
    ids = dict(pad_token_id=0, eos_token_id=102, decoder_start_token_id=101)
    if family == "t5":  # T5 v1.1 shape: gated-GELU, untied head (so no output scaling), odd sizes
        model = transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=vocab, d_model=40, d_kv=10, d_ff=70, num_layers=3, num_decoder_layers=3, num_heads=4,
            relative_attention_num_buckets=12, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
            dropout_rate=0.0, **ids))
    else:
        sizes = dict(vocab_size=vocab, d_model=40, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=70, decoder_ffn_dim=70, max_position_embeddings=64,
                     dropout=0.0, forced_eos_token_id=102, bos_token_id=101, **ids)
        model = (transformers.BartForConditionalGeneration(transformers.BartConfig(**sizes)) if family == "bart" else
                 transformers.MarianMTModel(transformers.MarianConfig(decoder_vocab_size=vocab, scale_embedding=True, **sizes)))
    model.eval()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "embed_positions" not in name or family == "bart":  # Marian's positions are fixed sinusoids
                weight.normal_(0.0, 0.3)
        if family == "t5":  # end of sequence among the top candidates, ending some beams early
            model.shared.weight[102].mul_(9.0)
        else:
            model.final_logits_bias[0, 102] = {"bart": 3.5, "marian": 1.75}[family]
    return model


@pytest.mark.parametrize("family", ["t5", "bart", "marian"])
def test_beam_search_on_large_random_weights_matches_transformers(family, tmp_path):
    from flaxtrain.hub.local import resolve_checkpoint
    from tokenizers import Tokenizer

    tokenizer_file = resolve_checkpoint("minilm") / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    reference = _large_random(family, tokenizer.get_vocab_size())
    reference.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text(tokenizer_file.read_text())
    texts = ["numbers like 42 and 7 travel far", "a cat", "save and continue editing the page you are on", "why"]
    model = flaxtrain.get_model(str(tmp_path), task="translation")
    predictor = flaxtrain.get_predictor(model, batch_size=4)
    ids = [tokenizer.encode(t).ids for t in texts]
    width = max(map(len, ids))
    batch = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    targets = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0]] * len(texts))
    with torch.no_grad():
        logits = reference(input_ids=batch, attention_mask=(batch != 0).long(), decoder_input_ids=targets).logits.numpy()
    ours = model.module.apply({"params": model.params}, batch.numpy(), targets.numpy(),
                              attention_mask=(batch != 0).numpy().astype(np.int32), deterministic=True)
    np.testing.assert_allclose(np.asarray(ours), logits, atol=1e-4 * np.abs(logits).max())
    ended = 0
    for settings in (dict(num_beams=4), dict(num_beams=4, length_penalty=2.0, early_stopping=True), dict(num_beams=1)):
        with torch.no_grad():
            want = reference.generate(input_ids=batch, attention_mask=(batch != 0).long(), max_new_tokens=12,
                                      do_sample=False, **settings)
        assert predictor.predict(texts, max_new_tokens=12, **settings) == tokenizer.decode_batch(
            want.tolist(), skip_special_tokens=True), (family, settings)
        ended += sum(102 in row[1:12] for row in want.tolist())  # before the 12th, forced or last, token
    assert ended > 0, "no sequence ended before the length limit: end-of-sequence candidates went untested"


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_t5_and_bart_layouts_train_from_scratch(name):
    sources, targets = django_translations("de")
    pairs = [(s, t) for s, t in zip(sources, targets) if len(s.split()) <= 3][:8]
    trn, _, _ = translation_from_pairs([s for s, _ in pairs], [t for _, t in pairs], val_pct=0, vocab_size=120,
                                       maxlen=12, max_target_length=12, verbose=0)
    model = flaxtrain.get_model(name, trn, params=dict(hidden_size=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                                                       head_dim=16, mlp_dim=64, dropout_rate=0.0))
    assert model.config.family == name and model.config.vocab_size == trn.preproc.vocab_size
    learner = flaxtrain.get_learner(model, batch_size=8)
    learner.fit_onecycle(2e-2, 60, verbose=0)  # 40 left some seeds and CPUs short of memorising (chrF 75-90)
    scores = learner.validate(trn, print_report=False)  # greedy decoding of the training sources: memorised
    assert set(scores) == {"bleu", "chrf"} and scores["chrf"] > 80, scores


def test_summarization_validate_reports_the_rouge_of_the_generated_summaries():
    import pandas as pd

    from flaxtrain.eval import generation_metrics

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    articles = [" ".join(rng.choice(words, size=6)) for _ in range(8)]
    frame = pd.DataFrame({"article": articles, "headline": [" ".join(a.split()[:2]) for a in articles]})  # lead-2
    trn, _, _ = flaxtrain.text.summarization_from_df(frame, "article", "headline", val_pct=0, vocab_size=60, maxlen=10,
                                                     max_target_length=6, verbose=0)
    model = flaxtrain.get_model("bart", trn, params=dict(hidden_size=32, num_layers=1, num_decoder_layers=1,
                                                         num_heads=2, head_dim=16, mlp_dim=64, dropout_rate=0.0))
    learner = flaxtrain.get_learner(model, batch_size=8)
    learner.fit_onecycle(2e-2, 40, verbose=0)
    scores = learner.validate(trn, print_report=False)
    generated = flaxtrain.get_predictor(learner.model).predict(trn.sources)
    assert scores == generation_metrics("summarization", generated, trn.targets)
    assert set(scores) == {"rouge1", "rouge2", "rougeL"} and scores["rouge1"] > 50, (scores, generated)  # memorised


def test_bert2bert_warm_starts_from_minilm_by_default():
    from flaxtrain.hub.local import resolve_checkpoint

    sources = [s for s in django_translations("de")[0] if len(s.split()) < 6][:16]
    trn, _, _ = translation_from_pairs(sources, sources, val_pct=0, maxlen=12, max_target_length=12, verbose=0)
    model = flaxtrain.get_model("bert2bert", trn, params={"num_decoder_layers": 1})  # encoder: 'minilm'
    assert model.config.hidden_size == 384 and model.config.num_layers == 6 and model.config.num_decoder_layers == 1
    ids = np.asarray(trn.input_ids[0][None], np.int64)
    hidden = model.module.apply({"params": model.params}, ids, method="encode")
    minilm = transformers.BertModel.from_pretrained(str(resolve_checkpoint("minilm"))).eval()
    with torch.no_grad():
        want = minilm(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(hidden), want, atol=1e-4)
