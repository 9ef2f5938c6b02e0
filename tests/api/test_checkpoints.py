"""Checkpoints: a killed run resumes bitwise exactly; unreadable checkpoints fall back; other device counts.

The kill tests run tests/api/resume_worker.py in subprocesses and signal them for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import resume_worker
from conftest import COLLECTIVE_PATIENCE, make_sentiment_texts, worker_xla_flags
from flaxtrain.data import TextPreprocessor
from flaxtrain.errors import FlaxtrainError

WORKER = Path(resume_worker.__file__)


def _flat(params) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def _assert_bitwise(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert ours.keys() == reference.keys() and ours
    for name, value in reference.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted():
    """Params and history of the worker's run without checkpoints, trained in this process."""
    learner = resume_worker.make_learner()
    learner.fit_onecycle(resume_worker.LR, resume_worker.EPOCHS, verbose=0)
    speed = ("tokens_per_s", "step_s", "mfu")
    history = [{k: v for k, v in r.items() if k not in speed} for r in learner.history]
    return _flat(learner.model.params), history, learner._steps_per_epoch()


def _start(out: Path, *args: str, devices: int = 1) -> subprocess.Popen:
    # A run compared bitwise with this process's compiles as this process does; the device-count run is
    # compared only with itself (its reference runs in the same worker), so it compiles the quick way.
    flags = worker_xla_flags(devices) if args[0] == "devices" else \
        f"--xla_force_host_platform_device_count={devices} {COLLECTIVE_PATIENCE}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS=flags)
    return subprocess.Popen([sys.executable, str(WORKER), str(out), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=600)
    return proc.returncode, output


@pytest.mark.slow
def test_killed_runs_resume_bitwise_equal(uninterrupted, tmp_path):
    params, history, per_epoch = uninterrupted
    at = per_epoch + per_epoch // 2  # the middle of the second epoch
    runs = {sig: tmp_path / sig for sig in ("sigkill", "sigterm")}
    procs = {}
    for sig, out in runs.items():
        out.mkdir()
        procs[sig] = _start(out, sig, str(at))
    for sig, proc in procs.items():
        code, output = _finish(proc)
        assert code == (-9 if sig == "sigkill" else -15), output[-2000:]
        assert f"sending {sig.upper()} after step {at}" in output
        if sig == "sigterm":  # the learner saved the step it was at, then let the signal end the process
            assert f"saved checkpoint step {at}" in output, output[-2000:]
            assert str(at) in os.listdir(runs[sig] / "checkpoints" / "latest")
    code, output = _finish(_start(runs["sigkill"], "resume", str(runs["sigterm"])))  # both resume in one process
    assert code == 0, output[-3000:]
    resumed = [int(part.split()[0]) for part in output.split("resuming from checkpoint step ")[1:]]
    assert len(resumed) == 2, output[-3000:]
    for sig, resumed_from in zip(runs, resumed):
        assert per_epoch < resumed_from <= at  # mid-epoch, from a checkpoint of the killed run
        if sig == "sigterm":
            assert resumed_from == at
        _assert_bitwise(dict(np.load(runs[sig] / "params_resume.npz")), params)
        saved = json.loads((runs[sig] / "history_resume.json").read_text())
        assert saved["history"] == history  # the interrupted epoch's metrics too
        assert [s for s, _ in saved["lr_trace"]] == list(range(2 * per_epoch))


@pytest.mark.slow
def test_resume_on_other_device_counts(tmp_path):
    proc = _start(tmp_path, "devices", devices=8)
    code, output = _finish(proc)
    assert code == 0, output[-3000:]
    assert output.count("resuming from checkpoint step 28") == 2
    mesh = dict(np.load(tmp_path / "params_reference.npz"))
    for strategy in ("single", "pmap"):
        ours = dict(np.load(tmp_path / f"params_{strategy}.npz"))
        assert ours.keys() == mesh.keys()
        for name, value in mesh.items():
            np.testing.assert_allclose(ours[name], value, rtol=0, atol=1e-5, err_msg=f"{strategy}: {name}")


@pytest.mark.xla_defaults  # compared bitwise with `uninterrupted`, compiled as the slow test above compiles it
def test_unreadable_checkpoint_falls_back_and_is_kept(uninterrupted, tmp_path, capsys):
    params, history, per_epoch = uninterrupted
    checkpoints = tmp_path / "ckpt"
    learner = resume_worker.make_learner()
    learner.fit_onecycle(resume_worker.LR, resume_worker.EPOCHS, verbose=0, checkpoint_dir=checkpoints,
                         checkpoint_every=resume_worker.EVERY, keep_checkpoints=10)
    latest = checkpoints / "latest"
    steps = sorted(int(p.name) for p in latest.iterdir())
    assert steps[-1] == 2 * per_epoch and per_epoch in steps and len(steps) == 10
    _assert_bitwise(_flat(learner.model.params), params)  # checkpointing leaves the numbers alone
    assert (checkpoints / "best").is_dir()

    # Cut the run back to the middle of epoch 2, then break its newest checkpoint two ways.
    mid = [s for s in steps if per_epoch < s < 2 * per_epoch - resume_worker.EVERY]
    for step in steps:
        if step > mid[-1]:
            shutil.rmtree(latest / str(step))
    shutil.rmtree(latest / str(mid[-1]) / "state" / "d")  # array data gone
    (latest / str(mid[-2]) / "meta" / "metadata").write_text("{not json")
    (latest / f"{steps[-1]}.orbax-checkpoint-tmp-1").mkdir()  # a save cut short: ignored

    resumed = resume_worker.make_learner()
    resumed.fit_onecycle(resume_worker.LR, resume_worker.EPOCHS, checkpoint_dir=checkpoints,
                         checkpoint_every=resume_worker.EVERY, keep_checkpoints=10, resume=True)
    out = capsys.readouterr().out
    assert f"checkpoint step {mid[-1]} is unreadable" in out and f"checkpoint step {mid[-2]} is unreadable" in out
    assert f"resuming from checkpoint step {mid[-3]}" in out
    _assert_bitwise(_flat(resumed.model.params), params)
    assert sorted(p.name for p in (checkpoints / "unreadable").iterdir()) == sorted([str(mid[-1]), str(mid[-2])])

    # Nothing readable left: one clear error, and the unreadable ones are still kept.
    for step in latest.iterdir():
        if step.name.isdigit():
            shutil.rmtree(step / "state")
    with pytest.raises(FlaxtrainError, match="no readable checkpoint in .*start without resume=True"):
        resume_worker.make_learner().fit_onecycle(resume_worker.LR, resume_worker.EPOCHS, verbose=0,
                                                  checkpoint_dir=checkpoints, resume=True)
    assert len(list((checkpoints / "unreadable").iterdir())) > 2


def test_resume_refuses_a_different_run_and_needs_a_directory(tmp_path):
    learner = resume_worker.make_learner()
    learner.fit(1e-3, 1, verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(FlaxtrainError, match=r"different run \(lr 0.001 there, 0.002 here\).*new checkpoint_dir"):
        resume_worker.make_learner().fit(2e-3, 1, verbose=0, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(FlaxtrainError, match="resume=True needs checkpoint_dir"):
        learner.fit(1e-3, 1, resume=True)
    with pytest.raises(FlaxtrainError, match="checkpoint_every must be at least 1"):
        learner.fit(1e-3, 1, checkpoint_dir=tmp_path, checkpoint_every=0)
    # A finished run resumes to its end state without training again.
    again = resume_worker.make_learner()
    assert again.fit(1e-3, 1, verbose=0, checkpoint_dir=tmp_path, resume=True) == []
    _assert_bitwise(_flat(again.model.params), _flat(learner.model.params))


def _regression_learner(targets, **options):
    import flaxtrain
    import flaxtrain.text

    texts, labels = make_sentiment_texts(64, seed=3)
    _, _, words = flaxtrain.text.texts_from_array(texts, labels, val_pct=0.1, maxlen=24, max_features=100, verbose=0)
    preproc = TextPreprocessor(words.tokenizer, maxlen=24, class_names=None)  # float targets: regression
    train, val = preproc.preprocess_train(texts[:48], targets[:48]), preproc.preprocess_test(texts[48:], targets[48:])
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 8, "num_filters": 4},
                                           verbose=0)
    return flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=4, **options)


