"""Learner power tools: lr_find (state untouched), lr_plot, fit_onecycle, SGDR, history plots."""

import jax
import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError


def _learner(tiny_split, **options):
    train, val, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    return flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8, **options)


@pytest.fixture()
def learner(tiny_split):
    return _learner(tiny_split)


def _host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_lr_find_leaves_the_learner_untouched_and_plots(learner, tmp_path):
    learner.fit(1e-3, 1, verbose=0)  # an optimizer state with history
    params, opt_state = _host(learner.model.params), _host(learner._train_state().opt_state)
    compiled = learner.steps._jitted["train"]._cache_size()
    lr = learner.lr_find(1e-5, 10.0, num_steps=40, verbose=0)
    assert learner.steps._jitted["train"]._cache_size() == compiled  # the range test ran fit's own compiled step
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


def test_lr_find_stops_at_a_skipped_batch_of_a_skip_nonfinite_learner(tiny_split):
    learner = _learner(tiny_split, skip_nonfinite=True)  # its steps drop a non-finite batch and report zero sums
    learner.lr_find(1e-3, 1e38, num_steps=20, stop_factor=float("inf"), verbose=0)  # on to overflow
    losses = learner.lr_finder.losses
    assert 5 <= len(losses) < 20 and np.isfinite(losses).all() and (losses > 0).all(), losses


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


def test_autofit_reduces_lr_stops_early_and_restores_the_best_weights(learner):
    history = learner.autofit(0.5, early_stopping=2, reduce_on_plateau=1, verbose=0)  # far too high: val_loss stalls
    val_losses = [r["val_loss"] for r in history]
    best = int(np.argmin(val_losses))
    assert len(history) == best + 1 + 2, val_losses  # stopped 2 epochs after the best one
    assert len(history) < 50
    # The learner's model and its train state hold the best epoch's weights, not the last.
    from flaxtrain.train import loop

    batches, count = learner._batches(learner.val_data, train=False)
    state = learner.steps.unreplicated(learner._train_state())
    assert abs(loop.summarize(loop.evaluate(state, batches, steps=learner.steps, num_batches=count, verbose=False))["loss"]
               - val_losses[best]) < 1e-5
    for a, b in zip(_host(learner.model.params), _host(state.params)):
        np.testing.assert_array_equal(a, b)
    # The triangular policy: each epoch climbs from lr/10 to the peak and back; the peak halves per stalled epoch.
    per_epoch = learner._steps_per_epoch()
    lrs = np.array([lr for _, lr in learner.lr_trace])
    peaks = lrs.reshape(len(history), per_epoch).max(1)
    assert np.isclose(peaks[0], 0.5, rtol=0.1) and lrs[0] < 0.08  # lr/10 plus half a step up
    assert peaks[-1] < peaks[best]


def test_autofit_arguments(learner):
    with pytest.raises(FlaxtrainError, match="needs epochs or early_stopping"):
        learner.autofit(1e-3, epochs=None, early_stopping=None)
    with pytest.raises(FlaxtrainError, match="reduce_factor must be greater than 1"):
        learner.autofit(1e-3, 2, reduce_factor=1)
    learner.val_data = None
    with pytest.raises(FlaxtrainError, match="monitor 'val_loss' needs validation data"):
        learner.autofit(1e-3, 2)
    assert len(learner.autofit(1e-3, 2, early_stopping=None, monitor="loss", verbose=0)) == 2


def test_top_losses_are_the_models_own_losses(learner, capsys):
    learner.fit(1e-2, 1, verbose=0)
    worst = learner.top_losses(5)
    losses = [loss for _, loss, _, _ in worst]
    assert len(worst) == 5 and losses == sorted(losses, reverse=True)
    val = learner.val_data
    predictor = flaxtrain.get_predictor(learner.model)
    log_probs = predictor.log_probs(val.input_ids)
    reference = -log_probs[np.arange(len(val)), val.labels]
    assert np.isclose(losses[0], reference.max(), atol=1e-5)
    for index, loss, truth, predicted in worst:
        assert np.isclose(loss, reference[index], atol=1e-5)
        assert truth == val.class_names[val.labels[index]] and predicted == val.class_names[log_probs[index].argmax()]
    shown = learner.view_top_losses(2)
    out = capsys.readouterr().out
    assert shown == worst[:2] and val.texts[worst[0][0]] in out and f"loss {worst[0][1]:.4f}" in out


def test_tensorboard_event_files(tiny_split, tmp_path):
    import tensorflow as tf

    train, val, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    learner = flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8, log_dir=str(tmp_path))
    learner.fit_onecycle(1e-2, 2, verbose=0)
    values: dict[str, list[tuple[int, float]]] = {}
    for path in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    per_epoch = learner._steps_per_epoch()
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "speed/tokens_per_s", "speed/step_s"):
        assert [step for step, _ in values[tag]] == [per_epoch, 2 * per_epoch], tag
    assert np.isclose(values["val/loss"][-1][1], learner.history[-1]["val_loss"], rtol=1e-6)
    assert [v for _, v in values["train/lr"]] == pytest.approx([lr for _, lr in learner.lr_trace], rel=1e-6)


