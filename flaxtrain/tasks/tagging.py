"""Sequence tagging (NER): cross entropy per tagged word or a CRF's likelihood, tags per word out."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub, ops
from flaxtrain.data.entities import EntityPreprocessor, TaggedDataset, entities, split_words
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import entity_metrics
from flaxtrain.eval.explanation import Explanation
from flaxtrain.tasks.base import Predictor, Task, TaskModel, mean_eval_loss
from flaxtrain.train import loop

Batch = dict[str, jax.Array]
SAMPLE_WORDS = "Angela Merkel met Emmanuel Macron in Paris on Tuesday , and the two leaders spoke about Europe .".split()


def _crf_params(params: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    return params["crf_transitions"], params["crf_start"], params["crf_end"]


def tagging_loss(
    apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array], deterministic: bool,
    use_crf: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of a sequence tagger on batch {'input_ids', 'word_starts' (-1: no word), 'tags' (-1: no
    tag), 'weight'}: cross entropy per tagged word, or the CRF's negative log-likelihood per sentence
    spread over its words. Sums count words; 'correct' counts words tagged right (argmax or Viterbi)."""
    scores = apply_fn({"params": params}, batch["input_ids"], word_starts=batch["word_starts"],
                      deterministic=deterministic, rngs=rngs)  # [b, w, c] float32
    tags = batch["tags"]
    words = (batch["word_starts"] >= 0) & (tags >= 0) & (batch["weight"][:, None] > 0)
    wordsf = words.astype(jnp.float32)
    safe_tags = jnp.maximum(tags, 0)
    if use_crf:
        transitions, start, end = _crf_params(params)
        nll = -ops.crf.log_likelihood(scores, safe_tags, words, transitions, start, end)  # [b]
        loss_sum = jnp.sum(nll * batch["weight"])
        predicted, _ = ops.crf.viterbi_decode(jax.lax.stop_gradient(scores), words, transitions, start, end)
    else:
        log_probs = jax.nn.log_softmax(scores, axis=-1)
        picked = jnp.take_along_axis(log_probs, safe_tags[..., None], axis=-1)[..., 0]
        loss_sum = -jnp.sum(picked * wordsf)
        predicted = jnp.argmax(scores, axis=-1)
    sums = {"loss_sum": loss_sum, "count": jnp.sum(wordsf),
            "correct": jnp.sum((predicted == tags).astype(jnp.float32) * wordsf)}
    return loss_sum, sums


def predict_tags(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, use_crf: bool = False) -> jax.Array:
    """Tag ids [b, w] int32 of a sequence tagger (Viterbi under a CRF, else argmax); -1 where no word."""
    scores = apply_fn({"params": params}, batch["input_ids"], word_starts=batch["word_starts"], deterministic=True)
    return tags_of_scores(scores, batch["word_starts"], params, use_crf=use_crf)


def tags_of_scores(scores: jax.Array, word_starts: jax.Array, params: Any, *, use_crf: bool) -> jax.Array:
    """Tag ids [b, w] of word scores [b, w, c]: Viterbi under a CRF, else argmax; -1 where no word."""
    words = word_starts >= 0
    if use_crf:
        predicted, _ = ops.crf.viterbi_decode(scores, words, *_crf_params(params))
    else:
        predicted = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    return jnp.where(words, predicted, -1)


