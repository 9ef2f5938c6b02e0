"""After a fit over two processes joined by jax.distributed (4 CPU devices each), everything a user
calls next works and agrees with one device: predict, evaluate, validate, top_losses, save and
reload, save_pretrained, checkpoints and resume. Process 0 alone writes the saved folders."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import torch
import transformers

from conftest import start_worker, wait_for_worker, worker_xla_flags
from flaxtrain import hub

WORKER = Path(__file__).with_name("multihost_worker.py")


def _start(out: Path, checkpoint: Path, devices: int, **extra: str) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": worker_xla_flags(devices), "TF_CPP_MIN_LOG_LEVEL": "3",
           **extra}
    log = out / f"log-{extra.get('FLAXTRAIN_TEST_PROCESS', 'single').split('/')[0]}.txt"
    return start_worker(WORKER, [str(out), str(checkpoint)], log, env)


def test_everything_after_a_two_process_fit_matches_one_device(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64)).save_pretrained(checkpoint)
    hub.load_tokenizer("minilm").save(str(checkpoint / "tokenizer.json"))
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir(), multi.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_start(single, checkpoint, 1)]
    procs += [_start(multi, checkpoint, 4, FLAXTRAIN_TEST_PROCESS=f"{i}/2/{port}") for i in range(2)]
    for proc in procs:
        wait_for_worker(proc)
    reference, first, second = (np.load(path) for path in (single / "result-0.npz", multi / "result-0.npz",
                                                              multi / "result-1.npz"))
    assert int(reference["processes"]) == 1 and int(first["processes"]) == 2
    for name in ("probs", "evaluate", "history", "top_loss", "reloaded", "resumed"):
        np.testing.assert_allclose(first[name], reference[name], atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(second[name], first[name], err_msg=name)  # every process, the same answer
    for name in ("validate", "top_index"):
        np.testing.assert_array_equal(first[name], reference[name], err_msg=name)
        np.testing.assert_array_equal(second[name], first[name], err_msg=name)
    names = lambda run: [f for f in json.loads((run / "files-0.json").read_text()) if "/d/" not in f]  # noqa: E731 (not the hashed data files)
    assert names(multi) == names(single) and any(f.startswith("predictor/params/") for f in names(multi))
    assert (multi / "run" / "hf" / "model.safetensors").is_file()
    steps = lambda run: sorted(int(p.name) for p in (run / "run" / "checkpoints" / "latest").iterdir())  # noqa: E731
    assert steps(multi) == steps(single) and len(steps(multi)) == 3
