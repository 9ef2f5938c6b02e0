"""The command line, run as users run it: in a subprocess."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import quick_compile_env

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT}/configs/textcnn_rotten_tomatoes.py:tiny"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flaxtrain.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=quick_compile_env(), timeout=600)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run")
    run = ("train", "--config", TINY, f"--config.train.workdir={workdir}", "--config.train.checkpoint_every=100",
           "--config.train.tensorboard=True")
    result = _cli(*run)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epoch 2" in result.stdout and "test  loss" in result.stdout
    assert list((workdir / "tensorboard").iterdir()) and list((workdir / "checkpoints" / "latest").iterdir())
    again = _cli(*run)  # the checkpoints are not overwritten by accident
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr and "resume=True" in again.stderr
    return workdir / "predictor"


def test_train_predict_evaluate(trained_dir):
    import json
    import re

    import flaxtrain

    texts = ["a wonderful film", "", "dull, lifeless and far too long"]
    result = _cli("predict", "--model", str(trained_dir), *texts)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("\t") for line in result.stdout.rstrip("\n").split("\n")]
    # The command prints what the saved predictor predicts in-process: its labels and top probabilities.
    labels, probs = flaxtrain.load_predictor(trained_dir).predict(texts, return_proba=True)
    assert [row[0] for row in rows] == labels and [row[2] for row in rows] == texts
    np.testing.assert_allclose([float(row[1]) for row in rows], probs.max(axis=1), atol=1e-4)
    result = _cli("evaluate", "--model", str(trained_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rotten_tomatoes test (1276 texts)" in result.stdout
    printed = {k: float(v) for k, v in re.findall(r"(\w+) (\d+\.\d+)", result.stdout)}
    saved = json.loads((trained_dir / "config.json").read_text())["test_metrics"]  # what `train` measured
    assert printed.keys() >= {"loss", "acc", "f1"} and all(abs(printed[k] - saved[k]) < 1e-4 for k in ("loss", "acc", "f1"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config.optim.lrr=1"], "bad config override --config.optim.lrr=1: unknown key 'lrr' (did you mean 'lr'?)"),
        (["train", "--config", "nope.py"], "config file nope.py does not exist"),
        (["train", "--config", f"{TINY}x"], "unknown variant 'tinyx'"),
        (["train", "--config", TINY, "--config.data.name=rotten"], "unknown dataset 'rotten' (did you mean 'rotten_tomatoes'?)"),
        (["predict", "--model", "/nonexistent", "hi"], "predictor directory /nonexistent does not exist"),
    ],
)
def test_bad_input_gives_one_line(args, message):
    result = _cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