def test_nonfinite_loss_names_step_and_last_good_checkpoint(tmp_path):
    targets = np.linspace(-1.0, 1.0, 64).astype(np.float32)
    # An example of the 7th batch the learner draws gets a finite target whose squared error overflows
    # float32: that batch (step 7) has loss inf.
    probe = _regression_learner(targets)
    seventh = list(probe._batches(probe.train_data, train=True)[0])[6]
    targets[int(seventh["index"][0])] = 3e38
    learner = _regression_learner(targets)
    with pytest.raises(FlaxtrainError) as caught:
        learner.fit(1e-3, 2, verbose=0, checkpoint_dir=tmp_path, checkpoint_every=2)
    message = str(caught.value)
    assert "\n" not in message and "skip_nonfinite=True" in message, message
    bad = int(message.split("became inf at step ")[1].split()[0])
    last = int(message.split("the last good checkpoint is step ")[1].split()[0])
    assert (bad, last) == (7, 6) and str(tmp_path) in message  # saved every 2 steps, never after the bad one
    assert max(int(p.name) for p in (tmp_path / "latest").iterdir() if p.name.isdigit()) == last
    # The model holds the last finite weights (step 6's, as checkpointed), not NaN, and predicts.
    assert "the model keeps the weights of step 6" in message
    import orbax.checkpoint as ocp

    saved = ocp.StandardCheckpointer().restore(tmp_path / "latest" / "6" / "state")["params"]
    _assert_bitwise(_flat(learner.model.params), _flat(saved))
    assert learner.steps.step_of(learner._state) == 6
    assert np.isfinite(learner.model.predict(["a wonderful film"])).all()
    again = _regression_learner(targets)  # no checkpoints: the stop comes from the step's own flag
    with pytest.raises(FlaxtrainError, match="became inf at step 7 .*weights of step 6"):
        again.fit(1e-3, 2, verbose=0)
    assert all(np.isfinite(v).all() for v in _flat(again.model.params).values())

    skipping = _regression_learner(targets, skip_nonfinite=True)
    history = skipping.fit(1e-3, 2, verbose=0)
    assert [r["skipped"] for r in history] == [1, 1] and all(np.isfinite(r["loss"]) for r in history)
    assert all(np.isfinite(v).all() for v in _flat(skipping.model.params).values())


