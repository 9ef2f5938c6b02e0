"""Named-entity recognition: `sequence_tagger` (ktrain's name; its task, predictor and loss: flaxtrain/tasks/tagging.py)."""

from __future__ import annotations

from typing import Any

from flaxtrain import models
from flaxtrain.api.model import Model
from flaxtrain.api.weights import init_model_params, load_encoder, with_pretrained_head
from flaxtrain.data.entities import EntityPreprocessor
from flaxtrain.errors import FlaxtrainError
from flaxtrain.tasks.tagging import TaggerPredictor

__all__ = ["sequence_tagger", "TaggerPredictor"]

BILSTM = "bilstm"


def sequence_tagger(name: str, preproc: EntityPreprocessor, *, use_crf: bool = False, maxlen: int | None = None,
                    seed: int = 0, verbose: int = 1, **params: Any) -> Model:
    """A sequence tagger for the tags of `preproc` (from an `entities_from_*` loader).

    Args:
      name: 'bilstm' (word vectors + BiLSTM, trained from scratch on the loader's word vocabulary),
        or a pretrained encoder: 'minilm', 'bert' or the path of a Hugging Face-format checkpoint
        (config.json + safetensors + tokenizer.json) of any supported family. A checkpoint saved by
        `*ForTokenClassification` with the same tags keeps its head.
      preproc: the EntityPreprocessor; with a pretrained encoder it switches to the encoder's
        tokenizer (so the datasets built with it re-encode into word pieces on next use).
      use_crf: put a linear-chain CRF over the word scores (trained by its log-likelihood, decoded
        with Viterbi).
      maxlen: longest word-piece sequence (default: the preprocessor's).
      seed: init seed of the new layers.
      params: BiLSTM sizes (embed_dim, hidden_dim, dropout_rate).
    """
    if not isinstance(preproc, EntityPreprocessor):
        raise FlaxtrainError(f"sequence_tagger needs the preprocessor of an entities_from_* loader, not {type(preproc).__name__}")
    if maxlen is not None:
        preproc.maxlen = int(maxlen)
        preproc.tokenizer.enable_truncation(max_length=int(maxlen))
    num_tags = preproc.num_classes
    if name == BILSTM:
        config = models.make_config("sequence_tagger", num_classes=num_tags, use_crf=use_crf,
                                    vocab_size=preproc.vocab_size, pad_id=preproc.pad_id, **params)
        model = Model("sequence_tagger", config, init_model_params(models.build_model("sequence_tagger", config), seed),
                      preproc)
    else:
        if params:
            raise FlaxtrainError(f"{sorted(params)} are BiLSTM sizes; a pretrained encoder keeps its own: drop them")
        encoder_config, pretrained, tokenizer, pad_id = load_encoder(name, task="token", maxlen=preproc.maxlen)
        preproc.tokenizer, preproc.pad_id, preproc.add_special_tokens = tokenizer, pad_id, True
        tokenizer.enable_truncation(max_length=preproc.maxlen)
        config = models.make_config("sequence_tagger", num_classes=num_tags, use_crf=use_crf, encoder=encoder_config)
        params = with_pretrained_head(init_model_params(models.build_model("sequence_tagger", config), seed, skip=("encoder",)),
                                      pretrained,
                                      checkpoint=str(name), head="token-classification", verbose=bool(verbose))
        model = Model("sequence_tagger", config, params, preproc)
    if verbose:
        print(f"{model!r}{' with a CRF' if use_crf else ''}")
    return model
