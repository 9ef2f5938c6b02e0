"""`Transformer`: ktrain's preprocessor-and-model-maker for pretrained encoders, on flaxtrain's Encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flaxtrain import hub, models
from flaxtrain.api.model import Model
from flaxtrain.api.weights import init_model_params, load_encoder, with_pretrained_head
from flaxtrain.data import TextDataset, TextPreprocessor
from flaxtrain.data.preprocess import infer_class_names, is_regression_targets
from flaxtrain.errors import FlaxtrainError


class Transformer:
    """A pretrained encoder checkpoint with its tokenizer: encodes texts and builds classifiers.

        t = flaxtrain.text.Transformer('minilm', maxlen=128, class_names=['neg', 'pos'])
        trn = t.preprocess_train(x_train, y_train); val = t.preprocess_test(x_test, y_test)
        model = t.get_classifier()

    Args:
      model_name: 'minilm' or a local Hugging Face-format folder (config.json, model.safetensors,
        tokenizer.json) of a BERT, DistilBERT, RoBERTa, ALBERT or XLM-R encoder.
      maxlen: longest token sequence, special tokens included (at most the model's positions).
      class_names: label values in class order (default: the sorted labels of preprocess_train,
        or the label names of a checkpoint fine-tuned for sequence classification when its
        `id2label` names them and the labels are among them). Without class_names, float labels
        given to preprocess_train make a regression preprocessor (then use get_regression_model).

    A checkpoint saved from a *ForSequenceClassification model keeps its trained head when it has
    as many outputs as there are classes (as transformers' `from_pretrained(..., num_labels=n)`).
    """

    def __init__(self, model_name: str, maxlen: int = 128, class_names: Sequence[Any] | None = None):
        self.model_name = model_name
        self.encoder_config, pretrained, tokenizer, self.pad_id = load_encoder(model_name, task="sequence", maxlen=maxlen)
        self.encoder_params = pretrained["encoder"]
        self._pretrained = pretrained  # the encoder and, when fine-tuned, its classification head
        self.checkpoint_classes = _named_labels(hub.read_hf_config(hub.resolve_checkpoint(model_name))) \
            if len(pretrained) > 1 else None
        self.tokenizer = tokenizer
        self.maxlen = maxlen
        self.class_names = list(class_names) if class_names else None
        self.preproc: TextPreprocessor | None = None

    def get_classes(self) -> list[Any]:
        """The class names in class-index order (ktrain's `get_classes`)."""
        if self.class_names is None:
            if self.preproc is not None and self.preproc.regression:
                raise FlaxtrainError("this preprocessor takes regression targets: it has no classes")
            if self.checkpoint_classes is None:
                raise FlaxtrainError("class names unknown: call preprocess_train first or pass class_names")
            return list(self.checkpoint_classes)
        return list(self.class_names)

    def preprocessor(self) -> TextPreprocessor:
        """The TextPreprocessor that encodes texts for this checkpoint (built from the class names
        when preprocess_train has not run); `get_predictor(model, preproc=t)` takes the Transformer itself."""
        return self._preprocessor(None)

    def _preprocessor(self, labels: Any | None, regression: bool = False) -> TextPreprocessor:
        if self.preproc is None:
            regression = regression or (self.class_names is None and labels is not None and is_regression_targets(labels))
            if self.class_names is None and not regression:
                seen = None if labels is None else infer_class_names(labels)
                if self.checkpoint_classes is not None and (seen is None or set(seen) <= set(self.checkpoint_classes)):
                    self.class_names = list(self.checkpoint_classes)  # the fine-tuned head's own label order
                elif seen is None:
                    raise FlaxtrainError("class names unknown: call preprocess_train first or pass class_names")
                else:
                    self.class_names = seen
            if not regression and len(self.class_names) < 2:
                raise FlaxtrainError(f"a classifier needs two or more classes, got {self.class_names}")
            self.preproc = TextPreprocessor(self.tokenizer, maxlen=self.maxlen,
                                            class_names=None if regression else self.class_names,
                                            pad_id=self.pad_id, add_special_tokens=True)
        return self.preproc

    def preprocess_train(self, texts: Sequence[str], labels: Any, verbose: int = 1) -> TextDataset:
        """Encodes a labelled training set."""
        data = self._preprocessor(labels).preprocess_train(texts, labels)
        if verbose:
            targets = "regression targets" if self.preproc.regression else f"{len(self.class_names)} classes"
            print(f"{len(data)} training texts, {targets}, maxlen {self.maxlen} word pieces")
        return data

    def preprocess_test(self, texts: Sequence[str], labels: Any | None = None, verbose: int = 1) -> TextDataset:
        """Encodes a validation or test set (labels optional)."""
        del verbose
        return self._preprocessor(labels).preprocess_test(texts, labels)

    def get_classifier(self, seed: int = 0, verbose: int = 1) -> Model:
        """The pretrained encoder with its sequence-classification head, as a flaxtrain Model: the
        checkpoint's fine-tuned head when it has one with as many outputs as classes, else a new one."""
        preproc = self._preprocessor(None)
        if preproc.regression:
            raise FlaxtrainError("the training labels are float targets: use get_regression_model(), "
                                 "or pass class_names for a classifier")
        return self._model(preproc, seed, verbose)

    def get_regression_model(self, seed: int = 0, verbose: int = 1) -> Model:
        """The pretrained encoder with a one-output head trained on squared error, as a flaxtrain Model
        (a checkpoint's fine-tuned one-output head is kept)."""
        if self.preproc is not None and not self.preproc.regression:
            raise FlaxtrainError(f"this preprocessor has classes {self.class_names}: use get_classifier(), "
                                 "or pass float targets to preprocess_train of a Transformer without class_names")
        if self.class_names is not None:
            raise FlaxtrainError("a regression model takes float targets, not class_names: build the Transformer without them")
        return self._model(self._preprocessor(None, regression=True), seed, verbose)

    def _model(self, preproc: TextPreprocessor, seed: int, verbose: int) -> Model:
        config = models.make_config("transformer", encoder=self.encoder_config, num_classes=preproc.num_classes)
        fresh = init_model_params(models.build_model("transformer", config), seed, skip=("encoder",))
        params = with_pretrained_head(fresh, self._pretrained, checkpoint=str(self.model_name), head="sequence-classification",
                                      verbose=bool(verbose))
        return Model("transformer", config, params, preproc)


def _named_labels(hf: dict[str, Any]) -> list[str] | None:
    """A fine-tuned checkpoint's label names in id order, or None when they are transformers' placeholders."""
    id2label = hf.get("id2label") or {}
    try:
        names = [id2label[key] for key in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if not names or all(str(name) == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names

