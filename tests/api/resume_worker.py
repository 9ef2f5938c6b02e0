"""Trains the tiny TextCNN with checkpoints, in its own process, so a test can kill it for real.

usage: resume_worker.py OUT_DIR MODE [STEP]
  MODE full          train uninterrupted, write OUT_DIR/params.npz and OUT_DIR/history.json
  MODE sigkill STEP  train with checkpoints; SIGKILL this process right after global step STEP
  MODE sigterm STEP  same, but send SIGTERM (the learner saves a checkpoint and exits)
  MODE resume        train the same call with resume=True, then write params and history
"""

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest's data

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import make_sentiment_texts  # noqa: E402

import flaxtrain  # noqa: E402
import flaxtrain.text  # noqa: E402

EPOCHS, LR, EVERY = 2, 1e-2, 4


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    texts, labels = make_sentiment_texts(240)
    train, val, preproc = flaxtrain.text.texts_from_array(texts[:200], labels[:200], texts[200:], labels[200:],
                                                          maxlen=24, max_features=100, verbose=0)
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 16, "num_filters": 8},
                                           verbose=0)
    learner = flaxtrain.get_learner(model, train_data=train, val_data=val, batch_size=8)
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
    leaves = jax.tree_util.tree_leaves_with_path(learner.model.params)
    np.savez(out / f"params_{mode}.npz", **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    speed = ("tokens_per_s", "step_s", "mfu")
    history = [{k: v for k, v in r.items() if k not in speed} for r in learner.history]
    (out / f"history_{mode}.json").write_text(json.dumps({"history": history, "lr_trace": learner.lr_trace}))


if __name__ == "__main__":
    main()
