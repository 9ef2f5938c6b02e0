"""Every colab/ notebook runs headless in smoke mode (FLAXTRAIN_SMOKE=1: the same cells at tiny sizes), and
the committed notebooks are the ones colab/make_notebooks.py writes, with no outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import QUICK_FLAGS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "colab"))

from make_notebooks import NOTEBOOKS, notebook  # noqa: E402

pytestmark = pytest.mark.slow
XLA_DEFAULTS = {"finetune_minilm"}  # notebooks run with XLA's default optimisation (see below)


def test_the_committed_notebooks_are_generated_and_stripped():
    assert sorted(p.stem for p in (ROOT / "colab").glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name, cells in NOTEBOOKS.items():
        committed = json.loads((ROOT / "colab" / f"{name}.ipynb").read_text())
        assert committed == notebook(cells), f"colab/{name}.ipynb: run python colab/make_notebooks.py"
        assert "colab-badge.svg" in "".join(committed["cells"][0]["source"])


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_the_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXTRAIN_SMOKE", "1")
    # Smoke sizes: compiling is the kernel's time, so it compiles as tests/conftest.py's quick options do;
    # except finetune_minilm, whose six MiniLM train steps run slower unoptimised than the compile saves
    # (the notebook alone on the 2-core machine: 71 s quick, 58 s with XLA's defaults).
    if name not in XLA_DEFAULTS:
        monkeypatch.setenv("XLA_FLAGS", QUICK_FLAGS)
    nb = nbformat.read(ROOT / "colab" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "backend      cpu" in outputs and "\nerror        " not in outputs, outputs[-3000:]  # the doctor ran, no error trap
    if name == "multi_device":
        assert "8 devices" in outputs and "training on spmd over 8 devices (data 2, fsdp 2, tensor 2)" in outputs, outputs
