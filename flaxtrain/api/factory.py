"""`get_model`: a model for the task of its training data, sized from that data (ktrain's `text_classifier` too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn

import jax.numpy as jnp

from flaxtrain import hub, models, tasks
from flaxtrain.api import learner as learner_lib
from flaxtrain.api.custom import custom_model
from flaxtrain.api.model import Model
from flaxtrain.api.pretraining import masked_lm_model, span_corruption_model
from flaxtrain.api.qa import qa_model
from flaxtrain.api.seq2seq import seq2seq_model
from flaxtrain.api.tagging import sequence_tagger
from flaxtrain.api.transformer import Transformer
from flaxtrain.api.weights import init_model_params
from flaxtrain.data import LoadedData, TextDataset, TextPreprocessor
from flaxtrain.data.loaders import MAX_FEATURES, MAXLEN
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.tasks.classification import TextClassification
from flaxtrain.tasks.masked_lm import MaskedLanguageModeling
from flaxtrain.tasks.qa import QuestionAnswering
from flaxtrain.tasks.regression import TextRegression
from flaxtrain.tasks.seq2seq import Seq2SeqGeneration
from flaxtrain.tasks.span_corruption import SpanCorruption
from flaxtrain.tasks.tagging import SequenceTagging


def get_model(
    name: str,
    train_data: LoadedData | TextDataset | None = None,
    val_data: TextDataset | None = None,
    *,
    preproc: TextPreprocessor | None = None,
    params: dict[str, Any] | None = None,
    maxlen: int = MAXLEN,
    max_features: int = MAX_FEATURES,
    word_vectors: str | None = None,
    seed: int = 0,
    task: str | None = None,
    label_smoothing: float = 0.0,
    lora: dict[str, Any] | None = None,
) -> Model:
    """Builds model `name` for the task of its training data, sized from that data.

    Args:
      name: a registered model ('textcnn', 'fasttext'), or a pretrained encoder ('minilm' or a local
        Hugging Face-format folder) that gets a new classification head; for the other tasks, what
        their builders take (`sequence_tagger`: 'bilstm' or an encoder; `qa_model`: an encoder;
        seq2seq: 't5', 'bart', 'marian', 'bert2bert' or a checkpoint folder).
      train_data: a `load_data` result (raw texts: a tokenizer is trained on them) or the train set
        of a `texts_from_*` loader; a tagged, QA or text-pair train set picks that task.
      val_data: validation set (default: the held-out part of a `load_data` result).
      preproc: the preprocessor (default: the one of `train_data`).
      params: model config overrides, e.g. {'dropout': 0.5, 'embed_dim': 300}.
      maxlen: longest token sequence kept (for `load_data` input).
      max_features: vocabulary size (for `load_data` input).
      word_vectors: a pretrained checkpoint ('minilm' or a local Hugging Face-format folder) whose
        word-piece embeddings initialise the model's embedding table; its tokenizer then encodes
        the texts (Kim 2014's "non-static" variant: the vectors are fine-tuned).
      seed: initialisation seed.
      task: 'translation' or 'summarization' for an encoder-decoder ('t5', 'bart', 'marian',
        'bert2bert' or a T5/BART/Marian checkpoint folder; see api/seq2seq.py), implied by text-pair data.
      label_smoothing: encoder-decoders: target smoothing of the training loss.
      lora: LoRA adapters to add, as `Model.add_lora`'s arguments ({'rank': 8, 'alpha': 16,
        'targets': ('query', 'value')}); a Learner on the model then trains only them and the task head.
    """
    preproc = tasks.as_preprocessor(preproc)
    chosen = tasks.for_data(train_data, preproc) or tasks.named(task or "classification")
    if type(chosen) not in BUILDERS:
        raise FlaxtrainError(f"get_model has no builder for {chosen.name} models yet: build one with its task's own function")
    model = BUILDERS[type(chosen)](name, train_data, val_data, preproc=preproc, params=params, maxlen=maxlen,
                                   max_features=max_features, word_vectors=word_vectors, seed=seed, task=task,
                                   label_smoothing=label_smoothing)
    if lora is not None:
        known = ("rank", "alpha", "targets", "dropout")
        unknown = [key for key in lora if key not in known]
        if unknown:
            raise FlaxtrainError(f"lora has no setting {unknown[0]!r}{nearest(unknown[0], known)}: "
                                 f"it takes {', '.join(known)}")
        model.add_lora(**lora, seed=seed)
    return model


def get_learner(model: Any, train_data: Any = None, val_data: Any = None, batch_size: int | str = 32,
                eval_batch_size: int | None = None, *, loss: str | Callable[..., Any] | None = None,
                **kwargs: Any) -> learner_lib.Learner:
    """ktrain's `get_learner(model, train_data, val_data, batch_size)`, for a flaxtrain model or any
    `flax.linen.Module` of your own (api/custom.py): `__call__(input_ids [b, t], *, deterministic)` ->
    logits [b, c] (or values [b, 1] for regression data), trained with `loss='classification'`,
    `'regression'`, or `loss(outputs, batch) -> per-example losses [b]`. The Learner's keyword arguments
    (weight_decay, strategy, mesh, seed, ...) follow."""
    if isinstance(model, nn.Module):
        model = custom_model(model, train_data, val_data, loss=loss, seed=kwargs.get("seed", 0))
    elif loss is not None:
        raise FlaxtrainError("loss= is for custom modules: a flaxtrain model trains with its task's own loss")
    return learner_lib.get_learner(model, train_data, val_data, batch_size, eval_batch_size, **kwargs)


def _classifier(name: str, train_data: Any, val_data: TextDataset | None, *, preproc: TextPreprocessor | None,
                params: dict[str, Any] | None, maxlen: int, max_features: int, word_vectors: str | None, seed: int,
                task: str | None, label_smoothing: float) -> Model:
    """get_model for text classification and regression: a registered network sized from the data, or a
    pretrained encoder with a new head."""
    del label_smoothing
    if task is not None and tasks.named(task).family != "text_classification":
        raise FlaxtrainError(f"task {task!r} needs data from {tasks.named(task).loaders}, not {type(train_data).__name__}")
    if name not in models.MODELS:
        return _pretrained_classifier(name, train_data, val_data, preproc=preproc, maxlen=maxlen, seed=seed)
    table = None
    if word_vectors is not None:
        table = hub.load_word_embeddings(word_vectors)
        tokenizer = hub.load_tokenizer(word_vectors)
        if preproc is None and isinstance(train_data, LoadedData):
            preproc = TextPreprocessor(tokenizer, maxlen=maxlen, class_names=train_data.class_names)
        own = preproc or getattr(train_data, "preproc", None)
        if own is None or own.tokenizer.get_vocab() != tokenizer.get_vocab() or own.vocab_size != table.shape[0]:
            raise FlaxtrainError(
                f"word_vectors {word_vectors!r} need texts encoded by their own tokenizer: pass load_data output, "
                "or a preprocessor built with TextPreprocessor(flaxtrain.hub.load_tokenizer(...), ...)"
            )
        asked = (params or {}).get("embed_dim", table.shape[1])
        if asked != table.shape[1]:
            raise FlaxtrainError(f"embed_dim {asked} differs from the {table.shape[1]}-wide word_vectors: drop embed_dim")
        params = {**(params or {}), "embed_dim": table.shape[1]}
    if isinstance(train_data, LoadedData):
        if not train_data.train_x:
            raise FlaxtrainError(f"{train_data.name} was loaded with train=False: pass load_data(..., train=True) to get_model")
        preproc = preproc or TextPreprocessor.fit(train_data.train_x, train_data.train_y, class_names=train_data.class_names,
                                                  maxlen=maxlen, max_features=max_features)
        train_set = preproc.preprocess_train(train_data.train_x, train_data.train_y)
        if val_data is None and train_data.val_x:
            val_data = preproc.preprocess_test(train_data.val_x, train_data.val_y)
    elif tasks.for_data(train_data) is not None:  # a texts_from_* set: the only task data that reaches here
        train_set = train_data
        preproc = preproc or train_data.preproc
    elif train_data is None and preproc is not None:
        train_set = None
    else:
        raise FlaxtrainError(
            f"train_data must come from flaxtrain.text.load_data or a texts_from_* loader, not {type(train_data).__name__}"
        )
    config = models.make_config(name, vocab_size=preproc.vocab_size, num_classes=preproc.num_classes, **(params or {}))
    module = models.build_model(name, config)
    weights = init_model_params(module, seed)
    if table is not None:
        weights = {**weights, "embed": {**weights["embed"], "embedding": jnp.asarray(table, weights["embed"]["embedding"].dtype)}}
    model = Model(name, config, weights, preproc, train_data=train_set, val_data=val_data)
    if table is not None:
        model.pretrained_parts = ("embed",)
    return model


def _pretrained_classifier(name: str, train_data: Any, val_data: TextDataset | None, *, preproc: TextPreprocessor | None,
                           maxlen: int, seed: int) -> Model:
    """get_model for a pretrained encoder name or checkpoint folder: encoder + classification head."""
    if name not in hub.PRETRAINED and not Path(name).is_dir():
        choices = [*models.MODELS, *hub.PRETRAINED]
        raise FlaxtrainError(f"unknown model {name!r}{nearest(name, choices)}; a local checkpoint folder works too")
    if isinstance(train_data, LoadedData):
        transformer = Transformer(name, maxlen=min(maxlen, 512), class_names=train_data.class_names)
        train_set = transformer.preprocess_train(train_data.train_x, train_data.train_y, verbose=0)
        if val_data is None and train_data.val_x:
            val_data = transformer.preprocess_test(train_data.val_x, train_data.val_y)
    elif tasks.for_data(train_data) is not None and train_data.preproc.add_special_tokens:
        transformer = Transformer(name, maxlen=train_data.preproc.maxlen, class_names=train_data.class_names)
        transformer.preproc, train_set = preproc or train_data.preproc, train_data
    else:
        raise FlaxtrainError(
            f"{name!r} needs texts encoded by its own tokenizer: pass load_data output, or data from "
            f"flaxtrain.text.Transformer({name!r}).preprocess_train"
        )
    model = transformer.get_classifier(seed=seed)
    model.train_data, model.val_data = train_set, val_data
    return model


def text_classifier(name: str, train_data: TextDataset, preproc: TextPreprocessor | None = None, *,
                    params: dict[str, Any] | None = None, seed: int = 0, verbose: int = 1) -> Model:
    """ktrain's `text_classifier(name, train_data, preproc)`: a classifier sized for this data."""
    model = get_model(name, train_data, preproc=preproc, params=params, seed=seed)
    if verbose:
        print(f"{name}: {model.num_params():,} params, {model.preproc.num_classes} classes")
    return model


