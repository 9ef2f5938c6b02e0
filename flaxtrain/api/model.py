"""Model: a registered network, its params and preprocessor; `get_model` builds one from training data."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub, models
from flaxtrain.data import LoadedData, TextDataset, TextPreprocessor
from flaxtrain.data.loaders import MAX_FEATURES, MAXLEN
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.train import (
    CompiledSteps,
    classification_loss,
    compile_steps,
    init_params,
    predict_step,
    regression_loss,
    regression_predict_step,
    seq2seq_loss,
    seq2seq_predict_step,
    span_loss,
    span_predict_step,
    tagging_loss,
    tagging_predict_step,
)


class Model:
    """A network with its params and preprocessor; the seed's `fit / evaluate / predict` live here.

    Attributes:
      name: registry name ('textcnn', 'fasttext').
      config: the model's frozen config dataclass.
      module: the linen module.
      params: current params (updated by every fit).
      preproc: the TextPreprocessor that encodes its inputs.
      train_data, val_data: the data `get_model` was given (used by `fit`).
    """

    def __init__(self, name: str, config: Any, params: Any, preproc: TextPreprocessor, *,
                 train_data: TextDataset | None = None, val_data: TextDataset | None = None):
        self.name = name
        self.config = config
        self.module = models.build_model(name, config)
        self.params = params
        self.preproc = preproc
        self.train_data = train_data
        self.val_data = val_data
        self._steps: CompiledSteps | None = None
        self._learner: Any = None
        self.label_smoothing = 0.0  # seq2seq: target smoothing of the training loss
        self.generation: dict[str, Any] = {}  # seq2seq: a checkpoint's decoding settings (transformers' names)

    @property
    def steps(self) -> CompiledSteps:
        """The jitted train/eval/predict steps, compiled once per model."""
        if self._steps is None:
            self._steps = compile_steps(self.module.apply, self.loss_fn, predict_fn=self.predict_fn)
        return self._steps

    @property
    def task(self) -> str:
        """The registry's task family: 'text_classification' or 'sequence_tagging'."""
        return models.get_entry(self.name).task

    @property
    def loss_fn(self) -> Any:
        """The train/eval loss: cross entropy (per text or per tagged word), the CRF likelihood, or
        squared error for a regression preprocessor."""
        if self.task == "sequence_tagging":
            return functools.partial(tagging_loss, use_crf=self.config.use_crf)
        if self.task == "question_answering":
            return span_loss
        if self.task == "seq2seq":
            return functools.partial(seq2seq_loss, label_smoothing=self.label_smoothing)
        return regression_loss if self.preproc.regression else classification_loss

    @property
    def predict_fn(self) -> Any:
        """The predict step: log-probabilities, float predictions for regression, or tag ids per word."""
        if self.task == "sequence_tagging":
            return functools.partial(tagging_predict_step, use_crf=self.config.use_crf)
        if self.task == "question_answering":
            return span_predict_step
        if self.task == "seq2seq":
            return seq2seq_predict_step
        return regression_predict_step if self.preproc.regression else predict_step

    @property
    def default_lr(self) -> float:
        if getattr(self.config, "encoder", None) is not None:  # fine-tuning a pretrained encoder
            return models.get_entry("transformer").default_lr
        return models.get_entry(self.name).default_lr

    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))

    # The seed's vocabulary: model.fit / model.evaluate / model.predict.
    def fit(self, epochs: int = 1, lr: float | None = None, batch_size: int = 32, verbose: int = 1) -> list[dict[str, float]]:
        """Trains on the data given to `get_model` (validating on its held-out part); returns the history."""
        from flaxtrain.api.learner import get_learner

        if self.train_data is None:
            raise FlaxtrainError("this model has no training data: use flaxtrain.get_learner(model, train_data=...)")
        if self._learner is None or self._learner.batch_size != batch_size:
            self._learner = get_learner(self, self.train_data, self.val_data, batch_size=batch_size)
        return self._learner.fit(lr or self.default_lr, epochs, verbose=verbose)

    def evaluate(self, x: Any, y: Any, batch_size: int = 32) -> tuple[float, dict[str, float]]:
        """(loss, {'acc', 'precision', 'recall', 'f1'}) on raw texts and labels; for translation and
        summarization, (loss, BLEU/chrF or ROUGE) on sources and targets."""
        from flaxtrain.api.predictor import get_predictor

        return get_predictor(self, batch_size=batch_size).evaluate(x, y)

    def predict(self, texts: str | list[str]) -> Any:
        """Class name of one text, or a list of class names for a list of texts."""
        from flaxtrain.api.predictor import get_predictor

        return get_predictor(self).predict(texts)

    def predict_proba(self, texts: str | list[str]) -> np.ndarray:
        """Class probabilities [c] of one text or [n, c] of a list."""
        from flaxtrain.api.predictor import get_predictor

        return get_predictor(self).predict_proba(texts)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.num_params():,} params, {self.preproc!r})"


_PAD_TOKENS = ("[PAD]", "<pad>")


def as_preprocessor(preproc: Any) -> Any:
    """The preprocessor itself, or the one a `flaxtrain.text.Transformer` holds: ktrain's code passes
    the Transformer wherever a preprocessor goes (`get_predictor(learner.model, preproc=t)`)."""
    from flaxtrain.api.transformer import Transformer  # it builds Models: imported here to avoid a cycle

    return preproc.preprocessor() if isinstance(preproc, Transformer) else preproc


