"""TextPreprocessor: turns raw texts and labels into token ids and class indices, and back."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from flaxtrain.data.dataset import TextDataset
from flaxtrain.data.tokenizer import Preprocessor, train_word_tokenizer
from flaxtrain.errors import FlaxtrainError



def bucket_lengths(maxlen: int, smallest: int = 16) -> tuple[int, ...]:
    """Static padded lengths: powers of two from `smallest` below maxlen, then maxlen."""
    lengths = []
    size = smallest
    while size < maxlen:
        lengths.append(size)
        size *= 2
    return (*lengths, maxlen)


def _to_python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    """None, NaN, or pandas' NA / NaT: a label that was never filled in."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ in ("NAType", "NaTType")


def check_labels(labels: Any, what: str = "labels") -> np.ndarray:
    """The labels as an array, with a one-line error naming the first missing label (None, NaN) or,
    for one-hot / probability rows, the first row with a missing value or no class at all."""
    if isinstance(labels, (str, bytes)) or np.ndim(labels) == 0:
        raise FlaxtrainError(f"{what} must be a list of labels (one per example), not a single {type(labels).__name__}")
    # Read the values before numpy does: np.asarray(['pos', nan]) turns the NaN into the string 'nan'.
    values = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    if not any(isinstance(v, (list, tuple)) for v in values):
        missing = next((i for i, v in enumerate(values) if _is_missing(v)), None)
        if missing is not None:
            raise FlaxtrainError(f"{what}[{missing}] is missing ({values[missing]}): fill or drop that example")
    array = np.asarray(labels)
    if array.ndim == 2:
        if array.dtype.kind not in "biuf":
            raise FlaxtrainError(f"{what} rows must be numbers (one column per class), got {array.dtype} values")
        bad = np.flatnonzero(~np.isfinite(array.astype(np.float64)).all(axis=1))
        if bad.size:
            raise FlaxtrainError(f"{what} row {bad[0]} has a missing or non-finite value: fill or drop that example")
        empty = np.flatnonzero(array.max(axis=1) <= 0) if array.shape[1] else np.arange(len(array))
        if empty.size:
            raise FlaxtrainError(f"{what} row {empty[0]} marks no class (all zeros): give every example one class")
        return array
    if array.ndim != 1:
        raise FlaxtrainError(f"{what} must be one label per example (or one one-hot row each), got shape {array.shape}")
    return array


def is_regression_targets(labels: Any) -> bool:
    """Float labels, one per example: regression targets when no class names are given."""
    array = np.asarray(labels)
    return array.ndim == 1 and array.dtype.kind == "f"


def infer_class_names(labels: Any) -> list[Any]:
    """Sorted distinct labels (ints or strings) of a 1-D label list; class names of one-hot rows are 0..c-1."""
    array = check_labels(labels)
    if array.ndim == 2:
        return list(range(array.shape[1]))
    return sorted({_to_python(v) for v in array.tolist()}, key=lambda v: (str(type(v)), v))


def check_texts(texts: Any, what: str) -> list[str]:
    """Validates a sequence of strings and returns it as a list."""
    if isinstance(texts, str):
        raise FlaxtrainError(f"{what} is a single string: pass a list of texts")
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Iterable):
        raise FlaxtrainError(f"{what} must be a text or a list of texts, not {type(texts).__name__}")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise FlaxtrainError(f"{what}[{bad}] is a {type(texts[bad]).__name__}, not a string: pass texts as str")
    return texts


