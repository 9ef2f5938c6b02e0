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


def _tf_data_batches(ids, targets, order, *, batch_size, sequences, fixed):
    """The reference: tf.data's bucket_by_sequence_length over the examples in `order`, padded to the bucket
    lengths `make_batches` uses, each last partial batch filled with weight-0 rows as `make_batches` fills them."""
    import tensorflow as tf

    buckets = used_buckets(np.array([len(x) for x in ids]), batch_size=batch_size, buckets=BUCKETS)
    fields = {"input_ids": (ids, 0), **sequences}
    rows = []
    for i in order:
        row = {"label": targets[i], "index": np.int64(i), **{k: np.asarray(v[0][i], np.int32) for k, v in fields.items()}}
        row.update({k: np.pad(np.asarray(v[i], np.int32), (0, width - len(v[i])), constant_values=pad)
                    for k, (v, pad, width) in fixed.items()})
        rows.append(row)
    signature = {"label": tf.TensorSpec((), tf.float32), "index": tf.TensorSpec((), tf.int64),
                 **{k: tf.TensorSpec((None,), tf.int32) for k in fields},
                 **{k: tf.TensorSpec((width,), tf.int32) for k, (_, _, width) in fixed.items()}}
    pads = {**{k: pad for k, (_, pad) in fields.items()}, **{k: pad for k, (_, pad, _) in fixed.items()}}
    ds = tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature).bucket_by_sequence_length(
        lambda row: tf.shape(row["input_ids"])[0], bucket_boundaries=[length + 1 for length in buckets],
        bucket_batch_sizes=[batch_size] * (len(buckets) + 1), pad_to_bucket_boundary=True,
        padding_values={"label": 0.0, "index": np.int64(0), **pads})
    for batch in ds.as_numpy_iterator():
        n = len(batch["label"])
        batch["weight"] = np.ones(n, np.float32)
        yield {k: np.concatenate([v, np.full((batch_size - n, *v.shape[1:]), pads.get(k, 0), v.dtype)])
               for k, v in batch.items()}


@pytest.mark.parametrize("batch_size", [1, 3, 4, 23, 50])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_are_the_ones_tf_data_makes(batch_size, shuffle, every_bucket):
    """Batching runs in numpy; in order (prediction, evaluation) and shuffled (training: the permutation
    `shuffled_order` draws) it gives the batches tf.data's bucket_by_sequence_length makes of the same
    order, for every field kind: input_ids, shorter per-token sequences, fixed-width fields, float labels."""
    ids, _ = _examples(n=41, seed=2)
    targets = np.linspace(0.0, 1.0, len(ids)).astype(np.float32)
    sequences = {"tags": ([np.arange(len(x) // 2, dtype=np.int32) for x in ids], -1)}
    fixed = {"target_ids": ([np.arange(k % 4, dtype=np.int32) + 1 for k in range(len(ids))], 0, 4)}
    ours, count = make_batches(ids, targets, batch_size=batch_size, buckets=BUCKETS, pad_id=0, sequences=sequences,
                               fixed=fixed, shuffle=shuffle, seed=5, epoch=2)
    ours = list(ours)
    order = pipeline.shuffled_order(len(ids), seed=5, epoch=2) if shuffle else np.arange(len(ids))
    assert shuffle == (list(order) != list(range(len(ids))))
    theirs = list(_tf_data_batches(ids, targets, order, batch_size=batch_size, sequences=sequences, fixed=fixed))
    assert len(ours) == len(theirs) == count
    for mine, tfs in zip(ours, theirs):
        assert mine.keys() == tfs.keys()
        for key in tfs:
            assert mine[key].dtype == tfs[key].dtype, key
            np.testing.assert_array_equal(mine[key], tfs[key], err_msg=key)
