"""Pretraining models for `get_model`: a BERT-family encoder with its masked-LM head, or a T5 for span
corruption, from scratch ('bert', 't5') or continued from a checkpoint (their tasks, losses and
predictors: flaxtrain/tasks/masked_lm.py and span_corruption.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from flaxtrain import hub, models
from flaxtrain.api.model import Model
from flaxtrain.api.weights import init_model_params, load_encoder, with_pretrained_head
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.models.decoder import stack_blocks
from flaxtrain.models.encoder import EncoderConfig, stack_layers
from flaxtrain.models.seq2seq import PRESETS, Seq2SeqConfig

# A small BERT trained from scratch; every field of EncoderConfig can be overridden through `params`.
BERT_FROM_SCRATCH = dict(family="bert", hidden_size=256, num_layers=4, num_heads=4, mlp_dim=1024)
# How a checkpoint's encoder runs (its sizes stay): rematerialization, scanned blocks, the attention kernel.
SWITCHES = ("remat", "scan_layers", "attention")


def masked_lm_model(name: str, train_data: Any = None, val_data: Any = None, *, preproc: Any = None,
                    params: dict[str, Any] | None = None, seed: int = 0, verbose: int = 1) -> Model:
    """A masked-LM model for the data of `lm_from_files(..., objective='mlm')`.

    Args:
      name: 'bert' (from scratch, sized by `params`: num_layers, hidden_size, num_heads, mlp_dim, ...),
        or a pretrained encoder ('minilm', a local Hugging Face-format folder of any BERT-family
        checkpoint) to continue pretraining; a checkpoint saved by *ForMaskedLM keeps its head.
        Either takes `params={'remat': 'none' | 'full' | 'dots', 'scan_layers': True}`.
      preproc: the LMPreprocessor (default: train_data's); a checkpoint must share its tokenizer.
    """
    preproc = preproc or getattr(train_data, "preproc", None)
    if preproc is None:
        raise FlaxtrainError("a masked-LM model takes its vocabulary from the data: pass train_data from lm_from_files")
    overrides = dict(params or {})
    if name == "bert":
        fields = {f.name for f in dataclasses.fields(EncoderConfig)}
        bad = next((k for k in overrides if k not in fields), None)
        if bad is not None:
            raise FlaxtrainError(f"unknown bert config key {bad!r}{nearest(bad, fields)}")
        encoder = EncoderConfig(**{**BERT_FROM_SCRATCH, "vocab_size": preproc.vocab_size, "pad_id": preproc.pad_id,
                                   "max_positions": max(512, preproc.row_length), **overrides})
        if encoder.hidden_size % encoder.num_heads:
            raise FlaxtrainError(f"hidden_size {encoder.hidden_size} does not split into {encoder.num_heads} heads: "
                                 "use a multiple of num_heads")
        config = models.make_config("masked_lm", encoder=encoder)
        weights = init_model_params(models.build_model("masked_lm", config), seed)
    else:
        sizes = sorted(set(overrides) - set(SWITCHES))
        if sizes:
            raise FlaxtrainError(f"{name!r} keeps its checkpoint's sizes: drop params {sizes}")
        encoder, pretrained, tokenizer, _ = load_encoder(name, task="mlm", maxlen=preproc.row_length)
        if tokenizer.get_vocab() != preproc.tokenizer.get_vocab():
            raise FlaxtrainError(f"{name!r} reads its own word pieces: build the data with lm_from_files(..., "
                                 f"tokenizer={name!r})")
        encoder = dataclasses.replace(encoder, **overrides)
        if encoder.scan_layers and not encoder.share_layers:  # the checkpoint's blocks, stacked for nn.scan
            stacked = stack_layers(jax.device_get(pretrained["encoder"]), encoder.num_layers)
            pretrained = {**pretrained, "encoder": jax.tree.map(jnp.asarray, stacked)}
        config = models.make_config("masked_lm", encoder=encoder)
        weights = with_pretrained_head(init_model_params(models.build_model("masked_lm", config), seed, skip=("encoder",)),
                                       pretrained,
                                       checkpoint=str(name), head="masked-LM", verbose=bool(verbose))
    model = Model("masked_lm", config, weights, preproc, train_data=train_data, val_data=val_data)
    if verbose:
        print(repr(model))
    return model


def span_corruption_model(name: str, train_data: Any = None, val_data: Any = None, *, preproc: Any = None,
                          params: dict[str, Any] | None = None, seed: int = 0, verbose: int = 1) -> Model:
    """A T5 for the data of `lm_from_files(..., objective='span_corruption')`: 't5' from scratch (sizes in
    `params`: num_layers, num_decoder_layers, hidden_size, num_heads, head_dim, mlp_dim, ...), or a local
    T5 checkpoint folder to continue pretraining (it must share the data's tokenizer). Either takes
    `params={'remat': 'none' | 'full' | 'dots', 'scan_layers': True}`."""
    preproc = preproc or getattr(train_data, "preproc", None)
    if preproc is None:
        raise FlaxtrainError("a span-corruption model takes its vocabulary from the data: pass train_data from lm_from_files")
    overrides = dict(params or {})
    if name == "t5":
        fields = {f.name for f in dataclasses.fields(Seq2SeqConfig)}
        bad = next((k for k in overrides if k not in fields), None)
        if bad is not None:
            raise FlaxtrainError(f"unknown t5 config key {bad!r}{nearest(bad, fields)}")
        config = Seq2SeqConfig(**{**PRESETS["t5"], "vocab_size": preproc.vocab_size, "pad_id": preproc.pad_id,
                                  "eos_id": preproc.eos_id, "decoder_start_id": preproc.pad_id, **overrides})
        weights = init_model_params(models.build_model("span_corruption", config), seed)
    elif Path(name).is_dir():
        sizes = sorted(set(overrides) - set(SWITCHES))
        if sizes:
            raise FlaxtrainError(f"{name!r} keeps its checkpoint's sizes: drop params {sizes}")
        config, weights, tokenizer, _ = hub.load_seq2seq(name)
        if config.family != "t5" or tokenizer.get_vocab() != preproc.tokenizer.get_vocab():
            raise FlaxtrainError(f"span corruption continues a T5 checkpoint with the data's own tokenizer: build the "
                                 f"data with lm_from_files(..., tokenizer={name!r})")
        config = dataclasses.replace(config, **overrides)
        if config.scan_layers:  # the checkpoint's blocks, stacked for nn.scan
            weights = jax.tree.map(jnp.asarray, stack_blocks(jax.device_get(weights), config))
    else:
        raise FlaxtrainError(f"span corruption trains 't5' from scratch or continues a local T5 folder, not {name!r}")
    model = Model("span_corruption", config, weights, preproc, train_data=train_data, val_data=val_data)
    if verbose:
        print(repr(model))
    return model