class TextPreprocessor(Preprocessor):
    """Tokenizer, maximum length and class names of a text classifier.

    Attributes:
      tokenizer: the Hugging Face `tokenizers.Tokenizer`.
      maxlen: longest token sequence kept (texts are truncated).
      class_names: label values in class-index order; None for a regression preprocessor, whose
        labels are float targets.
      pad_id: token id used for padding.
      add_special_tokens: wrap texts in the tokenizer's special tokens ([CLS] ... [SEP] for BERT).
    """

    kind = "text"

    def __init__(self, tokenizer: Tokenizer, *, maxlen: int, class_names: Sequence[Any] | None, pad_id: int = 0,
                 add_special_tokens: bool = False):
        if maxlen < 1:
            raise FlaxtrainError(f"maxlen must be positive, got {maxlen}")
        self.tokenizer = tokenizer
        # The tokenizer truncates, so special tokens such as a final [SEP] survive truncation.
        self.tokenizer.enable_truncation(max_length=int(maxlen))
        self.maxlen = int(maxlen)
        self.class_names = None if class_names is None else [_to_python(c) for c in class_names]
        self.pad_id = pad_id
        self.add_special_tokens = add_special_tokens
        self._index = {c: i for i, c in enumerate(self.class_names or [])}

    @classmethod
    def fit(
        cls, texts: Sequence[str], labels: Any, *, class_names: Sequence[Any] | None = None, maxlen: int = 400,
        max_features: int = 20_000, min_frequency: int = 1,
    ) -> TextPreprocessor:
        """Trains a word tokenizer on `texts` and fixes the class names from `labels` (or `class_names`).

        Float labels without class names are regression targets: the preprocessor then has no classes.
        """
        texts = check_texts(texts, "training texts")
        if not texts:
            raise FlaxtrainError("the training set is empty: pass at least one text per class")
        if max_features < 3:
            raise FlaxtrainError(f"max_features must be at least 3 (padding, unknown word and one word), got {max_features}")
        if class_names is None and is_regression_targets(check_labels(labels)):
            names = None
        else:
            names = list(class_names) if class_names is not None else infer_class_names(labels)
            if len(names) < 2:
                raise FlaxtrainError(f"the training labels hold a single class ({names[0]!r}): a classifier needs two or more")
        return cls(train_word_tokenizer(texts, vocab_size=max_features, min_frequency=min_frequency), maxlen=maxlen,
                   class_names=names)

    @property
    def regression(self) -> bool:
        """True when labels are float targets (no class names)."""
        return self.class_names is None

    @property
    def num_classes(self) -> int:
        """Outputs of the model's head: the number of classes, or 1 for regression."""
        return 1 if self.class_names is None else len(self.class_names)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def buckets(self) -> tuple[int, ...]:
        return bucket_lengths(self.maxlen)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text (int32, at most maxlen); batched in the Rust tokenizer."""
        texts = check_texts(texts, "texts")
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=self.add_special_tokens)
        return [np.asarray(e.ids, np.int32) for e in encodings]

    def tokens_of(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Token ids of one text (as `encode` gives them) and, per token, the span of the text it covers
        (the token itself where it covers none, as special tokens)."""
        (text,) = check_texts([text], "text")
        encoding = self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens)
        pieces = [text[start:end] if end > start else token for token, (start, end) in zip(encoding.tokens, encoding.offsets)]
        return np.asarray(encoding.ids, np.int32), pieces

    def encode_labels(self, labels: Any, num_texts: int) -> np.ndarray:
        """Class indices [n] int32 of labels given as class names or one-hot / probability rows;
        float32 targets [n] for a regression preprocessor."""
        array = np.asarray(labels)
        if array.ndim == 0 or len(array) != num_texts:
            got = "a scalar" if array.ndim == 0 else f"{len(array)} labels"
            raise FlaxtrainError(f"{num_texts} texts but {got}: pass one label per text")
        if self.regression:
            return _regression_targets(array)
        array = check_labels(array)
        if array.ndim == 2:
            if array.shape[1] != self.num_classes:
                raise FlaxtrainError(
                    f"label rows have {array.shape[1]} columns but there are {self.num_classes} classes: "
                    "pass one column per class"
                )
            return np.argmax(array, axis=1).astype(np.int32)
        out = np.empty(num_texts, np.int32)
        # Integer labels index class names that are not integers themselves (texts_from_array's
        # `y=[0, 1, ...], class_names=['neg', 'pos']`), at test time as at training time.
        by_index = not any(isinstance(c, int) for c in self.class_names)
        for i, value in enumerate(array.tolist()):
            index = self._index.get(_to_python(value))
            if index is None and by_index and isinstance(value, int) and not isinstance(value, bool):
                index = value if 0 <= value < self.num_classes else None
            if index is None:
                raise FlaxtrainError(
                    f"label {value!r} (example {i}) is not one of the classes {self.class_names}: "
                    "fix the label or pass class_names"
                )
            out[i] = index
        return out

    def _dataset(self, texts: Any, labels: Any | None) -> TextDataset:
        texts = check_texts(texts, "texts")
        encoded = None if labels is None else self.encode_labels(labels, len(texts))
        return TextDataset(texts=texts, input_ids=self.encode(texts), labels=encoded, preproc=self)

    def preprocess_train(self, texts: Any, labels: Any) -> TextDataset:
        """Encodes a labelled training set."""
        dataset = self._dataset(texts, labels)
        if len(dataset) == 0:
            raise FlaxtrainError("the training set is empty: pass at least one text per class")
        present = np.unique(dataset.labels)
        if not self.regression and len(present) < 2:
            raise FlaxtrainError(
                f"the training labels hold a single class ({self.class_names[present[0]]!r}): a classifier needs two or more"
            )
        return dataset

    def preprocess_test(self, texts: Any, labels: Any | None = None) -> TextDataset:
        """Encodes an evaluation or prediction set (labels optional)."""
        return self._dataset(texts, labels)

    def decode_labels(self, indices: np.ndarray) -> list[Any]:
        """Class names of class indices."""
        return [self.class_names[int(i)] for i in indices]

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "maxlen": self.maxlen, "class_names": self.class_names, "pad_id": self.pad_id,
                "add_special_tokens": self.add_special_tokens}

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, config: dict[str, Any]) -> TextPreprocessor:
        return cls(tokenizer, maxlen=config["maxlen"], class_names=config["class_names"], pad_id=config.get("pad_id", 0),
                   add_special_tokens=config.get("add_special_tokens", False))

    def __repr__(self) -> str:
        targets = "regression" if self.regression else f"classes={self.class_names}"
        return f"TextPreprocessor(vocab_size={self.vocab_size}, maxlen={self.maxlen}, {targets})"


def _regression_targets(array: np.ndarray) -> np.ndarray:
    """[n] float32 targets; one-line errors for non-numeric, multi-column or non-finite labels."""
    if array.ndim != 1:
        raise FlaxtrainError(f"regression targets must be one number per text, got an array of shape {array.shape}")
    try:
        targets = array.astype(np.float32)
    except (TypeError, ValueError):
        bad = next((i for i, v in enumerate(array.tolist()) if not _is_number(v)), 0)
        raise FlaxtrainError(f"regression target {array.tolist()[bad]!r} (example {bad}) is not a number: "
                             "pass numeric targets") from None
    if not np.isfinite(targets).all():
        bad = int(np.flatnonzero(~np.isfinite(targets))[0])
        raise FlaxtrainError(f"regression target {targets[bad]} (example {bad}) is not finite: drop or fix that example")
    return targets


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True

