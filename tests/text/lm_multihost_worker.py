"""Masked-LM pretraining by steps on text files, in one of two processes joined by jax.distributed.

usage: lm_multihost_worker.py OUT_DIR CORPUS_DIR  (FLAXTRAIN_TEST_PROCESS=i/n/port)
Each process reads its own share of the documents. The worker trains a run uninterrupted, and the same
run stopped after a checkpoint and resumed, then writes OUT_DIR/result-<i>.npz: the documents it read,
the losses, both runs' params and validation; process 0 alone saves the model under OUT_DIR/run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import flaxtrain.distributed

index, count, port = (int(v) for v in os.environ["FLAXTRAIN_TEST_PROCESS"].split("/"))
flaxtrain.distributed.initialize(f"127.0.0.1:{port}", num_processes=count, process_id=index)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import flaxtrain  # noqa: E402
import flaxtrain.text  # noqa: E402
from flaxtrain.errors import FlaxtrainError  # noqa: E402

TINY = dict(num_layers=2, hidden_size=32, num_heads=2, mlp_dim=64)


def main() -> None:
    out, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    trn, val, _ = flaxtrain.text.lm_from_files(str(corpus / "doc*"), str(corpus / "val.txt"),
                                               tokenizer=str(corpus / "tokenizer.json"), maxlen=32, verbose=0)
    steps = trn.num_batches(8) + 3  # into the second epoch

    def learner():
        model = flaxtrain.get_model("bert", train_data=trn, params=TINY, seed=1)
        return flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=8)

    whole = learner()
    before = whole.validate(print_report=False)["loss"]
    history = whole.fit_onecycle(3e-3, max_steps=steps, verbose=0)
    stopped = learner()
    drawn = [0]
    original = stopped._batches

    def interrupted(data, **kwargs):  # both processes stop at the same step, after the step-4 checkpoint
        batches, n = original(data, **kwargs)

        def gen():
            for batch in batches:
                if kwargs.get("train") and drawn[0] >= 5:
                    raise KeyboardInterrupt
                drawn[0] += kwargs.get("train", False)
                yield batch
        return gen(), n

    stopped._batches = interrupted
    try:
        stopped.fit_onecycle(3e-3, max_steps=steps, verbose=0, checkpoint_dir=out / "ckpt", checkpoint_every=4)
    except (KeyboardInterrupt, FlaxtrainError):
        pass
    resumed = learner()
    resumed.fit_onecycle(3e-3, max_steps=steps, verbose=0, checkpoint_dir=out / "ckpt", checkpoint_every=4, resume=True)
    flaxtrain.get_predictor(whole.model, trn.preproc).save_pretrained(out / "run" / "hf")
    np.savez(out / f"result-{jax.process_index()}.npz",
             documents=np.array(list(trn.source.documents(jax.process_index(), jax.process_count()))),
             rows=np.array([trn.num_rows(i, jax.process_count()) for i in range(jax.process_count())]),
             losses=np.array([before, history[-1]["loss"], whole.validate(print_report=False)["loss"]]),
             whole=np.concatenate([np.ravel(x) for x in jax.tree.leaves(whole.model.params)]),
             resumed=np.concatenate([np.ravel(x) for x in jax.tree.leaves(resumed.model.params)]),
             steps=np.array([steps, whole.steps.step_of(whole._train_state())]))


if __name__ == "__main__":
    main()
