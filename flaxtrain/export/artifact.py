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

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxtrain._version import __version__
from flaxtrain.errors import FlaxtrainError
from flaxtrain.export import runtime
from flaxtrain.files import atomic_directory

FORMATS = ("jax", "onnx")
PLANNED = ("saved_model", "tflite")
FILE_SUFFIXES = {"onnx": ".onnx"}  # formats whose artifact is one file (its sidecars sit in the same folder)
PLATFORMS = ("cpu", "cuda", "tpu")
TOLERANCE = 1e-4  # float32 max |diff| of every output
SAMPLE_ROWS = 8
DIMS = {"input_ids": ("batch", "length"), "word_starts": ("batch", "words")}  # symbolic input dimensions
CONSTRAINTS = {"words": "words >= 2"}  # a CRF's Viterbi pass steps over word pairs: pad word_starts with -1
SIDECARS = (runtime.MANIFEST, "parity.json", "sample.npz", "serve.py", "tokenizer.json")
EXTRA = "pip install 'flaxtrain[export]'"


def export(predictor: Any, path: str | os.PathLike, format: str = "jax", *, texts: list[str] | None = None,
           quantize: bool = False, tolerance: float = TOLERANCE) -> Path:
    """Writes `predictor`'s model to `path` in `format`, checked in the format's own runtime first.

    Args:
      predictor: a flaxtrain predictor (`get_predictor(model, preproc)` or `load_predictor(folder)`).
      path: the export folder (replaced when it holds an earlier export; refused when it holds anything
        else); for 'onnx' also a file `NAME.onnx`, whose export.json, parity.json, sample and serve.py
        go into the same folder.
      format: 'jax' (jax.export StableHLO for cpu, cuda and tpu at once; symbolic batch and length) or
        'onnx' (jax2onnx, run by onnxruntime; symbolic batch and length; `pip install 'flaxtrain[export]'`).
      texts: the parity sample (default: token-id rows of odd lengths drawn from the vocabulary).
      quantize: int8 weights (TFLite only).
      tolerance: the largest max |diff| of any output that passes.

    Returns the export folder, or the .onnx file when `path` named one; raises a one-line
    FlaxtrainError when the task or format cannot be exported, or when the runtime's outputs differ from
    JAX's by more than `tolerance`.
    """
    if format not in FORMATS:
        planned = f" ('{format}' is planned)" if format in PLANNED else ""
        raise FlaxtrainError(f"unknown export format {format!r}{planned}: use one of {', '.join(map(repr, FORMATS))}")
    if quantize:
        raise FlaxtrainError(f"quantize=True applies to format='tflite', not {format!r}: drop quantize")
    folder, filename = _placement(Path(path), format)
    task = predictor.task
    serving, outputs = task.export_outputs(predictor.model)  # a one-line error where the task has none
    writer = {"jax": _write_jax, "onnx": _write_onnx}[format]
    _require(format)
    sample = task.export_sample(predictor, texts)
    inputs = [{"name": name, "dtype": "int32", "shape": list(DIMS.get(name, DIMS["input_ids"]))}
              for name in task.export_inputs]
    computed = jax.jit(serving)(predictor.model.params, *(sample[name] for name in task.export_inputs))
    expected = {name: np.asarray(value) for name, value in zip(outputs, computed)}
    with _staged(folder, filename) as staging:
        spec = writer(staging, serving, predictor.model.params, inputs, outputs, filename)
        spec.update(format=format, task=predictor.task.name, flaxtrain_version=__version__,
                    class_names=getattr(predictor.preproc, "class_names", None),
                    preprocessor=predictor.preproc.save(staging), tolerance=tolerance)
        (staging / runtime.MANIFEST).write_text(json.dumps(spec, indent=2))
        np.savez(staging / "sample.npz", **sample, **{f"expected/{k}": v for k, v in expected.items()})
        shutil.copy(Path(runtime.__file__), staging / "serve.py")
        report = check(staging)
        if not report["passed"]:
            raise FlaxtrainError(f"the {format} export differs from JAX by {report['max_abs_diff']:.2e} (tolerance "
                                 f"{tolerance:.0e}): nothing was written to {path}")
    return folder / filename if filename else folder


def _placement(target: Path, format: str) -> tuple[Path, str | None]:
    """(the export folder, the artifact's file name when `target` names a file of a one-file format)."""
    suffix = FILE_SUFFIXES.get(format)
    if suffix and target.suffix == suffix:
        if target.exists() and not target.is_file():
            raise FlaxtrainError(f"{target} exists and is not a {format} file: pass a new path or remove it first")
        folder = target.parent
        if not (folder / runtime.MANIFEST).is_file():  # a folder of other things: never overwrite them
            taken = [name for name in (*SIDECARS, target.name) if (folder / name).exists()]
            if taken:
                raise FlaxtrainError(f"{folder} already holds {', '.join(taken)} (not from a flaxtrain export): export "
                                     f"into a folder of its own, e.g. {folder / target.stem / target.name}")
        return folder, target.name
    if target.suffix in FILE_SUFFIXES.values():
        raise FlaxtrainError(f"{target.name} names a {target.suffix} file but format is {format!r}: pass "
                             f"format={next(k for k, v in FILE_SUFFIXES.items() if v == target.suffix)!r} or a folder")
    if target.exists() and not (target.is_dir() and (target / runtime.MANIFEST).is_file()):
        raise FlaxtrainError(f"{target} exists and is not a flaxtrain export: pass a new path or remove it first")
    return target, None


