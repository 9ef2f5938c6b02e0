"""A short masked-LM pretraining run on real text (WikiText-2) learns more than word frequencies, and
span corruption of the real corpus gives inputs and targets of exactly the configured lengths."""

import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.data import wikitext2


@pytest.mark.slow
def test_short_pretraining_beats_the_unigram_baseline():
    tokenizer = flaxtrain.text.train_tokenizer(wikitext2("train"), vocab_size=1000, max_documents=3000)
    trn, val, preproc = flaxtrain.text.lm_from_files(wikitext2("train"), wikitext2("valid"), tokenizer=tokenizer,
                                                     maxlen=64, max_documents=3000, verbose=0)
    val.max_documents = 300
    counts = np.ones(preproc.vocab_size)  # the unigram model: training-token frequencies (add-one)
    for ids, segments in trn.rows():
        np.add.at(counts, ids[segments > 0], 1)
    log_unigram = np.log(counts / counts.sum())
    labels = np.concatenate([b["labels"][b["labels"] >= 0] for b in flaxtrain.tasks.named("masked_lm").batches(
        val, batch_size=64)[0]])
    unigram_loss = float(-log_unigram[labels].mean())
    unigram_accuracy = float(np.mean(labels == np.argmax(counts)))
    model = flaxtrain.get_model("bert", train_data=trn, params=dict(num_layers=2, hidden_size=128, num_heads=2, mlp_dim=256))
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=32, eval_batch_size=64,
                                    clip_norm=1.0, weight_decay=0.01)
    learner.fit_onecycle(2e-3, max_steps=500, verbose=0)
    scores = learner.validate(print_report=False)
    print(f"unigram {unigram_loss:.3f} (top-1 {unigram_accuracy:.3f}); pretrained {scores}")
    assert scores["loss"] < unigram_loss - 0.25 and scores["accuracy"] > 1.5 * unigram_accuracy


def test_span_corruption_of_wikitext_has_exact_lengths():
    tokenizer = flaxtrain.text.train_tokenizer(wikitext2("valid"), vocab_size=1000, kind="unigram", max_documents=200)
    _, val, preproc = flaxtrain.text.lm_from_files(wikitext2("valid"), wikitext2("valid"), tokenizer=tokenizer,
                                                   maxlen=128, objective="span_corruption", max_documents=200, verbose=0)
    assert (preproc.row_length, preproc.target_length) == (141, 29)
    count = 0
    for batch in flaxtrain.tasks.named("span_corruption").batches(val, batch_size=16)[0]:
        full = batch["weight"] > 0
        assert batch["input_ids"].shape == (16, 128) and batch["labels"].shape == (16, 29)
        assert np.all(batch["input_ids"][full, -1] == preproc.eos_id) and np.all(batch["labels"][full, -1] == preproc.eos_id)
        assert not np.any(batch["input_ids"][full] == preproc.pad_id) and not np.any(batch["labels"][full] == preproc.pad_id)
        count += int(full.sum())
    assert count == len(val) - 1  # all rows but the stream's last, padded one
