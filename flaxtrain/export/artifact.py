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
import functools
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

FORMATS = ("jax", "onnx", "saved_model", "tflite")
FILE_SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}  # one-file formats (their sidecars sit in the same folder)
PLATFORMS = ("cpu", "cuda", "tpu")
TOLERANCE = 1e-4  # float32 max |diff| of every output
QUANTIZED_TOLERANCE = 0.1  # int8 weights (dynamic range): max |diff| of probabilities or logits,
QUANTIZED_AGREEMENT = 0.95  # and the share of sample rows whose label is JAX's
SAMPLE_ROWS = 8
ID_DTYPES = ("int32", "int64")
DIMS = {"input_ids": ("batch", "length"), "word_starts": ("batch", "words")}  # symbolic input dimensions
PAD_VALUES = {"word_starts": -1, "token_type_ids": 0, "attention_mask": 0}  # input_ids: the preprocessor's pad id
CONSTRAINTS = {"words": "words >= 2"}  # a CRF's Viterbi pass steps over word pairs: pad word_starts with -1
SIDECARS = (runtime.MANIFEST, "parity.json", "sample.npz", "serve.py", "tokenizer.json")
EXTRA = "pip install 'flaxtrain[export]'"


def export(predictor: Any, path: str | os.PathLike, format: str = "jax", *, texts: list[str] | None = None,
           labels: list[Any] | None = None, quantize: bool = False, tolerance: float | None = None,
           ids_dtype: str = "int32") -> Path:
    """Writes `predictor`'s model to `path` in `format`, checked in the format's own runtime first.

    Args:
      predictor: a flaxtrain predictor (`get_predictor(model, preproc)` or `load_predictor(folder)`).
      path: the export folder (replaced when it holds an earlier export; refused when it holds anything
        else); for 'onnx' also a file `NAME.onnx`, whose export.json, parity.json, sample and serve.py
        go into the same folder.
      format: 'jax' (jax.export StableHLO for cpu, cuda and tpu at once; symbolic batch and length),
        'onnx' (jax2onnx, run by onnxruntime; symbolic batch and length; `pip install 'flaxtrain[export]'`),
        'saved_model' (a TF SavedModel through jax2tf, StableHLO for cpu, cuda and tpu: `serve_ids` takes
        the task's int32 inputs by name, batch and length of any size; for classifiers and regressors whose
        tokenizer tensorflow-text can run, `serving_default` takes raw strings `texts` and returns the
        outputs and class `labels`, else it is `serve_ids`) or 'tflite' (that SavedModel through TF's
        TFLite converter, rows padded to maxlen; `path` a folder or a NAME.tflite file).
      texts: the parity sample (default: token-id rows of odd lengths drawn from the vocabulary).
      labels: the texts' labels (classifiers): parity.json then also holds the accuracy of JAX and of the
        artifact on them (how much int8 weights cost).
      quantize: int8 weights, float activations (TFLite's dynamic-range quantization); export.json gives the
        size before and after.
      tolerance: the largest max |diff| of any output that passes (default 1e-4; with quantize 0.1, and
        a classifier's label must be JAX's on 95% of the sample rows).
      ids_dtype: the integer type of the artifact's token-id inputs: 'int32' or 'int64' (what ONNX and
        TFLite serving stacks built around PyTorch exports feed); 'onnx', 'saved_model' and 'tflite' take
        it and cast to int32 as their first op, 'jax' keeps JAX's int32.

    Returns the export folder, or the .onnx / .tflite file when `path` named one; raises a one-line
    FlaxtrainError when the task or format cannot be exported, or when the runtime's outputs differ from
    JAX's by more than `tolerance`.
    """
    if format not in FORMATS:
        raise FlaxtrainError(f"unknown export format {format!r}: use one of {', '.join(map(repr, FORMATS))}")
    if quantize and format != "tflite":
        raise FlaxtrainError(f"quantize=True applies to format='tflite', not {format!r}: drop quantize")
    if labels is not None and (texts is None or len(labels) != len(texts)):
        raise FlaxtrainError(f"labels= needs texts= of the same length ({len(labels)} labels, "
                             f"{0 if texts is None else len(texts)} texts): pass both")
    if ids_dtype not in ID_DTYPES:
        raise FlaxtrainError(f"ids_dtype must be 'int32' or 'int64', not {ids_dtype!r}")
    if ids_dtype != "int32" and format == "jax":
        raise FlaxtrainError("format='jax' takes int32 token ids (JAX's integer type without x64): drop ids_dtype, "
                             "or export format='onnx', 'saved_model' or 'tflite' for int64 inputs")
    tolerance = (QUANTIZED_TOLERANCE if quantize else TOLERANCE) if tolerance is None else tolerance
    folder, filename = _placement(Path(path), format)
    task = predictor.task
    if format not in task.export_formats:
        raise FlaxtrainError(f"the {format} format cannot hold a {task.name} model (its decoding loop): use format="
                             f"{' or '.join(map(repr, task.export_formats))}")
    serving, outputs = task.export_outputs(predictor.model)  # a one-line error where the task has none
    writer = {"jax": _write_jax, "onnx": _write_onnx, "saved_model": _write_saved_model,
              "tflite": functools.partial(_write_tflite, quantize=quantize)}[format]
    if format in ("onnx", "tflite") and hasattr(task, "export_steps"):  # a decoding loop: the graphs hold one step
        writer = functools.partial(_write_onnx_generation if format == "onnx" else
                                   functools.partial(_write_tflite_generation, quantize=quantize),
                                   steps=task.export_steps(predictor.model, format),
                                   source_pad_id=int(predictor.model.config.pad_id))
    _require(format)
    sample = task.export_sample(predictor, texts)
    label_ids = _label_ids(predictor, labels)
    inputs = [{"name": name, "dtype": ids_dtype, "shape": list(DIMS.get(name, DIMS["input_ids"]))}
              for name in task.export_inputs]
    if format == "tflite":  # TFLite's converter takes a symbolic batch only: rows are padded to the model's maxlen
        width = int(getattr(predictor.preproc, "maxlen", 0) or max(v.shape[1] for v in sample.values()))
        for spec in inputs:
            spec["shape"][1] = width
            spec["pad"] = PAD_VALUES.get(spec["name"], int(getattr(predictor.preproc, "pad_id", 0)))
        sample = {spec["name"]: runtime.pad_to(sample[spec["name"]], width, spec["pad"]) for spec in inputs}
    computed = jax.jit(serving)(predictor.model.params, *(sample[name] for name in task.export_inputs))
    expected = {name: np.asarray(value) for name, value in zip(outputs, computed)}
    text = _text_signature(predictor, serving, outputs, texts) if format == "saved_model" else None
    if text and "settings" in text:
        writer = functools.partial(_write_saved_model, text=text)
        sample["texts"] = np.asarray(text["texts"], np.str_)
        expected.update({f"texts/{k}": v for k, v in text["expected"].items()})
    with _staged(folder, filename) as staging:
        spec = writer(staging, serving, predictor.model.params, inputs, outputs, filename)
        if text and "missing" in text:
            spec["text_signature_missing"] = text["missing"]
        spec.update(format=format, task=predictor.task.name, flaxtrain_version=__version__,
                    class_names=getattr(predictor.preproc, "class_names", None),
                    preprocessor=predictor.preproc.save(staging), tolerance=tolerance,
                    min_label_agreement=QUANTIZED_AGREEMENT if quantize else None)
        (staging / runtime.MANIFEST).write_text(json.dumps(spec, indent=2))
        np.savez(staging / "sample.npz", **sample, **{f"expected/{k}": v for k, v in expected.items()},
                 **({} if label_ids is None else {"labels": label_ids}))
        shutil.copy(Path(runtime.__file__), staging / "serve.py")
        report = check(staging)
        if not report["passed"]:
            agreement = report["outputs"].get("probabilities", {}).get("label_agreement")
            labels_note = "" if agreement is None else f", labels agree on {agreement:.0%} of the rows"
            raise FlaxtrainError(f"the {format} export differs from JAX by {report['max_abs_diff']:.2e} (tolerance "
                                 f"{tolerance:.0e}{labels_note}): nothing was written to {path}")
    return folder / filename if filename else folder


