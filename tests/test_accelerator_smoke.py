"""benchmarks/accelerator.py runs in its smoke mode (tiny sizes, CPU) so that the prepared accelerator run
cannot rot: every section finishes, and its checks hold at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import quick_compile_env

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_the_accelerator_script_runs_in_smoke_mode(tmp_path):
    out = tmp_path / "accelerator.json"
    env = quick_compile_env(PYTHONPATH=str(ROOT))  # tiny sizes: compiling is the run's time
    done = subprocess.run([sys.executable, "benchmarks/accelerator.py", "--smoke", "--out", str(out)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["smoke"] and results["device"].startswith("cpu")
    assert results["doctor"]["backend"] == "cpu"
    parity = results["parity"]
    assert [row["model"] for row in parity] == ["bert", "roberta", "xlm-roberta", "distilbert", "albert", "t5", "bart",
                                                "marian"], parity
    assert all(row["ok"] for row in parity), parity
    assert results["attention"] == {"skipped": "cudnn attention needs a GPU (backend cpu)"}
    for row in results["train"]:
        assert row["flaxtrain"]["tokens_per_s"] > 0 and row["flaxtrain"]["mfu"] > 0, row
        assert row["pytorch eager"]["tokens_per_s"] > 0 and row["ratio to pytorch eager"] > 0, row
    assert results["decode"]["same_tokens"] and results["decode"]["flaxtrain_tokens_per_s"] > 0, results["decode"]
    sizes = results["batch_size"]
    assert 8 <= sizes["finder"] == sizes["largest_that_runs"] < 64, sizes  # the simulated device bounds both
    assert "parity (max |diff| / max |ref|)" in done.stdout and f"wrote {out}" in done.stdout
