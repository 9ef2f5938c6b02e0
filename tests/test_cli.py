"""The command line, run as users run it: in a subprocess."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT}/configs/textcnn_rotten_tomatoes.py:tiny"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flaxtrain.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


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
    result = _cli("predict", "--model", str(trained_dir), "a wonderful film", "")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("rotten", "fresh") for line in lines)
    assert 0.5 <= float(lines[0].split("\t")[1]) <= 1.0
    result = _cli("evaluate", "--model", str(trained_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rotten_tomatoes test (1276 texts)" in result.stdout and "acc" in result.stdout


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