def _seq2seq(name: str, train_data: Any, val_data: Any, *, preproc: Any, params: dict[str, Any] | None, seed: int,
             task: str | None, label_smoothing: float, **_: Any) -> Model:
    return seq2seq_model(name, train_data, val_data, task=task, preproc=preproc, params=params,
                         label_smoothing=label_smoothing, seed=seed)


def _masked_lm(name: str, train_data: Any, val_data: Any, *, preproc: Any, params: dict[str, Any] | None, seed: int,
               **_: Any) -> Model:
    return masked_lm_model(name, train_data, val_data, preproc=preproc, params=params, seed=seed, verbose=0)


def _span_corruption(name: str, train_data: Any, val_data: Any, *, preproc: Any, params: dict[str, Any] | None, seed: int,
                     **_: Any) -> Model:
    return span_corruption_model(name, train_data, val_data, preproc=preproc, params=params, seed=seed, verbose=0)


def _from_preprocessor(make: Any, *, sized: bool) -> Any:
    """A builder for a task whose model is made from its loader's preprocessor (taggers; QA, whose
    encoder keeps its checkpoint's sizes unless `sized`)."""

    def build(name: str, train_data: Any, val_data: Any, *, preproc: Any, params: dict[str, Any] | None, seed: int,
              **_: Any) -> Model:
        preproc = preproc or getattr(train_data, "preproc", None)
        if params and not sized:
            raise FlaxtrainError(f"{name!r} keeps its checkpoint's sizes: drop params {sorted(params)}")
        model = make(name, preproc, seed=seed, verbose=0, **(params or {}))
        model.train_data, model.val_data = train_data, val_data
        return model

    return build


# The model builder of each task (the tasks' own modules hold everything else about them).
BUILDERS: dict[type[tasks.Task], Any] = {
    TextClassification: _classifier,
    TextRegression: _classifier,
    SequenceTagging: _from_preprocessor(sequence_tagger, sized=True),
    QuestionAnswering: _from_preprocessor(qa_model, sized=False),
    Seq2SeqGeneration: _seq2seq,
    MaskedLanguageModeling: _masked_lm,
    SpanCorruption: _span_corruption,
}
