"""Entity-level precision, recall and F1 of tag sequences, scored with seqeval as CoNLL's conlleval does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flaxtrain.errors import FlaxtrainError


def entity_metrics(true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]], *,
                   scheme: str = "bio") -> dict[str, Any]:
    """{'precision', 'recall', 'f1'} (micro over entities) and 'report' (per entity type) of BIO or BIOES tags.

    An entity counts as found only when its type and both of its ends match.
    """
    from seqeval import metrics
    from seqeval.scheme import IOB2, IOBES

    if len(true_tags) != len(predicted_tags):
        raise FlaxtrainError(f"{len(true_tags)} true tag sequences but {len(predicted_tags)} predicted ones: pass one per sentence")
    true, predicted = [list(t) for t in true_tags], [list(p) for p in predicted_tags]
    options = {"mode": "strict", "scheme": IOBES if scheme == "bioes" else IOB2}
    return {
        "precision": float(metrics.precision_score(true, predicted, zero_division=0, **options)),
        "recall": float(metrics.recall_score(true, predicted, zero_division=0, **options)),
        "f1": float(metrics.f1_score(true, predicted, zero_division=0, **options)),
        "report": metrics.classification_report(true, predicted, digits=4, zero_division=0, **options),
    }
