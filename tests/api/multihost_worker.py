"""The ktrain workflow after fit, run in one of several processes joined by jax.distributed.

usage: multihost_worker.py OUT_DIR CHECKPOINT_FOLDER
With FLAXTRAIN_TEST_PROCESS=i/n/port the process first joins a cluster of n local processes;
without it, it runs alone (the reference). Every process writes OUT_DIR/result-<i>.npz with what
it got back from predict, evaluate, validate, top_losses and a reloaded predictor; the files are
written by process 0 alone under OUT_DIR/run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if os.environ.get("FLAXTRAIN_TEST_PROCESS"):
    import flaxtrain.distributed

    index, count, port = (int(v) for v in os.environ["FLAXTRAIN_TEST_PROCESS"].split("/"))
    flaxtrain.distributed.initialize(f"127.0.0.1:{port}", num_processes=count, process_id=index)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest's data

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import make_sentiment_texts  # noqa: E402

import flaxtrain  # noqa: E402
import flaxtrain.text  # noqa: E402


def _forbid_writing() -> None:
    """Processes other than 0 must leave every file to process 0: writing one fails here."""
    import flaxtrain.hub.pretrained
    import flaxtrain.tasks.folder

    def forbidden(directory):
        raise AssertionError(f"process {jax.process_index()} tried to write {directory}")

    flaxtrain.tasks.folder.atomic_directory = flaxtrain.hub.pretrained.atomic_directory = forbidden


def _learner(t, trn, val):
    return flaxtrain.get_learner(t.get_classifier(verbose=0), train_data=trn, val_data=val, batch_size=16)


def main() -> None:
    out, checkpoint = Path(sys.argv[1]), sys.argv[2]
    run = out / "run"
    if jax.process_index() != 0:
        _forbid_writing()
    texts, labels = make_sentiment_texts(120, seed=5)
    t = flaxtrain.text.Transformer(checkpoint, maxlen=16, class_names=["neg", "pos"])  # one length bucket: few compiles
    trn = t.preprocess_train(texts[:64], labels[:64], verbose=0)
    val = t.preprocess_test(texts[64:96], labels[64:96])
    learner = _learner(t, trn, val)
    history = learner.fit(5e-3, 2, verbose=0, checkpoint_dir=run / "checkpoints", checkpoint_every=3)
    resumed = _learner(t, trn, val)  # the finished run's checkpoint resumes to its end state
    assert resumed.fit(5e-3, 2, verbose=0, checkpoint_dir=run / "checkpoints", checkpoint_every=3, resume=True) == []
    predictor = flaxtrain.get_predictor(learner.model, preproc=t)
    probe = texts[96:]
    result = {"probs": predictor.predict_proba(probe)}
    loss, metrics = learner.model.evaluate(probe, labels[96:])
    result["evaluate"] = np.array([loss, metrics["acc"], metrics["f1"]])
    result["validate"] = learner.validate(print_report=False)
    top = learner.top_losses(4)
    result["top_index"] = np.array([i for i, *_ in top])
    result["top_loss"] = np.array([loss for _, loss, *_ in top])
    result["history"] = np.array([[r["loss"], r["val_loss"]] for r in history])
    saved = predictor.save(run / "predictor")
    exported = predictor.save_pretrained(run / "hf")
    result["reloaded"] = flaxtrain.load_predictor(saved).predict_proba(probe)
    result["resumed"] = flaxtrain.get_predictor(resumed.model, preproc=t).predict_proba(probe)
    result["processes"] = np.asarray(jax.process_count())
    np.savez(out / f"result-{jax.process_index()}.npz", **result)
    (out / f"files-{jax.process_index()}.json").write_text(json.dumps(sorted(
        str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "checkpoints" not in p.parts)))
    assert exported.is_dir()


if __name__ == "__main__":
    main()
