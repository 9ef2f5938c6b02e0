"""TextDataset: encoded texts with integer labels, ready for a pipeline."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from flaxtrain.data.preprocess import TextPreprocessor


@dataclasses.dataclass
class TextDataset:
    """Texts, their token ids and integer labels (None for unlabelled data)."""

    texts: list[str]
    input_ids: list[np.ndarray]  # one int32 array of token ids per text, truncated to maxlen
    labels: np.ndarray | None  # [n] int32 class indices
    preproc: TextPreprocessor

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def class_names(self) -> list[Any]:
        return self.preproc.class_names

