"""Export for serving: a predictor's model written in a serving format, proven equal to JAX before it is kept.

`export(predictor, path, format)` traces the task's serving function (token ids in, named outputs out;
the task says which), writes the artifact into a staging folder with `export.json` (inputs, outputs,
class names, preprocessing), a sample of inputs with the JAX outputs, and `serve.py` (the runtime loader,
flaxtrain/export/runtime.py). It then runs the artifact in a separate process in its own runtime on that
sample, writes `parity.json` (max |diff| per output, label agreement, runtime versions) and moves the
folder into place only when the outputs agree within the tolerance; otherwise nothing that looks
finished is left and the error says by how much it missed. `verify_export(path)` repeats the check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxtrain._version import __version__
from flaxtrain.errors import FlaxtrainError
from flaxtrain.export import runtime
from flaxtrain.files import atomic_directory

FORMATS = ("jax",)  # 'saved_model', 'tflite' and 'onnx' follow (see the README)
PLANNED = ("saved_model", "tflite", "onnx")
PLATFORMS = ("cpu", "cuda", "tpu")
TOLERANCE = 1e-4  # float32 max |diff| of every output
SAMPLE_ROWS = 8


def export(predictor: Any, path: str | os.PathLike, format: str = "jax", *, texts: list[str] | None = None,
           quantize: bool = False, tolerance: float = TOLERANCE) -> Path:
    """Writes `predictor`'s model to `path` in `format`, checked in the format's own runtime first.

    Args:
      predictor: a flaxtrain predictor (`get_predictor(model, preproc)` or `load_predictor(folder)`).
      path: the export folder (replaced when it holds an earlier export; refused when it holds anything else).
      format: 'jax' (jax.export StableHLO for cpu, cuda and tpu at once; symbolic batch and length).
      texts: the parity sample (default: token-id rows of odd lengths drawn from the vocabulary).
      quantize: int8 weights (TFLite only).
      tolerance: the largest max |diff| of any output that passes.

    Returns the export folder; raises a one-line FlaxtrainError when the task or format cannot be
    exported, or when the runtime's outputs differ from JAX's by more than `tolerance`.
    """
    if format not in FORMATS:
        planned = f" ('{format}' is planned)" if format in PLANNED else ""
        raise FlaxtrainError(f"unknown export format {format!r}{planned}: use one of {', '.join(map(repr, FORMATS))}")
    if quantize:
        raise FlaxtrainError(f"quantize=True applies to format='tflite', not {format!r}: drop quantize")
    target = Path(path)
    if target.exists() and not (target.is_dir() and (target / runtime.MANIFEST).is_file()):
        raise FlaxtrainError(f"{target} exists and is not a flaxtrain export: pass a new path or remove it first")
    serving, outputs = predictor.task.export_outputs(predictor.model)  # a one-line error where the task has none
    sample = sample_inputs(predictor, texts)
    expected = {name: np.asarray(value) for name, value in zip(outputs, jax.jit(serving)(predictor.model.params,
                                                                                         sample["input_ids"]))}
    with atomic_directory(target) as staging:
        spec = _write_jax(staging, serving, predictor.model.params, outputs)
        spec.update(format=format, task=predictor.task.name, flaxtrain_version=__version__,
                    class_names=getattr(predictor.preproc, "class_names", None),
                    preprocessor=predictor.preproc.save(staging), tolerance=tolerance)
        (staging / runtime.MANIFEST).write_text(json.dumps(spec, indent=2))
        np.savez(staging / "sample.npz", **sample, **{f"expected/{k}": v for k, v in expected.items()})
        shutil.copy(Path(runtime.__file__), staging / "serve.py")
        report = check(staging)
        if not report["passed"]:
            raise FlaxtrainError(f"the {format} export differs from JAX by {report['max_abs_diff']:.2e} (tolerance "
                                 f"{tolerance:.0e}): nothing was written to {target}")
    return target


def verify_export(path: str | os.PathLike) -> dict[str, Any]:
    """Runs the export at `path` again in its own runtime on its stored sample; rewrites and returns
    parity.json's report (raises a one-line FlaxtrainError when it no longer matches)."""
    folder = Path(path)
    if not (folder / runtime.MANIFEST).is_file() or not (folder / "sample.npz").is_file():
        raise FlaxtrainError(f"{folder} is not a flaxtrain export (no {runtime.MANIFEST} and sample.npz): pass the "
                             "folder predictor.export() wrote")
    report = check(folder)
    if not report["passed"]:
        raise FlaxtrainError(f"the export at {folder} differs from the JAX outputs it was made with by "
                             f"{report['max_abs_diff']:.2e} (tolerance {report['tolerance']:.0e}): export it again")
    return report


