"""The task registry: every task flaxtrain trains, and the lookups the API makes through it.

Adding a task is one module under flaxtrain/tasks/ plus one line in TASKS.
"""

from __future__ import annotations

from typing import Any

from flaxtrain import models
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.tasks.base import Task
from flaxtrain.tasks.classification import TextClassification
from flaxtrain.tasks.masked_lm import MaskedLanguageModeling
from flaxtrain.tasks.qa import QuestionAnswering
from flaxtrain.tasks.regression import TextRegression
from flaxtrain.tasks.seq2seq import Seq2SeqGeneration
from flaxtrain.tasks.span_corruption import SpanCorruption
from flaxtrain.tasks.tagging import SequenceTagging

TASKS: tuple[Task, ...] = (
    TextClassification(),
    TextRegression(),
    SequenceTagging(),
    QuestionAnswering(),
    Seq2SeqGeneration(),
    MaskedLanguageModeling(),
    SpanCorruption(),
)

# What get_model's `task=` argument accepts, and the task each name means.
REQUESTS: dict[str, str] = {"classification": "text_classification", "regression": "text_regression",
                            "translation": "seq2seq", "summarization": "seq2seq", "mlm": "masked_lm", "span_corruption": "span_corruption"}


def named(name: str) -> Task:
    """The task registered as `name` (or one of get_model's task names, e.g. 'translation')."""
    name = REQUESTS.get(name, name)
    for task in TASKS:
        if task.name == name:
            return task
    choices = [*REQUESTS, *(t.name for t in TASKS)]
    raise FlaxtrainError(f"unknown task {name!r}{nearest(name, choices)}: use one of {', '.join(REQUESTS)}")


def for_model(name: str, preproc: Any) -> Task:
    """The task of registered network `name` with this preprocessor (regression when it has no classes)."""
    family = models.get_entry(name).task
    for task in TASKS:
        if task.family == family and task.matches(preproc):
            return task
    raise FlaxtrainError(f"no task trains a {name} with a {type(preproc).__name__}: build the model with its task's "
                         "preprocessor")


def for_data(data: Any, preproc: Any = None) -> Task | None:
    """The task whose dataset `data` is, else the one whose preprocessor `preproc` is (None for
    anything else: raw loads, arrays)."""
    for task in TASKS:
        if isinstance(data, task.dataset) and task.matches(data.preproc):
            return task
    for task in TASKS:
        if preproc is not None and isinstance(preproc, task.preprocessor) and task.matches(preproc):
            return task
    return None


def dataset_types() -> tuple[type, ...]:
    """Every task's dataset type, for the Learner's input check."""
    return tuple(dict.fromkeys(task.dataset for task in TASKS))


def preprocessor_type(section: dict[str, Any]) -> type:
    """The preprocessor class of a saved predictor's preprocessor section (by its 'kind'; 'text' when absent)."""
    kinds = {task.preprocessor.kind: task.preprocessor for task in TASKS}
    kind = section.get("kind", "text")
    if kind not in kinds:
        raise FlaxtrainError(f"unknown preprocessor kind {kind!r}{nearest(str(kind), kinds)}: this folder needs a newer "
                             "flaxtrain, or save the predictor again")
    return kinds[kind]
