"""Model names -> (module, config dataclass): the one place where config becomes a model."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn

from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.models.fasttext import FastText, FastTextConfig
from flaxtrain.models.heads import HeadConfig, MaskedLM, SequenceClassifier, SpanClassifier
from flaxtrain.models.seq2seq import Seq2Seq, Seq2SeqConfig
from flaxtrain.models.tagger import SequenceTagger, TaggerConfig
from flaxtrain.models.textcnn import TextCNN, TextCNNConfig


class ModelEntry(NamedTuple):
    module: type[nn.Module]
    config: type
    default_lr: float  # learning rate that trains it well with Adam
    task: str  # the task family whose data and loss it takes


MODELS: dict[str, ModelEntry] = {
    "textcnn": ModelEntry(TextCNN, TextCNNConfig, 1e-3, "text_classification"),
    "fasttext": ModelEntry(FastText, FastTextConfig, 5e-3, "text_classification"),
    # A pretrained encoder with a sequence-classification head (flaxtrain.text.Transformer).
    "transformer": ModelEntry(SequenceClassifier, HeadConfig, 5e-5, "text_classification"),
    # NER: a token-classification head on a pretrained encoder, or a BiLSTM; optional CRF.
    "sequence_tagger": ModelEntry(SequenceTagger, TaggerConfig, 1e-3, "sequence_tagging"),
    # Extractive QA: a span start/end head on a pretrained encoder.
    "qa": ModelEntry(SpanClassifier, HeadConfig, 5e-5, "question_answering"),
    # Masked-LM pretraining: the encoder with its tied masked-LM head (BertForMaskedLM's layout).
    "masked_lm": ModelEntry(MaskedLM, HeadConfig, 1e-4, "masked_lm"),
    # Translation and summarization: an encoder-decoder (T5, BART, Marian or BERT2BERT layout).
    "seq2seq": ModelEntry(Seq2Seq, Seq2SeqConfig, 5e-4, "seq2seq"),
    # T5 span-corruption pretraining: the same encoder-decoder on corrupted packed rows.
    "span_corruption": ModelEntry(Seq2Seq, Seq2SeqConfig, 1e-3, "span_corruption"),
}

# Config fields that are themselves config dataclasses, rebuilt from the dicts of saved JSON.
_NESTED = {(HeadConfig, "encoder"): EncoderConfig, (TaggerConfig, "encoder"): EncoderConfig}

# ktrain spellings accepted from users' code, mapped to flaxtrain's names.
_ALIASES = {"dropout": "dropout_rate", "embedding_dim": "embed_dim", "filters": "num_filters"}


def get_entry(name: str) -> ModelEntry:
    """Returns the registry entry of `name`, or a one-line error naming the valid choices."""
    if name not in MODELS:
        raise FlaxtrainError(f"unknown model {name!r}{nearest(name, MODELS)}")
    return MODELS[name]


def make_config(name: str, **kwargs: Any) -> Any:
    """Builds the frozen config dataclass of model `name`, checking every key.

    Args:
      name: a registered model name, e.g. 'textcnn'.
      **kwargs: config fields (ktrain aliases such as `dropout` accepted).

    Returns:
      The model's config dataclass.
    """
    entry = get_entry(name)
    fields = {f.name: f for f in dataclasses.fields(entry.config)}
    values: dict[str, Any] = {}
    for key, value in kwargs.items():
        key = _ALIASES.get(key, key)
        if key not in fields:
            raise FlaxtrainError(f"unknown {name} config key {key!r}{nearest(key, fields)}")
        if isinstance(value, list):
            value = tuple(value)
        nested = _NESTED.get((entry.config, key))
        if nested is not None and isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(nested)}
            unknown = next((k for k in value if k not in known), None)
            if unknown is not None:  # e.g. a folder saved by a newer flaxtrain
                raise FlaxtrainError(f"unknown {name} {key} config key {unknown!r}{nearest(unknown, known)}: "
                                     "upgrade flaxtrain or fix the config")
            value = nested(**value)
        values[key] = value
    missing = [f for f, spec in fields.items() if f not in values and spec.default is dataclasses.MISSING]
    if missing:
        raise FlaxtrainError(f"{name} config lacks {', '.join(missing)}: pass them or build the model from training data")
    return entry.config(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists, nested configs dicts)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def build_model(name: str, config: Any | Mapping[str, Any]) -> nn.Module:
    """Returns the linen module of `name` for a config dataclass or a dict of its fields."""
    if isinstance(config, Mapping):
        config = make_config(name, **config)
    return get_entry(name).module(config)


def with_compute_dtype(config: Any, dtype: str) -> Any:
    """A copy of a model config (or of the encoder config inside a head config) computing in `dtype`."""
    if not dataclasses.is_dataclass(config):
        return config
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    if "dtype" in names:
        changes["dtype"] = dtype
    for name in names:
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):
            changes[name] = with_compute_dtype(value, dtype)
    return dataclasses.replace(config, **changes)
