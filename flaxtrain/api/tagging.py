"""Named-entity recognition: `sequence_tagger` (ktrain's name) and the tagger's Predictor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flaxtrain import models
from flaxtrain.api.model import Model, init_model_params, load_encoder, with_pretrained_head
from flaxtrain.api.predictor import Predictor
from flaxtrain.data.entities import (
    EntityPreprocessor,
    TaggedDataset,
    entities,
    split_words,
)
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import entity_metrics
from flaxtrain.train import loop

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
        params = with_pretrained_head(init_model_params(models.build_model("sequence_tagger", config), seed), pretrained,
                                      checkpoint=str(name), head="token-classification", verbose=bool(verbose))
        model = Model("sequence_tagger", config, params, preproc)
    if verbose:
        print(f"{model!r}{' with a CRF' if use_crf else ''}")
    return model


class TaggerPredictor(Predictor):
    """Tags raw text with a sequence tagger: `predict("Barack Obama visited Paris")` ->
    [('Barack', 'B-PER'), ('Obama', 'I-PER'), ('visited', 'O'), ('Paris', 'B-LOC')]."""

    def tag_ids(self, data: TaggedDataset) -> list[np.ndarray]:
        """Tag ids of each sentence's kept words (words past maxlen are left out)."""
        batches, count = data.batches(batch_size=self.batch_size)
        out = loop.predict(self.model.params, batches, steps=self.model.steps, num_examples=len(data), num_batches=count)
        _, starts, _ = data.encoded()
        return [row[: len(s)] for row, s in zip(out, starts)]

    def predict_words(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """Tags of pre-split sentences (lists of words); words past maxlen get 'O'."""
        data = self.preproc.preprocess(sentences, where="sentences")
        tags = []
        for words, ids in zip(data.words, self.tag_ids(data)):
            row = self.preproc.decode_tags(ids)
            tags.append(row + ["O"] * (len(words) - len(row)))
        return tags

    def predict(self, texts: str | list[str], merge_entities: bool = False, return_proba: bool = False) -> Any:
        """[(word, tag), ...] for one text (a list of those for a list of texts); with
        merge_entities, [(entity text, type), ...] — the entity text as written in the input."""
        if return_proba:
            raise FlaxtrainError("a sequence tagger returns tags, not class probabilities: drop return_proba")
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise FlaxtrainError("pass a text or a list of texts (use predict_words for pre-split sentences)")
        split = [split_words(t) for t in texts]
        results: list[Any] = [[] for _ in texts]
        nonempty = [i for i, (words, _) in enumerate(split) if words]
        if nonempty:
            tagged = self.predict_words([split[i][0] for i in nonempty])
            for i, tags in zip(nonempty, tagged):
                words, spans = split[i]
                if merge_entities:
                    results[i] = [(texts[i][spans[a][0]:spans[b - 1][1]], kind) for _, kind, a, b in entities(words, tags)]
                else:
                    results[i] = list(zip(words, tags))
        return results[0] if single else results

    def predict_proba(self, texts: Any) -> np.ndarray:
        raise FlaxtrainError("a sequence tagger returns tags, not class probabilities: use predict(text)")

    def evaluate(self, words: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> tuple[float, dict[str, float]]:
        """(mean loss per word, entity-level {'precision', 'recall', 'f1'} and token 'acc') on pre-split,
        tagged sentences (seqeval, as CoNLL scores it)."""
        data = self.preproc.preprocess(words, tags, where="evaluation data")
        sums = loop.summarize(loop.evaluate(_eval_state(self.model), data.batches(batch_size=self.batch_size)[0],
                                            steps=self.model.steps, verbose=False))
        predicted = self.predict_words(data.words)
        metrics = entity_metrics(data.tags, predicted, scheme=self.preproc.tag_scheme)
        return sums["loss"], {"acc": sums["acc"], **{k: v for k, v in metrics.items() if k != "report"}}


def _eval_state(model: Model) -> Any:
    from flaxtrain.train import TrainState

    return TrainState(step=0, apply_fn=model.module.apply, params=model.params, tx=None, opt_state=None)
