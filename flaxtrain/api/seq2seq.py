"""Translation and summarization: encoder-decoder models for `get_model(..., task=)` (their task, predictor
and loss: flaxtrain/tasks/seq2seq.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from flaxtrain import hub, models, tasks
from flaxtrain.api.model import Model
from flaxtrain.api.weights import init_model_params, load_encoder
from flaxtrain.data.seq2seq import TASKS, Seq2SeqDataset, Seq2SeqPreprocessor
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.hub import seq2seq as hub_seq2seq
from flaxtrain.models.seq2seq import PRESETS
from flaxtrain.tasks.seq2seq import Seq2SeqPredictor

__all__ = ["seq2seq_model", "Seq2SeqPredictor", "PRESETS", "NAMES"]

NAMES = (*PRESETS, "bert2bert")


def seq2seq_model(name: str, train_data: Seq2SeqDataset | None = None, val_data: Seq2SeqDataset | None = None, *,
                  task: str | None = None, preproc: Seq2SeqPreprocessor | None = None, params: dict[str, Any] | None = None,
                  label_smoothing: float = 0.0, seed: int = 0) -> Model:
    """An encoder-decoder Model for translation or summarization.

    Args:
      name: 't5', 'bart' or 'marian' (that layout, trained from scratch on the data's vocabulary),
        'bert2bert' (warm-started from a pretrained encoder: params={'encoder': 'minilm' | folder}), or
        a local T5 / BART / Marian checkpoint folder (Hugging Face format; its tokenizer comes along).
      train_data, val_data: from `translation_from_pairs` / `summarization_from_df` (re-encoded with a
        pretrained model's tokenizer when it has its own).
      task: 'translation' or 'summarization' (default: the data's).
      preproc: the data's preprocessor (default: train_data's).
      params: config overrides (sizes, dropout_rate, ...); for bert2bert also 'encoder' (default
        'minilm'), 'num_decoder_layers' and 'cross_attention_init' ('random', or 'self': each
        cross-attention starts as a copy of its block's self-attention).
      label_smoothing: target smoothing of the training loss (e.g. 0.1).
    """
    preproc = preproc or getattr(train_data, "preproc", None)
    task = task or (preproc.task if preproc is not None else None)
    if task not in TASKS:
        raise FlaxtrainError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 0 <= label_smoothing < 1:
        raise FlaxtrainError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    overrides = dict(params or {})
    generation: dict[str, Any] = {}
    if name in PRESETS:
        if preproc is None:
            raise FlaxtrainError(f"a {name} trained from scratch takes its vocabulary from the data: pass train_data")
        fields = {f.name for f in dataclasses.fields(models.Seq2SeqConfig)}
        bad = next((k for k in overrides if k not in fields), None)
        if bad is not None:
            raise FlaxtrainError(f"unknown {name} config key {bad!r}{nearest(bad, fields)}")
        longest = max(preproc.maxlen, preproc.max_target_length)
        config = models.Seq2SeqConfig(**{**PRESETS[name], "vocab_size": preproc.vocab_size, "pad_id": preproc.pad_id,
                                         "eos_id": preproc.eos_id, "decoder_start_id": preproc.decoder_start_id,
                                         "max_positions": max(512, longest), **overrides})
        weights = init_model_params(models.Seq2Seq(config), seed)
    elif name == "bert2bert":
        config, weights, preproc = _bert2bert(overrides, preproc, task, seed)
    elif Path(name).is_dir():
        config, weights, tokenizer, generation = hub.load_seq2seq(name)
        config = dataclasses.replace(config, **overrides) if overrides else config
        preproc = Seq2SeqPreprocessor(tokenizer, maxlen=preproc.maxlen if preproc else 512,
                                      max_target_length=preproc.max_target_length if preproc else 128, task=task,
                                      pad_id=config.pad_id, eos_id=config.eos_id, decoder_start_id=config.decoder_start_id)
    else:
        raise FlaxtrainError(f"unknown encoder-decoder {name!r}{nearest(name, NAMES)}; a local T5/BART/Marian folder works too")
    for data in (train_data, val_data):
        if data is not None:
            if tasks.for_data(data) is not tasks.named("seq2seq"):
                raise FlaxtrainError(f"task {task!r} needs text pairs from translation_from_pairs or summarization_from_df, "
                                     f"not {type(data).__name__}")
            data.preproc = preproc  # re-encoded with the model's tokenizer on next use
    model = Model("seq2seq", config, weights, preproc, train_data=train_data, val_data=val_data)
    model.label_smoothing = label_smoothing
    model.generation = generation
    if name not in PRESETS:  # a checkpoint folder, or bert2bert's pretrained encoder and decoder
        model.pretrained_parts = tuple(weights)
    return model


def _bert2bert(overrides: dict[str, Any], data_preproc: Seq2SeqPreprocessor | None, task: str, seed: int):
    checkpoint = overrides.pop("encoder", "minilm")
    decoder_layers = overrides.pop("num_decoder_layers", None)
    cross_init = overrides.pop("cross_attention_init", "random")
    if cross_init not in ("random", "self"):
        raise FlaxtrainError(f"cross_attention_init must be 'random' or 'self', got {cross_init!r}")
    maxlen = data_preproc.maxlen if data_preproc else 128
    enc_config, enc_params, tokenizer, pad_id = load_encoder(checkpoint, task=None, maxlen=maxlen)
    ids = {name: tokenizer.token_to_id(token) for name, token in (("start", "[CLS]"), ("eos", "[SEP]"))}
    if None in ids.values():
        raise FlaxtrainError(f"bert2bert needs a tokenizer with [CLS] and [SEP]; {checkpoint!r} has none")
    config = hub_seq2seq.bert2bert_config(enc_config, pad_id=pad_id, eos_id=ids["eos"], decoder_start_id=ids["start"],
                                          num_decoder_layers=decoder_layers)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    fresh = init_model_params(models.Seq2Seq(config), seed)
    head = None
    try:
        _, with_head, _ = hub.load_pretrained(checkpoint, task="mlm")
        head = {k: v for k, v in with_head.items() if k != "encoder"} or None
    except FlaxtrainError:
        head = None
    weights = hub_seq2seq.bert2bert_params(jax.device_get(fresh), jax.device_get(enc_params), config, head,
                                           cross_from_self=cross_init == "self")
    weights = jax.tree.map(lambda w, f: jnp.asarray(w, f.dtype), weights, fresh)
    preproc = Seq2SeqPreprocessor(tokenizer, maxlen=maxlen,
                                  max_target_length=data_preproc.max_target_length if data_preproc else 64, task=task,
                                  pad_id=pad_id, eos_id=ids["eos"], decoder_start_id=ids["start"])
    return config, weights, preproc