def check(folder: Path) -> dict[str, Any]:
    """Runs serve.py on the sample in a fresh process and compares with the stored JAX outputs."""
    spec = json.loads((folder / runtime.MANIFEST).read_text())
    with np.load(folder / "sample.npz") as stored:
        inputs = {k: stored[k] for k in stored.files if not k.startswith("expected/")}
        expected = {k[len("expected/"):]: stored[k] for k in stored.files if k.startswith("expected/")}
    scratch = folder / ".parity"
    scratch.mkdir(exist_ok=True)
    np.savez(scratch / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # serve.py must need nothing of flaxtrain
    try:
        done = subprocess.run([sys.executable, str(folder / "serve.py"), str(folder), str(scratch / "inputs.npz"),
                               str(scratch / "outputs.npz")], capture_output=True, text=True, env=env, cwd=scratch,
                              timeout=600)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise FlaxtrainError(f"the {spec.get('format')} runtime could not run the export at {folder} ({last}): "
                                 "export it again")
        runtime_info = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(scratch / "outputs.npz") as got:
            outputs = {k: got[k] for k in got.files}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = compare(expected, outputs, spec["tolerance"])
    report.update(format=spec["format"], rows=int(len(inputs["input_ids"])), runtime=runtime_info["versions"],
                  runtime_imported=runtime_info["modules"], jax=jax.__version__)
    (folder / "parity.json").write_text(json.dumps(report, indent=2))
    return report


def compare(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], tolerance: float) -> dict[str, Any]:
    """Max |diff| per output and, for probabilities, the share of rows whose argmax agrees."""
    if set(expected) != set(got):
        return {"passed": False, "max_abs_diff": float("inf"), "tolerance": tolerance,
                "outputs": {}, "missing": sorted(set(expected) ^ set(got))}
    per = {}
    for name, want in expected.items():
        have = np.asarray(got[name], want.dtype)
        entry = {"max_abs_diff": float(np.max(np.abs(have - want))) if want.size and have.shape == want.shape
                 else float("inf")}
        if name == "probabilities" and have.shape == want.shape:
            entry["label_agreement"] = float(np.mean(have.argmax(-1) == want.argmax(-1)))
        per[name] = entry
    worst = max(e["max_abs_diff"] for e in per.values())
    return {"passed": bool(worst <= tolerance), "max_abs_diff": worst, "tolerance": tolerance, "outputs": per}


def sample_inputs(predictor: Any, texts: list[str] | None) -> dict[str, np.ndarray]:
    """{'input_ids' [n, L] int32}: the given texts encoded and padded, or SAMPLE_ROWS rows of random
    vocabulary ids with padding tails of different lengths."""
    preproc = predictor.preproc
    pad = int(getattr(preproc, "pad_id", 0))
    if texts:
        rows = preproc.encode(list(texts))
    else:
        rng = np.random.default_rng(0)
        length = min(int(preproc.maxlen), 48)
        rows = [rng.integers(1, preproc.vocab_size, size=int(n)).astype(np.int32)
                for n in np.linspace(max(length // 4, 3), length, SAMPLE_ROWS).astype(int)]
    width = max(max(len(r) for r in rows), 8)
    ids = np.full((len(rows), width), pad, np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    return {"input_ids": ids}


def _write_jax(staging: Path, serving: Any, params: Any, outputs: tuple[str, ...]) -> dict[str, Any]:
    """The 'jax' format: jax.export's serialized StableHLO (batch and length symbolic; cpu, cuda, tpu)
    and the params as numbered arrays in one .npz."""
    from jax import export as jax_export

    leaves, treedef = jax.tree.flatten(jax.device_get(params))
    batch, length = jax_export.symbolic_shape("batch, length")

    def flat(leaf_list: list[Any], input_ids: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(serving(jax.tree.unflatten(treedef, leaf_list), input_ids))

    try:
        exported = jax_export.export(jax.jit(flat), platforms=PLATFORMS)(
            [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves],
            jax.ShapeDtypeStruct((batch, length), np.int32))
    except Exception as err:  # shape polymorphism errors name the op that cannot take a symbolic length
        detail = str(err).strip().splitlines()[0][:200]
        raise FlaxtrainError(f"this model cannot be exported with a symbolic batch and length ({detail})") from None
    (staging / "model.jax").write_bytes(exported.serialize())
    np.savez(staging / "params.npz", **{f"p{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    return {"files": {"model": "model.jax", "params": "params.npz"}, "platforms": list(PLATFORMS),
            "inputs": [{"name": "input_ids", "dtype": "int32", "shape": ["batch", "length"]}],
            "outputs": list(outputs)}