def _placement(target: Path, format: str) -> tuple[Path, str | None]:
    """(the export folder, the artifact's file name when `target` names a file of a one-file format)."""
    suffix = FILE_SUFFIXES.get(format)
    if suffix and target.suffix == suffix:
        if target.exists() and not target.is_file():
            raise FlaxtrainError(f"{target} exists and is not a {format} file: pass a new path or remove it first")
        folder = target.parent
        if not (folder / runtime.MANIFEST).is_file():  # a folder of other things: never overwrite them
            step = f"{target.stem}.step{suffix}"  # a seq2seq export's decoder step
            taken = [name for name in (*SIDECARS, target.name, step) if (folder / name).exists()]
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


def _label_ids(predictor: Any, labels: list[Any] | None) -> np.ndarray | None:
    """The class index of each label (for the accuracy in parity.json), or None."""
    if labels is None:
        return None
    names = list(getattr(predictor.preproc, "class_names", None) or [])
    unknown = [label for label in labels if label not in names]
    if not names or unknown:
        raise FlaxtrainError(f"labels= must be class names of this classifier ({names or 'it has none'}); got "
                             f"{unknown[:3]!r}: pass labels from its classes")
    return np.asarray([names.index(label) for label in labels], np.int32)


DEFAULT_TEXTS = ("A triumph.", "Dull, and far too long!", "The cast is charming; the plot isn't.",
                 "Café society at its most tedious", "an ending (at last) that works", "WONDERFUL")


