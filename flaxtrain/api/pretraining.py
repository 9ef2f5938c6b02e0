"""Pretraining models for `get_model`: a BERT-family encoder with its masked-LM head, from scratch
('bert') or continued from a checkpoint (its task, loss and predictor: flaxtrain/tasks/masked_lm.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from flaxtrain import models
from flaxtrain.api.model import Model
from flaxtrain.api.weights import init_model_params, load_encoder, with_pretrained_head
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.models.encoder import EncoderConfig

# A small BERT trained from scratch; every field of EncoderConfig can be overridden through `params`.
BERT_FROM_SCRATCH = dict(family="bert", hidden_size=256, num_layers=4, num_heads=4, mlp_dim=1024)


def masked_lm_model(name: str, train_data: Any = None, val_data: Any = None, *, preproc: Any = None,
                    params: dict[str, Any] | None = None, seed: int = 0, verbose: int = 1) -> Model:
    """A masked-LM model for the data of `lm_from_files(..., objective='mlm')`.

    Args:
      name: 'bert' (from scratch, sized by `params`: num_layers, hidden_size, num_heads, mlp_dim, ...),
        or a pretrained encoder ('minilm', a local Hugging Face-format folder of any BERT-family
        checkpoint) to continue pretraining; a checkpoint saved by *ForMaskedLM keeps its head.
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
        if overrides:
            raise FlaxtrainError(f"{name!r} keeps its checkpoint's sizes: drop params {sorted(overrides)}")
        encoder, pretrained, tokenizer, _ = load_encoder(name, task="mlm", maxlen=preproc.row_length)
        if tokenizer.get_vocab() != preproc.tokenizer.get_vocab():
            raise FlaxtrainError(f"{name!r} reads its own word pieces: build the data with lm_from_files(..., "
                                 f"tokenizer={name!r})")
        config = models.make_config("masked_lm", encoder=encoder)
        weights = with_pretrained_head(init_model_params(models.build_model("masked_lm", config), seed), pretrained,
                                       checkpoint=str(name), head="masked-LM", verbose=bool(verbose))
    model = Model("masked_lm", config, weights, preproc, train_data=train_data, val_data=val_data)
    if verbose:
        print(repr(model))
    return model
