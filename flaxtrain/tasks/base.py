"""What a task is: the `Task` interface, the `Predictor` base, and what both need of a model.

A task owns everything that differs between text classification, tagging, QA and generation: its
dataset and preprocessor types, its pure loss and predict functions (the step module runs any), its
evaluation report, its top-loss view, its predictor class and its section of a saved predictor. The
Learner, get_model, get_predictor, load_predictor and the CLI reach a task only through this interface.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import attribution
from flaxtrain.eval.explanation import Explanation
from flaxtrain.tasks import folder
from flaxtrain.train import TrainState, loop


@runtime_checkable
class TaskModel(Protocol):
    """What the Learner, the tasks and the predictors use of a model (flaxtrain.Model has it all)."""

    name: str  # registry name of the network ('textcnn', 'transformer', 'seq2seq', ...)
    config: Any  # its config dataclass
    module: Any  # the linen module
    params: Any
    preproc: Any

    @property
    def task(self) -> Task: ...

    @property
    def steps(self) -> Any: ...


class Task:
    """One task: subclasses set the class attributes and override what differs from these defaults."""

    name: ClassVar[str]  # registry name, e.g. 'text_classification'
    family: ClassVar[str]  # the model registry's task family of its networks (a saved predictor's 'task')
    dataset: ClassVar[type]  # its dataset type (from the flaxtrain.text loaders)
    preprocessor: ClassVar[type]  # its preprocessor type (loaded back by the saved section's 'kind')
    predictor: ClassVar[type[Predictor]]
    metric: ClassVar[str] = "acc"  # the per-epoch metric reported beside the loss
    loaders: ClassVar[str] = "a flaxtrain.text loader"  # where its data comes from, for messages

    def matches(self, preproc: Any) -> bool:
        """Whether this task is the one of a network of its family with this preprocessor."""
        return True

    # --- the step's functions -----------------------------------------------------------------------
    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        """loss_fn(apply_fn, params, batch, *, rngs, deterministic) -> (loss sum, metric sums with 'count')."""
        raise NotImplementedError

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        """predict_fn(apply_fn, params, batch) -> the per-row outputs the predictor decodes."""
        raise NotImplementedError

    # --- data ---------------------------------------------------------------------------------------
    def batches(self, data: Any, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Any, int]:
        """(batches of the fields the step reads, padded to the dataset's buckets, and their count)."""
        return data.batches(batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=epoch, process_index=process_index,
                            process_count=process_count)

    def example_losses(self, data: Any, row_losses: np.ndarray) -> np.ndarray:
        """Per-example losses [len(data)] from per-row ones (a row is an example unless a task windows them)."""
        return row_losses

    # --- reports ------------------------------------------------------------------------------------
    def report(self, predictor: Predictor, data: Any, *, class_names: Sequence[Any] | None, print_report: bool) -> Any:
        """What `learner.validate` prints and returns for labelled `data`."""
        raise NotImplementedError

    def top_losses(self, predictor: Predictor, data: Any, losses: np.ndarray, n: int) -> list[tuple]:
        """The `n` examples of `data` with the highest `losses` (one per example), worst first:
        (index, loss, truth, prediction) in this task's terms."""
        raise NotImplementedError

    def format_predictions(self, predictor: Predictor, texts: list[str]) -> list[str]:
        """One output line per text for `flaxtrain predict`."""
        return [f"{output}\t{text}" for output, text in zip(predictor.predict(texts), texts)]

    # --- export for serving ----------------------------------------------------------------------------
    export_inputs: tuple[str, ...] = ("input_ids",)  # the serving function's int32 inputs, in order

    export_formats: ClassVar[tuple[str, ...]] = ("jax", "onnx", "saved_model", "tflite")  # predictor.export's formats

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[Any, ...]], tuple[str, ...]]:
        """(serving(params, *inputs) -> output arrays, their names) for `predictor.export`; the inputs
        are `export_inputs`, int32 [batch, length] ('word_starts': [batch, words])."""
        raise FlaxtrainError(f"a {self.name} model cannot be exported yet: export supports text classification, "
                             "regression, sequence tagging, extractive QA, masked-LM, span corruption and seq2seq")

    def export_sample(self, predictor: Predictor, texts: Sequence[Any] | None) -> dict[str, np.ndarray]:
        """The parity sample: `export_inputs` arrays of `texts` encoded as the predictor encodes them (default:
        token-id rows of different lengths)."""
        from flaxtrain.export import sample_inputs

        return sample_inputs(predictor, texts)

    # --- the saved predictor's task section ---------------------------------------------------------
    def folder_section(self, model: TaskModel) -> dict[str, Any]:
        """Top-level keys this task adds to a saved predictor's config.json."""
        return {}

    def restore_section(self, model: TaskModel, config: dict[str, Any]) -> None:
        """Reads `folder_section`'s keys back onto a loaded model."""

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def as_preprocessor(preproc: Any) -> Any:
    """The preprocessor itself, or the one a `flaxtrain.text.Transformer` (anything with a
    `preprocessor()` method) holds: ktrain's code passes the Transformer wherever a preprocessor goes
    (`get_predictor(learner.model, preproc=t)`)."""
    maker = getattr(preproc, "preprocessor", None)
    return maker() if callable(maker) else preproc