def _text_signature(predictor: Any, serving: Any, outputs: tuple[str, ...], texts: list[str] | None
                    ) -> dict[str, Any] | None:
    """For a SavedModel of a model that reads one row of token ids per text: the tokenizer as tensorflow-text
    settings, the sample texts and what JAX computes of them ({'missing': why} where the tokenizer cannot
    run in the graph); None for other tasks."""
    from flaxtrain.export import text_graph

    preproc = predictor.preproc
    encode = getattr(preproc, "encode", None) or getattr(preproc, "encode_sources", None)
    if predictor.task.export_inputs != ("input_ids",) or encode is None or not hasattr(preproc, "tokenizer"):
        return None
    try:
        settings = text_graph.describe(preproc.tokenizer, int(preproc.maxlen),
                                       bool(getattr(preproc, "add_special_tokens", True)))
    except text_graph.Unsupported as why:
        return {"missing": f"serving_default takes input_ids: {why}"}
    generates = "sequences" in outputs
    if generates and not settings.get("detokenize"):
        return {"missing": "serving_default takes input_ids: generated ids become text in the graph only for "
                           "sentencepiece-style (Metaspace) tokenizers"}
    if importlib.util.find_spec("tensorflow_text") is None:
        return {"missing": "serving_default takes input_ids: tensorflow-text is not installed (pip install --no-deps "
                           "tensorflow-text, the version of your TensorFlow)"}
    texts = [str(t) for t in (texts or DEFAULT_TEXTS)]
    ids = pad_rows(encode(texts), int(preproc.pad_id), text_graph.MIN_WIDTH)
    in_graph = text_graph.string_tokenizer(settings, int(preproc.pad_id))(np.asarray(texts, object)).numpy()
    if in_graph.shape != ids.shape or not np.array_equal(in_graph, ids):
        differ = next((i for i in range(len(texts)) if i >= len(in_graph) or in_graph.shape != ids.shape
                       or not np.array_equal(in_graph[i], ids[i])), 0)
        return {"missing": f"serving_default takes input_ids: tensorflow-text's ids differ from the tokenizer's on "
                           f"sample text {differ} ({texts[differ][:40]!r})"}
    got = {name: np.asarray(v) for name, v in zip(outputs, jax.jit(serving)(predictor.model.params, ids))}
    names = [str(c) for c in (getattr(preproc, "class_names", None) or [])]
    if "probabilities" in got and names:
        got["labels"] = np.asarray([names[i] for i in got["probabilities"].argmax(-1)], np.str_)
    if generates:
        got["generated"] = np.asarray(preproc.decode(got["sequences"]), np.str_)
    return {"settings": settings, "pad_id": int(preproc.pad_id), "class_names": names, "texts": texts, "expected": got}


