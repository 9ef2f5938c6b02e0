import numpy as np
import pytest
from safetensors.numpy import save_file

import flaxtrain
import flaxtrain.text
from flaxtrain import hub
from flaxtrain.data.tokenizer import train_word_tokenizer
from flaxtrain.errors import FlaxtrainError


@pytest.fixture()
def checkpoint(tmp_path, sentiment_texts):
    """A tiny BERT-layout folder: tokenizer.json and model.safetensors with a word embedding table."""
    tokenizer = train_word_tokenizer(sentiment_texts[0], vocab_size=60)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    table = np.random.default_rng(0).normal(scale=0.1, size=(tokenizer.get_vocab_size(), 6)).astype(np.float32)
    save_file({"bert.embeddings.word_embeddings.weight": table}, str(tmp_path / "model.safetensors"))
    return tmp_path, table


def test_minilm_ships_its_vocabulary_and_vectors():
    table = hub.load_word_embeddings("minilm")
    tokenizer = hub.load_tokenizer("minilm")
    assert table.shape == (30522, 384) and table.dtype == np.float32
    assert tokenizer.get_vocab_size() == 30522 and tokenizer.token_to_id("[PAD]") == 0
    assert tokenizer.encode("Hello there", add_special_tokens=False).tokens == ["hello", "there"]


def test_word_vectors_initialise_the_embedding_table(checkpoint, sentiment_texts):
    path, table = checkpoint
    texts, labels = sentiment_texts
    data = flaxtrain.text.LoadedData("synthetic", texts[:200], labels[:200], texts[200:], labels[200:], ["neg", "pos"])
    model = flaxtrain.get_model("textcnn", train_data=data, word_vectors=str(path), maxlen=24,
                                params={"num_filters": 4, "kernel_sizes": (3,)})
    np.testing.assert_array_equal(model.params["embed"]["embedding"], table)
    assert model.config.embed_dim == 6 and model.preproc.vocab_size == table.shape[0]
    history = flaxtrain.get_learner(model, batch_size=16).fit(2e-2, 4, verbose=0)
    assert history[-1]["val_acc"] >= 0.9
    with pytest.raises(FlaxtrainError, match="embed_dim 8 differs"):
        flaxtrain.get_model("textcnn", train_data=data, word_vectors=str(path), params={"embed_dim": 8})


def test_word_vectors_need_their_own_tokenizer(checkpoint, tiny_split):
    path, _ = checkpoint
    train, _, _ = tiny_split
    with pytest.raises(FlaxtrainError, match="need texts encoded by their own tokenizer"):
        flaxtrain.get_model("textcnn", train_data=train, word_vectors=str(path))


def test_bad_checkpoints_give_one_line_errors(checkpoint, tmp_path_factory):
    path, _ = checkpoint
    with pytest.raises(FlaxtrainError, match="neither a pretrained name"):
        hub.resolve_checkpoint("minilmm")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FlaxtrainError, match="has no model.safetensors"):
        hub.load_word_embeddings(empty)
    with pytest.raises(FlaxtrainError, match="has no tokenizer.json"):
        hub.load_tokenizer(empty)
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(FlaxtrainError, match="not a readable safetensors file"):
        hub.load_word_embeddings(path)
