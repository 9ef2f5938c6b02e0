"""NER readers: CoNLL-2003 / BIO files, arrays and frames; tag schemes; word -> sub-word alignment."""

import numpy as np
import pandas as pd
import pytest

import flaxtrain.text
from flaxtrain import hub
from flaxtrain.data.entities import entities, read_conll, split_words, to_bio, to_bioes
from flaxtrain.errors import FlaxtrainError

# The first lines of a CoNLL-2003 file as distributed: word, POS, chunk, NER tag (IOB1), -DOCSTART- lines.
CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
to TO I-VP O
boycott VB I-VP O
British JJ I-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O

-DOCSTART- -X- -X- O

Germany NNP I-NP I-LOC
's POS B-NP O
representative NN I-NP O
"""


@pytest.fixture()
def conll_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL2003)
    return path


def test_conll2003_file_reads_as_sentences_with_bio_tags(conll_file):
    sentences = read_conll(conll_file)
    assert [w for w, _ in sentences] == [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."], ["Peter", "Blackburn"],
        ["BRUSSELS", "1996-08-22"], ["Germany", "'s", "representative"]]
    trn, val, preproc = flaxtrain.text.entities_from_conll2003(conll_file, val_pct=0, verbose=0)
    assert val is None and len(trn) == 4
    assert trn.tags[1] == ["B-PER", "I-PER"] and trn.tags[0][:3] == ["B-ORG", "O", "B-MISC"]  # IOB1 -> BIO
    assert preproc.class_names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_malformed_files_name_file_and_line(tmp_path):
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("EU NNP I-NP I-ORG\nrejects VBZ O\n")
    with pytest.raises(FlaxtrainError, match=r"ragged.txt, line 2: 3 columns where the file's lines have 4"):
        read_conll(ragged)
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- -X- -X- O\n\n\n")
    with pytest.raises(FlaxtrainError, match="empty.txt holds no sentences"):
        flaxtrain.text.entities_from_txt(empty)
    bad_tag = tmp_path / "bad.txt"
    bad_tag.write_text("EU ORG\nrejects O\n")
    with pytest.raises(FlaxtrainError, match=r"bad.txt, sentence 1: tag 'ORG' is neither 'O' nor a prefixed tag"):
        flaxtrain.text.entities_from_txt(bad_tag, val_pct=0, verbose=0)
    with pytest.raises(FlaxtrainError, match="no such file"):
        read_conll(tmp_path / "missing.txt")


def test_tag_schemes_and_entity_spans():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]
    assert to_bio(iob1) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    assert to_bioes(iob1) == ["B-PER", "E-PER", "O", "S-LOC", "S-LOC", "S-ORG"]
    assert to_bio(to_bioes(iob1)) == to_bio(iob1)
    words = ["Barack", "Obama", "visited", "Paris", "Texas", "Acme"]
    assert entities(words, to_bio(iob1)) == [("Barack Obama", "PER", 0, 2), ("Paris", "LOC", 3, 4),
                                             ("Texas", "LOC", 4, 5), ("Acme", "ORG", 5, 6)]
    assert split_words("Paris, France's capital.") == (["Paris", ",", "France's", "capital", "."],
                                                       [(0, 5), (5, 6), (7, 15), (16, 23), (23, 24)])


def test_arrays_and_frames(tmp_path):
    words = [["John", "lives", "in", "Berlin"], ["Acme", "hired", "Mary", "Smith"]]
    tags = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O", "B-PER", "I-PER"]]
    trn, val, preproc = flaxtrain.text.entities_from_array(words, tags, words, tags, tag_scheme="bioes", verbose=0)
    assert trn.tags[1] == ["S-ORG", "O", "B-PER", "E-PER"] and len(val) == 2
    with pytest.raises(FlaxtrainError, match="sentence 2: 4 words but 3 tags"):
        flaxtrain.text.entities_from_array(words, [tags[0], tags[1][:3]], verbose=0)
    with pytest.raises(FlaxtrainError, match="sentence 1 is empty"):
        flaxtrain.text.entities_from_array([[], words[1]], [[], tags[1]], verbose=0)
    frame = pd.DataFrame({"SentenceID": ["Sentence: 1", None, None, None, "Sentence: 2", None, None, None],
                          "Word": words[0] + words[1], "Tag": tags[0] + tags[1]})  # GMB layout
    trn, _, _ = flaxtrain.text.entities_from_df(frame, val_pct=0, verbose=0)
    assert trn.words == words and trn.tags == tags
    with pytest.raises(FlaxtrainError, match="train_df has no column 'Tags'"):
        flaxtrain.text.entities_from_df(frame, tag_column="Tags", verbose=0)


def test_word_piece_alignment_labels_first_sub_tokens_only():
    words = [["Tarantino", "visited", "Wolfsburg", "yesterday"]]
    _, _, preproc = flaxtrain.text.entities_from_array(words * 2, [["B-PER", "O", "B-LOC", "O"]] * 2, val_pct=0,
                                                       verbose=0)
    data = preproc.preprocess(words, [["B-PER", "O", "B-LOC", "O"]])
    preproc.tokenizer, preproc.add_special_tokens = hub.load_tokenizer("minilm"), True  # as sequence_tagger does
    ids, starts, labels = data.encoded()  # re-encoded for the new tokenizer
    pieces = [preproc.tokenizer.id_to_token(int(i)) for i in ids[0]]
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) > 6  # names split into word pieces
    assert [pieces[s] for s in starts[0]] == ["tara", "visited", "wolfsburg"[: len(pieces[starts[0][2]])], "yesterday"]
    assert labels[0].tolist() == [preproc.class_names.index(t) for t in ["B-PER", "O", "B-LOC", "O"]]
    batches, _ = data.batches(batch_size=4)
    batch = next(iter(batches))
    assert batch["word_starts"].shape == batch["input_ids"].shape == batch["tags"].shape
    assert batch["word_starts"][0, :4].tolist() == starts[0].tolist() and (batch["word_starts"][0, 4:] == -1).all()
    assert (batch["tags"][0, 4:] == -1).all() and (batch["weight"] == np.array([1, 0, 0, 0])).all()