def load_encoder(name_or_path: str, *, task: str | None, maxlen: int) -> tuple[Any, Any, Any, int]:
    """(EncoderConfig, params, tokenizer, pad id) of a pretrained encoder, checking that `maxlen`
    fits its positions (RoBERTa-style positions start after the pad id)."""
    config, params, tokenizer = hub.load_pretrained(name_or_path, task=task)
    limit = config.max_positions - (config.pad_id + 1 if config.roberta_positions else 0)
    if maxlen > limit:
        raise FlaxtrainError(f"maxlen {maxlen} exceeds the {limit} positions {name_or_path!r} was trained with: lower maxlen")
    pad_id = next((tokenizer.token_to_id(t) for t in _PAD_TOKENS if tokenizer.token_to_id(t) is not None), config.pad_id)
    return config, params, tokenizer, pad_id


def with_encoder(fresh: Any, pretrained: Any) -> dict[str, Any]:
    """Freshly initialised head-model params with the pretrained encoder's weights in 'encoder'."""
    params = dict(fresh)
    params["encoder"] = jax.tree.map(lambda new, old: new.astype(old.dtype), pretrained, params["encoder"])
    return params


def with_pretrained_head(fresh: Any, pretrained: dict[str, Any], *, checkpoint: str, head: str, verbose: bool = True) -> dict[str, Any]:
    """`fresh` params with the checkpoint's encoder and, when it has one that fits, its fine-tuned task head.

    A checkpoint saved from a *ForSequenceClassification (or token / QA) model keeps its trained head,
    as `from_pretrained(..., num_labels=n)` does in transformers; otherwise the new head stays and one
    line says why (no such head in the checkpoint, or one with other output sizes).

    Args:
      fresh: initialised params of the whole model ({'encoder': ..., head params}).
      pretrained: `hub.load_pretrained(..., task=...)` params: {'encoder': ..., head params if saved}.
      checkpoint: the checkpoint's name or path (for the message).
      head: what the head is, e.g. 'sequence-classification' (for the message).
    """
    params = with_encoder(fresh, pretrained["encoder"])
    saved = {name: value for name, value in pretrained.items() if name != "encoder"}
    reason = None
    if not saved:
        reason = "it holds none"
    else:
        shapes = lambda tree: {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}  # noqa: E731
        wanted, got = shapes({name: fresh[name] for name in saved}), shapes(saved)
        wrong = [key for key in wanted if got.get(key) != wanted[key]]
        if wrong or got.keys() != wanted.keys():
            key = wrong[0] if wrong else next(iter(got.keys() - wanted.keys()))
            there, here = got.get(key), wanted.get(key)
            reason = (f"its head has {there[-1]} outputs, this model needs {here[-1]}"
                      if there and here and there[:-1] == here[:-1] else
                      f"its head does not fit this model ({key}: {there} there, {here} here)")
    if reason is None:
        params.update(jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), saved, {n: fresh[n] for n in saved}))
    elif verbose:
        print(f"new {head} head on {checkpoint}: {reason} (the head trains from scratch)")
    return params


def init_model_params(module: Any, seed: int) -> Any:
    """Params of a token-id classifier initialised from `seed`."""
    sample = {"input_ids": jnp.zeros((1, 16), jnp.int32)}
    return jax.jit(lambda rng: init_params(module, sample, rng))(jax.random.key(seed))


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
) -> Model:
    """Builds model `name` sized from its training data.

    Args:
      name: a registered model ('textcnn', 'fasttext'), or a pretrained encoder ('minilm' or a local
        Hugging Face-format folder) that gets a new classification head.
      train_data: a `load_data` result (raw texts: a tokenizer is trained on them) or the train set
        of a `texts_from_*` loader.
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
    """
    from flaxtrain.data.seq2seq import Seq2SeqDataset

    preproc = as_preprocessor(preproc)
    if task in ("translation", "summarization") or isinstance(train_data, Seq2SeqDataset):
        from flaxtrain.api.seq2seq import seq2seq_model

        return seq2seq_model(name, train_data, val_data, task=task, preproc=preproc, params=params,
                             label_smoothing=label_smoothing, seed=seed)
    if task is not None and task != "classification":
        raise FlaxtrainError(f"unknown task {task!r}: use 'classification', 'translation' or 'summarization'")
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
    elif isinstance(train_data, TextDataset):
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
    return Model(name, config, weights, preproc, train_data=train_set, val_data=val_data)


def _pretrained_classifier(name: str, train_data: Any, val_data: TextDataset | None, *, preproc: TextPreprocessor | None,
                           maxlen: int, seed: int) -> Model:
    """get_model for a pretrained encoder name or checkpoint folder: encoder + classification head."""
    from flaxtrain.api.transformer import (
        Transformer,  # it builds Models: imported here to avoid a cycle
    )

    if name not in hub.PRETRAINED and not Path(name).is_dir():
        choices = [*models.MODELS, *hub.PRETRAINED]
        raise FlaxtrainError(f"unknown model {name!r}{nearest(name, choices)}; a local checkpoint folder works too")
    if isinstance(train_data, LoadedData):
        transformer = Transformer(name, maxlen=min(maxlen, 512), class_names=train_data.class_names)
        train_set = transformer.preprocess_train(train_data.train_x, train_data.train_y, verbose=0)
        if val_data is None and train_data.val_x:
            val_data = transformer.preprocess_test(train_data.val_x, train_data.val_y)
    elif isinstance(train_data, TextDataset) and train_data.preproc.add_special_tokens:
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
