import numpy as np
import pytest

from flaxtrain.data import pipeline
from flaxtrain.data.pipeline import make_batches, num_batches, used_buckets
from flaxtrain.data.preprocess import bucket_lengths
from flaxtrain.errors import FlaxtrainError

BUCKETS = (5, 11, 13)


def _examples(n: int = 23, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 14, size=n)
    return [rng.integers(1, 50, size=k).astype(np.int32) for k in lengths], rng.integers(0, 3, size=n).astype(np.int32)


@pytest.fixture
def every_bucket(monkeypatch):
    """Every bucket in use, however few sequences it holds (the tests of batching across buckets)."""
    monkeypatch.setattr(pipeline, "MIN_BUCKET_BATCHES", 1)


def test_static_shapes_and_each_example_exactly_once(every_bucket):
    ids, labels = _examples()
    batches, count = make_batches(ids, labels, batch_size=3, buckets=BUCKETS, shuffle=True, seed=7)
    batches = list(batches)
    assert len(batches) == count == num_batches(np.array([len(x) for x in ids]), batch_size=3, buckets=BUCKETS)
    seen = []
    for batch in batches:
        assert batch["input_ids"].shape in {(3, 5), (3, 11), (3, 13)}
        assert batch["input_ids"].dtype == np.int32 and batch["weight"].dtype == np.float32
        for row in np.flatnonzero(batch["weight"]):
            index = int(batch["index"][row])
            seen.append(index)
            n = len(ids[index])
            np.testing.assert_array_equal(batch["input_ids"][row, :n], ids[index])
            assert (batch["input_ids"][row, n:] == 0).all()
            assert batch["label"][row] == labels[index]
    assert sorted(seen) == list(range(len(ids)))


def test_shuffle_is_seeded_per_epoch():
    ids, labels = _examples()
    order = lambda **kw: [tuple(b["index"]) for b in make_batches(ids, labels, batch_size=4, buckets=BUCKETS, **kw)[0]]
    assert order(shuffle=True, seed=1, epoch=0) == order(shuffle=True, seed=1, epoch=0)
    assert order(shuffle=True, seed=1, epoch=0) != order(shuffle=True, seed=1, epoch=1)
    assert order(shuffle=False) == order(shuffle=False)


def test_sparse_buckets_merge_into_the_next_longer_one():
    """A bucket length costs a compilation: one that would hold fewer than MIN_BUCKET_BATCHES batches
    joins the next longer length in use; the longest in use stays."""
    assert pipeline.MIN_BUCKET_BATCHES == 8
    lengths = [3] * 30 + [9] * 2 + [13]  # 30 rows fill 10 batches of 3; the 2 of length 9 do not
    ids = [np.arange(1, n + 1, dtype=np.int32) for n in lengths]
    assert used_buckets(np.array(lengths), batch_size=3, buckets=BUCKETS) == (5, 13)
    batches, count = make_batches(ids, None, batch_size=3, buckets=BUCKETS, shuffle=True, seed=1)
    batches = list(batches)
    assert len(batches) == count == 11 == num_batches(np.array(lengths), batch_size=3, buckets=BUCKETS)
    assert sorted(b["input_ids"].shape[1] for b in batches) == [5] * 10 + [13]
    assert sorted(int(i) for b in batches for i, w in zip(b["index"], b["weight"]) if w) == list(range(len(ids)))
    assert used_buckets(np.array([3]), batch_size=32, buckets=BUCKETS) == (5,)  # one short text keeps its bucket
    assert used_buckets(np.array([3, 9]), batch_size=1, buckets=BUCKETS) == (11,)
    assert used_buckets(np.array([3] * 8 + [9]), batch_size=1, buckets=BUCKETS) == (5, 11)


def test_bad_input():
    with pytest.raises(FlaxtrainError, match="no examples"):
        make_batches([], None, batch_size=2, buckets=BUCKETS)
    with pytest.raises(FlaxtrainError, match="exceeds the longest bucket"):
        make_batches([np.ones(20, np.int32)], None, batch_size=2, buckets=BUCKETS)


def test_bucket_lengths():
    assert bucket_lengths(64) == (16, 32, 64)
    assert bucket_lengths(400) == (16, 32, 64, 128, 256, 400)
    assert bucket_lengths(10) == (10,)


def test_each_process_gets_its_block_of_every_global_batch():
    ids, labels = _examples()
    kwargs = dict(batch_size=4, buckets=BUCKETS, shuffle=True, seed=3, epoch=1)
    whole, count = make_batches(ids, labels, **kwargs)
    parts = [make_batches(ids, labels, process_index=p, process_count=2, **kwargs) for p in range(2)]
    assert all(n == count for _, n in parts)
    for batch, first, second in zip(whole, parts[0][0], parts[1][0]):
        for key, value in batch.items():
            np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), value)
    with pytest.raises(FlaxtrainError, match="batch size 5 does not divide over 2 processes"):
        make_batches(ids, labels, batch_size=5, buckets=BUCKETS, process_count=2)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 23, 50])
def test_batches_in_order_are_the_ones_tf_data_makes(batch_size, every_bucket, monkeypatch):
    """Unshuffled batching (prediction, evaluation) runs in numpy; it gives tf.data's batches, in its order,
    for every field kind: input_ids, shorter per-token sequences, fixed-width fields, float labels."""
    ids, _ = _examples(n=41, seed=2)
    targets = np.linspace(0.0, 1.0, len(ids)).astype(np.float32)
    tags = [np.arange(len(x) // 2, dtype=np.int32) for x in ids]
    fixed = {"target_ids": ([np.arange(k % 4, dtype=np.int32) + 1 for k in range(len(ids))], 0, 4)}
    kwargs = dict(batch_size=batch_size, buckets=BUCKETS, pad_id=0, sequences={"tags": (tags, -1)}, fixed=fixed)
    ours, count = make_batches(ids, targets, **kwargs)
    ours = list(ours)
    # the tf.data path with the shuffle left out
    real_shuffle = pipeline._tf_batches
    monkeypatch.setattr(pipeline, "_tf_batches", lambda *a, **k: real_shuffle(*a, **{**k, "seed": None}))
    theirs = list(make_batches(ids, targets, shuffle=True, **kwargs)[0])
    assert len(ours) == len(theirs) == count
    for mine, tfs in zip(ours, theirs):
        assert mine.keys() == tfs.keys()
        for key in tfs:
            assert mine[key].dtype == tfs[key].dtype, key
            np.testing.assert_array_equal(mine[key], tfs[key], err_msg=key)
