"""A whole run from a config: load data, build the model, fit, evaluate on the test split, save.

`data.name` is a named set of `flaxtrain.text.load_data` (classification), or a named corpus
(`CORPORA`: pretraining on streamed files with `data.objective`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from flaxtrain import models
from flaxtrain.api.factory import get_model
from flaxtrain.api.learner import get_learner
from flaxtrain.api.predictor import Predictor, get_predictor
from flaxtrain.data import lm_from_files, load_data, train_tokenizer, wikitext2
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.models.seq2seq import Seq2SeqConfig

# Keys each config section may hold (the model section is checked against the model's config dataclass).
SECTION_KEYS = {
    "data": {"name", "data_dir", "download", "maxlen", "max_features", "val_pct", "max_examples", "objective",
             "tokenizer", "vocab_size", "packing", "whole_word_masking"},
    "optim": {"lr", "weight_decay", "clip_norm"},
    "train": {"epochs", "max_steps", "schedule", "batch_size", "swa_from", "seed", "workdir", "grad_accum_steps",
              "precision", "checkpoint_every", "resume", "tensorboard", "compilation_cache"},
    "mesh": {"strategy", "data", "fsdp", "tensor"},
}
# Pretraining corpora: name -> (train, validation, test) files.
CORPORA = {"wikitext2": lambda: (wikitext2("train"), wikitext2("valid"), wikitext2("test"))}
# Networks pretrained from scratch, sized by the model section.
FROM_SCRATCH = {"bert": EncoderConfig, "t5": Seq2SeqConfig}
SCHEDULES = ("constant", "onecycle")
OPTIONAL_SECTIONS = {"mesh"}  # defaults: strategy 'auto' over every device


def mesh_arguments(config: Any) -> dict[str, Any]:
    """get_learner's strategy/mesh from the config's mesh section (data <= 0: the remaining devices)."""
    section = config.get("mesh")
    if section is None:
        return {"strategy": "auto"}
    strategy = section.get("strategy", "auto")
    fsdp, tensor, data = section.get("fsdp", 1), section.get("tensor", 1), section.get("data", 0)
    if strategy in ("pmap", "single"):
        if (fsdp, tensor) != (1, 1) or data > 0:
            raise FlaxtrainError(f"mesh.strategy {strategy!r} takes no mesh sizes: set mesh.strategy='spmd' to use them")
        return {"strategy": strategy}
    if data <= 0:
        import jax

        data = max(jax.device_count() // (fsdp * tensor), 1)
    return {"strategy": strategy, "mesh": (data, fsdp, tensor)}


def check_config(config: Any) -> None:
    """Fails with a one-line message naming any unknown section or key, and the nearest valid one."""
    sections = {"model", *SECTION_KEYS}
    for section in config.keys():
        if section not in sections:
            raise FlaxtrainError(f"unknown config section {section!r}{nearest(section, sections)}")
    for section, keys in SECTION_KEYS.items():
        if section not in config:
            if section in OPTIONAL_SECTIONS:
                continue
            raise FlaxtrainError(f"config lacks the {section!r} section")
        for key in config[section].keys():
            if key not in keys:
                raise FlaxtrainError(f"unknown config key {section}.{key}{nearest(key, keys)}")
    if "name" not in config.model:
        raise FlaxtrainError("config lacks model.name: name a registered model, e.g. 'textcnn'")
    model_kwargs = {k: v for k, v in config.model.items() if k not in ("name", "word_vectors")}
    if config.model.name in models.MODELS:
        models.make_config(config.model.name, vocab_size=1, num_classes=2, **model_kwargs)
    elif config.model.name in FROM_SCRATCH:
        fields = {f.name for f in dataclasses.fields(FROM_SCRATCH[config.model.name])}
        bad = next((k for k in model_kwargs if k not in fields), None)
        if bad is not None:
            raise FlaxtrainError(f"unknown config key model.{bad}{nearest(bad, fields)}")
    elif model_kwargs:
        raise FlaxtrainError(f"model {config.model.name!r} is pretrained: its sizes come from its checkpoint, "
                             f"drop model.{next(iter(model_kwargs))}")


def _limit(data: Any, count: int) -> Any:
    if count <= 0:
        return data
    return dataclasses.replace(data, train_x=data.train_x[:count], train_y=data.train_y[:count])


def _text_data(config: Any, log: Any) -> tuple[Any, tuple]:
    """(model, test inputs for predictor.evaluate) of a named classification set."""
    data = _limit(load_data(config.data.name, train=True, data_dir=config.data.data_dir, download=config.data.get("download", False),
                            val_pct=config.data.val_pct),
                  config.data.max_examples)
    test = load_data(config.data.name, train=False, data_dir=config.data.data_dir, download=config.data.get("download", False))
    word_vectors = config.model.get("word_vectors")
    model_kwargs = {k: v for k, v in config.model.items() if k not in ("name", "word_vectors")}
    if word_vectors:
        model_kwargs.pop("embed_dim", None)  # the vectors' width
    model = get_model(config.model.name, train_data=data, params=model_kwargs, maxlen=config.data.maxlen,
                      max_features=config.data.max_features, word_vectors=word_vectors, seed=config.train.seed)
    log(f"{config.data.name}: {len(data.train_x)} train / {len(data.val_x)} validation / {len(test.val_x)} test texts")
    return model, (test.val_x, test.val_y)


def _corpus_data(config: Any, log: Any) -> tuple[Any, tuple]:
    """(model, test inputs for predictor.evaluate) of a named pretraining corpus, streamed from its files."""
    train_files, val_files, test_files = CORPORA[config.data.name]()
    tokenizer = config.data.get("tokenizer", "minilm")
    if tokenizer in ("wordpiece", "unigram"):  # a new vocabulary of the training files, kept in the workdir
        log(f"training a {tokenizer} tokenizer of {config.data.vocab_size} pieces on {config.data.name}")
        trained = train_tokenizer(train_files, vocab_size=config.data.vocab_size, kind=tokenizer,
                                  max_documents=config.data.get("max_examples", 0) or None)
        Path(config.train.workdir).mkdir(parents=True, exist_ok=True)
        tokenizer = Path(config.train.workdir) / "tokenizer.json"
        trained.save(str(tokenizer))
    trn, val, _ = lm_from_files(train_files, val_files, tokenizer=tokenizer,
                                maxlen=config.data.maxlen, objective=config.data.get("objective", "mlm"),
                                packing=config.data.get("packing", True),
                                whole_word_masking=config.data.get("whole_word_masking", False),
                                max_documents=config.data.get("max_examples", 0) or None, verbose=0)
    model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
    model = get_model(config.model.name, train_data=trn, val_data=val, params=model_kwargs or None, seed=config.train.seed)
    log(f"{config.data.name}: {len(trn)} train / {len(val)} validation rows of {trn.preproc.row_length} tokens")
    limit = config.data.get("max_examples", 0) or None
    return model, ([test_files],) if limit is None else ([test_files], limit)


def train_from_config(config: Any, *, verbose: bool = True) -> tuple[Predictor, dict[str, float], Path]:
    """Trains the config's model on its dataset, reports test metrics and saves a predictor.

    Returns:
      (predictor, test metrics with 'loss', path of the saved predictor).
    """
    check_config(config)
    log = print if verbose else (lambda *_: None)
    if config.train.get("compilation_cache", True):
        from flaxtrain.compile_cache import enable_compilation_cache

        enable_compilation_cache()
    model, test_inputs = (_corpus_data if config.data.name in CORPORA else _text_data)(config, log)
    log(repr(model))
    learner = get_learner(model, model.train_data, model.val_data, batch_size=config.train.batch_size,
                          weight_decay=config.optim.weight_decay, clip_norm=config.optim.clip_norm, seed=config.train.seed,
                          grad_accum_steps=config.train.get("grad_accum_steps", 1),
                          precision=config.train.get("precision", "float32"), **mesh_arguments(config),
                          log_dir=Path(config.train.workdir) / "tensorboard" if config.train.get("tensorboard") else None)
    log(f"training on {learner.strategy.describe()}, {learner.precision}")
    checkpoints = config.train.get("checkpoint_every", -1)
    schedule, max_steps = config.train.get("schedule", "constant"), config.train.get("max_steps", 0) or None
    if schedule not in SCHEDULES:
        raise FlaxtrainError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if max_steps and schedule != "onecycle":
        raise FlaxtrainError("train.max_steps runs with train.schedule='onecycle': set it, or train by epochs")
    run = dict(swa_from=config.train.get("swa_from") or None, verbose=verbose,
               checkpoint_dir=None if checkpoints < 0 else Path(config.train.workdir) / "checkpoints",
               checkpoint_every=checkpoints if checkpoints > 0 else None, resume=config.train.get("resume", False))
    if schedule == "onecycle":
        learner.fit_onecycle(config.optim.lr, None if max_steps else config.train.epochs, max_steps=max_steps, **run)
    else:
        learner.fit(config.optim.lr, config.train.epochs, **run)
    predictor = get_predictor(model, batch_size=max(config.train.batch_size, 32))
    loss, metrics = predictor.evaluate(*test_inputs)
    metrics = {"loss": loss, **metrics}
    log("test  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    path = predictor.save(Path(config.train.workdir) / "predictor",
                          extra={"data": {"name": config.data.name}, "test_metrics": metrics})
    log(f"saved predictor to {path}")
    return predictor, metrics, path
