"""Batches of in-memory examples: seeded shuffle -> length buckets padded to static shapes -> numpy.

Every batch has one of a few shapes ([batch_size, L] for L in the bucket lengths), so the jitted step
compiles once per bucket and never per batch; a bucket too sparse to pay for its compilation merges into
the next longer one (`used_buckets`). The last batch of each bucket is filled up with rows
of weight 0, so no example is dropped and none is counted twice.

The examples are already in memory, so numpy batches them: a seeded permutation, then the batches
tf.data's `bucket_by_sequence_length` makes (tests/data/test_pipeline.py checks them against tf.data).
Training on arrays therefore needs no TensorFlow (its import took 7 s of CPU on the 2-core machine, in
every process that trains; Colab's TPU runtime ships none). Streamed corpora and TFDS sets
(flaxtrain/data/lm.py, documents.py) read through tf.data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from flaxtrain.errors import FlaxtrainError

Batch = dict[str, np.ndarray]


def import_tensorflow():
    """TensorFlow, imported on first use and kept off the accelerators: input work runs on the host."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    return tf


# A bucket length used by fewer sequences than this many batches' worth joins the next longer one in use.
# Each length compiles the step once more (seconds on a CPU for a small model, about a minute for a
# large one on an accelerator), while padding a few batches further costs a fraction of a step each.
MIN_BUCKET_BATCHES = 8


def used_buckets(lengths: np.ndarray, *, batch_size: int, buckets: Sequence[int]) -> tuple[int, ...]:
    """The bucket lengths sequences of these lengths are padded to: from the shortest up, a bucket whose
    sequences (and those merged into it) fill fewer than MIN_BUCKET_BATCHES batches merges into the next
    longer one; the longest in use always stays."""
    index = np.searchsorted(np.asarray(buckets), np.minimum(lengths, buckets[-1]), side="left")
    counts = np.bincount(index, minlength=len(buckets))
    last = int(np.flatnonzero(counts)[-1]) if counts.any() else len(buckets) - 1
    kept, waiting = [], 0
    for i in range(last + 1):
        waiting += int(counts[i])
        if waiting and (waiting >= MIN_BUCKET_BATCHES * batch_size or i == last):
            kept.append(int(buckets[i]))
            waiting = 0
    return tuple(kept) or (int(buckets[-1]),)


