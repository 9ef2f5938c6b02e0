"""Pretraining from the command line: the tiny variants of the WikiText-2 configs train, evaluate on
the test split, save a predictor that loads, and `flaxtrain predict` fills masks and sentinels with it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import flaxtrain
from conftest import quick_compile_env

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flaxtrain.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=quick_compile_env(), timeout=900)


@pytest.mark.parametrize("config, probe, task", [
    ("bert_mlm_wikitext.py:tiny", "Paris is the [MASK] of France .", "masked_lm"),
    ("t5_span_wikitext.py:tiny", "Paris is the <extra_id_0> of France .", "span_corruption"),
])
def test_tiny_pretraining_configs_run(config, probe, task, tmp_path):
    result = _cli("train", "--config", f"{ROOT}/configs/{config}", f"--config.train.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epoch 1" in result.stdout and "test  loss" in result.stdout and "perplexity" in result.stdout
    saved = json.loads((tmp_path / "predictor" / "config.json").read_text())
    assert saved["task"] == task and set(saved["test_metrics"]) == {"loss", "accuracy", "perplexity"}
    predicted = _cli("predict", "--model", str(tmp_path / "predictor"), probe)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.rstrip("\n").endswith(f"\t{probe}")
    loaded = flaxtrain.load_predictor(tmp_path / "predictor")
    assert loaded.model.task.name == task
    if task == "masked_lm":  # the printed token is the predictor's best for the mask
        assert predicted.stdout.split("\t")[0] == loaded.predict(probe)[0][0][0]