def _require(format: str) -> None:
    """A one-line error naming the extra when the format's converter or runtime is not installed."""
    needed = {"jax": (), "onnx": ("jax2onnx", "onnxruntime"), "saved_model": ("tensorflow",),
              "tflite": ("tensorflow",)}[format]
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
        labels = stored["labels"] if "labels" in stored.files else None
        inputs = {k: stored[k] for k in stored.files if not k.startswith("expected/") and k != "labels"}
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
    report = compare(expected, outputs, spec["tolerance"], spec.get("min_label_agreement"))
    if labels is not None and "probabilities" in outputs:
        report["accuracy"] = {"jax": float(np.mean(expected["probabilities"].argmax(-1) == labels)),
                              spec["format"]: float(np.mean(np.asarray(outputs["probabilities"]).argmax(-1) == labels))}
    report.update(format=spec["format"], rows=int(len(next(iter(inputs.values())))), runtime=runtime_info["versions"],
                  runtime_imported=runtime_info["modules"], jax=jax.__version__)
    (folder / "parity.json").write_text(json.dumps(report, indent=2))
    return report


def compare(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], tolerance: float,
            min_agreement: float | None = None) -> dict[str, Any]:
    """Max |diff| per output and, for probabilities, the share of rows whose argmax agrees (at least
    `min_agreement` where given)."""
    if set(expected) != set(got):
        return {"passed": False, "max_abs_diff": float("inf"), "tolerance": tolerance,
                "outputs": {}, "missing": sorted(set(expected) ^ set(got))}
    per = {}
    for name, want in expected.items():
        if want.dtype.kind in "US":  # class names: equal or not
            per[name] = {"max_abs_diff": 0.0 if np.array_equal(np.asarray(got[name]).astype(str), want) else float("inf")}
            continue
        have = np.asarray(got[name], want.dtype)
        entry = {"max_abs_diff": float(np.max(np.abs(have - want))) if want.size and have.shape == want.shape
                 else float("inf")}
        if name == "probabilities" and have.shape == want.shape:
            entry["label_agreement"] = float(np.mean(have.argmax(-1) == want.argmax(-1)))
        per[name] = entry
    worst = max(e["max_abs_diff"] for e in per.values())
    agreed = min_agreement is None or per.get("probabilities", {}).get("label_agreement", 1.0) >= min_agreement
    return {"passed": bool(worst <= tolerance and agreed), "max_abs_diff": worst, "tolerance": tolerance,
            "min_label_agreement": min_agreement, "outputs": per}


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


