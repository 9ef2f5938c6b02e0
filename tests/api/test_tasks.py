"""The task registry: every task complete behind one interface, reached by get_model, the Learner,
get_predictor and the CLI without per-task branches."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from conftest import quick_compile_env
from flaxtrain import tasks
from flaxtrain.api.factory import BUILDERS
from flaxtrain.data.dataset import Batched
from flaxtrain.data.tokenizer import Preprocessor
from flaxtrain.errors import FlaxtrainError

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ROOT / "tests" / "fixtures" / "predictors"
sys.path.insert(0, str(ROOT / "tests" / "text"))
from ner_data import make_ner_sentences  # noqa: E402


@pytest.mark.parametrize("task", tasks.TASKS, ids=lambda t: t.name)
def test_every_task_is_complete(task):
    assert issubclass(task.predictor, tasks.Predictor) and issubclass(task.dataset, Batched)
    assert issubclass(task.preprocessor, Preprocessor) and task.preprocessor.kind
    assert tasks.named(task.name) is task and type(task) in BUILDERS
    for method in ("loss_fn", "predict_fn", "report", "top_losses"):  # each task gives its own
        assert getattr(type(task), method) is not getattr(tasks.Task, method), method


def test_saved_preprocessor_kinds_and_task_names_are_checked():
    with pytest.raises(FlaxtrainError, match="unknown preprocessor kind 'entitiez' \\(did you mean 'entities'\\?\\)"):
        tasks.preprocessor_type({"kind": "entitiez"})
    with pytest.raises(FlaxtrainError, match="unknown task 'translate' \\(did you mean 'translation'\\?\\)"):
        flaxtrain.get_model("t5", task="translate")


def test_get_model_builds_a_tagger_from_tagged_data_and_fits_it():
    words, tags = make_ner_sentences(40)
    trn, val, preproc = flaxtrain.text.entities_from_array(words[:32], tags[:32], words[32:], tags[32:], verbose=0)
    model = flaxtrain.get_model("bilstm", trn, val, params=dict(use_crf=True, embed_dim=8, hidden_dim=8))
    assert model.task is tasks.named("sequence_tagging") and model.config.use_crf and model.preproc is preproc
    history = model.fit(epochs=1, batch_size=8, verbose=0)
    assert history[0]["val_loss"] > 0 and "val_acc" in history[0]
    predictor = flaxtrain.get_predictor(model)
    assert type(predictor).__name__ == "TaggerPredictor" and len(predictor.predict("Anna visited Paris .")) == 4
    with pytest.raises(FlaxtrainError, match="keeps its checkpoint's sizes: drop params"):
        qa_train, _, _ = flaxtrain.text.qa_from_array(["Who?"], ["Anna did."], ["Anna"], [0], val_pct=0, verbose=0)
        flaxtrain.get_model("minilm", qa_train, params={"hidden_size": 8})


def test_cli_predict_prints_each_tasks_outputs():
    def cli(folder, *texts):
        return subprocess.run([sys.executable, "-m", "flaxtrain.cli", "predict", "--model", str(FOLDERS / folder), *texts],
                              capture_output=True, text=True, env=quick_compile_env(), timeout=300)

    tagged = cli("sequence_tagging", "Yesterday Jonas Okafor flew from Paris to Lima .")
    assert tagged.returncode == 0, tagged.stderr[-2000:]
    assert tagged.stdout.strip() == ("Yesterday/O Jonas/B-PER Okafor/I-PER flew/O from/O Paris/B-LOC to/O Lima/B-LOC ./O")
    expected = json.loads((FOLDERS / "expected.json").read_text())["text_regression"]
    values = cli("text_regression", expected["texts"][1])
    assert values.returncode == 0 and values.stdout.split("\t") == [f"{expected['values'][1]:.4f}", f"{expected['texts'][1]}\n"]
    qa = cli("question_answering", "Who?")
    assert qa.returncode == 2 and qa.stderr.startswith("error: a QA model answers a question from a context")
    np.testing.assert_equal(len(qa.stderr.strip().splitlines()), 1)
