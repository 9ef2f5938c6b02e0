"""Pretraining streams from a TensorFlow Datasets text dataset prepared on disk: the documents of a split,
even shards per process, the same rows as the same documents in a text file, a short run, clear errors."""

import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError

WORDS = "the cat dog bird sat ran flew on mat log tree quickly slowly over under big small red blue".split()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A TFDS dataset 'tiny_corpus/plain' (train 40, validation 8 documents; 'text' and 'title' features)
    prepared in a temporary data_dir, and a WordPiece tokenizer."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 60)))) + " ." for _ in range(48)]

    def split(texts):
        return tf.data.Dataset.from_tensor_slices({"text": texts, "title": [f"t{i}" for i in range(len(texts))]})

    features = tfds.features.FeaturesDict({"text": tfds.features.Text(), "title": tfds.features.Text()})
    tfds.dataset_builders.TfDataBuilder(name="tiny_corpus", config="plain", version="1.0.0", data_dir=str(root),
                                        split_datasets={"train": split(docs[:40]), "validation": split(docs[40:])},
                                        features=features).download_and_prepare()
    (root / "train.txt").write_text("\n\n".join(docs[:40]) + "\n")
    tokenizer = flaxtrain.text.train_tokenizer(str(root / "train.txt"), vocab_size=120)
    return root, docs, tokenizer


def test_a_tfds_split_streams_its_documents_in_process_shards(prepared):
    root, docs, tokenizer = prepared
    trn, val, preproc = flaxtrain.text.lm_from_tfds("tiny_corpus/plain", data_dir=str(root), text_key="text",
                                                    tokenizer=tokenizer, maxlen=32, verbose=0)
    assert trn.source.text_key == val.source.text_key == "text"
    read = list(trn.source.documents())
    assert sorted(read) == sorted(docs[:40]) and sorted(val.source.documents()) == sorted(docs[40:])
    shards = [list(trn.source.documents(i, 3)) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(read) and all(12 <= len(s) <= 14 for s in shards)  # disjoint, even
    assert len(list(trn.source.documents(limit=10))) == 10
    # the rows are those of the same documents, in the same order, read from a text file
    (root / "ordered.txt").write_text("\n\n".join(read) + "\n")
    from_file, _, _ = flaxtrain.text.lm_from_files(str(root / "ordered.txt"), tokenizer=tokenizer, maxlen=32, verbose=0)
    for (a, sa), (b, sb) in zip(trn.rows(), from_file.rows(), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)


def test_bert_pretrains_on_a_tfds_stream(prepared):
    root, _, tokenizer = prepared
    trn, val, _ = flaxtrain.text.lm_from_tfds("tiny_corpus/plain", data_dir=str(root), text_key="text", tokenizer=tokenizer,
                                              maxlen=32, verbose=0)
    model = flaxtrain.get_model("bert", train_data=trn, params=dict(num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64))
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=8)
    before = learner.validate(print_report=False)["loss"]
    learner.fit_onecycle(3e-3, max_steps=12, verbose=0)
    after = learner.validate(print_report=False)
    assert np.isfinite(after["loss"]) and after["loss"] < before


def test_tfds_sources_fail_clearly(prepared, tmp_path):
    root, _, tokenizer = prepared
    common = dict(data_dir=str(root), tokenizer=tokenizer, verbose=0)
    with pytest.raises(FlaxtrainError, match=r"2 text features \(text, title\): pass text_key="):
        flaxtrain.text.lm_from_tfds("tiny_corpus/plain", **common)
    with pytest.raises(FlaxtrainError, match="no text feature 'body': use one of text, title"):
        flaxtrain.text.lm_from_tfds("tiny_corpus/plain", text_key="body", **common)
    with pytest.raises(FlaxtrainError, match="no split 'test': use one of"):
        flaxtrain.text.lm_from_tfds("tiny_corpus/plain", val_split="test", text_key="text", **common)
    with pytest.raises(FlaxtrainError, match="cannot be read from .*tfds build tiny_corpus"):
        flaxtrain.text.lm_from_tfds("tiny_corpus/plain", data_dir=str(tmp_path), tokenizer=tokenizer, verbose=0)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or written