def _onnx_graph(fn: Any, inputs: list[tuple[str, tuple[Any, ...], Any]], outputs: list[str]) -> Any:
    """jax2onnx's graph of fn(*arrays) -> tuple of arrays; `inputs` are (name, shape with symbolic names,
    dtype); a one-line FlaxtrainError naming the primitive it cannot map."""
    import io
    import logging
    import types

    quiet = logging.getLogger("jax2onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its optional plugins (dm_pix, equinox) log import failures we do not use
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its converters print debug lines
            from jax2onnx import to_onnx

            # jax2onnx's rewrites of flax layers broadcast by rank and mix dtypes: the standard promotion
            # rules apply while it traces, whatever the caller has configured.
            with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
                return to_onnx(fn, inputs=[types.SimpleNamespace(shape=tuple(shape), dtype=np.dtype(dtype))
                                           for _, shape, dtype in inputs],
                               input_names=[name for name, _, _ in inputs], output_names=outputs, model_name="flaxtrain")
    except Exception as err:  # the converter names the primitive it cannot map
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FlaxtrainError(f"jax2onnx could not convert this model ({detail}): export format='jax' instead") from None
    finally:
        quiet.setLevel(level)


def _write_onnx(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
                filename: str | None) -> dict[str, Any]:
    """The 'onnx' format: jax2onnx's graph of the serving function (params as initializers), int32 inputs
    named as the task names them ('input_ids' [batch, length], ...) with symbolic dimensions, outputs
    likewise."""
    host = jax.device_get(params)
    model = _onnx_graph(lambda *arrays: tuple(serving(host, *arrays)),
                        [(spec["name"], spec["shape"], np.int32) for spec in inputs], list(outputs))
    if any(spec["dtype"] == "int64" for spec in inputs):
        model = _onnx_int64_inputs(model, [spec["name"] for spec in inputs if spec["dtype"] == "int64"])
    name = filename or "model.onnx"
    (staging / name).write_bytes(model.SerializeToString())
    return {"files": {"model": name}, "opset": int(model.opset_import[0].version), "inputs": inputs,
            "outputs": list(outputs)}


def _step_graphs(params: Any, steps: Any) -> dict[str, Any]:
    """eval/decode.py's prefill and step with the cache as flat arrays, for the formats that hold one decoder
    step: {'prefill': f(params, input_ids) -> (scores, *cache), 'step': f(params, tokens, cur_len,
    sequences, attention_mask, *cache) -> (scores, *the leaves it changes), 'cache': [(name, shape with
    'batch' / 'length' for the dimensions that follow the batch / source length, dtype)], 'changed':
    indices of the leaves a step returns, 'updated': their output names, 'g': the settings}."""
    prefill, step, g = steps
    host = jax.device_get(params)

    def cache_shapes(batch: int, length: int) -> Any:
        return jax.eval_shape(lambda ids: prefill(host, ids)[1], jax.ShapeDtypeStruct((batch, length), np.int32))

    small, treedef = jax.tree.flatten(cache_shapes(2, 5))
    large = jax.tree.leaves(cache_shapes(3, 11))  # a dimension that changes with the batch or the source length

    def symbolic(a: Any, b: Any) -> tuple[Any, ...]:
        return tuple({(2, 3): "batch", (5, 11): "length"}.get((x, y), x) for x, y in zip(a.shape, b.shape))

    names = [f"cache.{i:03d}" for i in range(len(small))]

    def prefill_flat(p: Any, input_ids: jax.Array) -> tuple[jax.Array, ...]:
        scores, cache = prefill(p, input_ids)
        return (scores, *jax.tree.leaves(cache))

    def step_all(p: Any, tokens: jax.Array, cur_len: jax.Array, sequences: jax.Array, attention_mask: jax.Array,
                 *leaves: jax.Array) -> tuple[jax.Array, ...]:
        scores, cache = step(p, tokens, cur_len, sequences, attention_mask, jax.tree.unflatten(treedef, leaves))
        return (scores, *jax.tree.leaves(cache))

    # A step leaves some of the cache as it was (the encoder's keys and values): the step graph returns
    # only the leaves it changes, and serve.py keeps the others from the first graph.
    probe = jax.make_jaxpr(functools.partial(step_all, host))(
        jax.ShapeDtypeStruct((2, 1), np.int32), jax.ShapeDtypeStruct((), np.int32),
        jax.ShapeDtypeStruct((2, g.max_length), np.int32), jax.ShapeDtypeStruct((2, 5), np.int32), *small).jaxpr
    kept = set(probe.invars)
    changed = [i for i, v in enumerate(probe.outvars[1:]) if hasattr(v, "val") or v not in kept]  # .val: a literal

    def step_flat(p: Any, *arrays: jax.Array) -> tuple[jax.Array, ...]:
        scores, *leaves = step_all(p, *arrays)
        return (scores, *(leaves[i] for i in changed))

    return {"prefill": prefill_flat, "step": step_flat, "g": g, "changed": changed,
            "cache": [(name, symbolic(a, b), a.dtype) for name, a, b in zip(names, small, large)],
            "updated": [f"next_{name}" for name in names]}


def _generation_spec(graphs: dict[str, Any], source_pad_id: int) -> dict[str, Any]:
    """export.json's 'generation' section: what serve.py's greedy loop needs."""
    g = graphs["g"]
    return {"decoding": "greedy", "max_length": g.max_length, "decoder_start_id": g.decoder_start_id,
            "eos_id": g.eos_id, "pad_id": g.pad_id, "source_pad_id": int(source_pad_id),
            "cache": [name for name, _, _ in graphs["cache"]], "step_updates": graphs["changed"]}


def _step_inputs(graphs: dict[str, Any], length: Any) -> list[tuple[str, tuple[Any, ...], Any]]:
    """(name, shape, dtype) of the step graph's inputs; `length` stands for the source length."""
    fix = lambda shape: tuple(length if d == "length" else d for d in shape)  # noqa: E731
    return [("tokens", ("batch", 1), np.int32), ("cur_len", (), np.int32),
            ("sequences", ("batch", graphs["g"].max_length), np.int32), ("attention_mask", ("batch", length), np.int32),
            *((name, fix(shape), dtype) for name, shape, dtype in graphs["cache"])]


def _write_onnx_generation(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]],
                           outputs: tuple[str, ...], filename: str | None, *, steps: Any, source_pad_id: int
                           ) -> dict[str, Any]:
    """The 'onnx' format of a seq2seq model: greedy decoding as two graphs (eval/decode.py's step_functions),
    NAME.onnx (input_ids [batch, length] -> the first token's `scores` [batch, vocab] and the decoder's
    key/value cache `next_cache.NNN`) and NAME.step.onnx (tokens [batch, 1], cur_len [], sequences [batch,
    max_length], attention_mask [batch, length] and the cache `cache.NNN` -> the next token's scores and the
    cache leaves it changes, `next_cache.NNN`), which serve.py loops over: argmax, pad ids once a row has
    ended, stop at max_length."""
    graphs = _step_graphs(params, steps)
    host = jax.device_get(params)
    updated = graphs["updated"]
    first = _onnx_graph(lambda ids: graphs["prefill"](host, ids), [("input_ids", ("batch", "length"), np.int32)],
                        ["scores", *updated])
    if inputs[0]["dtype"] == "int64":
        first = _onnx_int64_inputs(first, ["input_ids"])
    then = _onnx_graph(lambda *arrays: graphs["step"](host, *arrays), _step_inputs(graphs, "length"),
                       ["scores", *(updated[i] for i in graphs["changed"])])
    name = filename or "model.onnx"
    step_name = f"{Path(name).stem}.step.onnx"
    (staging / step_name).write_bytes(then.SerializeToString())
    (staging / name).write_bytes(first.SerializeToString())
    return {"files": {"model": name, "step": step_name}, "opset": int(first.opset_import[0].version),
            "inputs": inputs, "outputs": list(outputs), "generation": _generation_spec(graphs, source_pad_id)}