@contextlib.contextmanager
def _staged(folder: Path, filename: str | None) -> Iterator[Path]:
    """A staging folder that becomes `folder` (a folder export) or whose files move into `folder`,
    the artifact last (a one-file export); on an error nothing of it is left."""
    if filename is None:
        with atomic_directory(folder) as staging:
            yield staging
        return
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{filename}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        for item in sorted(staging.iterdir(), key=lambda p: p.name == filename):
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require(format: str) -> None:
    """A one-line error naming the extra when the format's converter or runtime is not installed."""
    needed = {"jax": (), "onnx": ("jax2onnx", "onnxruntime")}[format]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise FlaxtrainError(f"format={format!r} needs {' and '.join(missing)}: {EXTRA}")


def verify_export(path: str | os.PathLike) -> dict[str, Any]:
    """Runs the export at `path` again in its own runtime on its stored sample; rewrites and returns
    parity.json's report (raises a one-line FlaxtrainError when it no longer matches)."""
    folder = Path(path)
    if folder.suffix in FILE_SUFFIXES.values() and folder.is_file():
        folder = folder.parent
        named = json.loads((folder / runtime.MANIFEST).read_text()).get("files", {}).get("model") \
            if (folder / runtime.MANIFEST).is_file() else None
        if named != Path(path).name:
            raise FlaxtrainError(f"{path} has no export.json of its own beside it (the folder's describes {named}): "
                                 "export it again")
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
    report.update(format=spec["format"], rows=int(len(next(iter(inputs.values())))), runtime=runtime_info["versions"],
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
    if texts:
        rows = preproc.encode(list(texts))
    else:
        rng = np.random.default_rng(0)
        length = min(int(preproc.maxlen), 48)
        rows = [rng.integers(1, preproc.vocab_size, size=int(n)).astype(np.int32)
                for n in np.linspace(max(length // 4, 3), length, SAMPLE_ROWS).astype(int)]
    return {"input_ids": pad_rows(rows, int(getattr(preproc, "pad_id", 0)))}


def pad_rows(rows: list[Any], pad: int, min_width: int = 8) -> np.ndarray:
    """Int32 [len(rows), max(longest, min_width)]: each row followed by `pad`."""
    out = np.full((len(rows), max(max((len(r) for r in rows), default=0), min_width)), pad, np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _write_jax(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
               filename: str | None) -> dict[str, Any]:
    """The 'jax' format: jax.export's serialized StableHLO (batch and length symbolic; cpu, cuda, tpu)
    and the params as numbered arrays in one .npz."""
    from jax import export as jax_export

    leaves, treedef = jax.tree.flatten(jax.device_get(params))
    names = sorted({dim for spec in inputs for dim in spec["shape"]})
    constraints = [CONSTRAINTS[name] for name in names if name in CONSTRAINTS]
    dims = dict(zip(names, jax_export.symbolic_shape(", ".join(names), constraints=constraints)))

    def flat(leaf_list: list[Any], *arrays: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(serving(jax.tree.unflatten(treedef, leaf_list), *arrays))

    try:
        exported = jax_export.export(jax.jit(flat), platforms=PLATFORMS)(
            [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves],
            *(jax.ShapeDtypeStruct(tuple(dims[d] for d in spec["shape"]), np.int32) for spec in inputs))
    except Exception as err:  # shape polymorphism errors name the op that cannot take a symbolic length
        detail = str(err).strip().splitlines()[0][:200]
        raise FlaxtrainError(f"this model cannot be exported with a symbolic batch and length ({detail})") from None
    (staging / "model.jax").write_bytes(exported.serialize())
    np.savez(staging / "params.npz", **{f"p{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    return {"files": {"model": "model.jax", "params": "params.npz"}, "platforms": list(PLATFORMS),
            "inputs": inputs, "outputs": list(outputs)}


def _write_onnx(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
                filename: str | None) -> dict[str, Any]:
    """The 'onnx' format: jax2onnx's graph of the serving function (params as initializers), int32 inputs
    named as the task names them ('input_ids' [batch, length], ...) with symbolic dimensions, outputs
    likewise."""
    import io
    import logging
    import types

    quiet = logging.getLogger("jax2onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its optional plugins (dm_pix, equinox) log import failures we do not use
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its converters print debug lines
            from jax2onnx import to_onnx

            host = jax.device_get(params)
            # jax2onnx's rewrites of flax layers broadcast by rank and mix dtypes: the standard promotion
            # rules apply while it traces, whatever the caller has configured.
            with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
                model = to_onnx(lambda *arrays: tuple(serving(host, *arrays)),
                                inputs=[types.SimpleNamespace(shape=tuple(spec["shape"]), dtype=np.dtype(np.int32))
                                        for spec in inputs],
                                input_names=[spec["name"] for spec in inputs], output_names=list(outputs),
                                model_name="flaxtrain")
    except Exception as err:  # the converter names the primitive it cannot map
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FlaxtrainError(f"jax2onnx could not convert this model ({detail}): export format='jax' instead") from None
    finally:
        quiet.setLevel(level)
    name = filename or "model.onnx"
    (staging / name).write_bytes(model.SerializeToString())
    return {"files": {"model": name}, "opset": int(model.opset_import[0].version), "inputs": inputs,
            "outputs": list(outputs)}
