"""ktrain's text loaders (same names and arguments) and the seed's `load_data`.

Each `texts_from_*` returns `(train, val, preproc)`: two TextDatasets and the TextPreprocessor
whose tokenizer was trained on the training texts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flaxtrain.data.dataset import TextDataset
from flaxtrain.data.preprocess import TextPreprocessor, check_labels, check_texts, infer_class_names, is_regression_targets
from flaxtrain.data.sources import load_split, stratified_split
from flaxtrain.errors import FlaxtrainError

MAXLEN = 400  # ktrain's default: longest token sequence kept
MAX_FEATURES = 20_000  # ktrain's default vocabulary size
DEFAULT_SEED = 42


@dataclasses.dataclass(frozen=True)
class LoadedData:
    """Raw texts and labels of a named dataset, as `load_data` returns them.

    With train=True, `train_x/train_y` are the training texts and `val_x/val_y` a held-out part of
    them; with train=False, `val_x/val_y` are the test texts and `train_x/train_y` are empty.
    """

    name: str
    train_x: list[str]
    train_y: list[Any]
    val_x: list[str]
    val_y: list[Any]
    class_names: list[Any]


def load_data(name: str, train: bool = True, *, data_dir: str | None = None, download: bool = False,
              val_pct: float = 0.1, random_state: int = DEFAULT_SEED) -> LoadedData:
    """Loads named text set `name` ('rotten_tomatoes', 'imdb') as raw texts and labels.

    Args:
      name: dataset name.
      train: the training split (with `val_pct` held out for validation) or the test split.
      data_dir: where TensorFlow Datasets keeps prepared data (for 'imdb').
      download: let TensorFlow Datasets download and prepare a set that is not in `data_dir`
        (nothing is downloaded otherwise; a missing set is a one-line error saying how to get it).
      val_pct: fraction of the training split held out for validation.
      random_state: seed of the validation split.
    """
    split = load_split(name, "train" if train else "test", data_dir, download)
    if not train:
        return LoadedData(name, [], [], split.texts, split.labels, split.class_names)
    if not 0.0 < val_pct < 1.0:
        return LoadedData(name, split.texts, split.labels, [], [], split.class_names)
    fit_index, val_index = stratified_split(split.labels, val_pct, random_state)
    pick = lambda values, index: [values[i] for i in index]  # noqa: E731
    return LoadedData(
        name, pick(split.texts, fit_index), pick(split.labels, fit_index), pick(split.texts, val_index),
        pick(split.labels, val_index), split.class_names,
    )


def _label_values(labels: Any, class_names: Sequence[Any] | None, what: str) -> tuple[Any, list[Any] | None]:
    """Labels as class-name values (int indices into string class_names are mapped) and the class
    names; float labels without class names are regression targets (class names None)."""
    array = check_labels(labels, what)
    if class_names is None or len(class_names) == 0:
        if is_regression_targets(array):
            return array, None
        return labels, infer_class_names(labels)
    names = list(class_names)
    if array.ndim == 1 and array.dtype.kind in "iu" and not any(isinstance(c, int) for c in names):
        if array.size and (array.min() < 0 or array.max() >= len(names)):
            raise FlaxtrainError(f"integer labels run from {array.min()} to {array.max()} but there are {len(names)} class names")
        return [names[i] for i in array.tolist()], names
    return labels, names


def _split_off(texts: list[str], labels: Any, val_pct: float, random_state: int | None) -> tuple[Any, ...]:
    if not 0.0 < val_pct < 1.0:
        raise FlaxtrainError(f"val_pct must lie between 0 and 1 when no test set is given, got {val_pct}")
    array = np.asarray(labels)
    flat = array.argmax(1) if array.ndim == 2 else array
    seed = DEFAULT_SEED if random_state is None else random_state
    try:
        if is_regression_targets(array):  # regression targets: no classes to stratify by
            raise ValueError
        fit_index, val_index = stratified_split(flat.tolist(), val_pct, seed)
    except ValueError:  # a class too small to stratify: fall back to a plain seeded split
        order = np.random.default_rng(seed).permutation(len(texts))
        cut = max(1, int(round(len(texts) * val_pct)))
        val_index, fit_index = np.sort(order[:cut]), np.sort(order[cut:])
    pick = lambda index: [texts[i] for i in index]  # noqa: E731
    return pick(fit_index), array[fit_index], pick(val_index), array[val_index]


def texts_from_array(
    x_train: Sequence[str], y_train: Any, x_test: Sequence[str] | None = None, y_test: Any = None,
    class_names: Sequence[Any] | None = None, max_features: int = MAX_FEATURES, maxlen: int = MAXLEN,
    val_pct: float = 0.1, random_state: int | None = None, verbose: int = 1,
) -> tuple[TextDataset, TextDataset, TextPreprocessor]:
    """Encodes in-memory texts and labels (names, ints or one-hot rows); splits off `val_pct` without a test set.

    Int labels with string `class_names` are indices into them (at test time too). Float labels
    without `class_names` are regression targets (a one-output model trained on squared error).
    """
    x_train = check_texts(x_train, "x_train")
    if not x_train:
        raise FlaxtrainError("x_train is empty: pass at least one text per class")
    y_train, names = _label_values(y_train, class_names, "y_train")
    if len(y_train) != len(x_train):
        raise FlaxtrainError(f"x_train has {len(x_train)} texts but y_train has {len(y_train)} labels: pass one label per text")
    if x_test is None:
        x_train, y_train, x_test, y_test = _split_off(x_train, y_train, val_pct, random_state)
    else:
        x_test = check_texts(x_test, "x_test")
        if y_test is None or len(np.asarray(y_test)) != len(x_test):
            got = 0 if y_test is None else len(np.asarray(y_test))
            raise FlaxtrainError(f"x_test has {len(x_test)} texts but y_test has {got} labels: pass one label per text")
        y_test, _ = _label_values(y_test, names, "y_test")
    preproc = TextPreprocessor.fit(x_train, y_train, class_names=names, maxlen=maxlen, max_features=max_features)
    train = preproc.preprocess_train(x_train, y_train)
    val = preproc.preprocess_test(x_test, y_test)
    if verbose:
        targets = "regression targets" if preproc.regression else f"{preproc.num_classes} classes"
        print(f"{len(train)} train / {len(val)} validation texts, {targets}, "
              f"vocabulary {preproc.vocab_size}, maxlen {preproc.maxlen}")
    return train, val, preproc


def _frame_labels(frame: Any, label_columns: Sequence[str] | str) -> tuple[Any, list[Any] | None]:
    columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    if not columns:
        raise FlaxtrainError("label_columns is empty: name the label column (or one column per class)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FlaxtrainError(f"label column {missing[0]!r} not found; columns are {list(frame.columns)}")
    if len(columns) == 1:
        return frame[columns[0]].tolist(), None
    return frame[columns].to_numpy(), columns  # one-hot columns: the column names are the classes


def texts_from_df(
    train_df: Any, text_column: str, label_columns: Sequence[str] | str = (), val_df: Any = None,
    max_features: int = MAX_FEATURES, maxlen: int = MAXLEN, val_pct: float = 0.1, random_state: int | None = None,
    verbose: int = 1,
) -> tuple[TextDataset, TextDataset, TextPreprocessor]:
    """Encodes a pandas DataFrame: one text column and one label column (or one 0/1 column per class)."""
    if text_column not in train_df.columns:
        raise FlaxtrainError(f"text column {text_column!r} not found; columns are {list(train_df.columns)}")
    y_train, names = _frame_labels(train_df, label_columns)
    x_test = y_test = None
    if val_df is not None:
        x_test = val_df[text_column].fillna("").astype(str).tolist()
        y_test, _ = _frame_labels(val_df, label_columns)
    return texts_from_array(
        train_df[text_column].fillna("").astype(str).tolist(), y_train, x_test, y_test, class_names=names,
        max_features=max_features, maxlen=maxlen, val_pct=val_pct, random_state=random_state, verbose=verbose,
    )


def texts_from_csv(
    train_filepath: str, text_column: str, label_columns: Sequence[str] | str = (), val_filepath: str | None = None,
    max_features: int = MAX_FEATURES, maxlen: int = MAXLEN, val_pct: float = 0.1, encoding: str | None = None,
    sep: str = ",", random_state: int | None = None, verbose: int = 1,
) -> tuple[TextDataset, TextDataset, TextPreprocessor]:
    """Reads CSV files with pandas and encodes them as `texts_from_df` does."""
    import pandas as pd

    def read(path: str) -> Any:
        if not Path(path).is_file():
            raise FlaxtrainError(f"CSV file {path} does not exist")
        try:
            return pd.read_csv(path, encoding=encoding or "utf-8", sep=sep)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise FlaxtrainError(f"cannot read {path} as CSV ({str(err).splitlines()[0]}): check sep and encoding") from None

    val_df = read(val_filepath) if val_filepath else None
    return texts_from_df(read(train_filepath), text_column, label_columns, val_df, max_features=max_features,
                         maxlen=maxlen, val_pct=val_pct, random_state=random_state, verbose=verbose)


def _read_folder(folder: Path, classes: Sequence[str], encoding: str | None) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for name in classes:
        class_dir = folder / name
        if not class_dir.is_dir():
            raise FlaxtrainError(f"class folder {class_dir} does not exist: each split needs one sub-folder per class")
        for path in sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            texts.append(path.read_text(encoding=encoding or "utf-8", errors="replace"))
            labels.append(name)
    return texts, labels


def texts_from_folder(
    datadir: str, classes: Sequence[str] | None = None, max_features: int = MAX_FEATURES, maxlen: int = MAXLEN,
    train_test_names: Sequence[str] = ("train", "test"), val_pct: float = 0.1, encoding: str | None = None,
    random_state: int | None = None, verbose: int = 1,
) -> tuple[TextDataset, TextDataset, TextPreprocessor]:
    """Reads an aclImdb-style tree: datadir/<train|test>/<class>/*.txt (test folder optional).

    Args:
      datadir: the root folder.
      classes: class sub-folders to use (default: every sub-folder of the train folder, sorted).
      train_test_names: names of the train and test folders.
    """
    root = Path(datadir)
    train_dir = root / train_test_names[0]
    if not train_dir.is_dir():
        raise FlaxtrainError(f"{train_dir} does not exist: datadir needs a {train_test_names[0]!r} folder with one sub-folder per class")
    classes = list(classes) if classes else sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise FlaxtrainError(f"{train_dir} has no class sub-folders: put each class's text files in a folder named after it")
    x_train, y_train = _read_folder(train_dir, classes, encoding)
    x_test = y_test = None
    if len(train_test_names) > 1 and (root / train_test_names[1]).is_dir():
        x_test, y_test = _read_folder(root / train_test_names[1], classes, encoding)
    return texts_from_array(x_train, y_train, x_test, y_test, class_names=classes, max_features=max_features,
                            maxlen=maxlen, val_pct=val_pct, random_state=random_state, verbose=verbose)
