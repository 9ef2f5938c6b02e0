"""Trains the tiny TextCNN with checkpoints, in its own process, so a test can kill it for real.

usage: resume_worker.py OUT_DIR MODE [STEP]
  MODE full          train uninterrupted, write OUT_DIR/params.npz and OUT_DIR/history.json
  MODE sigkill STEP  train with checkpoints; SIGKILL this process right after global step STEP
  MODE sigterm STEP  same, but send SIGTERM (the learner saves a checkpoint and exits)
  MODE resume [DIR..] train the same call with resume=True, then write params and history; then the same
                     for each further DIR, one after another in this process (one start for several runs)
  MODE devices       (8 devices) train on an spmd 2x2x2 mesh with checkpoints, stop it after step 28,
                     resume on one device and under pmap; write those and a one-device reference
"""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest's data

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import make_sentiment_texts  # noqa: E402

import flaxtrain  # noqa: E402
import flaxtrain.errors  # noqa: E402
import flaxtrain.text  # noqa: E402

EPOCHS, LR, EVERY = 2, 1e-2, 4


def make_learner(dropout=0.5, **options):
    texts, labels = make_sentiment_texts(240)
    train, val, preproc = flaxtrain.text.texts_from_array(texts[:200], labels[:200], texts[200:], labels[200:],
                                                          maxlen=24, max_features=100, verbose=0)
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8, "dropout": dropout},
                                           verbose=0)
    return flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8, **options)


def save_params(path, params):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    np.savez(path, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})


def devices(out: Path) -> None:
    """Stops an 8-device (2x2x2 mesh) run after step 28, resumes it on 1 device and under pmap over 8;
    writes those and an uninterrupted one-device run."""
    assert jax.device_count() == 8, jax.devices()
    mesh = make_learner(0.0, strategy="spmd", mesh=(2, 2, 2))  # no dropout: pmap draws it per device
    train_step = mesh.steps.train

    def stop_after_28(state, batch, rng):
        if int(jax.device_get(state.step)) == 28:
            raise KeyboardInterrupt  # the loop stops there, as on Ctrl-C
        return train_step(state, batch, rng)

    mesh.steps.train = stop_after_28
    try:
        mesh.fit_onecycle(LR, EPOCHS, verbose=0, checkpoint_dir=str(out / "mesh"), checkpoint_every=EVERY)
    except flaxtrain.errors.FlaxtrainError as err:
        assert "interrupted at step 28" in str(err), err
    reference = make_learner(0.0, strategy="single")
    reference.fit_onecycle(LR, EPOCHS, verbose=0)
    save_params(out / "params_reference.npz", reference.model.params)
    for strategy in ("single", "pmap"):
        shutil.copytree(out / "mesh", out / strategy)
        learner = make_learner(0.0, strategy=strategy)
        learner.fit_onecycle(LR, EPOCHS, verbose=1, checkpoint_dir=str(out / strategy), checkpoint_every=EVERY,
                             resume=True)
        save_params(out / f"params_{strategy}.npz", learner.model.params)


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "devices":
        return devices(out)
    if mode == "resume":
        for folder in (out, *map(Path, sys.argv[3:])):
            train(folder, mode)
        return
    train(out, mode)


def train(out: Path, mode: str) -> None:
    learner = make_learner()
    if mode in ("sigkill", "sigterm"):
        at, sig = int(sys.argv[3]), signal.SIGKILL if mode == "sigkill" else signal.SIGTERM
        steps, train_step = learner.steps, learner.steps.train

        def train_then_signal(state, batch, rng):
            state, sums = train_step(state, batch, rng)
            if int(state.step) == at:
                print(f"sending {sig.name} after step {at}", flush=True)
                os.kill(os.getpid(), sig)
            return state, sums

        steps.train = train_then_signal
    checkpoint_dir = None if mode == "full" else str(out / "checkpoints")
    learner.fit_onecycle(LR, EPOCHS, verbose=1, checkpoint_dir=checkpoint_dir, checkpoint_every=EVERY,
                         resume=mode == "resume")
    save_params(out / f"params_{mode}.npz", learner.model.params)
    speed = ("tokens_per_s", "step_s", "mfu")
    history = [{k: v for k, v in r.items() if k not in speed} for r in learner.history]
    (out / f"history_{mode}.json").write_text(json.dumps({"history": history, "lr_trace": learner.lr_trace}))


if __name__ == "__main__":
    main()
