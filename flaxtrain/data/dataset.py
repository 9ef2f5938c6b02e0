"""Datasets: encoded rows that batch themselves for the train, eval and predict steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from flaxtrain.data.pipeline import Batch, make_batches, num_batches

if TYPE_CHECKING:
    from flaxtrain.data.preprocess import TextPreprocessor


class Batched:
    """What every dataset offers the Learner: its rows' token ids (`input_ids`), their batches and how
    many batches an epoch has. A row is what the step sees (an example, or one window of one)."""

    preproc: Any
    input_ids: list[np.ndarray]  # a field or a property of each dataset
    empty_hint = "pass at least one text per class"  # the fix an empty dataset's error names

    def batches(self, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[Batch], int]:
        """(batch iterator, number of batches) of this process's rows of every global batch."""
        raise NotImplementedError

    @property
    def labelled(self) -> bool:
        """Whether the rows carry targets to train or score on."""
        return self.labels is not None

    def num_rows(self) -> int:
        return len(self.input_ids)

    def text_of(self, index: int) -> str | None:
        """The text of example `index` (None where a dataset has no list of texts)."""
        return self.texts[index]

    def num_batches(self, batch_size: int) -> int:
        lengths = np.fromiter((len(x) for x in self.input_ids), np.int64, count=self.num_rows())
        return num_batches(lengths, batch_size=batch_size, buckets=self.preproc.buckets)


class EncodedOnUse(Batched):
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


@dataclasses.dataclass
class TextDataset(Batched):
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

    def batches(self, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[Batch], int]:
        """Batches of {'input_ids' [b, L], 'label' [b], 'index', 'weight'}."""
        return make_batches(self.input_ids, self.labels, batch_size=batch_size, buckets=self.preproc.buckets,
                            shuffle=shuffle, seed=seed, epoch=epoch, pad_id=self.preproc.pad_id,
                            process_index=process_index, process_count=process_count)