class TaggerPredictor(Predictor):
    """Tags raw text with a sequence tagger: `predict("Barack Obama visited Paris")` ->
    [('Barack', 'B-PER'), ('Obama', 'I-PER'), ('visited', 'O'), ('Paris', 'B-LOC')]."""

    hf_head = "token"

    def tag_ids(self, data: TaggedDataset) -> list[np.ndarray]:
        """Tag ids of each sentence's kept words (words past maxlen are left out)."""
        batches, count = data.batches(batch_size=self.rows_per_batch(len(data.words)))
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

    def explain(self, text: str, word: int | str | None = None, *, steps: int = 64) -> Explanation:
        """Per-token attributions (integrated gradients, as ClassifierPredictor.explain) toward the tag the model
        gives `word` (its index among the text's words, or the word itself; default the first word tagged
        other than 'O'): the softmax of the tagger's scores for that word at that tag (a CRF tagger's
        emission scores, before its transitions). The explanation's `target` is (word, tag)."""
        if not isinstance(text, str):
            raise FlaxtrainError(f"explain takes one text (a str), got {type(text).__name__}: call it once per text")
        words, _ = split_words(text)
        if not words:
            raise FlaxtrainError(f"{text!r} has no words to explain")
        data = self.preproc.preprocess([words], where="text")
        tags = self.predict_words([words])[0]
        kept = len(data.encoded()[1][0])
        if word is None:
            index = next((i for i, tag in enumerate(tags[:kept]) if tag != "O"), 0)
        elif isinstance(word, str):
            if word not in words[:kept]:
                raise FlaxtrainError(f"{word!r} is not one of the text's words {words[:kept]}")
            index = words.index(word)
        elif isinstance(word, (int, np.integer)) and not isinstance(word, bool) and 0 <= word < kept:
            index = int(word)
        else:
            raise FlaxtrainError(f"word must be a word of the text or its index below {kept}, got {word!r}")
        batch = next(iter(data.batches(batch_size=1)[0]))
        ids = np.asarray(batch["input_ids"][0])
        length = int(np.count_nonzero(ids != self.preproc.pad_id))
        tokenizer = self.preproc.tokenizer
        tokens = [tokenizer.id_to_token(int(i)) or str(int(i)) for i in ids[:length]]
        tag = self.preproc.class_names.index(tags[index])
        target = index * len(self.preproc.class_names) + tag
        return self._attribute({"input_ids": batch["input_ids"], "word_starts": batch["word_starts"]}, length=length,
                               tokens=tokens, target=target, name=(words[index], tags[index]), score=self._explain_score,
                               steps=steps)

    @functools.cached_property
    def _explain_score(self) -> Callable[[jax.Array, jax.Array], jax.Array]:
        classes = len(self.preproc.class_names)

        def score(outputs: jax.Array, target: jax.Array) -> jax.Array:  # target: word * classes + tag
            return jax.nn.softmax(outputs[0, target // classes].astype(jnp.float32))[target % classes]

        return score

    def evaluate(self, words: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> tuple[float, dict[str, float]]:
        """(mean loss per word, entity-level {'precision', 'recall', 'f1'} and token 'acc') on pre-split,
        tagged sentences (seqeval, as CoNLL scores it)."""
        data = self.preproc.preprocess(words, tags, where="evaluation data")
        sums = mean_eval_loss(self.model, data.batches(batch_size=self.batch_size)[0])
        predicted = self.predict_words(data.words)
        metrics = entity_metrics(data.tags, predicted, scheme=self.preproc.tag_scheme)
        return sums["loss"], {"acc": sums["acc"], **{k: v for k, v in metrics.items() if k != "report"}}

    def _save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes a pretrained-encoder tagger in Hugging Face format (*ForTokenClassification)."""
        config = self.model.config
        if getattr(config, "encoder", None) is None:
            return super()._save_pretrained(directory)
        if config.use_crf:
            raise FlaxtrainError("Hugging Face token classification has no CRF layer: save a CRF tagger with save()")
        return hub.save_pretrained(directory, config.encoder, self.model.params, self.preproc.tokenizer, task="token",
                                   class_names=self.preproc.class_names)


class SequenceTagging(Task):
    name = "sequence_tagging"
    family = "sequence_tagging"
    dataset = TaggedDataset
    preprocessor = EntityPreprocessor
    predictor = TaggerPredictor
    loaders = "an entities_from_* loader"

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return functools.partial(tagging_loss, use_crf=model.config.use_crf)

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return functools.partial(predict_tags, use_crf=model.config.use_crf)

    export_inputs = ("input_ids", "word_starts")

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[jax.Array, ...]], tuple[str, ...]]:
        """Word scores 'logits' [b, w, c] float32 and 'tags' [b, w] int32 (Viterbi under a CRF, else argmax;
        -1 where no word) of sub-token ids [b, L] and each word's first sub-token [b, w] (-1: no word)."""
        apply_fn, use_crf = model.module.apply, model.config.use_crf

        def serving(params: Any, input_ids: jax.Array, word_starts: jax.Array) -> tuple[jax.Array, ...]:
            scores = apply_fn({"params": params}, input_ids, word_starts=word_starts, deterministic=True)
            return scores.astype(jnp.float32), tags_of_scores(scores, word_starts, params, use_crf=use_crf)

        return serving, ("logits", "tags")

    def export_sample(self, predictor: TaggerPredictor, texts: Sequence[Any] | None) -> dict[str, np.ndarray]:
        """The texts (default: sentences of different lengths) split into words as `predict` splits them."""
        from flaxtrain.export import pad_rows

        sentences = [split_words(t)[0] for t in texts] if texts else [
            SAMPLE_WORDS[:n] for n in (3, 5, 8, len(SAMPLE_WORDS))]
        input_ids, starts, _ = predictor.preproc.preprocess(sentences, where="sentences").encoded()
        return {"input_ids": pad_rows(input_ids, predictor.preproc.pad_id), "word_starts": pad_rows(starts, -1, 1)}

    def report(self, predictor: TaggerPredictor, data: TaggedDataset, *, class_names: Sequence[Any] | None,
               print_report: bool) -> dict[str, float]:
        """Entity-level scores, as CoNLL reports them (the per-type table is printed)."""
        predicted = predictor.predict_words(data.words)
        metrics = entity_metrics(data.tags, predicted, scheme=data.preproc.tag_scheme)
        if print_report:
            print(metrics["report"])
        return {k: v for k, v in metrics.items() if k != "report"}

    def top_losses(self, predictor: TaggerPredictor, data: TaggedDataset, losses: np.ndarray, n: int) -> list[tuple]:
        """(index, loss per word, true tags, predicted tags)."""
        order = np.argsort(-losses, kind="stable")[:n]
        predicted = predictor.predict_words([data.words[i] for i in order])
        return [(int(i), float(losses[i]), data.tags[i], p) for i, p in zip(order, predicted)]

    def format_predictions(self, predictor: TaggerPredictor, texts: list[str]) -> list[str]:
        """'word/TAG word/TAG ...' per text."""
        return [" ".join(f"{word}/{tag}" for word, tag in row) for row in predictor.predict(texts)]
