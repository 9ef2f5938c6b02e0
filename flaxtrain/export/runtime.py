"""Runs an exported flaxtrain model in its own runtime, importing neither flaxtrain nor (except for the
'jax' format) JAX. A copy sits inside every export as `serve.py`:

    python serve.py ARTIFACT INPUTS.npz OUTPUTS.npz   # runs the artifact on the arrays of INPUTS.npz

or, from Python, `load(artifact)` -> a function from {'input_ids': int array [batch, length]} to the
named outputs ({'probabilities': ...}). `export.json` beside the artifact names its inputs, outputs,
class names and preprocessing. The 'onnx' format needs only onnxruntime and numpy; 'saved_model' and
'tflite' need TensorFlow (or, for 'tflite', LiteRT's `ai-edge-litert`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

MANIFEST = "export.json"


def manifest(artifact: str | Path) -> dict[str, Any]:
    """The export's export.json (the artifact is a folder holding it)."""
    return json.loads((Path(artifact) / MANIFEST).read_text())


def _load_jax(folder: Path, spec: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    import jax
    from jax import export

    exported = export.deserialize(bytearray((folder / spec["files"]["model"]).read_bytes()))
    with np.load(folder / spec["files"]["params"]) as stored:  # on the device once, not at every call
        params = jax.device_put([stored[f"p{i:05d}"] for i in range(len(stored.files))])
    call = jax.jit(exported.call)  # compiled once per input shape

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [np.asarray(inputs[name["name"]], name["dtype"]) for name in spec["inputs"]]
        outputs = call(params, *args)
        return {name: np.asarray(value) for name, value in zip(spec["outputs"], outputs)}

    return run


def _load_onnx(folder: Path, spec: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / spec["files"]["model"]), providers=["CPUExecutionProvider"])
    if spec.get("generation"):
        return _onnx_generation(session, onnxruntime.InferenceSession(
            str(folder / spec["files"]["step"]), providers=["CPUExecutionProvider"]), spec)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name["name"]: np.asarray(inputs[name["name"]], name["dtype"]) for name in spec["inputs"]}
        return dict(zip(spec["outputs"], session.run(list(spec["outputs"]), feed)))

    return run


def _onnx_generation(first: Any, step: Any, spec: dict[str, Any]
                     ) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Greedy decoding over the two ONNX graphs of a seq2seq export."""
    return _greedy(lambda ids: first.run(None, {"input_ids": ids}), lambda feed: step.run(None, feed), spec)


def _greedy(first: Callable[[np.ndarray], list[np.ndarray]], step: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
            spec: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Greedy decoding over a seq2seq export's two graphs: `first` runs the encoder and the decoder start
    token (-> scores and the whole cache), `step` one decoder step (-> scores and the cache leaves it
    changes), until max_length or every row ended."""
    gen = spec["generation"]
    cache_names, length, pad, eos = gen["cache"], gen["max_length"], gen["pad_id"], gen["eos_id"]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(inputs["input_ids"], spec["inputs"][0]["dtype"])
        width = spec["inputs"][0]["shape"][1]
        if isinstance(width, int):  # a fixed-width graph (TFLite): sources padded to it
            ids = pad_to(ids, width, gen["source_pad_id"], spec["inputs"][0]["dtype"])
        if spec["inputs"][0]["shape"][0] == 1 and len(ids) > 1:  # a graph of one row: row by row
            rows = [run({"input_ids": ids[i:i + 1]})["sequences"] for i in range(len(ids))]
            return {"sequences": np.concatenate(rows)}
        mask = (ids != gen["source_pad_id"]).astype(np.int32)
        scores, *cache = first(ids)
        sequences = np.full((len(ids), length), pad, np.int32)
        sequences[:, 0] = gen["decoder_start_id"]
        finished = np.zeros(len(ids), bool)
        for cur_len in range(1, length):
            token = np.where(finished, pad, scores.argmax(-1)).astype(np.int32)
            sequences[:, cur_len] = token
            finished |= token == eos
            if finished.all() or cur_len + 1 == length:
                break
            scores, *changed = step({"tokens": token[:, None], "cur_len": np.asarray(cur_len + 1, np.int32),
                                     "sequences": sequences, "attention_mask": mask, **dict(zip(cache_names, cache))})
            for i, value in zip(gen["step_updates"], changed):  # the encoder's keys and values stay as they are
                cache[i] = value
        tokens = sequences[:, 1:]
        ended = np.cumsum(tokens == eos, axis=1) - (tokens == eos) > 0
        return {"sequences": np.where(ended, pad, tokens)}

    return run