def test_freeze_keeps_named_params_fixed_until_unfrozen(tiny_split):
    train, val, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    learner = flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8, weight_decay=0.1)
    learner.fit(1e-2, 1, verbose=0)  # an optimizer state with moments for every param
    moments = len(jax.tree.leaves(learner._train_state().opt_state))
    learner.freeze("embed", "conv3/kernel")
    assert learner.frozen == ("embed", "conv3/kernel")
    before = jax.tree.map(np.asarray, learner.model.params)
    learner.fit(1e-2, 1, verbose=0)
    after = learner.model.params
    np.testing.assert_array_equal(after["embed"]["embedding"], before["embed"]["embedding"])  # nor weight-decayed
    np.testing.assert_array_equal(after["conv3"]["kernel"], before["conv3"]["kernel"])
    assert not np.allclose(after["conv3"]["bias"], before["conv3"]["bias"])
    assert not np.allclose(after["head"]["kernel"], before["head"]["kernel"])
    assert len(jax.tree.leaves(learner._train_state().opt_state)) == moments - 4  # no Adam moments for them
    learner.unfreeze("conv3/kernel")
    assert learner.frozen == ("embed",)
    learner.unfreeze()
    learner.fit(1e-2, 1, verbose=0)
    assert not np.allclose(learner.model.params["embed"]["embedding"], before["embed"]["embedding"])

    with pytest.raises(FlaxtrainError, match=r"no params under 'embd' to freeze \(did you mean 'embed'\?\)"):
        learner.freeze("embd")
    with pytest.raises(FlaxtrainError, match="leaves no params to train"):
        learner.freeze(*learner.model.params)
    with pytest.raises(FlaxtrainError, match="'head' is not frozen"):
        learner.unfreeze("head")


def test_epoch_line_says_when_mfu_is_unknown(learner, capsys, monkeypatch):
    learner.fit(1e-3, 1, verbose=1)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "MFU " in line and "MFU unknown" not in line and 0 < learner.history[-1]["mfu"] < 1, line
    # A backend without XLA's cost analysis: the FLOP count is unknown, and the epoch line says so.
    from jax._src import stages

    def no_cost_analysis(self):
        raise NotImplementedError("cost analysis is not implemented on this backend")

    monkeypatch.setattr(stages.Lowered, "cost_analysis", no_cost_analysis)
    learner._steps = None  # compile afresh, so the count is asked for again
    learner.fit(1e-3, 1, verbose=1)
    assert "MFU unknown" in capsys.readouterr().out.strip().splitlines()[-1]
    assert learner.history[-1]["mfu"] is None and learner.history[-1]["tokens_per_s"] > 0


def test_bfloat16_precision_computes_in_bf16_with_float32_params(tiny_split):
    train, val, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8}, verbose=0)
    ops = {}
    for precision in ("float32", "bfloat16"):
        learner = flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8, precision=precision)
        batch = next(iter(learner._batches(train, train=True)[0]))
        hlo = learner.steps._jitted["train"].lower(learner._train_state(), batch, jax.random.key(0)).as_text()
        ops[precision] = hlo.count("bf16")
        learner.fit(1e-3, 1, verbose=0)
        assert all(x.dtype == np.float32 for x in jax.tree.leaves(learner.model.params))  # params stay float32
    assert ops["float32"] == 0 and ops["bfloat16"] > 10, ops  # the convolutions and dense layers run in bf16


def test_grad_accum_steps_through_get_learner_gives_the_same_weights(tiny_split):
    train, val, preproc = tiny_split
    params = {}
    for accum in (1, 4):
        model = flaxtrain.text.text_classifier("textcnn", train, preproc, verbose=0,
                                               params={"embed_dim": 16, "num_filters": 8, "dropout": 0.0})
        initial = _host(model.params)  # the same seed: the same start for every run
        learner = flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8, grad_accum_steps=accum)
        learner.fit(1e-2, 1, verbose=0)
        params[accum] = _host(learner.model.params)
    assert max(float(np.abs(a - b).max()) for a, b in zip(initial, params[1])) > 1e-2  # training moved the weights
    for one, many in zip(params[1], params[4]):
        np.testing.assert_allclose(many, one, atol=1e-5)
    with pytest.raises(FlaxtrainError, match=r"batch_size 8 does not divide over 1 data-parallel devices x 3 micro-batches"):
        flaxtrain.get_learner(model, train_data=train, batch_size=8, grad_accum_steps=3)
