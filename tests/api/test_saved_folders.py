"""Predictor folders written by an earlier flaxtrain (tests/fixtures/predictors, one per task) load and
predict as they did when saved."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import flaxtrain

FOLDERS = Path(__file__).resolve().parents[1] / "fixtures" / "predictors"
EXPECTED = json.loads((FOLDERS / "expected.json").read_text())


def _load(name, tmp_path):
    copy = tmp_path / name  # loading must not need write access to the folder, nor change it
    shutil.copytree(FOLDERS / name, copy)
    return flaxtrain.load_predictor(copy)


@pytest.mark.parametrize("name", ["text_classification", "transformer_classification"])
def test_classifier_folders(name, tmp_path):
    want = EXPECTED[name]
    predictor = _load(name, tmp_path)
    assert predictor.predict(want["texts"]) == want["labels"]
    np.testing.assert_allclose(predictor.predict_proba(want["texts"]), want["probs"], atol=1e-6)
    assert predictor.preproc.class_names == ["neg", "pos"]


def test_regression_folder(tmp_path):
    want = EXPECTED["text_regression"]
    np.testing.assert_allclose(_load("text_regression", tmp_path).predict(want["texts"]), want["values"], atol=1e-6)


def test_tagger_folder(tmp_path):
    want = EXPECTED["sequence_tagging"]
    got = _load("sequence_tagging", tmp_path).predict(want["texts"])
    assert [[list(pair) for pair in row] for row in got] == want["tags"]


def test_qa_folder(tmp_path):
    want = EXPECTED["question_answering"]
    got = _load("question_answering", tmp_path).predict(want["questions"], want["contexts"])
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [(a["answer"], a["start"], a["end"]) for a in want["answers"]]
    np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in want["answers"]], rtol=1e-4)


def test_seq2seq_folder_keeps_its_generation_settings(tmp_path):
    want = EXPECTED["seq2seq"]
    predictor = _load("seq2seq", tmp_path)
    assert predictor.model.generation == {"num_beams": 2, "min_length": 3}
    assert predictor.predict(want["texts"]) == want["outputs"]


def test_folders_carry_their_format_version():
    for name in EXPECTED:
        config = json.loads((FOLDERS / name / "config.json").read_text())
        assert (config["format"], config["format_version"]) == ("flaxtrain.predictor", 1), name
