"""TextDataset: encoded texts with integer labels, ready for a pipeline."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from flaxtrain.data.pipeline import num_batches

if TYPE_CHECKING:
    from flaxtrain.data.preprocess import TextPreprocessor


class EncodedOnUse:
    """Shared part of the datasets that encode on first use with their preprocessor's current tokenizer:
    `encoded()` returns a tuple whose first item is the token ids and whose last is the labels."""

    preproc: Any

    def encoded(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def input_ids(self) -> list[np.ndarray]:
        return self.encoded()[0]

    @property
    def labels(self) -> list[np.ndarray] | None:
        return self.encoded()[-1]

    def num_batches(self, batch_size: int) -> int:
        lengths = np.fromiter((len(x) for x in self.input_ids), np.int64, count=len(self.input_ids))
        return num_batches(lengths, batch_size=batch_size, buckets=self.preproc.buckets)


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

