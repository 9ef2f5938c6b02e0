"""`get_learner(..., batch_size='auto')` / `learner.find_batch_size()`: the largest batch whose compiled train
step fits a (simulated) device memory limit, checked against XLA's own memory analysis of the steps at
the chosen size and one step above; a larger global batch becomes micro-batches that fit."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import flaxtrain
from flaxtrain.errors import FlaxtrainError
from flaxtrain.text import texts_from_array
from flaxtrain.train import partition
from flaxtrain.train.batch_size import longest_rows

LIMIT = 40_000_000  # bytes per device, simulated: the tiny TextCNN's step fits ~100 rows in 90% of it


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 60)))) for _ in range(600)]
    labels = [int("w1 " in text) for text in texts]
    trn, val, _ = texts_from_array(texts, labels, maxlen=64, val_pct=0.1, verbose=0)
    return trn, val


def _peak(learner, size: int) -> int:
    partition._MEMORY_ANALYSES.clear()  # measured anew, not read from the finder's cache
    longest = longest_rows(learner.task.batches(learner.train_data, batch_size=1)[0])
    rows = {k: np.resize(v, (size, *v.shape[1:])) for k, v in longest.items()}
    return learner.steps.memory(learner._train_state(), rows, jax.random.key(0))["peak"]


def test_the_chosen_batch_is_the_largest_that_fits(data, capsys):
    trn, val = data
    learner = flaxtrain.get_learner(flaxtrain.get_model("textcnn", train_data=trn), trn, val, batch_size=8)
    chosen = learner.find_batch_size(memory_limit=LIMIT)
    assert learner.batch_size == learner.eval_batch_size == chosen and learner.grad_accum_steps == 1
    assert chosen % 8 == 0 and 16 <= chosen < 400, chosen
    assert _peak(learner, chosen) <= 0.9 * LIMIT < _peak(learner, chosen + 8)  # XLA's analysis, measured anew
    assert f"batch size {chosen}: {chosen} fits in" in capsys.readouterr().out


def test_a_target_larger_than_fits_becomes_micro_batches(data):
    trn, _ = data
    learner = flaxtrain.get_learner(flaxtrain.get_model("textcnn", train_data=trn), trn, batch_size=8)
    largest = learner.find_batch_size(memory_limit=LIMIT, verbose=0)
    compiles = []
    listener = lambda event, seconds, **_: compiles.append(event) if "backend_compile" in event else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:  # the same sizes again: their analyses are remembered, nothing compiles
        assert learner.find_batch_size(4 * largest, memory_limit=LIMIT, verbose=0) == 4 * largest
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert (learner.batch_size, learner.grad_accum_steps, learner.eval_batch_size) == (4 * largest, 4, largest)
    learner.find_batch_size(3 * largest + 8, memory_limit=LIMIT, verbose=0)  # 3 x largest + 8: more, smaller parts
    micro = learner.batch_size // learner.grad_accum_steps
    assert learner.batch_size % learner.grad_accum_steps == 0 and micro <= largest and learner.grad_accum_steps > 3
    assert np.isfinite(learner.fit(1e-3, 1, verbose=0)[-1]["loss"])


def test_auto_at_construction_is_capped_by_the_training_set(data):
    trn, _ = data
    learner = flaxtrain.get_learner(flaxtrain.get_model("textcnn", train_data=trn), trn, batch_size="auto")
    assert learner.batch_size == len(trn) // 8 * 8  # the host has far more memory than this step needs
    with pytest.raises(FlaxtrainError, match=r"^batch_size='auto' sets no gradient accumulation"):
        flaxtrain.get_learner(learner.model, trn, batch_size="auto", grad_accum_steps=2)
    with pytest.raises(FlaxtrainError, match=r"^batch_size must be a positive whole number of examples or 'auto', got 'big'$"):
        flaxtrain.get_learner(learner.model, trn, batch_size="big")


def test_a_model_that_does_not_fit_at_all_is_one_line(data):
    trn, _ = data
    learner = flaxtrain.get_learner(flaxtrain.get_model("textcnn", train_data=trn), trn, batch_size=8)
    with pytest.raises(FlaxtrainError) as err:
        learner.find_batch_size(memory_limit=1_000_000)
    assert str(err.value).startswith("a batch of 1 already needs") and "\n" not in str(err.value)
    assert "of the 0.9 MiB allowed: use precision='bfloat16', a remat policy" in str(err.value)
    assert (learner.batch_size, learner.grad_accum_steps) == (8, 1)  # nothing changed


@pytest.mark.parametrize("fixed, per_row, curve", [(1000, 10, 0), (5000, 3, 0.01), (0, 50, 0.5)])
def test_the_search_finds_the_largest_size_brute_force_finds(fixed, per_row, curve):
    from flaxtrain.train.batch_size import largest_fitting, micro_batches

    peak = lambda b: int(fixed + per_row * b + curve * b * b)  # noqa: E731 (linear, and bending up like activations)
    for dp in (1, 2, 8):
        for budget in (fixed + 60 * per_row, fixed + 700 * per_row, fixed + 5000 * per_row):
            cap = 1024 // dp * dp
            best, step = largest_fitting(peak, data_parallel=dp, cap=cap, budget=budget)
            sizes = [b for b in range(dp, cap + 1, dp) if (b % (8 * dp) == 0 or b < 8 * dp) and peak(b) <= budget]
            assert best == max(sizes), (dp, budget, best, max(sizes))
            assert micro_batches(3 * best + dp, best, dp) * best >= 3 * best + dp