def _load_saved_model(folder: Path, spec: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    import tensorflow as tf

    if spec.get("text_signature"):
        import tensorflow_text  # noqa: F401 - registers the tokenizer's ops the graph holds
    loaded = tf.saved_model.load(str(folder / spec["files"]["model"]))
    serve = loaded.signatures[spec.get("signature", "serving_default")]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name["name"]: tf.constant(np.asarray(inputs[name["name"]], name["dtype"])) for name in spec["inputs"]}
        results = serve(**feed)
        return {name: results[name].numpy() for name in spec["outputs"]}

    run.loaded = loaded  # the signature needs its object alive
    text = spec.get("text_signature")
    if text:
        serve_texts = loaded.signatures[text["name"]]

        def run_texts(texts: Any) -> dict[str, np.ndarray]:
            """Raw strings in (tokenized inside the graph), {'probabilities', 'labels', ...} out."""
            if text.get("inputs"):  # several string inputs: texts' columns, in order
                columns = np.asarray(texts, dtype=object).reshape(len(texts), -1).T
                results = serve_texts(**{name: tf.constant([str(t) for t in column])
                                         for name, column in zip(text["inputs"], columns)})
            else:
                results = serve_texts(**{text["input"]: tf.constant([str(t) for t in texts])})
            return {name: (np.char.decode(results[name].numpy().astype(bytes), "utf-8")
                           if name in ("labels", "generated", "words", "answers")
                           else results[name].numpy()) for name in text["outputs"]}

        run.texts = run_texts
    return run


def _interpreter() -> Any:
    """LiteRT's interpreter where it is installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def pad_to(rows: np.ndarray, width: int, pad: int, dtype: str = "int32") -> np.ndarray:
    """Integer rows [n, width]: `rows` [n, k <= width] followed by `pad` (the fixed width of a TFLite export)."""
    rows = np.asarray(rows, dtype)
    if rows.shape[1] > width:
        raise ValueError(f"rows of {rows.shape[1]} tokens do not fit this export's {width}: truncate them first")
    return np.pad(rows, ((0, 0), (0, width - rows.shape[1])), constant_values=pad)


def _tflite_generation(folder: Path, spec: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Greedy decoding over the two TFLite graphs of a seq2seq export."""
    first = _interpreter()(model_path=str(folder / spec["files"]["model"])).get_signature_runner("serving_default")
    step = _interpreter()(model_path=str(folder / spec["files"]["step"])).get_signature_runner("serving_default")
    names = [f"next_{name}" for name in spec["generation"]["cache"]]
    changed = [names[i] for i in spec["generation"]["step_updates"]]

    def run_first(ids: np.ndarray) -> list[np.ndarray]:
        out = first(input_ids=ids)
        return [out["scores"], *(out[name] for name in names)]

    def run_step(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        types = {item["name"]: item["dtype"] for item in spec["step_inputs"]}
        out = step(**{name: np.asarray(value, types[name]) for name, value in feed.items()})
        return [out["scores"], *(out[name] for name in changed)]

    return _greedy(run_first, run_step, spec)


def _load_tflite(folder: Path, spec: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    if spec.get("generation"):
        return _tflite_generation(folder, spec)
    interpreter = _interpreter()(model_path=str(folder / spec["files"]["model"]))
    runner = interpreter.get_signature_runner(spec.get("signature", "serving_default"))  # resizes the batch

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name["name"]: pad_to(inputs[name["name"]], name["shape"][1], name["pad"], name.get("dtype", "int32"))
                for name in spec["inputs"]}
        if isinstance(spec["inputs"][0]["shape"][0], str):  # a symbolic batch
            results = runner(**feed)
            return {name: np.asarray(results[name]) for name in spec["outputs"]}
        rows = [runner(**{k: v[i:i + 1] for k, v in feed.items()}) for i in range(len(next(iter(feed.values()))))]
        return {name: np.concatenate([np.asarray(row[name]) for row in rows]) for name in spec["outputs"]}

    run.interpreter = interpreter
    return run


LOADERS = {"jax": _load_jax, "onnx": _load_onnx, "saved_model": _load_saved_model, "tflite": _load_tflite}


def versions(fmt: str) -> dict[str, str]:
    """The runtime's package versions (written into parity.json)."""
    import importlib.metadata as metadata

    if fmt == "tflite" and "ai_edge_litert" in sys.modules:
        return {"ai-edge-litert": metadata.version("ai-edge-litert")}
    if fmt in ("saved_model", "tflite"):
        import tensorflow as tf  # installed as tensorflow or tensorflow-cpu: its own version

        return {"tensorflow": tf.__version__}
    names = {"jax": ("jax", "jaxlib"), "onnx": ("onnxruntime",)}[fmt]
    return {name: metadata.version(name) for name in names}


def load(artifact: str | Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A function from the export's named inputs to its named outputs (numpy in, numpy out)."""
    folder = Path(artifact)
    folder = folder.parent if folder.is_file() else folder  # a one-file export: its export.json sits beside it
    spec = manifest(folder)
    return LOADERS[spec["format"]](folder, spec)


def main(argv: list[str]) -> None:
    artifact, inputs, outputs = argv
    spec = manifest(Path(artifact).parent if Path(artifact).is_file() else artifact)
    with np.load(inputs) as given:
        arrays = {k: given[k] for k in given.files}
    run = load(artifact)
    results = run(arrays)
    if "texts" in arrays and hasattr(run, "texts"):  # a SavedModel that tokenizes raw strings itself
        results.update({f"texts/{k}": v for k, v in run.texts(list(arrays["texts"])).items()})
    np.savez(outputs, **results)
    print(json.dumps({"versions": versions(spec["format"]),
                      "modules": sorted(m for m in ("flaxtrain", "jax", "tensorflow") if m in sys.modules)}))


if __name__ == "__main__":
    main(sys.argv[1:])
