"""Masked-LM pretraining (Devlin et al. 2019) of the BERT family: dynamic masking per batch drawn,
cross entropy and accuracy over the chosen positions only, fill-mask predictions.

The train step runs the vocabulary head on the chosen positions only (as BERT's own pretraining code
does with its masked_lm_positions): each row's chosen positions are gathered into `prediction_slots`
slots, about 2.5-4x fewer rows of [vocab] logits than the row's length, and the head is most of a
small model's step (a 30,522-word head on a 256-wide encoder: ~70% of its forward FLOPs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub, ops
from flaxtrain.data.lm import LMDataset, LMPreprocessor
from flaxtrain.errors import FlaxtrainError
from flaxtrain.tasks.base import TaskModel
from flaxtrain.tasks.streamed import StreamedObjective, StreamedPredictor

Batch = dict[str, jax.Array]
TOP_K = 5  # candidates per position the predict function returns


def mask_tokens(batch: dict[str, np.ndarray], preproc: LMPreprocessor, rng: np.random.Generator,
                continuation: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """BERT's dynamic masking of a batch of rows: each real, non-special token is chosen with
    probability `mlm_probability` (with `continuation`, whole words are: a word's pieces go together);
    of the chosen, 80% become [MASK], 10% a random token, 10% stay. 'labels' holds the original id
    at chosen positions and -1 elsewhere."""
    ids = batch["input_ids"]
    real = (batch["segment_ids"] > 0) & ~np.isin(ids, preproc.special_ids) & (batch["weight"][:, None] > 0)
    if continuation is None:
        chosen = real & (rng.random(ids.shape) < preproc.mlm_probability)
    else:  # one draw per word: a word starts at every piece that does not continue one ('##ing')
        word = np.cumsum(~continuation[ids], axis=1)  # word number of each piece within its row
        picked = rng.random((ids.shape[0], ids.shape[1] + 1)) < preproc.mlm_probability
        chosen = real & np.take_along_axis(picked, word, axis=1)
    slots = prediction_slots(ids.shape[1], preproc.mlm_probability)
    if (chosen.sum(axis=1) > slots).any():  # a row past its slots (about 1 in 10^8) keeps its first chosen tokens
        chosen &= np.cumsum(chosen, axis=1) <= slots
    draw = rng.random(ids.shape)
    masked = np.where(chosen & (draw < 0.8), preproc.mask_id, ids)
    random = chosen & (draw >= 0.8) & (draw < 0.9)
    masked = np.where(random, rng.integers(0, preproc.vocab_size, ids.shape), masked).astype(np.int32)
    return {**batch, "input_ids": masked, "labels": np.where(chosen, ids, -1).astype(np.int32),
            **gathered_targets(ids, chosen, slots)}


def gathered_targets(ids: np.ndarray, chosen: np.ndarray, slots: int) -> dict[str, np.ndarray]:
    """'mlm_positions' and 'mlm_labels' [b, slots]: each row's chosen positions in order (at most `slots`
    of them) and their original ids, then unused slots (position 0, label -1)."""
    positions = np.argsort(~chosen, axis=1, kind="stable")[:, :slots].astype(np.int32)  # chosen first, in order
    used = np.take_along_axis(chosen, positions, axis=1)
    return {"mlm_positions": np.where(used, positions, 0).astype(np.int32),
            "mlm_labels": np.where(used, np.take_along_axis(ids, positions, axis=1), -1).astype(np.int32)}


def prediction_slots(length: int, probability: float) -> int:
    """Chosen positions a row of `length` tokens has room for in the train step: the mean count plus
    six standard deviations of Binomial(length, probability), at most `length`. A row of 128 tokens at
    15% gets 44 slots; P(more than 44 chosen) = 1.4e-8."""
    mean = length * probability
    return min(length, math.ceil(mean + 6 * math.sqrt(mean * (1 - probability))))


def masked_lm_loss(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array],
                   deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross entropy of the original token at each chosen position of batch {'input_ids' (masked),
    'segment_ids', 'labels' (-1: not chosen), 'weight'}; sums count chosen tokens ('correct': argmax
    right). A batch without chosen tokens sums to 0 (no NaN). With 'mlm_positions' and 'mlm_labels'
    ([b, slots], `mask_tokens` adds them) the head computes the chosen positions' logits only."""
    if "mlm_positions" in batch:
        logits = apply_fn({"params": params}, batch["input_ids"], segment_ids=batch["segment_ids"],
                          positions=batch["mlm_positions"], deterministic=deterministic, rngs=rngs)
        labels = batch["mlm_labels"]
    else:
        logits = apply_fn({"params": params}, batch["input_ids"], segment_ids=batch["segment_ids"],
                          deterministic=deterministic, rngs=rngs)
        labels = batch["labels"]
    chosen = ((labels >= 0) & (batch["weight"][:, None] > 0)).astype(jnp.float32)
    loss_sum = jnp.sum(ops.token_cross_entropy(logits, labels) * chosen)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32) * chosen)
    return loss_sum, {"loss_sum": loss_sum, "count": jnp.sum(chosen), "correct": correct}