def _onnx_int64_inputs(model: Any, names: list[str]) -> Any:
    """The graph with its inputs `names` taking int64: each feeds a Cast to int32 whose output every node
    (subgraphs of If/Loop included) reads in the input's place."""
    import onnx

    renamed = {name: f"{name}__int32" for name in names}

    def rename(graph: Any) -> None:
        for node in graph.node:
            node.input[:] = [renamed.get(x, x) for x in node.input]
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    rename(sub)

    graph = model.graph
    rename(graph)
    for given in graph.input:
        if given.name in renamed:
            given.type.tensor_type.elem_type = onnx.TensorProto.INT64
    casts = [onnx.helper.make_node("Cast", [name], [renamed[name]], to=onnx.TensorProto.INT32, name=f"{name}_to_int32")
             for name in names]
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def _polymorphic(inputs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """jax2tf's polymorphic shapes of the inputs ('(batch, length)') and the constraints on their dimensions."""
    names = sorted({dim for spec in inputs for dim in spec["shape"] if isinstance(dim, str)})
    return [f"({', '.join(map(str, spec['shape']))})" for spec in inputs], [CONSTRAINTS[n] for n in names if n in CONSTRAINTS]


def _write_saved_model(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]],
                       outputs: tuple[str, ...], filename: str | None, folder: str = "saved_model",
                       text: dict[str, Any] | None = None) -> dict[str, Any]:
    """The 'saved_model' format: jax2tf's graph of the serving function (StableHLO in an XlaCallModule op,
    lowered for cpu, cuda and tpu; batch and length symbolic), the params as TF variables, a `serve_ids`
    signature from the named int32 inputs to the named outputs and, with `text`, a `serving_default` one
    from a string tensor `texts` [batch] (tokenized in the graph) to the outputs and the class `labels`;
    without it `serving_default` is `serve_ids`."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    leaves, treedef = jax.tree.flatten(jax.device_get(params))

    def flat(leaf_list: list[Any], *arrays: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(serving(jax.tree.unflatten(treedef, leaf_list), *arrays))

    shapes, constraints = _polymorphic(inputs)
    try:
        converted = jax2tf.convert(flat, with_gradient=False, polymorphic_shapes=[None, *shapes],
                                   polymorphic_constraints=constraints, native_serialization_platforms=PLATFORMS)
        module = tf.Module()
        module.params = [tf.Variable(np.asarray(x), trainable=False, name=f"p{i:05d}") for i, x in enumerate(leaves)]
        signature = [tf.TensorSpec([d if isinstance(d, int) else None for d in spec["shape"]], tf.as_dtype(spec["dtype"]),
                                   name=spec["name"]) for spec in inputs]
        module.serve = tf.function(
            lambda *arrays: dict(zip(outputs, converted(module.params, *(tf.cast(a, tf.int32) if a.dtype == tf.int64
                                                                         else a for a in arrays)))),
            input_signature=signature, autograph=False)
        signatures = {"serving_default": module.serve, "serve_ids": module.serve}
        if text is not None:
            signatures["serving_default"] = module.serve_texts = _texts_function(module, converted, outputs, text)
        tf.saved_model.save(module, str(staging / folder), signatures=signatures)
    except FlaxtrainError:
        raise
    except Exception as err:  # shape polymorphism errors name the op that cannot take a symbolic length
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FlaxtrainError(f"this model could not be written as a SavedModel ({detail}): export format='jax' "
                             "instead") from None
    spec = {"files": {"model": folder}, "platforms": list(PLATFORMS), "signature": "serve_ids",
            "inputs": inputs, "outputs": list(outputs), "tensorflow_version": tf.__version__}
    if text is not None:
        spec["text_signature"] = {"name": "serving_default", "input": "texts", "outputs": sorted(text["expected"]),
                                  "needs": "tensorflow_text"}
    return spec


def _texts_function(module: Any, converted: Any, outputs: tuple[str, ...], text: dict[str, Any]) -> Any:
    """tf.function: texts (tf.string [batch]) -> the outputs (and 'labels', the class names, or 'generated',
    the generated text) of the model."""
    import tensorflow as tf

    from flaxtrain.export import text_graph

    tokenize = text_graph.string_tokenizer(text["settings"], text["pad_id"])
    module.vocabulary = tokenize.table  # tracked, so the SavedModel keeps the lookup table
    names = tf.constant(text["class_names"] or [""])

    def serve_texts(texts: Any) -> dict[str, Any]:
        results = dict(zip(outputs, converted(module.params, tokenize(texts))))
        if "probabilities" in results and text["class_names"]:
            results["labels"] = tf.gather(names, tf.argmax(results["probabilities"], axis=-1))
        if "sequences" in results:  # a generating model: its text too
            results["generated"] = tokenize.detokenize(results["sequences"])
        return results

    return tf.function(serve_texts, input_signature=[tf.TensorSpec([None], tf.string, name="texts")], autograph=False)


def _write_tflite(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
                  filename: str | None, *, quantize: bool) -> dict[str, Any]:
    """The 'tflite' format: the SavedModel above converted by TF's TFLite converter (its StableHLO
    lowered to TFLite builtins), rows padded to a fixed width and the batch symbolic; where the converter
    cannot lower an op with a symbolic batch (a gather over dynamic rows), one row at a time (the loader
    runs a batch row by row). `quantize` stores the weights as int8 (dynamic range)."""
    import tensorflow as tf

    def convert(specs: list[dict[str, Any]], optimize: bool) -> bytes:
        try:
            _write_saved_model(staging, serving, params, specs, outputs, None, folder=".saved_model")
            converter = tf.lite.TFLiteConverter.from_saved_model(str(staging / ".saved_model"), ["serving_default"])
            if optimize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            return converter.convert()
        finally:
            shutil.rmtree(staging / ".saved_model", ignore_errors=True)

    try:
        try:
            float_model = convert(inputs, False)
        except Exception:  # noqa: BLE001 - retried with one row, whose error is the one reported
            inputs = [{**spec, "shape": [1, *spec["shape"][1:]]} for spec in inputs]
            float_model = convert(inputs, False)
        model = convert(inputs, True) if quantize else float_model
    except FlaxtrainError:
        raise
    except Exception as err:  # the converter names the op it has no TFLite kernel for
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FlaxtrainError(f"the TFLite converter could not convert this model ({detail}): export "
                             "format='saved_model' instead") from None
    name = filename or "model.tflite"
    (staging / name).write_bytes(model)
    return {"files": {"model": name}, "signature": "serving_default", "inputs": inputs, "outputs": list(outputs),
            "quantized": "int8 weights (dynamic range)" if quantize else None,
            "bytes": len(model), "float32_bytes": len(float_model), "tensorflow_version": tf.__version__}


def _write_tflite_generation(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]],
                             outputs: tuple[str, ...], filename: str | None, *, steps: Any, source_pad_id: int,
                             quantize: bool) -> dict[str, Any]:
    """The 'tflite' format of a seq2seq model: the two graphs of the ONNX export (the encoder with the first
    step, one cached decoder step) as NAME.tflite and NAME.step.tflite, sources padded to the model's maxlen;
    serve.py loops greedily over them. Where the converter cannot take a symbolic batch, one row at a time."""
    import tensorflow as tf

    graphs = _step_graphs(params, steps)
    width = inputs[0]["shape"][1]
    updated = graphs["updated"]
    step_inputs = [{"name": name, "dtype": np.dtype(dtype).name, "shape": list(shape)}
                   for name, shape, dtype in _step_inputs(graphs, width)]
    first_outputs, step_outputs = ("scores", *updated), ("scores", *(updated[i] for i in graphs["changed"]))

    def convert(fn: Any, specs: list[dict[str, Any]], names: tuple[str, ...], optimize: bool) -> bytes:
        try:
            _write_saved_model(staging, fn, params, specs, names, None, folder=".saved_model")
            converter = tf.lite.TFLiteConverter.from_saved_model(str(staging / ".saved_model"), ["serving_default"])
            if optimize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            return converter.convert()
        finally:
            shutil.rmtree(staging / ".saved_model", ignore_errors=True)

    def both(first_specs: list[dict[str, Any]], then_specs: list[dict[str, Any]]) -> tuple[bytes, bytes]:
        return (convert(graphs["prefill"], first_specs, first_outputs, quantize),
                convert(graphs["step"], then_specs, step_outputs, quantize))

    try:
        try:
            first, then = both(inputs, step_inputs)
        except Exception:  # noqa: BLE001 - retried with one row, whose error is the one reported
            one = lambda specs: [{**spec, "shape": [1 if d == "batch" else d for d in spec["shape"]]}  # noqa: E731
                                 for spec in specs]
            inputs, step_inputs = one(inputs), one(step_inputs)
            first, then = both(inputs, step_inputs)
    except FlaxtrainError:
        raise
    except Exception as err:  # the converter names the op it has no TFLite kernel for
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FlaxtrainError(f"the TFLite converter could not convert this model's decoder step ({detail}): export "
                             "format='onnx' or 'saved_model' instead") from None
    name = filename or "model.tflite"
    step_name = f"{Path(name).stem}.step.tflite"
    (staging / step_name).write_bytes(then)
    (staging / name).write_bytes(first)
    return {"files": {"model": name, "step": step_name}, "signature": "serving_default", "inputs": inputs,
            "step_inputs": step_inputs, "outputs": list(outputs), "generation": _generation_spec(graphs, source_pad_id),
            "quantized": "int8 weights (dynamic range)" if quantize else None, "bytes": len(first) + len(then),
            "tensorflow_version": tf.__version__}
