"""Text-pair data: the offline django and BBC sets, translation_from_pairs / summarization_from_df,
batches with shifted decoder inputs, one-line errors, and sentencepiece models read into `tokenizers`."""

import numpy as np
import pandas as pd
import pytest

from flaxtrain import FlaxtrainError
from flaxtrain.data import (
    bbc_headlines,
    django_translations,
    summarization_from_df,
    translation_from_pairs,
)


def test_django_catalogues_hold_human_translation_pairs():
    for language, word in (("de", "Passwort"), ("fr", "mot de passe")):
        sources, targets = django_translations(language)
        assert 700 < len(sources) == len(targets) < 1000
        assert len(set(zip(sources, targets))) == len(sources)  # duplicates dropped
        assert any(word in t for t in targets) and all(s.strip() and t.strip() for s, t in zip(sources, targets))
    with pytest.raises(FlaxtrainError, match="'de' and 'fr'"):
        django_translations("es")


def test_bbc_articles_come_with_their_headlines():
    articles, headlines = bbc_headlines()
    assert len(articles) == len(headlines) == 2225
    assert headlines[0] == "Ad sales boost Time Warner profit"
    assert articles[0].startswith("Quarterly profits at US media giant TimeWarner jumped 76%")
    assert max(len(h.split()) for h in headlines) < 20 < np.median([len(a.split()) for a in articles])


def test_pairs_become_batches_of_shifted_targets():
    sources = [f"the {w} is red" for w in ("car", "house", "tree", "door")] * 5
    targets = [f"das {w} ist rot" for w in ("Auto", "Haus", "Baum", "Tür")] * 5
    trn, val, preproc = translation_from_pairs(sources, targets, val_pct=0.2, maxlen=16, max_target_length=16,
                                               vocab_size=60, verbose=0)
    assert (len(trn), len(val)) == (16, 4)
    assert preproc.tokenizer.token_to_id("<pad>") == 0 and preproc.tokenizer.token_to_id("</s>") == 1
    batches, count = trn.batches(batch_size=8, shuffle=True, seed=3)
    batches = list(batches)
    assert count == len(batches) == 2
    for b in batches:
        assert b["decoder_input_ids"].shape == b["labels"].shape == (8, 16)
        for row, label in zip(b["decoder_input_ids"], b["labels"]):
            n = int((label >= 0).sum())
            assert label[n - 1] == preproc.eos_id and (label[n:] == -1).all()
            np.testing.assert_array_equal(row[:n], np.concatenate([[preproc.decoder_start_id], label[: n - 1]]))
    decoded = preproc.decode([np.maximum(batches[0]["labels"][0], 0)])[0]
    assert decoded in targets


def test_long_texts_are_truncated_and_keep_their_end_token():
    trn, _, preproc = translation_from_pairs(["a b c d e f g h i j k l"] * 3, ["x y z w v u t s r q"] * 3, val_pct=0,
                                             maxlen=5, max_target_length=4, vocab_size=40, verbose=0)
    assert all(len(x) == 5 and x[-1] == preproc.eos_id for x in trn.input_ids)
    assert all(len(y) == 4 and y[-1] == preproc.eos_id for y in trn.labels)


def test_summarization_from_df_reads_its_columns():
    df = pd.DataFrame({"article": ["one long story about things"] * 10, "title": ["a story"] * 10})
    trn, val, preproc = summarization_from_df(df, "article", "title", val_pct=0.1, vocab_size=40, verbose=0)
    assert preproc.task == "summarization" and (len(trn), len(val)) == (9, 1)
    with pytest.raises(FlaxtrainError, match="no column 'summary'"):
        summarization_from_df(df, "article", "summary", verbose=0)


@pytest.mark.parametrize("sources, targets, message", [
    (["a", "b"], ["x"], "2 sources but 1 targets"),
    ([], [], "no text pairs"),
    (["a", " "], ["x", "y"], "pair 1 has an empty source"),
    (["a", 3], ["x", "y"], r"sources\[1\] is a int"),
    ("a text", ["x"], "single string"),
])
def test_bad_pairs_get_one_line_errors(sources, targets, message):
    with pytest.raises(FlaxtrainError, match=message):
        translation_from_pairs(sources, targets, verbose=0)


def test_sentencepiece_models_encode_as_sentencepiece_does(tmp_path):
    import sentencepiece as spm  # a core dependency: missing must fail, not skip
    from flaxtrain.hub.sentencepiece import tokenizer_from_sentencepiece

    sources, _ = django_translations("de")
    (tmp_path / "corpus.txt").write_text("\n".join(sources))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "spiece"),
                                   vocab_size=300, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    tokenizer = tokenizer_from_sentencepiece(tmp_path)
    for text in sources[:200:7] + ["Ünïcödé  spaces   and UNSEEN wörds!"]:
        assert tokenizer.encode(text).ids == processor.encode(text) + [1], text
    (tmp_path / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(FlaxtrainError, match="not a readable sentencepiece model"):
        tokenizer_from_sentencepiece(tmp_path)