def eval_state(model: TaskModel) -> TrainState:
    """A train state without optimizer for the model's own one-device eval step."""
    return TrainState(step=0, apply_fn=model.steps.apply_fn, params=model.params, tx=None, opt_state=None)


def mean_eval_loss(model: TaskModel, batches: Any, count: int | None = None) -> dict[str, float]:
    """Host means (loss, acc, ...) of the model's eval step over `batches`."""
    return loop.summarize(loop.evaluate(eval_state(model), batches, steps=model.steps, num_batches=count, verbose=False))


class Predictor:
    """Raw inputs in, the task's outputs out, with a model and its preprocessor; saved as a folder of
    config.json, tokenizer.json and Orbax params (`flaxtrain.load_predictor` reads it back).

    Each task's predictor (classification, regression, tagging, QA, generation) subclasses this one.
    """

    # The Hugging Face head of the task's pretrained-encoder models ('sequence', 'token', 'span', 'mlm'):
    # which *For... class save_pretrained writes and which PEFT task_type save_adapter names.
    hf_head: ClassVar[str | None] = None

    def __init__(self, model: TaskModel, preproc: Any = None, batch_size: int = 32):
        self.model = model
        self.preproc = as_preprocessor(preproc) or model.preproc
        self.batch_size = batch_size
        if self.preproc.class_names != model.preproc.class_names:
            raise FlaxtrainError(
                f"preproc has classes {self.preproc.class_names} but the model predicts {model.preproc.class_names}: "
                "pass the preprocessor the model was trained with"
            )

    @property
    def task(self) -> Task:
        return self.model.task

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
        """Writes config.json, tokenizer.json and Orbax params to `directory`, atomically.

        The files go to a temporary sibling folder that replaces `directory` only when complete, so a
        crash mid-save never leaves a half-written predictor or loses the previous one. In a
        multi-host run every process calls it and process 0 alone writes.
        """
        section = {**self.task.folder_section(self.model), **(extra or {})}
        adapters = getattr(self.model, "lora", None)
        if adapters is not None:  # kept unmerged, so that training can go on from the loaded predictor
            section["lora"] = adapters.to_dict()
        return folder.write(directory, self.model, self.preproc, jax.device_get(self.model.params), extra=section)

    def rows_per_batch(self, count: int) -> int:
        """Rows of each predict batch for `count` inputs: `batch_size`, or for fewer inputs the power of two
        that holds them (one text is not padded to 32 rows; at most log2(batch_size) more compiles)."""
        return min(self.batch_size, 1 << max(count - 1, 0).bit_length())

    def export(self, path: str | os.PathLike, format: str = "jax", *, texts: list[str] | None = None,
               labels: list[Any] | None = None, quantize: bool = False, tolerance: float | None = None,
               ids_dtype: str = "int32") -> Path:
        """Writes the model for serving in `format` ('jax': StableHLO for cpu, cuda and tpu; 'onnx': an
        onnxruntime graph, `path` a folder or a NAME.onnx file; 'saved_model': a TF SavedModel; 'tflite':
        a TFLite flatbuffer, `quantize=True` for int8 weights, `path` a folder or a NAME.tflite file), after
        checking it in the format's own runtime in a separate process (parity.json beside it, with the
        accuracy on `texts` when their `labels` are given); `ids_dtype='int64'` makes the token-id inputs of
        'onnx', 'saved_model' and 'tflite' int64; see flaxtrain/export/artifact.py."""
        from flaxtrain.export import export

        return export(self, path, format, texts=texts, labels=labels, quantize=quantize, tolerance=tolerance,
                      ids_dtype=ids_dtype)

    @functools.cached_property
    def _explainers(self) -> dict[tuple[Any, ...], Any]:
        """The jitted explainers made so far, by (score function, steps), each compiling once per input shape; and
        the token-embedding lookups of each input layout."""
        return {}

    def _attribute(self, inputs: dict[str, np.ndarray], *, length: int, tokens: Sequence[str], target: int, name: Any,
                   score: Any, steps: int) -> Explanation:
        """Integrated gradients (eval/attribution.py) of `score(outputs, target)` on one row of `inputs`, whose
        first `length` positions are the `tokens` shown; the rest is padding, whose share must be zero."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise FlaxtrainError(f"steps must be a whole number of at least 2, got {steps!r}")
        key = (score, steps)
        if key not in self._explainers:
            self._explainers[key] = attribution.make_explainer(self.model.module.apply, score, steps)
        placed = {k: jnp.asarray(v) for k, v in inputs.items()}
        per_lookup, value, baseline = self._explainers[key](self.model.params, placed, jnp.asarray(target, jnp.int32))
        layout = ("lookups", score, tuple((k, np.shape(v)) for k, v in sorted(inputs.items())))
        if layout not in self._explainers:  # which embeddings a forward looks up: traced once per input shape
            self._explainers[layout] = attribution.lookup_names(self.model.module.apply, self.model.params, placed, score)
        names = self._explainers[layout]
        values = attribution.token_attributions([np.asarray(v) for v in per_lookup], names)
        padding = float(np.abs(values[length:]).sum())
        if padding > 1e-6 * max(float(np.abs(values).sum()), 1e-12):
            raise FlaxtrainError(f"padding takes {padding:.3g} of the attribution: this network does not mask its padding, "
                                 "so no explanation of the text alone exists")
        return Explanation([(tok, float(v)) for tok, v in zip(tokens, values[:length])], target=name, score=float(value),
                           baseline=float(baseline))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes the model in Hugging Face format, where its task has one (see the task's `_save_pretrained`);
        LoRA adapters are merged into their kernels first (the model itself keeps them)."""
        merged = getattr(self.model, "merged", None)
        if merged is None or getattr(self.model, "lora", None) is None:
            return self._save_pretrained(directory)
        plain = copy.copy(self)
        plain.model = merged()
        return plain._save_pretrained(directory)

    def _save_pretrained(self, directory: str | os.PathLike) -> Path:
        raise FlaxtrainError(f"save_pretrained writes pretrained-encoder models; a {self.model.name} saves with save()")

    def save_adapter(self, directory: str | os.PathLike, *, base_model: str | None = None) -> Path:
        """Writes the model's LoRA adapters in PEFT's format (adapter_model.safetensors + adapter_config.json),
        with the head trained beside them as modules_to_save: `peft.PeftModel.from_pretrained` loads it onto
        the PyTorch model of the checkpoint it was trained on, and `model.load_adapter` back here.

        Args:
          directory: the adapter folder (replaced atomically).
          base_model: adapter_config's base_model_name_or_path (the checkpoint's name or folder).
        """
        from flaxtrain.hub import adapters

        config = getattr(self.model, "lora", None)
        if config is None:
            raise FlaxtrainError("this model has no LoRA adapters: add them with learner.add_lora(...) before fit")
        encoder = getattr(self.model.config, "encoder", None)
        if encoder is None or self.hf_head is None:
            raise FlaxtrainError(f"PEFT adapters are written for pretrained-encoder models; save this {self.model.name} "
                                 "model with predictor.save(), which keeps its adapters")
        return adapters.save_adapter(directory, encoder, self.model.params, config, task=self.hf_head,
                                     head=self.model.lora_trainable(), base_model=base_model)