def test_a_checkpoint_of_another_model_is_refused_and_left_in_place(tmp_path):
    learner = resume_worker.make_learner()
    learner.fit(1e-3, 1, verbose=0, checkpoint_dir=tmp_path, checkpoint_every=10)
    before = sorted(p.name for p in (tmp_path / "latest").iterdir())

    def wider():
        import flaxtrain

        model = flaxtrain.text.text_classifier("textcnn", learner.train_data, learner.model.preproc, verbose=0,
                                               params={"embed_dim": 16, "num_filters": 6, "dropout": 0.5})
        return flaxtrain.get_learner(model, train_data=learner.train_data, val_data=learner.val_data, batch_size=8)

    with pytest.raises(FlaxtrainError, match=r"different run \(model.num_filters 8 there, 6 here\)") as err:
        wider().fit(1e-3, 1, verbose=0, checkpoint_dir=tmp_path, resume=True)
    assert "\n" not in str(err.value)
    # A checkpoint whose plan does not name the model (older flaxtrain) is refused by its shapes.
    for meta_file in (tmp_path / "latest").glob("*/meta/metadata"):
        meta = json.loads(meta_file.read_text())
        meta["plan"] = {k: v for k, v in meta["plan"].items() if not k.startswith("model.")}
        meta_file.write_text(json.dumps(meta))
    with pytest.raises(FlaxtrainError, match=r"saved for another model \(param \['conv3'\]\['bias'\] has shape "
                                             r"\(8,\) there, \(6,\) here\)"):
        wider().fit(1e-3, 1, verbose=0, checkpoint_dir=tmp_path, resume=True)
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == before and not (tmp_path / "unreadable").exists()
    resumed = resume_worker.make_learner()  # the model that saved them still resumes
    assert resumed.fit(1e-3, 1, verbose=0, checkpoint_dir=tmp_path, checkpoint_every=10, resume=True) == []
