"""The writers of each export format (artifact.py's `export` calls them): a serving function of
(params, *int inputs) -> named outputs, written into a staging folder, returning export.json's format
section.

- 'jax': jax.export's serialized StableHLO for cpu, cuda and tpu, batch and length symbolic, params in
  an .npz;
- 'onnx': jax2onnx's graph (params as initializers), int32 or int64 inputs with symbolic dimensions;
  a generating model as two graphs (the encoder with the first step, one cached decoder step);
- 'saved_model': jax2tf's graph (StableHLO in an XlaCallModule op) with the params as TF variables, a
  `serve_ids` signature and, given the tokenizer's tensorflow-text ops, a raw-string `serving_default`;
- 'tflite': that SavedModel through TF's TFLite converter, rows padded to a fixed width (two graphs for
  a generating model, as for ONNX).
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxtrain.errors import FlaxtrainError

PLATFORMS = ("cpu", "cuda", "tpu")
CONSTRAINTS = {"words": "words >= 2"}  # a CRF's Viterbi pass steps over word pairs: pad word_starts with -1


def write_jax(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
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


def write_onnx(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
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


def write_onnx_generation(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]],
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


def write_saved_model(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]],
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
        if text.get("qa"):  # sample texts [n, 2]: the question and context columns
            spec["text_signature"].update(input=None, inputs=["questions", "contexts"])
    return spec


def _texts_function(module: Any, converted: Any, outputs: tuple[str, ...], text: dict[str, Any]) -> Any:
    """tf.function: texts (tf.string [batch]) -> the outputs (and 'labels', the class names, or 'generated',
    the generated text, or a tagger's 'words' and their tag names as 'labels') of the model."""
    import tensorflow as tf

    from flaxtrain.export import text_graph

    if text.get("qa"):
        return _qa_function(module, converted, text)
    if text.get("words"):
        tokenize = text_graph.word_tokenizer(text["settings"], text["pad_id"], text["unk_ids"])
    else:
        tokenize = text_graph.string_tokenizer(text["settings"], text["pad_id"])
    module.vocabulary = tokenize.table  # tracked, so the SavedModel keeps the lookup table
    names = tf.constant(text["class_names"] or [""])

    def serve_texts(texts: Any) -> dict[str, Any]:
        if text.get("words"):
            ids, word_starts, words = tokenize(texts)
            results = dict(zip(outputs, converted(module.params, ids, word_starts)))
            tags = results["tags"]  # [batch, kept words]; words past maxlen are tagged 'O', as predict does
            tags = tf.pad(tags, [[0, 0], [0, tf.shape(words)[1] - tf.shape(tags)[1]]], constant_values=-1)
            outside = tf.where(tf.not_equal(words, ""), tf.constant("O"), tf.constant(""))
            results["labels"] = tf.where(tags >= 0, tf.gather(names, tf.maximum(tags, 0)), outside)
            results["words"] = words
            return results
        results = dict(zip(outputs, converted(module.params, tokenize(texts))))
        if "probabilities" in results and text["class_names"]:
            results["labels"] = tf.gather(names, tf.argmax(results["probabilities"], axis=-1))
        if "sequences" in results:  # a generating model: its text too
            results["generated"] = tokenize.detokenize(results["sequences"])
        return results

    return tf.function(serve_texts, input_signature=[tf.TensorSpec([None], tf.string, name="texts")], autograph=False)


def _qa_function(module: Any, converted: Any, text: dict[str, Any]) -> Any:
    """tf.function: questions and contexts (tf.string [batch] each) -> {'answers', 'starts', 'ends' (characters
    in the context), 'scores'}: the windows, the model on all of them, and the best span of each question."""
    import tensorflow as tf

    from flaxtrain.export import qa_graph

    qa = text["qa"]
    windows_of = qa_graph.qa_windows(text["settings"], text["pad_id"], qa["max_query_length"], qa["doc_stride"])
    module.vocabulary = windows_of.table

    def serve_pairs(questions: Any, contexts: Any) -> dict[str, Any]:
        windows = windows_of(questions, contexts)
        start, end = converted(module.params, windows["input_ids"], windows["token_type_ids"], windows["attention_mask"])
        return qa_graph.best_spans(start, end, windows, contexts, n_best=qa["n_best"],
                                     max_answer_length=qa["max_answer_length"], allow_no_answer=qa["allow_no_answer"])

    return tf.function(serve_pairs, autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="questions"),
                                                                      tf.TensorSpec([None], tf.string, name="contexts")])


def _tflite_bytes(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
                  optimize: bool) -> bytes:
    """The serving function through a scratch SavedModel (removed after) and TF's TFLite converter; int8
    weights (dynamic range) when `optimize`."""
    import tensorflow as tf

    try:
        write_saved_model(staging, serving, params, inputs, outputs, None, folder=".saved_model")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(staging / ".saved_model"), ["serving_default"])
        if optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()
    finally:
        shutil.rmtree(staging / ".saved_model", ignore_errors=True)


def write_tflite(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]], outputs: tuple[str, ...],
                  filename: str | None, *, quantize: bool) -> dict[str, Any]:
    """The 'tflite' format: the SavedModel above converted by TF's TFLite converter (its StableHLO
    lowered to TFLite builtins), rows padded to a fixed width and the batch symbolic; where the converter
    cannot lower an op with a symbolic batch (a gather over dynamic rows), one row at a time (the loader
    runs a batch row by row). `quantize` stores the weights as int8 (dynamic range)."""
    import tensorflow as tf

    def convert(specs: list[dict[str, Any]], optimize: bool) -> bytes:
        return _tflite_bytes(staging, serving, params, specs, outputs, optimize)

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


def write_tflite_generation(staging: Path, serving: Any, params: Any, inputs: list[dict[str, Any]],
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

    def both(first_specs: list[dict[str, Any]], then_specs: list[dict[str, Any]]) -> tuple[bytes, bytes]:
        return (_tflite_bytes(staging, graphs["prefill"], params, first_specs, first_outputs, quantize),
                _tflite_bytes(staging, graphs["step"], params, then_specs, step_outputs, quantize))

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
