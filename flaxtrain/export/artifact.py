"""Export for serving: a predictor's model written in a serving format, proven equal to JAX before it is kept.

`export(predictor, path, format)` traces the task's serving function (token ids in, named outputs out;
the task says which), writes the artifact into a staging folder with `export.json` (inputs, outputs,
class names, preprocessing), a sample of inputs with the JAX outputs, and `serve.py` (the runtime loader,
flaxtrain/export/runtime.py). It then runs the artifact in a separate process in its own runtime on that
sample, writes `parity.json` (max |diff| per output, label agreement, runtime versions) and moves the
folder into place only when the outputs agree within the tolerance; otherwise nothing that looks
finished is left and the error says by how much it missed. `verify_export(path)` repeats the check.
Each format's writer is in formats.py.
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
from flaxtrain.export.formats import (
    write_jax,
    write_onnx,
    write_onnx_generation,
    write_saved_model,
    write_tflite,
    write_tflite_generation,
)
from flaxtrain.files import atomic_directory

FORMATS = ("jax", "onnx", "saved_model", "tflite")
FILE_SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}  # one-file formats (their sidecars sit in the same folder)
TOLERANCE = 1e-4  # float32 max |diff| of every output
QUANTIZED_TOLERANCE = 0.1  # int8 weights (dynamic range): max |diff| of probabilities or logits,
QUANTIZED_AGREEMENT = 0.95  # and the share of sample rows whose label is JAX's
SAMPLE_ROWS = 8
ID_DTYPES = ("int32", "int64")
DIMS = {"input_ids": ("batch", "length"), "word_starts": ("batch", "words")}  # symbolic input dimensions
PAD_VALUES = {"word_starts": -1, "token_type_ids": 0, "attention_mask": 0}  # input_ids: the preprocessor's pad id
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
        outputs and class `labels` (taggers: `words` and their `labels`; generating models: `generated`;
        word-piece QA models: `questions` and `contexts` in, `answers`, `starts`, `ends`, `scores` out),
        else it is `serve_ids`) or 'tflite' (that SavedModel through TF's
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
    writer = {"jax": write_jax, "onnx": write_onnx, "saved_model": write_saved_model,
              "tflite": functools.partial(write_tflite, quantize=quantize)}[format]
    if format in ("onnx", "tflite") and hasattr(task, "export_steps"):  # a decoding loop: the graphs hold one step
        writer = functools.partial(write_onnx_generation if format == "onnx" else
                                   functools.partial(write_tflite_generation, quantize=quantize),
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
        writer = functools.partial(write_saved_model, text=text)
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
    """For a SavedModel of a model that reads one row of token ids per text (or, a sequence tagger, the ids
    of the text's words and where each word starts): the tokenizer as tensorflow-text settings, the sample
    texts and what JAX computes of them ({'missing': why} where the tokenizer cannot run in the graph);
    None for other tasks."""
    from flaxtrain.export import text_graph

    preproc = predictor.preproc
    encode = getattr(preproc, "encode", None) or getattr(preproc, "encode_sources", None)
    words = predictor.task.export_inputs == ("input_ids", "word_starts")
    qa = getattr(preproc, "kind", None) == "qa"
    if (predictor.task.export_inputs != ("input_ids",) and not words and not qa) or (encode is None and not qa) \
            or not hasattr(preproc, "tokenizer"):
        return None
    try:
        settings = text_graph.describe(preproc.tokenizer, int(preproc.maxlen),
                                       bool(getattr(preproc, "add_special_tokens", True)))
    except text_graph.Unsupported as why:
        return {"missing": f"serving_default takes {' and '.join(predictor.task.export_inputs)}: {why}"}
    generates = "sequences" in outputs
    if generates and not settings.get("detokenize"):
        return {"missing": "serving_default takes input_ids: generated ids become text in the graph only for "
                           "sentencepiece-style (Metaspace) tokenizers"}
    if importlib.util.find_spec("tensorflow_text") is None:
        return {"missing": "serving_default takes input_ids: tensorflow-text is not installed (pip install --no-deps "
                           "tensorflow-text, the version of your TensorFlow)"}
    if qa:
        return _qa_text_signature(predictor, serving, outputs, texts, settings)
    texts = [str(t) for t in (texts or DEFAULT_TEXTS)]
    if words:
        return _tagger_text_signature(predictor, serving, outputs, texts, settings)
    ids = pad_rows(encode(texts), int(preproc.pad_id), text_graph.MIN_WIDTH)
    in_graph = text_graph.string_tokenizer(settings, int(preproc.pad_id))(np.asarray(texts, object)).numpy()
    differ = _differing_rows(in_graph, ids, int(preproc.pad_id))
    if differ is not None:
        return {"missing": f"serving_default takes input_ids: tensorflow-text's ids differ from the tokenizer's on "
                           f"sample text {differ} ({texts[differ][:40]!r})"}
    got = {name: np.asarray(v) for name, v in zip(outputs, jax.jit(serving)(predictor.model.params, ids))}
    names = [str(c) for c in (getattr(preproc, "class_names", None) or [])]
    if "probabilities" in got and names:
        got["labels"] = np.asarray([names[i] for i in got["probabilities"].argmax(-1)], np.str_)
    if generates:
        got["generated"] = np.asarray(preproc.decode(got["sequences"]), np.str_)
    return {"settings": settings, "pad_id": int(preproc.pad_id), "class_names": names, "texts": texts, "expected": got}


def _tagger_text_signature(predictor: Any, serving: Any, outputs: tuple[str, ...], texts: list[str],
                           settings: dict[str, Any]) -> dict[str, Any]:
    """`_text_signature` of a sequence tagger: the graph splits each text into words as `predict` does
    (`split_words`), tokenizes them and returns the words and their tag names ('O' past maxlen, as
    `predict` gives) beside the word scores and tag ids."""
    from flaxtrain.data.entities import split_words
    from flaxtrain.export import text_graph

    preproc = predictor.preproc
    pad = int(preproc.pad_id)
    unk = preproc.tokenizer.encode([preproc.unknown_token()], is_pretokenized=True, add_special_tokens=False).ids
    split = [split_words(t)[0] for t in texts]
    rows, starts = preproc.encode(split)
    ids, word_starts = pad_rows(rows, pad, text_graph.MIN_WIDTH), pad_rows(starts, -1, 1)
    graph = text_graph.word_tokenizer(settings, pad, unk)(np.asarray(texts, object))
    width = max(1, max(len(w) for w in split))
    found = [[w.decode() for w in row if w] for row in graph[2].numpy()]
    for what, ours, theirs in (("words", found, split), ("ids", graph[0].numpy(), ids),
                               ("word starts", graph[1].numpy(), word_starts)):
        differ = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if list(a) != list(b)), None) \
            if what == "words" else _differing_rows(ours, theirs, pad if what == "ids" else -1)
        if differ is not None:
            return {"missing": f"serving_default takes input_ids and word_starts: the graph's {what} differ from the "
                               f"predictor's on sample text {differ} ({texts[differ][:40]!r})"}
    got = {name: np.asarray(v) for name, v in zip(outputs, jax.jit(serving)(predictor.model.params, ids, word_starts))}
    labels = np.full((len(texts), width), "", dtype=object)
    for i, (row, kept) in enumerate(zip(got["tags"], starts)):
        tags = preproc.decode_tags(row[: len(kept)]) + ["O"] * (len(split[i]) - len(kept))
        labels[i, : len(tags)] = tags
    got["labels"] = labels.astype(np.str_)
    got["words"] = np.asarray([row + [""] * (width - len(row)) for row in split], dtype=object).astype(np.str_)
    return {"settings": settings, "pad_id": pad, "unk_ids": [int(i) for i in unk], "class_names": list(preproc.class_names),
            "texts": texts, "expected": got, "words": True}


def _qa_text_signature(predictor: Any, serving: Any, outputs: tuple[str, ...], texts: list[Any] | None,
                       settings: dict[str, Any]) -> dict[str, Any]:
    """`_text_signature` of an extractive QA model: the graph takes `questions` and `contexts`, cuts the
    windows as `QAPreprocessor.windows` does (checked on the sample pairs: ids, token types and the context
    tokens' character offsets) and picks each question's span as `QAPredictor.predict` does."""
    from flaxtrain.data.qa import QADataset, examples_from_arrays
    import tensorflow as tf

    from flaxtrain.export import qa_graph, text_graph

    preproc = predictor.preproc
    pairs = [(str(q), str(c)) for q, c in (texts or predictor.task.sample_pairs)]
    try:
        graph = qa_graph.qa_windows(settings, int(preproc.pad_id), preproc.max_query_length, preproc.doc_stride)(
            tf.constant([q for q, _ in pairs]), tf.constant([c for _, c in pairs]))
    except text_graph.Unsupported as why:
        return {"missing": f"serving_default takes input_ids, token_type_ids and attention_mask: {why}"}
    windows = QADataset(examples_from_arrays([q for q, _ in pairs], [c for _, c in pairs], None, None, "texts"),
                        preproc).windows
    pad = int(preproc.pad_id)
    checks = (("ids", graph["input_ids"], pad_rows(windows.input_ids, pad), pad),
              ("token types", graph["token_type_ids"], pad_rows(windows.token_type_ids, 0), 0),
              ("offsets", graph["starts"], pad_rows([o[:, 0] for o in windows.offsets], -1), -1),
              ("offsets", graph["ends"], pad_rows([o[:, 1] for o in windows.offsets], -1), -1))
    for what, ours, theirs, fill in checks:
        ours = ours.numpy()
        differ = _differing_rows(ours, theirs, fill) if len(ours) == len(theirs) else 0
        if differ is not None:
            i = int(windows.example[differ]) if differ < len(windows.example) else 0
            return {"missing": f"serving_default takes input_ids, token_type_ids and attention_mask: the graph's "
                               f"{what} differ from the predictor's on sample pair {i} ({pairs[i][0][:40]!r})"}
    found = predictor.predict(pairs)
    got = {"answers": np.asarray([a["answer"] for a in found], np.str_),
           "starts": np.asarray([a["start"] for a in found], np.int32),
           "ends": np.asarray([a["end"] for a in found], np.int32),
           "scores": np.asarray([a["score"] for a in found], np.float32)}
    return {"settings": settings, "pad_id": pad, "class_names": [], "texts": pairs, "expected": got,
            "qa": {"max_query_length": int(preproc.max_query_length), "doc_stride": int(preproc.doc_stride),
                   "max_answer_length": int(preproc.max_answer_length), "n_best": int(predictor.n_best),
                   "allow_no_answer": bool(predictor.allow_no_answer)}}


def _differing_rows(ours: np.ndarray, theirs: np.ndarray, pad: int) -> int | None:
    """The first row where two id matrices differ once both are padded with `pad` to a common width."""
    width = max(ours.shape[1], theirs.shape[1])
    padded = [np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=pad) for x in (ours, theirs)]
    differ = np.flatnonzero((padded[0] != padded[1]).any(axis=1))
    return int(differ[0]) if len(differ) else None


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
