"""Predictor: raw text in, class names and probabilities out; saved as Orbax params + JSON + tokenizer.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxtrain import hub, models
from flaxtrain._version import __version__
from flaxtrain.api.model import Model, as_preprocessor, init_model_params
from flaxtrain.data import TextPreprocessor, make_batches
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import classification_metrics, regression_metrics
from flaxtrain.files import atomic_directory, written_by_main_process
from flaxtrain.train import loop

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
FORMAT = "flaxtrain.predictor"
FORMAT_VERSION = 1


class Predictor:
    """Predicts class names (or regression values) of raw texts with a Model and its preprocessor."""

    def __init__(self, model: Model, preproc: TextPreprocessor | None = None, batch_size: int = 32):
        self.model = model
        self.preproc = as_preprocessor(preproc) or model.preproc
        self.batch_size = batch_size
        if self.preproc.class_names != model.preproc.class_names:
            raise FlaxtrainError(
                f"preproc has classes {self.preproc.class_names} but the model predicts {model.preproc.class_names}: "
                "pass the preprocessor the model was trained with"
            )

    def log_probs(self, input_ids: list[np.ndarray]) -> np.ndarray:
        """Float32 log-probabilities [n, c] of encoded texts (regression: predictions [n]), in their order."""
        batches, count = make_batches(input_ids, batch_size=self.batch_size, buckets=self.preproc.buckets,
                                      pad_id=self.preproc.pad_id)
        return loop.predict(self.model.params, batches, steps=self.model.steps, num_examples=len(input_ids),
                            num_batches=count)

    def predict_proba(self, texts: str | list[str]) -> np.ndarray:
        """Class probabilities: [c] for one text, [n, c] for a list."""
        if self.preproc.regression:
            raise FlaxtrainError("a regression model has no class probabilities: use predict(texts) for its values")
        single = isinstance(texts, str)
        probs = np.exp(self.log_probs(self.preproc.encode([texts] if single else texts)))
        return probs[0] if single else probs

    def predict(self, texts: str | list[str], return_proba: bool = False) -> Any:
        """Class name of one text (or a list of names); with return_proba, (names, probabilities).

        A regression model returns a float for one text, a [n] float32 array for a list.
        """
        if self.preproc.regression:
            if return_proba:
                raise FlaxtrainError("a regression model has no class probabilities: drop return_proba")
            values = self.log_probs(self.preproc.encode([texts] if isinstance(texts, str) else texts))
            return float(values[0]) if isinstance(texts, str) else values
        probs = self.predict_proba(texts)
        labels = self.preproc.decode_labels(np.atleast_2d(probs).argmax(-1))
        result = labels[0] if isinstance(texts, str) else labels
        return (result, probs) if return_proba else result

    def evaluate(self, texts: list[str], labels: Any) -> tuple[float, dict[str, float]]:
        """(mean loss, {'acc', 'precision', 'recall', 'f1'}) on raw texts and their labels.

        F1 and friends are of the positive class (index 1) for two classes, macro averages otherwise.
        A regression model gives (mean squared error, {'mae', 'mse', 'rmse', 'r2'}).
        """
        data = self.preproc.preprocess_test(texts, labels)
        if len(data) == 0:
            raise FlaxtrainError("no texts to evaluate: pass at least one labelled text")
        log_probs = self.log_probs(data.input_ids)
        if self.preproc.regression:
            metrics = regression_metrics(data.labels, log_probs)
            return metrics["mse"], metrics
        loss = float(-np.mean(log_probs[np.arange(len(data)), data.labels]))
        return loss, classification_metrics(data.labels, log_probs.argmax(-1), self.preproc.num_classes)

    def save(self, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
        """Writes config.json, tokenizer.json and Orbax params to `directory`, atomically.

        The files go to a temporary sibling folder that replaces `directory` only when complete, so a
        crash mid-save never leaves a half-written predictor or loses the previous one. In a
        multi-host run every process calls it and process 0 alone writes.
        """
        return written_by_main_process(directory, lambda: self._write(directory, extra))

    def _write(self, directory: str | os.PathLike, extra: dict[str, Any] | None) -> None:
        import orbax.checkpoint as ocp

        with atomic_directory(directory) as staging:
            config = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "flaxtrain_version": __version__,
                "task": models.get_entry(self.model.name).task,
                "model": {"name": self.model.name, "config": models.config_to_dict(self.model.config)},
                "preprocessor": self.preproc.save(staging),
                **(extra or {}),
            }
            # Host copies, written by this process alone (in a multi-host run, process 0 only).
            checkpointer = ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}))
            checkpointer.save(staging / PARAMS_DIR, jax.device_get(self.model.params))
            checkpointer.wait_until_finished()
            (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes a pretrained-encoder classifier or tagger in Hugging Face format (PyTorch `transformers`
        loads it as *ForSequenceClassification / *ForTokenClassification)."""
        config = self.model.config
        if self.model.name == "sequence_tagger" and getattr(config, "encoder", None) is not None:
            if config.use_crf:
                raise FlaxtrainError("Hugging Face token classification has no CRF layer: save a CRF tagger with save()")
            return hub.save_pretrained(directory, config.encoder, self.model.params, self.preproc.tokenizer,
                                       task="token", class_names=self.preproc.class_names)
        if self.model.name != "transformer":
            raise FlaxtrainError(f"save_pretrained writes pretrained-encoder models; a {self.model.name} saves with save()")
        return hub.save_pretrained(directory, config.encoder, self.model.params, self.preproc.tokenizer,
                                   task="sequence", class_names=self.preproc.class_names,
                                   problem_type="regression" if self.preproc.regression else None)


