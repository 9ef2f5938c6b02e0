"""Extractive question answering: `qa_model` (its task, predictor and loss: flaxtrain/tasks/qa.py)."""

from __future__ import annotations

from flaxtrain import models
from flaxtrain.api.model import Model
from flaxtrain.api.weights import init_model_params, load_encoder, with_pretrained_head
from flaxtrain.data.qa import QAPreprocessor
from flaxtrain.errors import FlaxtrainError
from flaxtrain.tasks.qa import QAPredictor

__all__ = ["qa_model", "QAPredictor"]


def qa_model(name_or_path: str, preproc: QAPreprocessor, *, seed: int = 0, verbose: int = 1) -> Model:
    """A span start/end head on a pretrained encoder ('minilm', 'bert' or a Hugging Face-format
    checkpoint path of any supported family); a checkpoint fine-tuned by *ForQuestionAnswering keeps
    its head. Gives `preproc` the encoder's tokenizer (datasets re-window on next use)."""
    if not isinstance(preproc, QAPreprocessor):
        raise FlaxtrainError(f"qa_model needs the preprocessor of qa_from_squad / qa_from_array, not {type(preproc).__name__}")
    encoder_config, pretrained, tokenizer, pad_id = load_encoder(name_or_path, task="span", maxlen=preproc.maxlen)
    preproc.tokenizer, preproc.pad_id = tokenizer, pad_id
    config = models.make_config("qa", encoder=encoder_config)
    params = with_pretrained_head(init_model_params(models.build_model("qa", config), seed, skip=("encoder",)), pretrained,
                                  checkpoint=str(name_or_path), head="question-answering", verbose=bool(verbose))
    model = Model("qa", config, params, preproc)
    if verbose:
        print(repr(model))
    return model
