"""Learner power tools: lr_find (state untouched), lr_plot, fit_onecycle, SGDR, history plots."""

import jax
import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError


@pytest.fixture()
def learner(tiny_split):
    train, val, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    return flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8)


def _host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_lr_find_leaves_the_learner_untouched_and_plots(learner, tmp_path):
    learner.fit(1e-3, 1, verbose=0)  # an optimizer state with history
    params, opt_state = _host(learner.model.params), _host(learner._train_state().opt_state)
    lr = learner.lr_find(1e-5, 10.0, num_steps=40, verbose=0)
    for before, after in zip(params, _host(learner.model.params)):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(opt_state, _host(learner._train_state().opt_state)):
        np.testing.assert_array_equal(before, after)
    result = learner.lr_finder
    assert 1e-5 <= lr <= 10.0 and lr == result.valley
    assert 5 <= len(result.losses) <= 40 and np.isfinite(result.losses).all()
    assert result.losses[-1] > result.losses.min()  # it ran into the divergence
    path = learner.lr_plot(str(tmp_path / "lr.png"))
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.endswith("lr.png")


def test_onecycle_and_sgdr_follow_their_schedules(learner, tmp_path):
    per_epoch = learner._steps_per_epoch()
    history = learner.fit_onecycle(1e-2, 2, verbose=0)
    steps, lrs = map(np.array, zip(*learner.lr_trace))
    assert list(steps) == list(range(2 * per_epoch)) and np.isclose(lrs.max(), 1e-2, rtol=1e-3)
    assert lrs[0] < 1e-3 and lrs[-1] < 1e-4 and history[-1]["lr"] == lrs[-1]
    assert history[-1]["val_acc"] >= 0.8, history
    learner.fit(1e-3, 2, cycle_len=1, verbose=0)  # SGDR: two one-epoch cosine cycles
    _, lrs = map(np.array, zip(*learner.lr_trace[2 * per_epoch:]))
    assert lrs[0] == lrs[per_epoch] == 1e-3 and lrs[per_epoch - 1] < 1e-4
    assert learner.plot("loss", str(tmp_path / "loss.png")).endswith("loss.png")
    assert learner.plot("lr", str(tmp_path / "lrs.png")).endswith("lrs.png")
    with pytest.raises(FlaxtrainError, match="unknown plot 'acc'"):
        learner.plot("acc")


def test_bad_power_tool_arguments(learner):
    with pytest.raises(FlaxtrainError, match="run learner.lr_find"):
        learner.lr_plot()
    with pytest.raises(FlaxtrainError, match="need 0 < start_lr < end_lr"):
        learner.lr_find(1.0, 1e-3)
    with pytest.raises(FlaxtrainError, match="cycle_len and cycle_mult"):
        learner.fit(1e-3, 2, cycle_len=0)
