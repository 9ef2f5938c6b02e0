"""SQuAD v1.1 exact match and F1 (Rajpurkar et al. 2016), as the official evaluation script defines them.

Answers are compared after normalisation: lower case, punctuation and the articles a/an/the removed,
whitespace collapsed. F1 is the token-overlap F1 of the normalised answers. Each prediction scores
the best over its reference answers; both metrics are reported in percent.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

from flaxtrain.errors import FlaxtrainError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:  # the no-answer case: right only when both are empty
        return float(predicted == expected)
    common = collections.Counter(predicted) & collections.Counter(expected)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Sequence[str], references: Sequence[Sequence[str] | str]) -> dict[str, float]:
    """{'exact_match', 'f1'} in percent over all questions; each reference is one answer or a list of them."""
    if len(predictions) != len(references):
        raise FlaxtrainError(f"{len(predictions)} predictions but {len(references)} reference answer lists: pass one per question")
    if not predictions:
        raise FlaxtrainError("no predictions to score: pass at least one question's answer")
    em = total_f1 = 0.0
    for prediction, answers in zip(predictions, references):
        answers = [answers] if isinstance(answers, str) else list(answers) or [""]
        em += max(exact_match(prediction, a) for a in answers)
        total_f1 += max(f1(prediction, a) for a in answers)
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * total_f1 / len(predictions)}