def num_batches(lengths: np.ndarray, *, batch_size: int, buckets: Sequence[int]) -> int:
    """How many batches `make_batches` yields for sequences of these lengths."""
    buckets = used_buckets(lengths, batch_size=batch_size, buckets=buckets)
    index = np.searchsorted(np.asarray(buckets), np.minimum(lengths, buckets[-1]), side="left")
    counts = np.bincount(index, minlength=len(buckets))
    return int(np.sum(-(-counts // batch_size)))


def make_batches(
    input_ids: Sequence[np.ndarray],
    labels: np.ndarray | None = None,
    *,
    batch_size: int,
    buckets: Sequence[int],
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    pad_id: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    sequences: dict[str, tuple[Sequence[np.ndarray], int]] | None = None,
    fixed: dict[str, tuple[Sequence[np.ndarray], int, int]] | None = None,
) -> tuple[Iterator[Batch], int]:
    """Batches of {'input_ids' [b, L] int32, 'label' [b] int32, 'index' [b] int64, 'weight' [b] float32}.

    Args:
      input_ids: one int32 array of token ids per example, each no longer than buckets[-1].
      labels: [n] int class indices or float regression targets (kept float32), or None (all zeros).
      batch_size: rows per batch b.
      buckets: increasing padded lengths L; a sequence goes to the smallest that holds it, among those
        `used_buckets` keeps for these lengths.
      shuffle: shuffle examples (a permutation seeded by seed and epoch, so each epoch is reproducible).
      seed: shuffle seed.
      epoch: epoch number, mixed into the shuffle seed.
      pad_id: token id for padding.
      process_index, process_count: on several hosts, every process builds the same global batches
        (same seed) and yields only its contiguous block of batch_size / process_count rows.
      sequences: more per-token fields, name -> (one int32 array per example, no longer than its
        input_ids, pad value): padded to the same bucket length as input_ids (e.g. NER tags).

    Returns:
      (iterator over batches, number of batches).
    """
    n = len(input_ids)
    if n == 0:
        raise FlaxtrainError("no examples to batch: pass a non-empty dataset")
    if batch_size < 1:
        raise FlaxtrainError(f"batch_size must be positive, got {batch_size}")
    if batch_size % process_count:
        raise FlaxtrainError(
            f"batch size {batch_size} does not divide over {process_count} processes: use a multiple of {process_count}"
        )
    lengths = np.fromiter((len(x) for x in input_ids), np.int64, count=n)
    if lengths.max() > buckets[-1]:
        raise FlaxtrainError(f"a sequence of {lengths.max()} tokens exceeds the longest bucket {buckets[-1]}: truncate to maxlen")
    labels = np.zeros(n, np.int32) if labels is None else np.asarray(labels)
    labels = labels.astype(np.float32 if np.issubdtype(labels.dtype, np.floating) else np.int32)  # targets or classes
    total = num_batches(lengths, batch_size=batch_size, buckets=buckets)
    buckets = used_buckets(lengths, batch_size=batch_size, buckets=buckets)

    fields = {"input_ids": (input_ids, pad_id), **(sequences or {})}
    columns: dict[str, np.ndarray] = {"label": labels, "index": np.arange(n, dtype=np.int64)}
    for name, (arrays, pad) in fields.items():
        if len(arrays) != n:
            raise FlaxtrainError(f"{len(arrays)} {name} rows for {n} examples: pass one per example")
        field_lengths = np.fromiter((len(x) for x in arrays), np.int64, count=n)
        if np.any(field_lengths > lengths):
            raise FlaxtrainError(f"a {name} row is longer than its input_ids: each must fit the example's tokens")
        padded = np.full((n, max(int(lengths.max()), 1)), pad, np.int32)
        for row, values in enumerate(arrays):
            padded[row, : len(values)] = values
        columns[name], columns[f"{name}_length"] = padded, field_lengths
    for name, (arrays, pad, width) in (fixed or {}).items():
        if len(arrays) != n:
            raise FlaxtrainError(f"{len(arrays)} {name} rows for {n} examples: pass one per example")
        columns[name] = np.full((n, width), pad, np.int32)
        for row, values in enumerate(arrays):
            if len(values) > width:
                raise FlaxtrainError(f"a {name} row of {len(values)} tokens exceeds its length {width}: truncate it")
            columns[name][row, : len(values)] = values
    fill = {**{name: pad for name, (_, pad) in fields.items()}, **{name: pad for name, (_, pad, _) in (fixed or {}).items()}}
    order = shuffled_order(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    batches = _fill_batches(_ordered_batches(columns, fields, lengths, order, batch_size=batch_size, buckets=buckets),
                            batch_size, fill)
    if process_count > 1:
        rows = batch_size // process_count
        start = process_index * rows
        batches = ({k: v[start:start + rows] for k, v in batch.items()} for batch in batches)
    return batches, total


def shuffled_order(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order `make_batches(..., shuffle=True)` takes n examples in: a permutation drawn from (seed, epoch),
    the same in every process of a multi-host run."""
    return np.random.default_rng((seed * 1_000_003 + epoch) % 2**64).permutation(n)


def _ordered_batches(columns: dict[str, np.ndarray], fields: dict[str, Any], lengths: np.ndarray, order: np.ndarray, *,
                     batch_size: int, buckets: Sequence[int]) -> Iterator[Batch]:
    """The batches tf.data's bucket_by_sequence_length makes of the examples taken in `order` (indices into the
    columns, which stay where they are): an example joins the smallest bucket that holds it, a bucket is
    emitted when full, and the partial ones follow at the end, shortest bucket first
    (tests/data/test_pipeline.py checks this against tf.data)."""
    which = np.searchsorted(np.asarray(buckets), lengths, side="left")
    waiting: dict[int, list[int]] = {}

    def batch(bucket: int, rows: list[int]) -> Batch:
        take = np.asarray(rows)
        width = buckets[bucket]
        out = {}
        for name, values in columns.items():
            if name.endswith("_length") and name[: -len("_length")] in fields:
                continue
            part = values[take]
            if name in fields:
                pad = fields[name][1]
                part = np.concatenate([part[:, :width], np.full((len(take), max(width - part.shape[1], 0)), pad,
                                                                np.int32)], axis=1)
                # values past each row's own length are the pad already (columns are padded to the longest)
            out[name] = part
        return out

    for i in order.tolist():
        bucket = int(which[i])
        rows = waiting.setdefault(bucket, [])
        rows.append(i)
        if len(rows) == batch_size:
            yield batch(bucket, rows)
            waiting[bucket] = []
    for bucket in sorted(waiting):
        if waiting[bucket]:
            yield batch(bucket, waiting[bucket])


def _fill_batches(batches: Iterator[Batch], batch_size: int, fill: dict[str, int]) -> Iterator[Batch]:
    for batch in batches:
        rows = len(batch["label"])
        batch["weight"] = np.ones(rows, np.float32)
        if rows < batch_size:
            batch = {
                k: np.concatenate([v, np.full((batch_size - rows, *v.shape[1:]), fill.get(k, 0), v.dtype)])
                for k, v in batch.items()
            }
        yield batch