def predict_top_tokens(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """[b, t, TOP_K, 2] float32: the log-probabilities and ids (as floats) of each position's best tokens."""
    logits = apply_fn({"params": params}, batch["input_ids"], segment_ids=batch["segment_ids"], deterministic=True)
    values, ids = jax.lax.top_k(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), TOP_K)
    return jnp.stack([values, ids.astype(jnp.float32)], axis=-1)


class MaskedLMPredictor(StreamedPredictor):
    """Fills masks: `predict("The capital of France is [MASK].")` -> for each [MASK], the best
    (token, probability) pairs, best first (one list per mask)."""

    hf_head = "mlm"

    def top_tokens(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """(token ids of each text, [n, t, TOP_K, 2] best log-probabilities and ids at every position)."""
        p = self.preproc
        encoded = [ids[: p.row_length] for ids in p.encode_documents(texts)]
        out = np.zeros((len(texts), p.row_length, TOP_K, 2), np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = encoded[start:start + self.batch_size]
            ids = np.full((self.batch_size, p.row_length), p.pad_id, np.int32)
            segments = np.zeros_like(ids)
            for r, row in enumerate(chunk):
                ids[r, : len(row)], segments[r, : len(row)] = row, 1
            found = self.model.steps.predict(self.model.params, {"input_ids": ids, "segment_ids": segments})
            out[start:start + len(chunk)] = np.asarray(found)[: len(chunk)]
        return encoded, out

    def predict(self, texts: str | Sequence[str], top_k: int = TOP_K, return_proba: bool = False) -> Any:
        if return_proba:
            raise FlaxtrainError("a masked-LM model fills masks with scored tokens: drop return_proba")
        if not 1 <= top_k <= TOP_K:
            raise FlaxtrainError(f"top_k must lie between 1 and {TOP_K}, got {top_k}")
        single = isinstance(texts, str)
        encoded, best = self.top_tokens([texts] if single else list(texts))
        tokenizer = self.preproc.tokenizer
        results = []
        for ids, rows in zip(encoded, best):
            results.append([[(tokenizer.id_to_token(int(i)), float(np.exp(v))) for v, i in rows[t, :top_k]]
                            for t in np.flatnonzero(ids == self.preproc.mask_id)])
        return results[0] if single else results

    def _save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes the model in Hugging Face format (transformers' *ForMaskedLM, head tied to the embeddings)."""
        return hub.save_pretrained(directory, self.model.config.encoder, self.model.params, self.preproc.tokenizer,
                                   task="mlm")


class MaskedLanguageModeling(StreamedObjective):
    """Fresh masks for every batch drawn (`StreamedObjective`: keyed by seed, epoch, process and batch)."""

    name = "masked_lm"
    family = "masked_lm"
    predictor = MaskedLMPredictor
    loaders = "lm_from_files(..., objective='mlm')"

    def matches(self, preproc: Any) -> bool:
        return getattr(preproc, "objective", "mlm") == "mlm"

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return masked_lm_loss

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return predict_top_tokens

    def prepare(self, data: LMDataset) -> np.ndarray | None:
        return data.preproc.continuation_table() if data.preproc.whole_word_masking else None

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[jax.Array, ...]], tuple[str, ...]]:
        """'logits' [b, L, vocab] float32 of token ids [b, L], one document per row (the padding is the
        preprocessor's pad id), as transformers' *ForMaskedLM gives them."""
        apply_fn = model.module.apply

        def serving(params: Any, input_ids: jax.Array) -> tuple[jax.Array, ...]:
            # No segment ids: the encoder masks the padding itself (one document per row, positions from 0).
            return (apply_fn({"params": params}, input_ids, deterministic=True).astype(jnp.float32),)

        return serving, ("logits",)

    def export_sample(self, predictor: MaskedLMPredictor, texts: Sequence[Any] | None) -> dict[str, np.ndarray]:
        """The texts encoded as `predict` encodes them (default: rows of random token ids of different lengths)."""
        from flaxtrain.export import pad_rows

        p = predictor.preproc
        if texts:
            rows = [ids[: p.row_length] for ids in p.encode_documents(list(texts))]
        else:
            rng = np.random.default_rng(0)
            rows = [rng.integers(1, p.tokenizer.get_vocab_size(), size=n).astype(np.int32)
                    for n in np.linspace(4, min(p.row_length, 48), 8).astype(int)]
        return {"input_ids": pad_rows(rows, p.pad_id)}

    def objective_batch(self, batch: dict[str, np.ndarray], preproc: LMPreprocessor, rng: np.random.Generator,
                        prepared: np.ndarray | None) -> dict[str, np.ndarray]:
        return mask_tokens(batch, preproc, rng, prepared)

    def top_losses(self, predictor: MaskedLMPredictor, data: LMDataset, losses: np.ndarray, n: int) -> list[tuple]:
        """(row index, mean masked-token loss, the row's text, None)."""
        decode = predictor.preproc.tokenizer.decode
        return [(i, float(losses[i]), decode(np.where(row["labels"] >= 0, row["labels"], row["input_ids"]).tolist()), None)
                for i, row in self.worst_rows(predictor, data, losses, n)]

    def format_predictions(self, predictor: MaskedLMPredictor, texts: list[str]) -> list[str]:
        """The best token for each [MASK] of each text."""
        return [" ".join(best[0][0] for best in row) + f"\t{text}" for row, text in zip(predictor.predict(texts), texts)]