def get_predictor(model: Model, preproc: TextPreprocessor | None = None, batch_size: int = 32) -> Predictor:
    """ktrain's `get_predictor(model, preproc)`."""
    if not isinstance(model, Model):
        raise FlaxtrainError(f"get_predictor needs a flaxtrain model, not {type(model).__name__}")
    return _predictor_class(model.task)(model, preproc, batch_size)


def _predictor_class(task: str) -> type[Predictor]:
    if task == "sequence_tagging":
        from flaxtrain.api.tagging import TaggerPredictor

        return TaggerPredictor
    if task == "question_answering":
        from flaxtrain.api.qa import QAPredictor

        return QAPredictor
    if task == "seq2seq":
        from flaxtrain.api.seq2seq import Seq2SeqPredictor

        return Seq2SeqPredictor
    return Predictor


def _load_preprocessor(path: Path, section: dict[str, Any]) -> Any:
    if section.get("kind") == "entities":
        from flaxtrain.data.entities import EntityPreprocessor

        return EntityPreprocessor.load(path, section)
    if section.get("kind") == "qa":
        from flaxtrain.data.qa import QAPreprocessor

        return QAPreprocessor.load(path, section)
    if section.get("kind") == "seq2seq":
        from flaxtrain.data.seq2seq import Seq2SeqPreprocessor

        return Seq2SeqPreprocessor.load(path, section)
    return TextPreprocessor.load(path, section)


def read_predictor_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a saved predictor, with one-line errors for every way it can be wrong."""
    path = Path(directory)
    if path.is_file():
        raise FlaxtrainError(f"{path} is a file, not a predictor directory: pass the folder that predictor.save() wrote")
    if not path.is_dir():
        raise FlaxtrainError(f"predictor directory {path} does not exist: save one with predictor.save({str(path)!r})")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise FlaxtrainError(f"{path} has no {CONFIG_FILE}: it is not a saved flaxtrain predictor (or the save was cut short)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FlaxtrainError(f"{config_path} is corrupt ({err}): save the predictor again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise FlaxtrainError(f"{config_path} is not a flaxtrain predictor config: save the predictor again")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise FlaxtrainError(f"{path} was saved by a newer flaxtrain ({config.get('flaxtrain_version')}): upgrade flaxtrain")
    for key in ("model", "preprocessor"):
        if key not in config:
            raise FlaxtrainError(f"{config_path} lacks the {key!r} section: save the predictor again")
    return config


def load_predictor(directory: str | os.PathLike, batch_size: int = 32) -> Predictor:
    """Loads a predictor saved by `Predictor.save`; needs no network and no pickle."""
    import orbax.checkpoint as ocp

    path = Path(directory).absolute()
    config = read_predictor_config(path)
    preproc = _load_preprocessor(path, config["preprocessor"])
    name = config["model"].get("name", "?")
    model_config = models.make_config(name, **config["model"].get("config", {}))
    module = models.build_model(name, model_config)
    abstract = jax.eval_shape(lambda: init_model_params(module, 0))
    params_dir = path / PARAMS_DIR
    if not params_dir.is_dir():
        raise FlaxtrainError(f"{path} has no {PARAMS_DIR}/ folder: the predictor's weights are missing; save it again")
    try:
        params = ocp.StandardCheckpointer().restore(params_dir, abstract)
    except Exception as err:  # Orbax and TensorStore raise many types for unreadable files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FlaxtrainError(f"the weights in {params_dir} are unreadable ({first[:200]}): save the predictor again") from None
    model = Model(name, model_config, params, preproc)
    model.generation = config.get("generation", {})
    return _predictor_class(model.task)(model, preproc, batch_size)
